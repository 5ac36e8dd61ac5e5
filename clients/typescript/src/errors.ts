/**
 * The typed errors of the Mandate client. Every failure of a call is one of
 * these four, and all four extend {@link MandateError}.
 *
 * `kind` says which one an error is without `instanceof`, which a program
 * that loads both the ESM and the CommonJS build of this package cannot rely on.
 */

/** Which of the client's errors this is. `usage` is a mistake in the call itself (a body that cannot be serialised, a bad option). */
export type ErrorKind = 'transport' | 'timeout' | 'protocol' | 'server' | 'usage';

/** What every error carries besides its message. */
export interface ErrorDetails {
  /** The `X-Request-ID` the failed request was sent with (the same on its retry). */
  requestId?: string | undefined;
  /** How many HTTP attempts the call made (2 when it was retried). */
  attempts?: number | undefined;
  /** The underlying error (a Node.js socket error, a JSON parse error…). */
  cause?: unknown;
}

/** The base of every error this client raises. */
export class MandateError extends Error {
  /** Which error this is; see {@link ErrorKind}. */
  readonly kind: ErrorKind;
  /** The `X-Request-ID` of the failed request, to find it in Mandate's decision log. */
  requestId: string | undefined;
  /** How many HTTP attempts the call made before failing (0 when nothing was sent). */
  attempts: number;

  constructor(message: string, details: ErrorDetails = {}, kind: ErrorKind = 'usage') {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'MandateError';
    this.kind = kind;
    this.requestId = details.requestId;
    this.attempts = details.attempts ?? 0;
  }
}

/** The connection failed: refused, reset, closed mid-answer, or TLS refused it. */
export class TransportError extends MandateError {
  /** The Node.js error code when there is one (`ECONNREFUSED`, `ECONNRESET`, `DEPTH_ZERO_SELF_SIGNED_CERT`…). */
  readonly code: string | undefined;
  /** True when the connection was refused before anything was sent: the only transport failure that is retried (once). */
  readonly refused: boolean;

  constructor(message: string, options: ErrorDetails & { code?: string | undefined; refused?: boolean } = {}) {
    super(message, options, 'transport');
    this.name = 'TransportError';
    this.code = options.code;
    this.refused = options.refused ?? false;
  }
}

/** Where the time ran out. */
export type TimeoutPhase = 'connect' | 'deadline' | 'aborted';

/**
 * The call's deadline passed (`phase: 'deadline'`), the connection was not
 * made within the connect limit (`phase: 'connect'`), or the caller's
 * `AbortSignal` fired (`phase: 'aborted'`). Never retried.
 */
export class TimeoutError extends MandateError {
  readonly phase: TimeoutPhase;
  /** The limit that passed, in milliseconds (the call's timeout, or the connect limit). */
  readonly timeoutMs: number;

  constructor(message: string, options: ErrorDetails & { phase: TimeoutPhase; timeoutMs: number }) {
    super(message, options, 'timeout');
    this.name = 'TimeoutError';
    this.phase = options.phase;
    this.timeoutMs = options.timeoutMs;
  }
}

/**
 * A 200 that is not Mandate's answer: not JSON, no boolean `decision`, a
 * batch answer of the wrong length or in the wrong order, a search page
 * without its results. Never retried.
 */
export class ProtocolError extends MandateError {
  /** The HTTP status (200). */
  readonly status: number;
  /** The start of the body that could not be read (at most 512 characters). */
  readonly body: string | undefined;

  constructor(message: string, options: ErrorDetails & { status?: number; body?: string | undefined } = {}) {
    super(message, options, 'protocol');
    this.name = 'ProtocolError';
    this.status = options.status ?? 200;
    this.body = options.body;
  }
}

/**
 * A non-200 answer. `code`, `field` and the message are Mandate's when it
 * sent `{"error": {"code", "message", "field"}}`. A 503 with `Retry-After`
 * is retried once when the wait fits in the deadline; any other is not.
 */
export class ServerError extends MandateError {
  /** The HTTP status (400, 403, 413, 500, 503…). */
  readonly status: number;
  /** Mandate's error code (`invalid_body`, `internal`, `search_over_budget`…), when it sent one. */
  readonly code: string | undefined;
  /** The request field Mandate named (`subject.id`, `evaluations[2].action`), when it named one. */
  readonly field: string | undefined;
  /** The `Retry-After` the server asked for, in milliseconds, when it sent one. */
  readonly retryAfterMs: number | undefined;

  constructor(
    message: string,
    options: ErrorDetails & { status: number; code?: string | undefined; field?: string | undefined; retryAfterMs?: number | undefined },
  ) {
    super(message, options, 'server');
    this.name = 'ServerError';
    this.status = options.status;
    this.code = options.code;
    this.field = options.field;
    this.retryAfterMs = options.retryAfterMs;
  }
}

/** True for any error this client raises, whichever build (ESM or CommonJS) raised it. */
export function isMandateError(error: unknown): error is MandateError {
  if (error instanceof MandateError) return true;
  if (typeof error !== 'object' || error === null) return false;
  const kind = (error as { kind?: unknown }).kind;
  return (
    error instanceof Error &&
    typeof kind === 'string' &&
    ['transport', 'timeout', 'protocol', 'server', 'usage'].includes(kind) &&
    'attempts' in error
  );
}
