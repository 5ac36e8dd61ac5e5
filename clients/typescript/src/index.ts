/**
 * mandate-client: a fail-closed Node.js client for Mandate, the Cedar
 * policy decision point speaking AuthZEN 1.0.
 */
export {
  MandateClient,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_MAX_BATCH_ITEMS,
  DEFAULT_MAX_RESPONSE_BYTES,
  DEFAULT_TIMEOUT_MS,
  parseRetryAfter,
} from './client.js';
export type { ClientOptions, ErrorHook, Pem, TokenSource, TraceSource } from './client.js';
export { MandateError, ProtocolError, ServerError, TimeoutError, TransportError, isMandateError } from './errors.js';
export type { ErrorDetails, ErrorKind, TimeoutPhase } from './errors.js';
export { ActionSearchResults, SearchResults } from './search.js';
export type { EntitySearchResults } from './search.js';
export { expressMiddleware, fastifyHook, fastifyPreHandler } from './middleware.js';
export type {
  AccessQuestion,
  Denial,
  ExpressResponseLike,
  FastifyReplyLike,
  GuardOptions,
  IncomingLike,
  NextFunction,
  Resolver,
} from './middleware.js';
export { DEFAULT_URL } from './transport.js';
export type { TraceHeaders } from './trace.js';
export { VERSION } from './version.js';
export type * from './types.js';
