/**
 * W3C trace context: the caller's, or the ambient OpenTelemetry one.
 *
 * No dependency on @opentelemetry/api: its global registry (the object
 * every copy of the API shares under `Symbol.for('opentelemetry.js.api.1')`)
 * is read directly, and its registered propagator asked to inject the
 * active context. Without OpenTelemetry, nothing is read and nothing sent.
 */

const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
const ZERO_TRACE = '00000000000000000000000000000000';
const ZERO_SPAN = '0000000000000000';

/** A syntactically valid W3C traceparent (version `ff` and all-zero ids are invalid). */
export function isValidTraceparent(value: unknown): value is string {
  if (typeof value !== 'string' || !TRACEPARENT.test(value)) return false;
  const [version, traceId, spanId] = value.split('-');
  return version !== 'ff' && traceId !== ZERO_TRACE && spanId !== ZERO_SPAN;
}

export interface TraceHeaders {
  traceparent?: string;
  tracestate?: string;
}

interface OtelGlobal {
  context?: { active?: () => unknown };
  propagation?: {
    inject?: (context: unknown, carrier: Record<string, string>, setter: { set: (carrier: Record<string, string>, key: string, value: string) => void }) => void;
  };
}

const OTEL_KEY = Symbol.for('opentelemetry.js.api.1');

/** The traceparent (and tracestate) of the active OpenTelemetry span, when OpenTelemetry is set up. */
export function ambientTrace(): TraceHeaders {
  try {
    const otel = (globalThis as Record<symbol, unknown>)[OTEL_KEY] as OtelGlobal | undefined;
    const active = otel?.context?.active;
    const inject = otel?.propagation?.inject;
    if (typeof active !== 'function' || typeof inject !== 'function' || otel === undefined) return {};
    const carrier: Record<string, string> = {};
    inject.call(otel.propagation, active.call(otel.context), carrier, {
      set: (c, key, value) => {
        c[key.toLowerCase()] = value;
      },
    });
    const out: TraceHeaders = {};
    if (isValidTraceparent(carrier['traceparent'])) {
      out.traceparent = carrier['traceparent'];
      if (typeof carrier['tracestate'] === 'string' && carrier['tracestate'] !== '') out.tracestate = carrier['tracestate'];
    }
    return out;
  } catch {
    return {};
  }
}
