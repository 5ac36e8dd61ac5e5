import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type * as http from 'node:http';

import { MandateError, ProtocolError, ServerError, TimeoutError, TransportError, isMandateError } from './errors.js';
import { ActionSearchResults, SearchResults } from './search.js';
import { ambientTrace, isValidTraceparent, type TraceHeaders } from './trace.js';
import { DEFAULT_URL, Transport, now, parseEndpoint, sleep, type AttemptLimits, type Endpoint, type RawResponse } from './transport.js';
import type {
  Action,
  ActionObject,
  ActionSearchRequest,
  CallOptions,
  Context,
  Decision,
  DecisionError,
  Entity,
  EvaluationItem,
  EvaluationsRequest,
  ItemError,
  JsonObject,
  ResourceSearchRequest,
  SearchOptions,
  SearchPage,
  Semantic,
  SkippedAction,
  SubjectSearchRequest,
} from './types.js';
import { VERSION } from './version.js';

/** The default total deadline of a call, in milliseconds. */
export const DEFAULT_TIMEOUT_MS = 500;
/** The default connect limit, inside the deadline, in milliseconds. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 100;
/** The default largest batch sent in one request (Mandate's `server.max_batch_items`). */
export const DEFAULT_MAX_BATCH_ITEMS = 1000;
/** The default largest answer read, in bytes. */
export const DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024;

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const SEMANTICS: readonly Semantic[] = ['execute_all', 'deny_on_first_deny', 'permit_on_first_permit'];

/** PEM data, or several. */
export type Pem = string | Buffer | Array<string | Buffer>;

/** Where the bearer token comes from: a string, or a function asked on every call (for tokens that rotate). */
export type TokenSource = string | (() => string | undefined | Promise<string | undefined>);

/** The trace context of a call: a `traceparent`, or a `traceparent` and its `tracestate`. */
export type TraceSource = () => string | TraceHeaders | undefined;

/** The hook told of every failure. */
export type ErrorHook = (error: MandateError) => unknown;

export interface ClientOptions {
  /**
   * Mandate's base URL: `http://127.0.0.1:8180` (the sidecar default),
   * `https://mandate.internal:8443`, `unix:/run/mandate.sock`, with an
   * optional path prefix. Default: `MANDATE_URL`, else `http://127.0.0.1:8180`.
   */
  url?: string | undefined;
  /** Sends `Authorization: Bearer <token>`. Default: `MANDATE_TOKEN`, else none. */
  token?: TokenSource | undefined;
  /** The total deadline of every call in milliseconds: connect, TLS, request, answer and any retry. Default 500. */
  timeoutMs?: number | undefined;
  /** The limit on establishing a connection, inside the deadline, in milliseconds. Default 100. */
  connectTimeoutMs?: number | undefined;
  /** The CA certificate(s) that verify an `https://` Mandate, in PEM, instead of Node's trusted roots. */
  ca?: Pem | undefined;
  /** A file of PEM CA certificate(s), read once when the client is made. */
  caFile?: string | undefined;
  /** The client certificate (PEM) for mutual TLS; with `key`. */
  cert?: string | Buffer | undefined;
  /** A file holding the client certificate (PEM). */
  certFile?: string | undefined;
  /** The client certificate's private key (PEM). */
  key?: string | Buffer | undefined;
  /** A file holding the client certificate's private key (PEM). */
  keyFile?: string | undefined;
  /** The key's passphrase, if it is encrypted. */
  passphrase?: string | undefined;
  /** The TLS server name (SNI and verification) when it is not the URL's host. */
  servername?: string | undefined;
  /** The largest batch sent in one request; longer ones are split. Set it to the server's `server.max_batch_items`. Default 1000. */
  maxBatchItems?: number | undefined;
  /** Called with every failure's typed error (the deny a policy made is not one). Exceptions it throws are ignored. */
  onError?: ErrorHook | undefined;
  /**
   * The trace context of each call that gives none. Default: the active
   * OpenTelemetry span, read through OpenTelemetry's global registry when an
   * OpenTelemetry SDK is set up. `false` sends none unless a call gives one.
   */
  trace?: TraceSource | false | undefined;
  /** Extra headers sent with every request (the client's own win over them). */
  headers?: Record<string, string> | undefined;
  /** The most connections kept open to Mandate at once. Default: Node's (no limit). */
  maxSockets?: number | undefined;
  /** The largest answer read, in bytes; a larger one is a ProtocolError. Default 16 MiB. */
  maxResponseBytes?: number | undefined;
}

interface CallState extends AttemptLimits {
  headers: http.OutgoingHttpHeaders;
  /** Set once the call has used its one retry. */
  retried: boolean;
  /** The attempts of the call's latest request. */
  attempts: number;
}

/**
 * A client of Mandate's AuthZEN API. Make one per process and share it: it
 * keeps its connections alive between calls.
 */
export class MandateClient {
  /** The base URL the client sends to. */
  readonly url: string;
  /** The total deadline of a call, in milliseconds. */
  readonly timeoutMs: number;
  /** The connect limit inside it, in milliseconds. */
  readonly connectTimeoutMs: number;
  /** The largest batch sent in one request. */
  readonly maxBatchItems: number;
  /** Called with every failure's typed error. May be replaced at any time. */
  onError: ErrorHook | undefined;

  readonly #transport: Transport;
  readonly #token: TokenSource | undefined;
  readonly #trace: TraceSource | false | undefined;
  readonly #headers: Record<string, string>;
  #failures = 0;

  constructor(options: ClientOptions = {}) {
    const env = process.env;
    this.url = firstSet(options.url, env['MANDATE_URL']) ?? DEFAULT_URL;
    const endpoint: Endpoint = parseEndpoint(this.url);
    this.timeoutMs = positive(options.timeoutMs ?? DEFAULT_TIMEOUT_MS, 'timeoutMs');
    this.connectTimeoutMs = positive(options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS, 'connectTimeoutMs');
    this.maxBatchItems = positiveInteger(options.maxBatchItems ?? DEFAULT_MAX_BATCH_ITEMS, 'maxBatchItems');
    const maxResponseBytes = positiveInteger(options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES, 'maxResponseBytes');
    const maxSockets = options.maxSockets === undefined ? undefined : positiveInteger(options.maxSockets, 'maxSockets');
    this.onError = options.onError;
    this.#token = options.token ?? firstSet(env['MANDATE_TOKEN']);
    if (typeof this.#token === 'string') checkToken(this.#token);
    this.#trace = options.trace;
    this.#headers = { ...(options.headers ?? {}) };

    const tlsGiven = [options.ca, options.caFile, options.cert, options.certFile, options.key, options.keyFile].some((v) => v !== undefined);
    if (tlsGiven && endpoint.scheme !== 'https:') {
      throw new MandateError(`TLS options need an https:// URL, not ${endpoint.display}`);
    }
    const cert = options.cert ?? readPem(options.certFile, 'certFile');
    const key = options.key ?? readPem(options.keyFile, 'keyFile');
    if ((cert === undefined) !== (key === undefined)) {
      throw new MandateError('mutual TLS needs both a client certificate (cert/certFile) and its key (key/keyFile)');
    }
    this.#transport = new Transport(
      endpoint,
      {
        ca: options.ca ?? readPem(options.caFile, 'caFile'),
        cert,
        key,
        passphrase: options.passphrase,
        servername: options.servername,
      },
      { maxSockets, maxResponseBytes },
    );
  }

  /** How many calls have failed (errors, timeouts, non-200s, malformed answers) since the client was made. A policy's deny is not a failure. */
  get failures(): number {
    return this.#failures;
  }

  /** The keep-alive agent that holds the connections (an `https.Agent` for an https URL). */
  get agent(): http.Agent {
    return this.#transport.agent;
  }

  /** Closes the idle kept-alive connections. The client stays usable (new calls reconnect). */
  close(): void {
    this.#transport.close();
  }

  /**
   * The guard for application code: `true` only when Mandate allowed.
   * Never rejects: an error, a timeout, a non-200, a malformed answer or a
   * missing or non-boolean decision is `false`, counted in `failures` and
   * passed to `onError`.
   */
  async allowed(subject: Entity, action: Action, resource: Entity, context?: Context, options?: CallOptions): Promise<boolean> {
    try {
      const answer = await this.evaluate(subject, action, resource, context, options);
      // Strictly `true`: the guard's one way to say yes.
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-boolean-literal-compare
      return answer.decision === true;
    } catch (error) {
      if (!isMandateError(error)) this.#report(unexpected(error));
      return false;
    }
  }

  /** The decision and why: its reasons, errors, policy version and summary. Rejects with a typed {@link MandateError}. */
  evaluate(subject: Entity, action: Action, resource: Entity, context?: Context, options?: CallOptions): Promise<Decision> {
    return this.#observed(options, async (state) => {
      const body: JsonObject = { subject, action: normalizeAction(action), resource };
      if (context !== undefined) body['context'] = context;
      const { json, body: raw } = await this.#post(state, '/access/v1/evaluation', body);
      return parseDecision(json, 'the answer', state.requestId, raw);
    });
  }

  /**
   * An AuthZEN batch: `evaluations({subject?, action?, resource?, context?, evaluations: [...]}, semantic?)`,
   * or a plain array of items. Items override the top-level defaults field by field.
   *
   * A batch longer than `maxBatchItems` is sent in chunks, in order, within
   * one deadline; with a short-circuit semantic nothing after the chunk that
   * stopped is sent, and the result ends with the stopping decision.
   */
  evaluations(request: EvaluationsRequest | EvaluationItem[], semantic?: Semantic, options?: CallOptions): Promise<Decision[]>;
  evaluations(request: EvaluationsRequest | EvaluationItem[], options: CallOptions): Promise<Decision[]>;
  evaluations(request: EvaluationsRequest | EvaluationItem[], semantic?: Semantic | CallOptions, options?: CallOptions): Promise<Decision[]> {
    let callOptions = options;
    let chosen: Semantic | undefined;
    if (typeof semantic === 'object' && semantic !== null) callOptions = semantic;
    else chosen = semantic;
    return this.#observed(callOptions, async (state) => {
      const batch: EvaluationsRequest = Array.isArray(request) ? { evaluations: request } : request;
      if (typeof batch !== 'object' || batch === null || !Array.isArray(batch.evaluations)) {
        throw new MandateError('evaluations needs an array of items (or {evaluations: [...]})', { requestId: state.requestId });
      }
      const sem = chosen ?? batch.options?.evaluations_semantic ?? 'execute_all';
      if (!SEMANTICS.includes(sem)) {
        throw new MandateError(`unknown evaluations semantic ${JSON.stringify(sem)}: ${SEMANTICS.join(', ')}`, { requestId: state.requestId });
      }
      const defaults: JsonObject = {};
      if (batch.subject !== undefined) defaults['subject'] = batch.subject;
      if (batch.action !== undefined) defaults['action'] = normalizeAction(batch.action);
      if (batch.resource !== undefined) defaults['resource'] = batch.resource;
      if (batch.context !== undefined) defaults['context'] = batch.context;
      const extraOptions: JsonObject = { ...(batch.options ?? {}) };
      delete extraOptions['evaluations_semantic'];

      const items = batch.evaluations.map(normalizeItem);
      const decisions: Decision[] = [];
      for (let start = 0; start < items.length; start += this.maxBatchItems) {
        const chunk = items.slice(start, start + this.maxBatchItems);
        const body: JsonObject = { ...defaults, evaluations: chunk, options: { ...extraOptions, evaluations_semantic: sem } };
        const { json, body: raw } = await this.#post(state, '/access/v1/evaluations', body);
        const answers = checkBatch(json, chunk.length, start, sem, state.requestId, raw);
        decisions.push(...answers);
        const last = answers[answers.length - 1];
        if (last !== undefined && stops(sem, last.decision)) break;
      }
      return decisions;
    });
  }

  /** Who may do `action` on `resource`? Every subject of `subject.type`, page after page. */
  searchSubjects(request: SubjectSearchRequest, options?: SearchOptions): SearchResults<Entity> {
    return new SearchResults<Entity>(this.#pageFetcher('subject', request, options, parseEntity), () => this.#requestId(options));
  }

  /** On which resources of `resource.type` may `subject` do `action`? */
  searchResources(request: ResourceSearchRequest, options?: SearchOptions): SearchResults<Entity> {
    return new SearchResults<Entity>(this.#pageFetcher('resource', request, options, parseEntity), () => this.#requestId(options));
  }

  /** What may `subject` do on `resource`? The results' `skipped` names the actions the context could not decide. */
  searchActions(request: ActionSearchRequest, options?: SearchOptions): ActionSearchResults {
    return new ActionSearchResults(this.#pageFetcher('action', request, options, parseActionResult), () => this.#requestId(options));
  }

  #pageFetcher<T>(
    kind: 'subject' | 'resource' | 'action',
    request: SubjectSearchRequest | ResourceSearchRequest | ActionSearchRequest,
    options: SearchOptions | undefined,
    parseResult: (value: unknown, index: number, requestId: string) => T,
  ) {
    return (token: string | undefined, requestId: string, seen: ReadonlySet<string>): Promise<SearchPage<T>> =>
      this.#observed({ ...options, requestId }, async (state) => {
        if (typeof request !== 'object' || request === null) {
          throw new MandateError(`search${kind} needs a request object`, { requestId: state.requestId });
        }
        const body: JsonObject = { ...(request as unknown as JsonObject) };
        if ('action' in request && request.action !== undefined) body['action'] = normalizeAction(request.action);
        const page: JsonObject = {};
        const limit = options?.pageSize ?? request.page?.limit;
        if (limit !== undefined) page['limit'] = positiveInteger(limit, 'pageSize');
        if (token !== undefined) page['token'] = token;
        if (Object.keys(page).length > 0) body['page'] = page;
        else delete body['page'];

        const { json, body: raw } = await this.#post(state, `/access/v1/search/${kind}`, body);
        if (!isObject(json) || !Array.isArray(json['results'])) {
          throw protocolError('the search answer has no results array', state.requestId, raw);
        }
        const pageInfo = json['page'] === undefined ? {} : json['page'];
        if (!isObject(pageInfo)) throw protocolError('the search answer\'s page is not an object', state.requestId, raw);
        const next = pageInfo['next_token'] ?? '';
        if (typeof next !== 'string') throw protocolError('the search answer\'s page.next_token is not a string', state.requestId, raw);
        if (next !== '' && (seen.has(next) || next === token)) {
          throw protocolError('the search answer repeats a page token it already gave: it would never end', state.requestId, raw);
        }
        const results = json['results'].map((value, index) => parseResult(value, index, state.requestId));
        return {
          results,
          nextToken: next,
          count: typeof pageInfo['count'] === 'number' ? pageInfo['count'] : undefined,
          total: typeof pageInfo['total'] === 'number' ? pageInfo['total'] : undefined,
          skipped: parseSkipped(json['context']),
          requestId: state.requestId,
        };
      });
  }

  /** Runs one call: its deadline, request id and headers; counts and reports its failure. */
  async #observed<T>(options: CallOptions | undefined, run: (state: CallState) => Promise<T>): Promise<T> {
    let state: CallState | undefined;
    try {
      state = await this.#begin(options);
      return await run(state);
    } catch (error) {
      const failure = isMandateError(error) ? error : unexpected(error);
      if (failure.requestId === undefined) failure.requestId = state?.requestId;
      if (failure.attempts === 0 && state !== undefined) failure.attempts = state.attempts;
      this.#report(failure);
      throw failure;
    }
  }

  #report(error: MandateError): void {
    this.#failures += 1;
    const hook = this.onError;
    if (hook === undefined) return;
    try {
      const result: unknown = hook(error);
      if (result instanceof Promise) result.catch(() => undefined);
    } catch {
      // The hook must never turn a fail-closed answer into an exception.
    }
  }

  #requestId(options: CallOptions | undefined): string {
    const given = options?.requestId;
    return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
  }

  async #begin(options: CallOptions | undefined): Promise<CallState> {
    const start = now();
    const requestId = this.#requestId(options);
    const timeoutMs = options?.timeoutMs === undefined ? this.timeoutMs : positive(options.timeoutMs, 'timeoutMs', requestId);
    const headers: http.OutgoingHttpHeaders = {
      ...this.#headers,
      'content-type': 'application/json',
      accept: 'application/json',
      'user-agent': `mandate-client-node/${VERSION}`,
      'x-request-id': requestId,
    };
    const trace = this.#traceHeaders(options);
    if (trace.traceparent !== undefined) headers['traceparent'] = trace.traceparent;
    if (trace.tracestate !== undefined) headers['tracestate'] = trace.tracestate;
    const state: CallState = {
      deadline: start + timeoutMs,
      timeoutMs,
      connectTimeoutMs: this.connectTimeoutMs,
      signal: options?.signal,
      requestId,
      headers,
      retried: false,
      attempts: 0,
    };
    const token = await this.#resolveToken(state);
    if (token !== undefined && token !== '') {
      checkToken(token, requestId);
      headers['authorization'] = `Bearer ${token}`;
    }
    return state;
  }

  /** The bearer token: the string, or the source's answer within the call's deadline. */
  async #resolveToken(state: CallState): Promise<string | undefined> {
    const source = this.#token;
    if (typeof source !== 'function') return source;
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => {
          reject(new TimeoutError(`the token source gave no token within ${state.timeoutMs} ms`, { requestId: state.requestId, phase: 'deadline', timeoutMs: state.timeoutMs }));
        },
        Math.max(0, state.deadline - now()),
      );
    });
    try {
      return await Promise.race([Promise.resolve().then(source), expired]);
    } catch (error) {
      if (isMandateError(error)) throw error;
      throw new MandateError(`the token source failed: ${error instanceof Error ? error.message : String(error)}`, { requestId: state.requestId, cause: error });
    } finally {
      clearTimeout(timer);
    }
  }

  #traceHeaders(options: CallOptions | undefined): TraceHeaders {
    if (isValidTraceparent(options?.traceparent)) {
      const out: TraceHeaders = { traceparent: options.traceparent };
      if (validTracestate(options.tracestate)) out.tracestate = options.tracestate;
      return out;
    }
    if (this.#trace === false) return {};
    if (this.#trace !== undefined) {
      let given: string | TraceHeaders | undefined;
      try {
        given = this.#trace();
      } catch {
        return {};
      }
      const headers: TraceHeaders = typeof given === 'string' ? { traceparent: given } : (given ?? {});
      if (!isValidTraceparent(headers.traceparent)) return {};
      const out: TraceHeaders = { traceparent: headers.traceparent };
      if (validTracestate(headers.tracestate)) out.tracestate = headers.tracestate;
      return out;
    }
    return ambientTrace();
  }

  /** POSTs `payload`, retrying at most once per call, and returns the 200's JSON. */
  async #post(state: CallState, path: string, payload: JsonObject): Promise<{ json: unknown; body: Buffer }> {
    let body: Buffer;
    try {
      body = Buffer.from(JSON.stringify(payload), 'utf8');
    } catch (cause) {
      throw new MandateError('the request cannot be written as JSON', { requestId: state.requestId, cause });
    }
    const headers: http.OutgoingHttpHeaders = { ...state.headers, 'content-length': body.length };
    let attempts = 0;
    for (;;) {
      attempts += 1;
      state.attempts = attempts;
      let response: RawResponse;
      try {
        response = await this.#transport.attempt(path, headers, body, state);
      } catch (error) {
        // A connection refused before anything was sent cannot have decided
        // anything: it is retried once, after a short pause, if time is left.
        if (error instanceof TransportError && error.refused && !state.retried && now() + REFUSED_PAUSE_MS < state.deadline) {
          state.retried = true;
          await sleep(REFUSED_PAUSE_MS, state);
          continue;
        }
        if (isMandateError(error)) error.attempts = attempts;
        throw error;
      }
      if (response.status === 200) {
        let json: unknown;
        try {
          json = JSON.parse(response.body.toString('utf8'));
        } catch (cause) {
          throw protocolError('Mandate\'s answer is not JSON', state.requestId, response.body, attempts, cause);
        }
        return { json, body: response.body };
      }
      const retryAfterMs = response.status === 503 ? parseRetryAfter(response.headers['retry-after']) : undefined;
      if (retryAfterMs !== undefined && !state.retried && now() + retryAfterMs < state.deadline) {
        state.retried = true;
        await sleep(retryAfterMs, state);
        continue;
      }
      throw serverError(response, state.requestId, attempts, retryAfterMs);
    }
  }
}

/** The pause before retrying a refused connection, in milliseconds. */
const REFUSED_PAUSE_MS = 10;

function firstSet(...values: Array<string | undefined>): string | undefined {
  for (const value of values) if (value !== undefined && value.trim() !== '') return value.trim();
  return undefined;
}

function positive(value: number, name: string, requestId?: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new MandateError(`${name} must be a positive, finite number of milliseconds (never "no deadline"), not ${String(value)}`, { requestId });
  }
  return value;
}

function positiveInteger(value: number, name: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw new MandateError(`${name} must be a positive integer, not ${String(value)}`);
  }
  return value;
}

function checkToken(token: string, requestId?: string): void {
  // eslint-disable-next-line no-control-regex
  if (typeof token !== 'string' || /[\x00-\x20\x7f]/.test(token)) {
    throw new MandateError('the bearer token must be a string without spaces or control characters', { requestId });
  }
}

function validTracestate(value: unknown): value is string {
  return typeof value === 'string' && value !== '' && value.length <= 512 && /^[\x20-\x7e]+$/.test(value);
}

function readPem(path: string | undefined, name: string): Buffer | undefined {
  if (path === undefined) return undefined;
  try {
    return readFileSync(path);
  } catch (cause) {
    throw new MandateError(`cannot read ${name} ${path}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

function unexpected(error: unknown): MandateError {
  const message = error instanceof Error ? error.message : String(error);
  return new MandateError(`unexpected error: ${message}`, { cause: error });
}

function normalizeAction(action: Action): ActionObject {
  return typeof action === 'string' ? { name: action } : action;
}

function normalizeItem(item: EvaluationItem): EvaluationItem {
  if (typeof item !== 'object' || item === null) return item;
  const out: JsonObject = { ...item };
  if (item.action !== undefined) out['action'] = normalizeAction(item.action);
  return out;
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function snippet(body: Buffer | undefined): string | undefined {
  if (body === undefined) return undefined;
  const text = body.toString('utf8');
  return text.length > 512 ? `${text.slice(0, 512)}…` : text;
}

function protocolError(message: string, requestId: string, body?: Buffer, attempts?: number, cause?: unknown): ProtocolError {
  return new ProtocolError(message, { requestId, body: snippet(body), attempts, cause });
}

function serverError(response: RawResponse, requestId: string, attempts: number, retryAfterMs: number | undefined): ServerError {
  let code: string | undefined;
  let field: string | undefined;
  let message: string | undefined;
  try {
    const parsed: unknown = JSON.parse(response.body.toString('utf8'));
    const error = isObject(parsed) ? parsed['error'] : undefined;
    if (isObject(error)) {
      if (typeof error['code'] === 'string') code = error['code'];
      if (typeof error['field'] === 'string') field = error['field'];
      if (typeof error['message'] === 'string') message = error['message'];
    }
  } catch {
    // Not Mandate's error body (a proxy's page): status alone.
  }
  const status = response.status;
  return new ServerError(message ?? `Mandate answered HTTP ${status}${response.statusText === '' ? '' : ` ${response.statusText}`}`, {
    status,
    code,
    field,
    retryAfterMs,
    requestId,
    attempts,
  });
}

/** `Retry-After` as milliseconds: delta-seconds or an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(header: string | string[] | undefined): number | undefined {
  const value = (Array.isArray(header) ? header[0] : header)?.trim();
  if (value === undefined || value === '') return undefined;
  if (/^\d+$/.test(value)) return Number(value) * 1000;
  if (!/[A-Za-z]{3}/.test(value)) return undefined; // neither seconds nor an HTTP date
  const date = Date.parse(value);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - Date.now());
}

function parseDecision(value: unknown, where: string, requestId: string, raw: Buffer): Decision {
  if (!isObject(value)) throw protocolError(`${where} is not a JSON object`, requestId, raw);
  if (typeof value['decision'] !== 'boolean') throw protocolError(`${where} has no boolean decision`, requestId, raw);
  const context = isObject(value['context']) ? value['context'] : {};
  const reasons = Array.isArray(context['reasons']) ? context['reasons'].filter((r): r is string => typeof r === 'string') : [];
  const errors: DecisionError[] = Array.isArray(context['errors'])
    ? context['errors'].filter(isObject).map((e) => {
        const out: DecisionError = { code: text(e['code']), message: text(e['message']) };
        if (typeof e['policy'] === 'string') out.policy = e['policy'];
        return out;
      })
    : [];
  const decision: Decision = {
    decision: value['decision'],
    reasons,
    errors,
    policyVersion: typeof context['policy_version'] === 'string' ? context['policy_version'] : '',
    summary: typeof context['summary'] === 'string' ? context['summary'] : '',
    staleData: context['stale_data'] === true,
    context,
    requestId,
  };
  const itemError = context['error'];
  if (isObject(itemError)) {
    const error: ItemError = {
      status: typeof itemError['status'] === 'number' ? itemError['status'] : 400,
      code: text(itemError['code']),
      message: text(itemError['message']),
    };
    if (typeof itemError['field'] === 'string') error.field = itemError['field'];
    decision.error = error;
  }
  return decision;
}

/** Does this decision stop a batch under `semantic`? */
function stops(semantic: Semantic, decision: boolean): boolean {
  return (semantic === 'deny_on_first_deny' && !decision) || (semantic === 'permit_on_first_permit' && decision);
}

/**
 * Checks a chunk's answer: one decision per item (`execute_all`); with a
 * short-circuit semantic, no stopping decision before the last, and a
 * shorter answer only when its last decision is the one that stops.
 */
function checkBatch(json: unknown, sent: number, offset: number, semantic: Semantic, requestId: string, raw: Buffer): Decision[] {
  if (!isObject(json) || !Array.isArray(json['evaluations'])) {
    throw protocolError('the batch answer has no evaluations array', requestId, raw);
  }
  const answers = json['evaluations'].map((item, i) => parseDecision(item, `evaluations[${offset + i}]`, requestId, raw));
  const got = answers.length;
  if (semantic === 'execute_all') {
    if (got !== sent) throw protocolError(`the batch answer holds ${got} decisions for ${sent} items (execute_all answers every item)`, requestId, raw);
    return answers;
  }
  if (got === 0 || got > sent) {
    throw protocolError(`the batch answer holds ${got} decisions for ${sent} items`, requestId, raw);
  }
  const stopper = semantic === 'deny_on_first_deny' ? 'deny' : 'permit';
  for (const [i, answer] of answers.entries()) {
    if (i < got - 1 && stops(semantic, answer.decision)) {
      throw protocolError(
        `the batch answer goes on after a ${stopper} at evaluations[${offset + i}] (${semantic} stops there): wrong order or wrong semantic`,
        requestId,
        raw,
      );
    }
  }
  const last = answers[got - 1];
  if (got < sent && (last === undefined || !stops(semantic, last.decision))) {
    throw protocolError(`the batch answer stops after ${got} of ${sent} items without a ${stopper} (${semantic})`, requestId, raw);
  }
  return answers;
}

function parseEntity(value: unknown, index: number, requestId: string): Entity {
  if (!isObject(value) || typeof value['type'] !== 'string' || typeof value['id'] !== 'string') {
    throw protocolError(`search result ${index} is not a {type, id}`, requestId);
  }
  const entity: Entity = { type: value['type'], id: value['id'] };
  if (isObject(value['properties'])) entity.properties = value['properties'];
  return entity;
}

function parseActionResult(value: unknown, index: number, requestId: string): ActionObject {
  if (!isObject(value) || typeof value['name'] !== 'string') {
    throw protocolError(`search result ${index} is not an action {name}`, requestId);
  }
  const action: ActionObject = { name: value['name'] };
  if (isObject(value['properties'])) action.properties = value['properties'];
  return action;
}

function parseSkipped(context: unknown): SkippedAction[] {
  if (!isObject(context) || !Array.isArray(context['skipped'])) return [];
  return context['skipped']
    .filter(isObject)
    .filter((s) => typeof s['name'] === 'string')
    .map((s) => ({ name: s['name'] as string, reason: typeof s['reason'] === 'string' ? s['reason'] : '' }));
}
