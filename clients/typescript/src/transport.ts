/**
 * One HTTP attempt over node:http / node:https with a keep-alive Agent.
 *
 * Global fetch is not used: without importing undici (a dependency) it can
 * do neither client certificates (mTLS) nor Unix domain sockets. node:http
 * does both, and lets the connect limit be enforced from the socket's own
 * events.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';

import { MandateError, ProtocolError, TimeoutError, TransportError } from './errors.js';

/** Where the client sends its requests. */
export interface Endpoint {
  /** `http:`, `https:` or `unix:` (HTTP over a Unix domain socket). */
  scheme: 'http:' | 'https:' | 'unix:';
  hostname: string;
  port: number | undefined;
  socketPath: string | undefined;
  /** A path prefix from the URL (`http://proxy/mandate` → `/mandate`), without its trailing slash. */
  basePath: string;
  /** The URL as given, with any credentials removed, for messages. */
  display: string;
}

/** The default base URL: the sidecar's. */
export const DEFAULT_URL = 'http://127.0.0.1:8180';

/** Parses `http://host:port[/base]`, `https://…` or `unix:/path/to/mandate.sock`. */
export function parseEndpoint(url: string): Endpoint {
  const raw = url.trim();
  if (raw.startsWith('unix:')) {
    let path = raw.slice('unix:'.length);
    if (path.startsWith('//')) path = path.slice(2); // unix:///run/mandate.sock
    if (path === '') throw new MandateError(`invalid Mandate URL ${JSON.stringify(url)}: unix: needs a socket path (unix:/run/mandate.sock)`);
    return { scheme: 'unix:', hostname: 'localhost', port: undefined, socketPath: path, basePath: '', display: `unix:${path}` };
  }
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch (cause) {
    throw new MandateError(`invalid Mandate URL ${JSON.stringify(url)}`, { cause });
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new MandateError(`invalid Mandate URL ${JSON.stringify(url)}: the scheme must be http:, https: or unix:`);
  }
  if (parsed.search !== '' || parsed.hash !== '') {
    throw new MandateError(`invalid Mandate URL ${JSON.stringify(url)}: no query or fragment`);
  }
  const hostname = parsed.hostname.startsWith('[') ? parsed.hostname.slice(1, -1) : parsed.hostname;
  const port = parsed.port === '' ? undefined : Number(parsed.port);
  const basePath = parsed.pathname.replace(/\/+$/, '');
  return {
    scheme: parsed.protocol,
    hostname,
    port,
    socketPath: undefined,
    basePath,
    display: `${parsed.protocol}//${parsed.host}${basePath}`,
  };
}

/** TLS settings, already read from their files. */
export interface TlsSettings {
  ca?: string | Buffer | Array<string | Buffer> | undefined;
  cert?: string | Buffer | undefined;
  key?: string | Buffer | undefined;
  passphrase?: string | undefined;
  servername?: string | undefined;
}

/** What one attempt got back. */
export interface RawResponse {
  status: number;
  statusText: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** The limits of one attempt. */
export interface AttemptLimits {
  /** The call's deadline, on `performance.now()`'s clock. */
  deadline: number;
  /** The call's total timeout, for messages. */
  timeoutMs: number;
  /** The connect limit, inside the deadline. */
  connectTimeoutMs: number;
  signal: AbortSignal | undefined;
  requestId: string;
}

export const now = (): number => performance.now();

/** A pool of keep-alive connections to one endpoint, and the attempts made over it. */
export class Transport {
  readonly endpoint: Endpoint;
  readonly agent: http.Agent;
  private readonly maxResponseBytes: number;

  constructor(endpoint: Endpoint, tls: TlsSettings, options: { maxSockets?: number | undefined; maxResponseBytes: number }) {
    this.endpoint = endpoint;
    this.maxResponseBytes = options.maxResponseBytes;
    const common: http.AgentOptions = { keepAlive: true, scheduling: 'lifo' };
    if (options.maxSockets !== undefined) common.maxSockets = options.maxSockets;
    if (endpoint.scheme === 'https:') {
      const agentOptions: https.AgentOptions = { ...common, rejectUnauthorized: true };
      if (tls.ca !== undefined) agentOptions.ca = tls.ca;
      if (tls.cert !== undefined) agentOptions.cert = tls.cert;
      if (tls.key !== undefined) agentOptions.key = tls.key;
      if (tls.passphrase !== undefined) agentOptions.passphrase = tls.passphrase;
      if (tls.servername !== undefined) agentOptions.servername = tls.servername;
      this.agent = new https.Agent(agentOptions);
    } else {
      this.agent = new http.Agent(common);
    }
  }

  /** Closes the idle connections; calls in flight finish on theirs. */
  close(): void {
    this.agent.destroy();
  }

  /** One POST of `body` to `path` (after the base path), within `limits`. Rejects with a TransportError or a TimeoutError. */
  attempt(path: string, headers: http.OutgoingHttpHeaders, body: Buffer, limits: AttemptLimits): Promise<RawResponse> {
    const { endpoint } = this;
    return new Promise<RawResponse>((resolve, reject) => {
      const details = { requestId: limits.requestId };
      const remaining = limits.deadline - now();
      if (limits.signal?.aborted === true) {
        reject(abortError(limits, details));
        return;
      }
      if (remaining <= 0) {
        reject(new TimeoutError(`no answer from Mandate within ${limits.timeoutMs} ms`, { ...details, phase: 'deadline', timeoutMs: limits.timeoutMs }));
        return;
      }

      let settled = false;
      let connected = false;
      let connectTimer: NodeJS.Timeout | undefined;
      let req: http.ClientRequest | undefined;

      const onAbort = (): void => {
        fail(abortError(limits, details));
      };
      const finish = (error: MandateError | undefined, response?: RawResponse): void => {
        if (settled) return;
        settled = true;
        clearTimeout(deadlineTimer);
        if (connectTimer !== undefined) clearTimeout(connectTimer);
        limits.signal?.removeEventListener('abort', onAbort);
        if (error !== undefined) reject(error);
        else if (response !== undefined) resolve(response);
      };
      const fail = (error: MandateError): void => {
        if (settled) return;
        finish(error);
        // Destroying a request destroys its socket: a connection that timed
        // out or broke never goes back to the pool.
        req?.destroy();
      };

      const deadlineTimer = setTimeout(
        () => {
          fail(new TimeoutError(`no answer from Mandate within ${limits.timeoutMs} ms`, { ...details, phase: 'deadline', timeoutMs: limits.timeoutMs }));
        },
        remaining,
      );
      limits.signal?.addEventListener('abort', onAbort, { once: true });

      const options: http.RequestOptions = {
        agent: this.agent,
        method: 'POST',
        path: endpoint.basePath + path,
        headers,
      };
      if (endpoint.socketPath !== undefined) {
        options.socketPath = endpoint.socketPath;
      } else {
        options.hostname = endpoint.hostname;
        if (endpoint.port !== undefined) options.port = endpoint.port;
      }

      try {
        req = (endpoint.scheme === 'https:' ? https : http).request(options);
      } catch (cause) {
        fail(new TransportError(`cannot send to Mandate at ${endpoint.display}: ${describe(cause)}`, { ...details, cause }));
        return;
      }

      req.on('socket', (socket: Socket) => {
        if (!socket.connecting) {
          connected = true; // a kept-alive connection
          return;
        }
        const limit = Math.max(0, Math.min(limits.connectTimeoutMs, limits.deadline - now()));
        connectTimer = setTimeout(
          () => {
            fail(new TimeoutError(`no connection to Mandate at ${endpoint.display} within ${limits.connectTimeoutMs} ms`, { ...details, phase: 'connect', timeoutMs: limits.connectTimeoutMs }));
          },
          limit,
        );
        socket.once('connect', () => {
          connected = true;
          if (connectTimer !== undefined) clearTimeout(connectTimer);
        });
      });

      req.on('error', (error: NodeJS.ErrnoException) => {
        const code = typeof error.code === 'string' ? error.code : undefined;
        const refused = code === 'ECONNREFUSED' && !connected;
        const what = refused ? 'connection refused' : describe(error);
        fail(new TransportError(`cannot reach Mandate at ${endpoint.display}: ${what}`, { ...details, code, refused, cause: error }));
      });

      req.on('response', (res: http.IncomingMessage) => {
        const chunks: Buffer[] = [];
        let size = 0;
        let complete = false;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > this.maxResponseBytes) {
            fail(new ProtocolError(`Mandate's answer is larger than ${this.maxResponseBytes} bytes`, { ...details, status: res.statusCode ?? 0 }));
            return;
          }
          chunks.push(chunk);
        });
        res.on('end', () => {
          complete = true;
          finish(undefined, {
            status: res.statusCode ?? 0,
            statusText: res.statusMessage ?? '',
            headers: res.headers,
            body: Buffer.concat(chunks),
          });
        });
        res.on('error', (error: NodeJS.ErrnoException) => {
          fail(new TransportError(`the connection to Mandate broke during the answer: ${describe(error)}`, { ...details, code: error.code, cause: error }));
        });
        res.on('close', () => {
          if (!complete) fail(new TransportError('the connection to Mandate closed before the answer ended', { ...details, code: 'ECONNRESET' }));
        });
      });

      req.end(body);
    });
  }
}

function abortError(limits: AttemptLimits, details: { requestId: string }): TimeoutError {
  return new TimeoutError('the call was aborted by its signal', {
    ...details,
    phase: 'aborted',
    timeoutMs: limits.timeoutMs,
    cause: limits.signal?.reason,
  });
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as NodeJS.ErrnoException).code;
    return code !== undefined && !error.message.includes(code) ? `${error.message} (${code})` : error.message;
  }
  return String(error);
}

/** Sleeps `ms`, or until `signal` fires (then rejects with a TimeoutError of phase `aborted`). */
export function sleep(ms: number, limits: AttemptLimits): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (ms <= 0 && limits.signal?.aborted !== true) {
      resolve();
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(abortError(limits, { requestId: limits.requestId }));
    };
    const timer = setTimeout(() => {
      limits.signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    if (limits.signal?.aborted === true) onAbort();
    else limits.signal?.addEventListener('abort', onAbort, { once: true });
  });
}
