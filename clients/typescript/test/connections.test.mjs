// Connections and headers: Unix socket, TLS and mutual TLS (a stub and the
// real server), bearer token, X-Request-ID, traceparent, MANDATE_URL and
// MANDATE_TOKEN, keep-alive.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { DEFAULT_URL, MandateClient, MandateError, TimeoutError, TransportError } from 'mandate-client';

import { ALLOW, FAULT_REQUEST, args, cases, json, makeCertificates, startMandate, startSilent, startStub, startUnixForwarder, tempDir } from './helpers.mjs';

const allowStub = () => startStub((_req, res) => json(res, 200, ALLOW));
const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

let mandate;
before(async () => {
  mandate = await startMandate();
});
after(async () => {
  await mandate?.stop();
});

/** Runs fn with these environment variables set (undefined: unset), then restores them. */
async function withEnv(vars, fn) {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(vars)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

describe('Unix domain socket', () => {
  test('unix:/path speaks HTTP over a Unix socket (a forwarder to the real server)', async () => {
    const tmp = tempDir();
    const forwarder = await startUnixForwarder(join(tmp.dir, 'mandate.sock'), mandate.port);
    const client = new MandateClient({ url: forwarder.url });
    try {
      for (const c of cases.decisions) {
        const decision = await client.evaluate(...args(c.request));
        assert.equal(decision.decision, c.decision, c.name);
        assert.deepEqual(decision.reasons, c.reasons);
      }
      const batch = cases.batches[0];
      assert.deepEqual(
        (await client.evaluations(batch.request)).map((d) => d.decision),
        batch.decisions,
      );
      const search = cases.searches[0];
      assert.deepEqual(await client.searchSubjects(search.request, { pageSize: 2 }).toArray(), search.results);
      assert.equal(forwarder.connections, 1, 'one kept-alive connection over the socket');
    } finally {
      client.close();
      await forwarder.close();
      tmp.remove();
    }
  });

  test('unix:///path is the same, and a missing socket is a TransportError', async () => {
    const tmp = tempDir();
    const client = new MandateClient({ url: `unix://${join(tmp.dir, 'absent.sock')}` });
    try {
      assert.equal(await client.allowed(...args(FAULT_REQUEST)), false);
      const error = await client.evaluate(...args(FAULT_REQUEST)).catch((e) => e);
      assert.ok(error instanceof TransportError);
      assert.equal(error.code, 'ENOENT');
      assert.equal(error.attempts, 1);
    } finally {
      client.close();
      tmp.remove();
    }
  });
});

describe('headers', () => {
  test('token sends Authorization: Bearer', async () => {
    const stub = await allowStub();
    try {
      const client = new MandateClient({ url: stub.url, token: 's3cret.token' });
      assert.equal(await client.allowed(...args(FAULT_REQUEST)), true);
      assert.equal(stub.requests[0].headers.authorization, 'Bearer s3cret.token');
      client.close();
      const none = new MandateClient({ url: stub.url });
      await none.allowed(...args(FAULT_REQUEST));
      assert.equal(stub.requests[1].headers.authorization, undefined);
      none.close();
      let n = 0;
      const rotating = new MandateClient({ url: stub.url, token: async () => `t${++n}` });
      await rotating.allowed(...args(FAULT_REQUEST));
      await rotating.allowed(...args(FAULT_REQUEST));
      assert.deepEqual(
        stub.requests.slice(2).map((r) => r.headers.authorization),
        ['Bearer t1', 'Bearer t2'],
      );
      rotating.close();
    } finally {
      await stub.close();
    }
  });

  test('a token source that fails or hangs fails closed within the deadline', async () => {
    const stub = await allowStub();
    try {
      const failing = new MandateClient({ url: stub.url, token: () => Promise.reject(new Error('vault down')) });
      assert.equal(await failing.allowed(...args(FAULT_REQUEST)), false);
      const hanging = new MandateClient({ url: stub.url, token: () => new Promise(() => {}), timeoutMs: 100 });
      const start = performance.now();
      const error = await hanging.evaluate(...args(FAULT_REQUEST)).catch((e) => e);
      assert.ok(error instanceof TimeoutError);
      assert.ok(performance.now() - start < 200);
      assert.equal(stub.requests.length, 0);
      assert.throws(() => new MandateClient({ url: stub.url, token: 'two words' }), MandateError);
    } finally {
      await stub.close();
    }
  });

  test('X-Request-ID: the caller\'s when valid, else a fresh one; each call its own', async () => {
    const stub = await allowStub();
    const client = new MandateClient({ url: stub.url });
    try {
      const decision = await client.evaluate(...args(FAULT_REQUEST), { requestId: 'req-42.a:b_c' });
      assert.equal(stub.requests[0].headers['x-request-id'], 'req-42.a:b_c');
      assert.equal(decision.requestId, 'req-42.a:b_c');
      for (const invalid of ['has space', 'x'.repeat(129), 'é', '']) {
        await client.evaluate(...args(FAULT_REQUEST), { requestId: invalid });
      }
      await client.evaluate(...args(FAULT_REQUEST));
      const fresh = stub.requests.slice(1).map((r) => r.headers['x-request-id']);
      for (const id of fresh) assert.match(id, /^[A-Za-z0-9._:-]{1,128}$/);
      assert.equal(new Set(fresh).size, fresh.length);
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('content type, accept, user agent and extra headers', async () => {
    const stub = await allowStub();
    const client = new MandateClient({ url: stub.url, headers: { 'x-tenant': 'acme', 'content-type': 'text/plain' } });
    try {
      await client.evaluate(...args(FAULT_REQUEST));
      const { headers, url, method } = stub.requests[0];
      assert.equal(method, 'POST');
      assert.equal(url, '/access/v1/evaluation');
      assert.equal(headers['content-type'], 'application/json');
      assert.equal(headers.accept, 'application/json');
      assert.match(headers['user-agent'], /^mandate-client-node\/\d+\.\d+\.\d+/);
      assert.equal(headers['x-tenant'], 'acme');
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('a base path in the URL prefixes every endpoint', async () => {
    const stub = await startStub((_req, res, record) => {
      if (record.url.endsWith('/evaluations')) json(res, 200, { evaluations: [ALLOW] });
      else if (record.url.includes('/search/')) json(res, 200, { page: { next_token: '', count: 0, total: 0 }, results: [] });
      else json(res, 200, ALLOW);
    });
    const client = new MandateClient({ url: `${stub.url}/pdp/` });
    try {
      await client.evaluate(...args(FAULT_REQUEST));
      await client.evaluations([{ ...FAULT_REQUEST }]);
      await client.searchActions({ subject: FAULT_REQUEST.subject, resource: FAULT_REQUEST.resource }).toArray();
      assert.deepEqual(
        stub.requests.map((r) => r.url),
        ['/pdp/access/v1/evaluation', '/pdp/access/v1/evaluations', '/pdp/access/v1/search/action'],
      );
    } finally {
      client.close();
      await stub.close();
    }
  });
});

describe('traceparent', () => {
  test('sent when the call gives one, with its tracestate; an invalid one is not', async () => {
    const stub = await allowStub();
    const client = new MandateClient({ url: stub.url });
    try {
      await client.evaluate(...args(FAULT_REQUEST), { traceparent: TRACEPARENT, tracestate: 'vendor=abc' });
      await client.evaluate(...args(FAULT_REQUEST), { traceparent: 'not-a-traceparent' });
      await client.evaluate(...args(FAULT_REQUEST), { traceparent: '00-00000000000000000000000000000000-00f067aa0ba902b7-01' });
      await client.evaluate(...args(FAULT_REQUEST));
      assert.equal(stub.requests[0].headers.traceparent, TRACEPARENT);
      assert.equal(stub.requests[0].headers.tracestate, 'vendor=abc');
      for (const r of stub.requests.slice(1)) assert.equal(r.headers.traceparent, undefined);
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('the client\'s trace source gives each call its context; the call\'s own wins', async () => {
    const stub = await allowStub();
    const other = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00';
    const client = new MandateClient({ url: stub.url, trace: () => ({ traceparent: other, tracestate: 'a=1' }) });
    try {
      await client.evaluate(...args(FAULT_REQUEST));
      await client.evaluate(...args(FAULT_REQUEST), { traceparent: TRACEPARENT });
      assert.equal(stub.requests[0].headers.traceparent, other);
      assert.equal(stub.requests[0].headers.tracestate, 'a=1');
      assert.equal(stub.requests[1].headers.traceparent, TRACEPARENT);
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('the active OpenTelemetry context is read from its global registry', async () => {
    const stub = await allowStub();
    const key = Symbol.for('opentelemetry.js.api.1');
    const active = { span: TRACEPARENT };
    globalThis[key] = {
      version: '1.9.0',
      context: { active: () => active },
      propagation: {
        inject(context, carrier, setter) {
          setter.set(carrier, 'traceparent', context.span);
          setter.set(carrier, 'tracestate', 'otel=1');
        },
      },
    };
    try {
      const client = new MandateClient({ url: stub.url });
      await client.evaluate(...args(FAULT_REQUEST));
      assert.equal(stub.requests[0].headers.traceparent, TRACEPARENT);
      assert.equal(stub.requests[0].headers.tracestate, 'otel=1');
      client.close();
      const off = new MandateClient({ url: stub.url, trace: false });
      await off.evaluate(...args(FAULT_REQUEST));
      assert.equal(stub.requests[1].headers.traceparent, undefined);
      off.close();
    } finally {
      delete globalThis[key];
      await stub.close();
    }
  });
});

describe('configuration', () => {
  test('MANDATE_URL and MANDATE_TOKEN are read when the code gives none', async () => {
    const stub = await allowStub();
    try {
      await withEnv({ MANDATE_URL: stub.url, MANDATE_TOKEN: 'from-env' }, async () => {
        const client = new MandateClient();
        assert.equal(client.url, stub.url);
        assert.equal(await client.allowed(...args(FAULT_REQUEST)), true);
        assert.equal(stub.requests[0].headers.authorization, 'Bearer from-env');
        client.close();
        const explicit = new MandateClient({ url: mandate.url, token: 'from-code' });
        assert.equal(explicit.url, mandate.url);
        explicit.close();
      });
    } finally {
      await stub.close();
    }
  });

  test('MANDATE_URL pointing at the real server decides the cases', async () => {
    await withEnv({ MANDATE_URL: mandate.url, MANDATE_TOKEN: undefined }, async () => {
      const client = new MandateClient();
      try {
        for (const c of cases.decisions) assert.equal(await client.allowed(...args(c.request)), c.decision, c.name);
      } finally {
        client.close();
      }
    });
  });

  test('the default URL is the sidecar\'s', async () => {
    await withEnv({ MANDATE_URL: undefined, MANDATE_TOKEN: undefined }, () => {
      assert.equal(new MandateClient().url, 'http://127.0.0.1:8180');
      assert.equal(DEFAULT_URL, 'http://127.0.0.1:8180');
      assert.equal(new MandateClient({ url: '' }).url, 'http://127.0.0.1:8180');
    });
  });

  test('bad URLs and TLS options are refused when the client is made', () => {
    for (const url of ['ftp://x', 'not a url', 'unix:', 'http://h/?q=1']) {
      assert.throws(() => new MandateClient({ url }), MandateError, url);
    }
    assert.throws(() => new MandateClient({ url: 'http://127.0.0.1:1', caFile: '/nonexistent' }), MandateError);
    assert.throws(() => new MandateClient({ url: 'https://127.0.0.1:1', caFile: '/nonexistent/ca.pem' }), /cannot read caFile/);
    assert.throws(() => new MandateClient({ url: 'https://127.0.0.1:1', cert: 'x' }), /both a client certificate/);
  });

  test('IPv6 loopback URLs work', async (t) => {
    let stub;
    try {
      stub = await startStub((_req, res) => json(res, 200, ALLOW), { host: '::1' });
    } catch {
      t.skip('no IPv6 loopback on this machine');
      return;
    }
    const client = new MandateClient({ url: `http://[::1]:${stub.port}` });
    try {
      assert.equal(await client.allowed(...args(FAULT_REQUEST)), true);
      assert.equal(stub.requests[0].headers.host, `[::1]:${stub.port}`);
    } finally {
      client.close();
      await stub.close();
    }
  });
});

describe('TLS', () => {
  let tmp;
  let certs;
  before(() => {
    tmp = tempDir();
    certs = makeCertificates(tmp.dir);
  });
  after(() => tmp?.remove());

  const mtlsStub = () =>
    startStub(
      (req, res) => {
        const peer = req.socket.getPeerCertificate();
        json(res, 200, { ...ALLOW, context: { ...ALLOW.context, summary: `client ${peer?.subject?.CN}` } });
      },
      {
        tls: {
          key: certs.read('server.key'),
          cert: certs.read('server.pem'),
          ca: certs.read('ca.pem'),
          requestCert: true,
          rejectUnauthorized: true,
        },
      },
    );

  test('mutual TLS: a client certificate from files, verified against the given CA', async () => {
    const stub = await mtlsStub();
    const client = new MandateClient({ url: stub.url, caFile: certs.caFile, certFile: certs.clientCert, keyFile: certs.clientKey });
    try {
      const decision = await client.evaluate(...args(FAULT_REQUEST));
      assert.equal(decision.decision, true);
      assert.equal(decision.summary, 'client mandate-test-client');
      for (let i = 0; i < 5; i += 1) assert.equal(await client.allowed(...args(FAULT_REQUEST)), true);
      assert.equal(stub.connections, 1, 'one TLS handshake, then keep-alive');
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('mutual TLS: PEM given in memory', async () => {
    const stub = await mtlsStub();
    const client = new MandateClient({ url: stub.url, ca: certs.read('ca.pem'), cert: certs.read('client.pem'), key: certs.read('client.key').toString() });
    try {
      assert.equal(await client.allowed(...args(FAULT_REQUEST)), true);
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('without a client certificate the server refuses: TransportError, allowed false', async () => {
    const stub = await mtlsStub();
    const client = new MandateClient({ url: stub.url, caFile: certs.caFile });
    try {
      const { value, ms } = await (async () => {
        const start = performance.now();
        const v = await client.allowed(...args(FAULT_REQUEST));
        return { value: v, ms: performance.now() - start };
      })();
      assert.equal(value, false);
      assert.ok(ms < 600);
      const error = await client.evaluate(...args(FAULT_REQUEST)).catch((e) => e);
      assert.ok(error instanceof TransportError, `${error.name}: ${error.message}`);
      assert.equal(error.refused, false);
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('a server certificate from an unknown CA is refused', async () => {
    const stub = await mtlsStub();
    const client = new MandateClient({ url: stub.url, certFile: certs.clientCert, keyFile: certs.clientKey });
    try {
      const error = await client.evaluate(...args(FAULT_REQUEST)).catch((e) => e);
      assert.ok(error instanceof TransportError, `${error.name}: ${error.message}`);
      assert.match(error.code ?? '', /CERT|SIGNATURE|ISSUER/);
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('a server whose certificate names another host is refused, unless servername says so', async () => {
    const stub = await mtlsStub();
    const wrongHost = new MandateClient({ url: `https://localhost:${stub.port}`, caFile: certs.caFile, certFile: certs.clientCert, keyFile: certs.clientKey });
    try {
      // The certificate names both 127.0.0.1 and localhost: accepted.
      assert.equal(await wrongHost.allowed(...args(FAULT_REQUEST)), true);
    } finally {
      wrongHost.close();
    }
    const other = new MandateClient({ url: stub.url, servername: 'mandate.example', caFile: certs.caFile, certFile: certs.clientCert, keyFile: certs.clientKey });
    try {
      const error = await other.evaluate(...args(FAULT_REQUEST)).catch((e) => e);
      assert.ok(error instanceof TransportError, `${error.name}: ${error.message}`);
    } finally {
      other.close();
      await stub.close();
    }
  });

  test('a TLS handshake that never completes ends at the deadline', async () => {
    const silent = await startSilent();
    const client = new MandateClient({ url: `https://127.0.0.1:${silent.port}`, caFile: certs.caFile, timeoutMs: 200 });
    try {
      const start = performance.now();
      const error = await client.evaluate(...args(FAULT_REQUEST)).catch((e) => e);
      assert.ok(error instanceof TimeoutError);
      assert.equal(error.phase, 'deadline', 'TCP connected: the connect limit is met, the deadline is not');
      assert.ok(performance.now() - start < 300);
    } finally {
      client.close();
      await silent.close();
    }
  });

  test('mutual TLS against the real server (--tls-cert, --client-ca)', async () => {
    const tls = await startMandate(['--tls-cert', certs.serverCert, '--tls-key', certs.serverKey, '--client-ca', certs.caFile], {
      scheme: 'https',
      readyOptions: { ca: certs.read('ca.pem'), cert: certs.read('client.pem'), key: certs.read('client.key') },
    });
    const client = new MandateClient({ url: tls.url, caFile: certs.caFile, certFile: certs.clientCert, keyFile: certs.clientKey, timeoutMs: 5000 });
    const anonymous = new MandateClient({ url: tls.url, caFile: certs.caFile });
    try {
      for (const c of cases.decisions) {
        const decision = await client.evaluate(...args(c.request));
        assert.equal(decision.decision, c.decision, c.name);
        assert.deepEqual(decision.reasons, c.reasons);
      }
      assert.equal(await anonymous.allowed(...args(cases.decisions[0].request)), false);
      assert.equal(anonymous.failures, 1);
    } finally {
      client.close();
      anonymous.close();
      await tls.stop();
    }
  });
});
