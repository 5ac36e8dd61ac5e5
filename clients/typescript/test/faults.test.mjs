// The `faults` of clients/cases.json against stubs, and the time and retry
// rules around them: one deadline per call, at most one retry, the same
// X-Request-ID on it.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, test } from 'node:test';

import { MandateClient, MandateError, ProtocolError, ServerError, TimeoutError, TransportError } from 'mandate-client';

import { ALLOW, FAULT_REQUEST, args, cases, faultStubs, json, startSilent, startStub, timed } from './helpers.mjs';

const ERRORS = { transport: TransportError, timeout: TimeoutError, protocol: ProtocolError, server: ServerError };
const DEADLINE = 500;
const SLACK = 100;
const BATCH = {
  subject: { type: 'user', id: 'bob' },
  resource: { type: 'account', id: 'alice-personal' },
  evaluations: [{ action: { name: 'view_account' } }, { action: { name: 'cancel_order' } }],
};

async function rejection(promise) {
  return promise.then(
    (value) => assert.fail(`resolved with ${JSON.stringify(value)}`),
    (error) => error,
  );
}

describe('faults (cases.json, against stubs)', () => {
  for (const fault of cases.faults) {
    test(fault.name, async () => {
      const make = faultStubs[fault.stub];
      assert.ok(make, `no stub for ${fault.stub}: add one to test/helpers.mjs`);
      const stub = await make();
      const hooked = [];
      const client = new MandateClient({ url: stub.url, onError: (e) => hooked.push(e) });
      try {
        const requestsSoFar = () => stub.requests?.length;
        if ('allowed' in fault) {
          const before = requestsSoFar();
          const { value, ms } = await timed(() => client.allowed(...args(FAULT_REQUEST)));
          assert.equal(value, fault.allowed);
          assert.ok(ms < DEADLINE + SLACK, `allowed took ${ms.toFixed(1)} ms`);
          if (fault.allowed === false) {
            assert.equal(client.failures, 1);
            assert.equal(hooked.length, 1);
            assert.ok(hooked[0] instanceof MandateError);
          }
          if (before !== undefined) assert.equal(requestsSoFar() - before, fault.retried ? 2 : 1, 'requests sent by allowed');
        }
        if (fault.evaluate_raises) {
          const before = requestsSoFar();
          const { value: error, ms } = await timed(() => rejection(client.evaluate(...args(FAULT_REQUEST))));
          const Expected = ERRORS[fault.evaluate_raises];
          assert.ok(error instanceof Expected, `${error?.name}: ${error?.message}`);
          assert.ok(error instanceof MandateError);
          assert.equal(error.kind, fault.evaluate_raises);
          assert.ok(ms < DEADLINE + SLACK, `evaluate took ${ms.toFixed(1)} ms`);
          assert.equal(error.attempts, fault.retried ? 2 : 1, 'attempts');
          assert.match(error.requestId, /^[A-Za-z0-9._:-]{1,128}$/);
          if (fault.status !== undefined) assert.equal(error.status, fault.status);
          if (fault.code !== undefined) assert.equal(error.code, fault.code);
          if (before !== undefined) assert.equal(requestsSoFar() - before, fault.retried ? 2 : 1, 'requests sent by evaluate');
          assert.equal(hooked.at(-1), error);
        }
        if (fault.evaluate_decision !== undefined) {
          const decision = await client.evaluate(...args(FAULT_REQUEST));
          assert.equal(decision.decision, fault.evaluate_decision);
        }
        if (fault.evaluations_raises) {
          const before = requestsSoFar();
          const error = await rejection(client.evaluations(BATCH));
          assert.ok(error instanceof ERRORS[fault.evaluations_raises], `${error?.name}: ${error?.message}`);
          assert.equal(await client.evaluations(BATCH).catch(() => 'rejected'), 'rejected');
          if (before !== undefined) assert.equal(requestsSoFar() - before, fault.retried ? 4 : 2);
        }
        if (fault.same_request_id) {
          const seen = stub.requests.map((r) => r.headers['x-request-id']);
          assert.ok(seen.length >= 2 && seen.length % 2 === 0, `${seen.length} requests`);
          for (let i = 0; i < seen.length; i += 2) {
            assert.match(seen[i], /^[A-Za-z0-9._:-]{1,128}$/);
            assert.equal(seen[i + 1], seen[i], 'the retry carries the first try\'s X-Request-ID');
          }
          assert.notEqual(seen[0], seen[2], 'each call has its own');
        }
        if (fault.retry_after_seconds !== undefined) {
          const error = await rejection(client.evaluate(...args(FAULT_REQUEST)));
          assert.equal(error.retryAfterMs, fault.retry_after_seconds * 1000);
        }
      } finally {
        client.close();
        await stub.close();
      }
    });
  }
});

describe('the deadline', () => {
  test('a silent server: TimeoutError at the deadline, never retried', async () => {
    const stub = await startSilent();
    const client = new MandateClient({ url: stub.url, timeoutMs: 200 });
    try {
      const { value: error, ms } = await timed(() => rejection(client.evaluate(...args(FAULT_REQUEST))));
      assert.ok(error instanceof TimeoutError);
      assert.equal(error.phase, 'deadline');
      assert.equal(error.timeoutMs, 200);
      assert.ok(ms >= 195 && ms < 200 + SLACK, `${ms.toFixed(1)} ms`);
      assert.equal(stub.connections, 1);
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('a call may set its own deadline', async () => {
    const stub = await startSilent();
    const client = new MandateClient({ url: stub.url });
    try {
      const { value, ms } = await timed(() => client.allowed(...args(FAULT_REQUEST), { timeoutMs: 150 }));
      assert.equal(value, false);
      assert.ok(ms >= 145 && ms < 150 + SLACK, `${ms.toFixed(1)} ms`);
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('the retry is inside the deadline: 503 Retry-After 0, then silence', async () => {
    let sockets = [];
    const stub = await startStub((req, res, _record, n) => {
      if (n === 1) json(res, 503, { error: { code: 'unavailable', message: 'x' } }, { 'retry-after': '0' });
      else sockets.push(req.socket); // never answers
    });
    const client = new MandateClient({ url: stub.url });
    try {
      const { value: error, ms } = await timed(() => rejection(client.evaluate(...args(FAULT_REQUEST))));
      assert.ok(error instanceof TimeoutError);
      assert.ok(ms < DEADLINE + SLACK, `${ms.toFixed(1)} ms`);
      assert.equal(stub.requests.length, 2);
      assert.equal(error.attempts, 2);
    } finally {
      sockets = [];
      client.close();
      await stub.close();
    }
  });

  test('a 503 with a Retry-After that fits is retried after that wait', async () => {
    const stub = await startStub((_req, res, _record, n) => {
      if (n === 1) json(res, 503, { error: { code: 'unavailable', message: 'x' } }, { 'retry-after': '1' });
      else json(res, 200, ALLOW);
    });
    const client = new MandateClient({ url: stub.url, timeoutMs: 2000 });
    try {
      const { value, ms } = await timed(() => client.evaluate(...args(FAULT_REQUEST)));
      assert.equal(value.decision, true);
      assert.ok(ms >= 990 && ms < 2000, `${ms.toFixed(1)} ms`);
      assert.equal(stub.requests.length, 2);
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('at most one retry: 503 Retry-After 0 twice is a ServerError', async () => {
    const stub = await startStub((_req, res) => json(res, 503, { error: { code: 'unavailable', message: 'x' } }, { 'retry-after': '0' }));
    const client = new MandateClient({ url: stub.url });
    try {
      const error = await rejection(client.evaluate(...args(FAULT_REQUEST)));
      assert.ok(error instanceof ServerError);
      assert.equal(error.status, 503);
      assert.equal(error.attempts, 2);
      assert.equal(stub.requests.length, 2);
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('a 503 without Retry-After is not retried', async () => {
    const stub = await startStub((_req, res) => json(res, 503, { error: { code: 'entity_store_unavailable', message: 'x' } }));
    const client = new MandateClient({ url: stub.url });
    try {
      const error = await rejection(client.evaluate(...args(FAULT_REQUEST)));
      assert.ok(error instanceof ServerError);
      assert.equal(error.code, 'entity_store_unavailable');
      assert.equal(error.retryAfterMs, undefined);
      assert.equal(stub.requests.length, 1);
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('a 503 with an HTTP-date Retry-After in the past is retried', async () => {
    const stub = await startStub((_req, res, _record, n) => {
      if (n === 1) json(res, 503, { error: { code: 'unavailable', message: 'x' } }, { 'retry-after': new Date(Date.now() - 5000).toUTCString() });
      else json(res, 200, ALLOW);
    });
    const client = new MandateClient({ url: stub.url });
    try {
      assert.equal(await client.allowed(...args(FAULT_REQUEST)), true);
      assert.equal(stub.requests.length, 2);
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('the connect limit: a connection that is never accepted is a TimeoutError of phase connect', async (t) => {
    // A listening socket whose accept queue is full: Linux drops further
    // SYNs, so a connect hangs (on loopback, nothing else does).
    const script = [
      'import socket, sys, time',
      's = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(0)',
      'port = s.getsockname()[1]',
      'fill = []',
      'for _ in range(8):',
      '    c = socket.socket(); c.setblocking(False)',
      '    try: c.connect(("127.0.0.1", port))',
      '    except BlockingIOError: pass',
      '    fill.append(c)',
      'time.sleep(0.2)',
      'print(port, flush=True)',
      'sys.stdin.read()',
    ].join('\n');
    let child;
    try {
      child = spawn('python3', ['-c', script], { stdio: ['pipe', 'pipe', 'inherit'] });
    } catch {
      t.skip('python3 is not available');
      return;
    }
    const port = await new Promise((ok) => {
      child.stdout.once('data', (d) => ok(Number(String(d).trim())));
      child.once('error', () => ok(0));
    });
    if (!port) {
      t.skip('python3 is not available');
      return;
    }
    const client = new MandateClient({ url: `http://127.0.0.1:${port}`, connectTimeoutMs: 100 });
    try {
      const { value: error, ms } = await timed(() => rejection(client.evaluate(...args(FAULT_REQUEST))));
      assert.ok(error instanceof TimeoutError, `${error.name}: ${error.message}`);
      assert.equal(error.phase, 'connect');
      assert.equal(error.timeoutMs, 100);
      assert.ok(ms >= 95 && ms < 100 + SLACK, `${ms.toFixed(1)} ms`);
      assert.equal(await client.allowed(...args(FAULT_REQUEST)), false);
    } finally {
      client.close();
      child.stdin.end();
      child.kill();
    }
  });

  test('an AbortSignal abandons the call: TimeoutError of phase aborted, allowed false', async () => {
    const stub = await startSilent();
    const client = new MandateClient({ url: stub.url });
    try {
      const controller = new AbortController();
      setTimeout(() => controller.abort(new Error('the client went away')), 50);
      const { value: error, ms } = await timed(() => rejection(client.evaluate(...args(FAULT_REQUEST), { signal: controller.signal })));
      assert.ok(error instanceof TimeoutError);
      assert.equal(error.phase, 'aborted');
      assert.ok(ms < 150, `${ms.toFixed(1)} ms`);
      assert.equal(await client.allowed(...args(FAULT_REQUEST), { signal: AbortSignal.abort() }), false);
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('the deadline must be finite and positive', () => {
    for (const timeoutMs of [0, -1, Infinity, Number.NaN]) {
      assert.throws(() => new MandateClient({ timeoutMs }), MandateError);
    }
    assert.throws(() => new MandateClient({ connectTimeoutMs: Infinity }), MandateError);
    assert.throws(() => new MandateClient({ maxBatchItems: 0 }), MandateError);
  });

  test('a per-call deadline that is not finite fails closed', async () => {
    const client = new MandateClient({ url: 'http://127.0.0.1:9' });
    assert.equal(await client.allowed(...args(FAULT_REQUEST), { timeoutMs: Infinity }), false);
    const error = await rejection(client.evaluate(...args(FAULT_REQUEST), { timeoutMs: 0 }));
    assert.equal(error.kind, 'usage');
    assert.equal(client.failures, 2);
  });
});

describe('answers that are not Mandate\'s', () => {
  const cases_ = [
    ['a 500 that is not JSON', (res) => res.writeHead(500, { 'content-type': 'text/html' }).end('<h1>oops</h1>'), ServerError, { status: 500, code: undefined }],
    ['a 502 from a proxy', (res) => res.writeHead(502).end(), ServerError, { status: 502 }],
    ['a 204', (res) => res.writeHead(204).end(), ServerError, { status: 204 }],
    ['a 302', (res) => res.writeHead(302, { location: '/elsewhere' }).end(), ServerError, { status: 302 }],
    ['a 200 that is a JSON array', (res) => json(res, 200, [true]), ProtocolError, {}],
    ['a 200 without a decision', (res) => json(res, 200, { context: {} }), ProtocolError, {}],
    ['a 200 whose decision is null', (res) => json(res, 200, { decision: null }), ProtocolError, {}],
    ['a 200 whose decision is the string "true"', (res) => json(res, 200, { decision: 'true' }), ProtocolError, {}],
    ['a 200 whose decision is 1', (res) => json(res, 200, { decision: 1 }), ProtocolError, {}],
    ['an empty 200', (res) => res.writeHead(200).end(), ProtocolError, {}],
    [
      'a connection closed in the middle of the answer',
      (res) => {
        res.writeHead(200, { 'content-length': '1000', 'content-type': 'application/json' });
        res.write('{"decision": true');
        setTimeout(() => res.socket.destroy(), 10);
      },
      TransportError,
      {},
    ],
    ['a connection closed without an answer', (res) => res.socket.destroy(), TransportError, {}],
  ];
  for (const [name, answer, Expected, fields] of cases_) {
    test(name, async () => {
      const stub = await startStub((_req, res) => answer(res));
      const client = new MandateClient({ url: stub.url });
      try {
        const { value, ms } = await timed(() => client.allowed(...args(FAULT_REQUEST)));
        assert.equal(value, false);
        assert.ok(ms < DEADLINE + SLACK);
        const error = await rejection(client.evaluate(...args(FAULT_REQUEST)));
        assert.ok(error instanceof Expected, `${error.name}: ${error.message}`);
        for (const [key, expected] of Object.entries(fields)) assert.equal(error[key], expected, key);
        assert.equal(error.attempts, 1);
        assert.equal(stub.requests.length, 2, 'never retried');
        assert.equal(client.failures, 2);
      } finally {
        client.close();
        await stub.close();
      }
    });
  }

  test('an answer over maxResponseBytes is a ProtocolError', async () => {
    const stub = await startStub((_req, res) => json(res, 200, { ...ALLOW, padding: 'x'.repeat(10_000) }));
    const client = new MandateClient({ url: stub.url, maxResponseBytes: 1000 });
    try {
      const error = await rejection(client.evaluate(...args(FAULT_REQUEST)));
      assert.ok(error instanceof ProtocolError);
      assert.match(error.message, /larger than 1000 bytes/);
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('a deny with a decision error is a decision, not a failure', async () => {
    const stub = await startStub((_req, res) =>
      json(res, 200, {
        decision: false,
        context: { reasons: [], errors: [{ code: 'entity_not_found', message: 'no user nobody' }], policy_version: 'abcdefabcdef', summary: 'denied: entity_not_found' },
      }),
    );
    const client = new MandateClient({ url: stub.url });
    try {
      const decision = await client.evaluate(...args(FAULT_REQUEST));
      assert.equal(decision.decision, false);
      assert.deepEqual(decision.errors, [{ code: 'entity_not_found', message: 'no user nobody' }]);
      assert.equal(client.failures, 0);
    } finally {
      client.close();
      await stub.close();
    }
  });
});

describe('the onError hook and the failures count', () => {
  test('a hook that throws never makes allowed reject', async () => {
    const client = new MandateClient({
      url: 'http://127.0.0.1:9',
      onError: () => {
        throw new Error('a broken hook');
      },
    });
    assert.equal(await client.allowed(...args(FAULT_REQUEST)), false);
    assert.equal(client.failures, 1);
    const asyncHook = new MandateClient({ url: 'http://127.0.0.1:9', onError: async () => Promise.reject(new Error('async hook')) });
    assert.equal(await asyncHook.allowed(...args(FAULT_REQUEST)), false);
  });

  test('the hook can be set after the client is made', async () => {
    const client = new MandateClient({ url: 'http://127.0.0.1:9' });
    const seen = [];
    client.onError = (e) => seen.push(e);
    await client.allowed(...args(FAULT_REQUEST));
    assert.equal(seen.length, 1);
    assert.ok(seen[0] instanceof TransportError);
    assert.equal(seen[0].refused, true);
    assert.equal(seen[0].code, 'ECONNREFUSED');
  });

  test('a request that cannot be written as JSON fails closed', async () => {
    const client = new MandateClient({ url: 'http://127.0.0.1:9' });
    const context = { big: 10n };
    assert.equal(await client.allowed(FAULT_REQUEST.subject, 'view_account', FAULT_REQUEST.resource, context), false);
    const error = await rejection(client.evaluate(FAULT_REQUEST.subject, 'view_account', FAULT_REQUEST.resource, context));
    assert.ok(error instanceof MandateError);
    assert.equal(error.kind, 'usage');
    assert.equal(error.attempts, 0);
  });
});
