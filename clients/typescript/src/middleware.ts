/**
 * Guards for Express and Fastify routes. Their types are written here by
 * hand (the few members used), so this package depends on neither.
 *
 * A request goes on only when Mandate allowed it. A deny, and any failure
 * (of Mandate, or of the function that says what to ask), answers 403.
 */
import type { MandateClient } from './client.js';
import { ambientTrace, isValidTraceparent } from './trace.js';
import type { Action, CallOptions, Context, Decision, Entity } from './types.js';

/** What to ask Mandate about an incoming request. */
export interface AccessQuestion {
  subject: Entity;
  action: Action;
  resource: Entity;
  context?: Context;
}

/** The incoming request's headers, as Node.js, Express and Fastify give them. */
export interface IncomingLike {
  headers: Record<string, string | string[] | undefined>;
}

/** Says what to ask for a request; may be async (to load the resource's owner, say). */
export type Resolver<Req> = (request: Req) => AccessQuestion | Promise<AccessQuestion>;

/** Why a request was refused. */
export interface Denial {
  /** `denied`: Mandate denied. `error`: the question could not be asked or answered (fail closed). */
  reason: 'denied' | 'error';
  /** Mandate's decision, for `denied`. */
  decision?: Decision;
  /** What failed, for `error`: a MandateError, or what the resolver threw. */
  error?: unknown;
}

/** Options of the Express and Fastify guards. */
export interface GuardOptions<Req, Res> {
  /**
   * Answers a refused request. Default: 403 with
   * `{"error":{"code":"forbidden","message":"Forbidden"}}`, the same for a
   * deny and a failure, so that a caller learns nothing of the policies.
   */
  onDenied?: (request: Req, response: Res, denial: Denial) => void | Promise<void>;
  /** Called when the resolver throws (the request is refused all the same). */
  onResolverError?: (error: unknown, request: Req) => void;
  /** Sends the incoming `X-Request-ID` to Mandate when it is a valid one. Default true. */
  forwardRequestId?: boolean;
  /** Sends the incoming `traceparent` to Mandate when there is no active OpenTelemetry span. Default true. */
  forwardTraceparent?: boolean;
  /** The deadline of each check, instead of the client's. */
  timeoutMs?: number;
}

/** The members of an Express (or plain Node.js) response the guard uses. */
export interface ExpressResponseLike {
  statusCode: number;
  headersSent?: boolean;
  writableEnded?: boolean;
  setHeader(name: string, value: string): unknown;
  end(body?: string): unknown;
  locals?: Record<string, unknown>;
}

/** Express's `next`. */
export type NextFunction = (error?: unknown) => void;

/** The members of a Fastify reply the hook uses. */
export interface FastifyReplyLike {
  sent?: boolean;
  code(statusCode: number): FastifyReplyLike;
  header(name: string, value: string): FastifyReplyLike;
  send(payload?: unknown): unknown;
}

const FORBIDDEN_BODY = JSON.stringify({ error: { code: 'forbidden', message: 'Forbidden' } });
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

function header(request: IncomingLike, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function callOptions(request: IncomingLike, options: GuardOptions<unknown, unknown>): CallOptions {
  const call: CallOptions = {};
  if (options.timeoutMs !== undefined) call.timeoutMs = options.timeoutMs;
  if (options.forwardRequestId !== false) {
    const id = header(request, 'x-request-id');
    if (id !== undefined && REQUEST_ID.test(id)) call.requestId = id;
  }
  if (options.forwardTraceparent !== false && ambientTrace().traceparent === undefined) {
    const traceparent = header(request, 'traceparent');
    if (isValidTraceparent(traceparent)) {
      call.traceparent = traceparent;
      const tracestate = header(request, 'tracestate');
      if (tracestate !== undefined) call.tracestate = tracestate;
    }
  }
  return call;
}

/** Asks Mandate; never rejects. */
async function check<Req extends IncomingLike>(
  client: MandateClient,
  resolve: Resolver<Req>,
  request: Req,
  options: GuardOptions<Req, never>,
): Promise<{ allowed: true; decision: Decision } | { allowed: false; denial: Denial }> {
  let question: AccessQuestion;
  try {
    question = await resolve(request);
  } catch (error) {
    try {
      options.onResolverError?.(error, request);
    } catch {
      // ignored: the request is refused either way
    }
    return { allowed: false, denial: { reason: 'error', error } };
  }
  try {
    const decision = await client.evaluate(
      question.subject,
      question.action,
      question.resource,
      question.context,
      callOptions(request, options as GuardOptions<unknown, unknown>),
    );
    // Strictly `true`: the guard's one way to say yes.
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-boolean-literal-compare
    if (decision.decision === true) return { allowed: true, decision };
    return { allowed: false, denial: { reason: 'denied', decision } };
  } catch (error) {
    // evaluate counted it in client.failures and told client.onError.
    return { allowed: false, denial: { reason: 'error', error } };
  }
}

/**
 * An Express middleware (also a plain `node:http` handler step) that lets a
 * request through only when Mandate allows it; otherwise 403. The decision
 * is left in `res.locals.mandate` for the handler.
 *
 * ```ts
 * app.post('/accounts/:id/withdraw', expressMiddleware(client, (req) => ({
 *   subject: { type: 'user', id: req.user.id },
 *   action: 'withdraw',
 *   resource: { type: 'account', id: req.params.id },
 *   context: { amount: req.body.amount, destination: { type: 'Brokerage::Destination', id: req.body.to } },
 * })), handler);
 * ```
 */
export function expressMiddleware<Req extends IncomingLike, Res extends ExpressResponseLike>(
  client: MandateClient,
  resolve: Resolver<Req>,
  options: GuardOptions<Req, Res> = {},
): (request: Req, response: Res, next: NextFunction) => void {
  return (request, response, next) => {
    void (async () => {
      const outcome = await check(client, resolve, request, options as GuardOptions<Req, never>);
      if (outcome.allowed) {
        if (response.locals !== undefined) response.locals['mandate'] = outcome.decision;
        next();
        return;
      }
      if (options.onDenied !== undefined) {
        try {
          await options.onDenied(request, response, outcome.denial);
        } catch {
          // fall through to the default 403
        }
      }
      if (response.headersSent === true || response.writableEnded === true) return;
      response.statusCode = 403;
      response.setHeader('content-type', 'application/json');
      response.end(FORBIDDEN_BODY);
    })().catch((error: unknown) => {
      // Only a broken response object gets here; hand it to Express.
      next(error);
    });
  };
}

/**
 * A Fastify hook (`preHandler`, or `onRequest`/`preValidation`) that lets a
 * request through only when Mandate allows it; otherwise 403.
 *
 * ```ts
 * fastify.addHook('preHandler', fastifyHook(client, (request) => ({ ... })));
 * // or per route: { preHandler: fastifyHook(client, resolve) }
 * ```
 */
export function fastifyHook<Req extends IncomingLike, Reply extends FastifyReplyLike>(
  client: MandateClient,
  resolve: Resolver<Req>,
  options: GuardOptions<Req, Reply> = {},
): (request: Req, reply: Reply) => Promise<Reply | undefined> {
  return async (request, reply) => {
    const outcome = await check(client, resolve, request, options as GuardOptions<Req, never>);
    if (outcome.allowed) return undefined;
    if (options.onDenied !== undefined) {
      try {
        await options.onDenied(request, reply, outcome.denial);
      } catch {
        // fall through to the default 403
      }
    }
    if (reply.sent === true) return reply;
    reply.code(403).header('content-type', 'application/json').send(FORBIDDEN_BODY);
    return reply;
  };
}

/** The same as {@link fastifyHook}, named for `preHandler`. */
export const fastifyPreHandler = fastifyHook;
