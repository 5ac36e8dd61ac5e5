/** AuthZEN 1.0 shapes, and what the client returns. */

/** A JSON object. */
export type JsonObject = { [key: string]: unknown };

/** An AuthZEN subject or resource: `{type, id, properties?}`. */
export interface Entity {
  type: string;
  id: string;
  properties?: JsonObject;
}

/** An AuthZEN action: `{name, properties?}`. */
export interface ActionObject {
  name: string;
  properties?: JsonObject;
}

/** An action: its name (`"withdraw"`) or `{name, properties?}`. */
export type Action = string | ActionObject;

/** The request context: a JSON object. */
export type Context = JsonObject;

/** AuthZEN's `evaluations_semantic`. */
export type Semantic = 'execute_all' | 'deny_on_first_deny' | 'permit_on_first_permit';

/** What every call accepts besides its request. */
export interface CallOptions {
  /**
   * The `X-Request-ID` to send (on the retry too). One value of at most 128
   * bytes of `[A-Za-z0-9._:-]`, as Mandate requires; anything else is
   * replaced by a fresh id (never an error: the caller's id is often an
   * incoming header). Without it, each call makes a fresh one.
   */
  requestId?: string | undefined;
  /** A W3C `traceparent` for this call; overrides the client's `traceparent` and the ambient OpenTelemetry context. */
  traceparent?: string | undefined;
  /** The W3C `tracestate` that goes with `traceparent`. */
  tracestate?: string | undefined;
  /** This call's total deadline in milliseconds, instead of the client's `timeoutMs`. Must be a positive finite number. */
  timeoutMs?: number | undefined;
  /** Abandons the call when it fires: `evaluate` rejects with a `TimeoutError` of phase `aborted`, `allowed` resolves `false`. */
  signal?: AbortSignal | undefined;
}

/** An error Mandate reports with a decision (any makes the decision a deny). */
export interface DecisionError {
  code: string;
  message: string;
  /** The policy that raised it, for an evaluation error. */
  policy?: string;
}

/** Why a batch item was refused as malformed (what would have been a 4xx on its own); its decision is a deny. */
export interface ItemError {
  status: number;
  code: string;
  message: string;
  field?: string;
}

/** A decision and why. */
export interface Decision {
  /** The decision: `true` only when Mandate allowed. */
  decision: boolean;
  /** The `@id` of each determining policy (the permits of an allow, the forbids of a deny; empty for a default deny). */
  reasons: string[];
  /** What went wrong while deciding (`entity_not_found`…); any makes the decision a deny. */
  errors: DecisionError[];
  /** The content hash of the policies and schema that decided. */
  policyVersion: string;
  /** One line: `allowed by S2`, `denied by F1`, `denied: no policy allowed the request`. */
  summary: string;
  /** True when an entity was served stale because the store failed. */
  staleData: boolean;
  /** In a batch: why this item was refused as malformed. */
  error?: ItemError;
  /** AuthZEN's response `context`, as Mandate sent it. */
  context: JsonObject;
  /** The `X-Request-ID` of the request that decided it. */
  requestId: string;
}

/** One item of a batch: overrides the batch's defaults field by field. */
export interface EvaluationItem {
  subject?: Entity;
  action?: Action;
  resource?: Entity;
  context?: Context;
}

/** An AuthZEN batch: top-level defaults, and the items that override them. */
export interface EvaluationsRequest {
  subject?: Entity;
  action?: Action;
  resource?: Entity;
  context?: Context;
  evaluations: EvaluationItem[];
  options?: { evaluations_semantic?: Semantic; [key: string]: unknown };
}

/** The searched side of a search: a type only. */
export interface SearchedEntity {
  type: string;
  properties?: JsonObject;
}

/** Paging of a search request. */
export interface PageRequest {
  /** The page size (Mandate's `page.limit`). */
  limit?: number;
}

/** Who may do `action` on `resource`? */
export interface SubjectSearchRequest {
  subject: SearchedEntity;
  action: Action;
  resource: Entity;
  context?: Context;
  page?: PageRequest;
}

/** On what of this type may `subject` do `action`? */
export interface ResourceSearchRequest {
  subject: Entity;
  action: Action;
  resource: SearchedEntity;
  context?: Context;
  page?: PageRequest;
}

/** What may `subject` do on `resource`? */
export interface ActionSearchRequest {
  subject: Entity;
  resource: Entity;
  context?: Context;
  page?: PageRequest;
}

/** A search's options: a call's, and the page size. */
export interface SearchOptions extends CallOptions {
  /** The page size (`page.limit`), instead of the request's `page.limit` or the server's default. */
  pageSize?: number | undefined;
}

/** An action an action search could not decide with the context given. */
export interface SkippedAction {
  name: string;
  /** What the context lacks. */
  reason: string;
}

/** One page of a search. */
export interface SearchPage<T> {
  results: T[];
  /** The token of the next page; empty on the last. */
  nextToken: string;
  count: number | undefined;
  total: number | undefined;
  /** Action search: the actions this page's answer says it skipped. */
  skipped: SkippedAction[];
  requestId: string;
}
