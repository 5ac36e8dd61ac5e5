// Test helpers: the real `mandate serve`, fault stubs, certificates.
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const repoRoot = resolve(packageDir, '..', '..');
export const cases = JSON.parse(readFileSync(join(repoRoot, 'clients', 'cases.json'), 'utf8'));
export const mandateBin = process.env.MANDATE_BIN || join(repoRoot, 'target', 'debug', 'mandate');

/** A TCP port nothing listens on (now). */
export async function freePort() {
  const server = net.createServer();
  await new Promise((ok, ko) => server.once('error', ko).listen(0, '127.0.0.1', ok));
  const { port } = server.address();
  await new Promise((ok) => server.close(ok));
  return port;
}

async function getStatus(url, options = {}) {
  return new Promise((ok) => {
    const mod = url.startsWith('https:') ? https : http;
    const req = mod.get(url, { ...options, agent: false, timeout: 500 }, (res) => {
      res.resume();
      res.on('end', () => ok(res.statusCode));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => ok(0));
  });
}

/**
 * Starts `mandate serve --listen 127.0.0.1:PORT` (more args may follow) on a
 * free port and waits for GET /readyz to answer 200.
 */
export async function startMandate(extraArgs = [], { scheme = 'http', readyOptions = {} } = {}) {
  if (!existsSync(mandateBin)) {
    throw new Error(`no mandate binary at ${mandateBin}: build it (cargo build) or set MANDATE_BIN`);
  }
  let lastError;
  for (let tries = 0; tries < 3; tries += 1) {
    const port = await freePort();
    // The server's own settings only: no MANDATE_* variable of the caller's.
    const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('MANDATE_')));
    const child = spawn(mandateBin, ['serve', '--listen', `127.0.0.1:${port}`, ...extraArgs], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
      env,
    });
    let log = '';
    const keep = (chunk) => {
      log = (log + chunk.toString()).slice(-8000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    let exited = null;
    child.on('exit', (code) => {
      exited = code;
    });
    const url = `${scheme}://127.0.0.1:${port}`;
    const started = Date.now();
    while (Date.now() - started < 60_000 && exited === null) {
      if ((await getStatus(`${url}/readyz`, readyOptions)) === 200) {
        return {
          url,
          port,
          log: () => log,
          async stop() {
            if (exited !== null) return;
            const done = new Promise((ok) => child.once('exit', ok));
            child.kill('SIGTERM');
            const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
            await done;
            clearTimeout(timer);
          },
        };
      }
      await new Promise((ok) => setTimeout(ok, 50));
    }
    child.kill('SIGKILL');
    lastError = new Error(`mandate serve did not become ready on port ${port} (exit ${exited}):\n${log}`);
  }
  throw lastError;
}

/**
 * An HTTP stub. `handler(req, res, body, n)` answers the n-th request (from 1);
 * every request is recorded as {method, url, headers, body, json}.
 */
export async function startStub(handler, { tls, host = '127.0.0.1' } = {}) {
  const requests = [];
  let connections = 0;
  const sockets = new Set();
  const onRequest = (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      let json;
      try {
        json = JSON.parse(body);
      } catch {
        json = undefined;
      }
      const record = { method: req.method, url: req.url, headers: req.headers, body, json, socket: req.socket };
      requests.push(record);
      handler(req, res, record, requests.length);
    });
  };
  const server = tls ? https.createServer(tls, onRequest) : http.createServer(onRequest);
  server.keepAliveTimeout = 30_000;
  server.on(tls ? 'secureConnection' : 'connection', () => {
    connections += 1;
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  server.on('tlsClientError', () => {});
  await new Promise((ok, ko) => server.once('error', ko).listen(0, host, ok));
  const { port } = server.address();
  return {
    url: `${tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`,
    port,
    requests,
    get connections() {
      return connections;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((ok) => server.close(ok));
    },
  };
}

/** Answers JSON. */
export function json(res, status, value, headers = {}) {
  const body = typeof value === 'string' ? value : JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

export const ALLOW = { decision: true, context: { reasons: ['S1'], errors: [], policy_version: '0123456789ab', summary: 'allowed by S1' } };
export const DENY = { decision: false, context: { reasons: [], errors: [], policy_version: '0123456789ab', summary: 'denied: no policy allowed the request' } };

/** A TCP server that accepts and never answers. */
export async function startSilent() {
  const sockets = new Set();
  let connections = 0;
  const server = net.createServer((socket) => {
    connections += 1;
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    get connections() {
      return connections;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((ok) => server.close(ok));
    },
  };
}

/** The fault stubs of cases.json, by name: each resolves to {url, requests?, close()}. */
export const faultStubs = {
  async closed_port() {
    const port = await freePort();
    return { url: `http://127.0.0.1:${port}`, requests: undefined, close: async () => {} };
  },
  silent: startSilent,
  status_500: () => startStub((_req, res) => json(res, 500, { error: { code: 'internal', message: 'the stub failed on purpose' } })),
  bad_json: () => startStub((_req, res) => json(res, 200, 'this is not JSON {')),
  bad_decision: () => startStub((_req, res) => json(res, 200, { decision: 'yes', context: {} })),
  short_batch: () => startStub((_req, res) => json(res, 200, { evaluations: [ALLOW] })),
  unavailable_then_allow: () =>
    startStub((_req, res, _record, n) => {
      if (n % 2 === 1) json(res, 503, { error: { code: 'unavailable', message: 'try again' } }, { 'retry-after': '0' });
      else json(res, 200, ALLOW);
    }),
  unavailable_long: () =>
    startStub((_req, res) => json(res, 503, { error: { code: 'unavailable', message: 'come back later' } }, { 'retry-after': '5' })),
};

/** A temporary directory, removed by the returned function. */
export function tempDir(prefix = 'mandate-ts-') {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * A CA, a server certificate for 127.0.0.1/localhost and a client
 * certificate, made with the openssl command line.
 */
export function makeCertificates(dir) {
  const run = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=mandate-test-ca');
  writeFileSync(
    join(dir, 'server.ext'),
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n',
  );
  writeFileSync(join(dir, 'client.ext'), 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n');
  for (const [name, cn] of [['server', '127.0.0.1'], ['client', 'mandate-test-client']]) {
    run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
    run('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`);
  }
  const file = (name) => join(dir, name);
  return {
    caFile: file('ca.pem'),
    serverCert: file('server.pem'),
    serverKey: file('server.key'),
    clientCert: file('client.pem'),
    clientKey: file('client.key'),
    read: (name) => readFileSync(file(name)),
  };
}

/** Forwards each connection to a Unix socket at `path` to 127.0.0.1:`port`. */
export async function startUnixForwarder(path, port) {
  const sockets = new Set();
  let connections = 0;
  const server = net.createServer((inbound) => {
    connections += 1;
    const outbound = net.connect(port, '127.0.0.1');
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on('error', () => {
        inbound.destroy();
        outbound.destroy();
      });
      s.on('close', () => sockets.delete(s));
    }
    inbound.pipe(outbound);
    outbound.pipe(inbound);
  });
  await new Promise((ok, ko) => server.once('error', ko).listen(path, ok));
  return {
    url: `unix:${path}`,
    get connections() {
      return connections;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((ok) => server.close(ok));
    },
  };
}

/** Milliseconds `fn` took, and what it returned. */
export async function timed(fn) {
  const start = performance.now();
  const value = await fn();
  return { value, ms: performance.now() - start };
}

/** The arguments of allowed/evaluate for a case's request. */
export function args(request) {
  return [request.subject, request.action, request.resource, request.context];
}

/** The AuthZEN request a fault case is asked with. */
export const FAULT_REQUEST = cases.decisions[0].request;
