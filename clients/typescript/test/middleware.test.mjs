// The Express middleware (run as a node:http handler step, which is what
// Express gives it) and the Fastify hook (with a reply object of Fastify's
// shape), against the real server: allow goes on, deny and failure are 403.
import assert from 'node:assert/strict';
import * as http from 'node:http';
import { after, before, describe, test } from 'node:test';

import { MandateClient, expressMiddleware, fastifyHook, fastifyPreHandler } from 'mandate-client';

import { ALLOW, json, startMandate, startStub } from './helpers.mjs';

let mandate;
let client;
before(async () => {
  mandate = await startMandate();
  client = new MandateClient({ url: mandate.url, timeoutMs: 5000 });
});
after(async () => {
  client?.close();
  await mandate?.stop();
});

/** Who views alice's account: the user named by the x-user header. */
function resolve(req) {
  const user = req.headers['x-user'];
  if (user === undefined) throw new Error('no user');
  return { subject: { type: 'user', id: user }, action: 'view_account', resource: { type: 'account', id: 'alice-personal' } };
}

async function serve(guard) {
  const server = http.createServer((req, res) => {
    res.locals = {};
    guard(req, res, (error) => {
      if (error) {
        res.statusCode = 500;
        res.end('next(error)');
        return;
      }
      res.end(`handler ran: ${res.locals.mandate.summary}`);
    });
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((ok) => server.close(ok)),
  };
}

async function get(url, headers = {}) {
  return new Promise((ok, ko) => {
    http
      .get(url, { headers, agent: false }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => ok({ status: res.statusCode, body, headers: res.headers }));
      })
      .on('error', ko);
  });
}

describe('expressMiddleware', () => {
  test('an allowed request reaches the handler, with the decision in res.locals.mandate', async () => {
    const app = await serve(expressMiddleware(client, resolve));
    try {
      const res = await get(app.url, { 'x-user': 'bob' });
      assert.equal(res.status, 200);
      assert.equal(res.body, 'handler ran: allowed by S1');
    } finally {
      await app.close();
    }
  });

  test('a denied request is a 403 that says nothing of the policies', async () => {
    const app = await serve(expressMiddleware(client, resolve));
    try {
      for (const user of ['mallory', 'ivan', 'nobody']) {
        const res = await get(app.url, { 'x-user': user });
        assert.equal(res.status, 403, user);
        assert.deepEqual(JSON.parse(res.body), { error: { code: 'forbidden', message: 'Forbidden' } });
        assert.equal(res.headers['content-type'], 'application/json');
      }
    } finally {
      await app.close();
    }
  });

  test('a failure is a 403 too: resolver error, Mandate unreachable', async () => {
    const down = new MandateClient({ url: 'http://127.0.0.1:9' });
    const resolverErrors = [];
    const app = await serve(expressMiddleware(client, resolve, { onResolverError: (e) => resolverErrors.push(e) }));
    const appDown = await serve(expressMiddleware(down, resolve));
    try {
      assert.equal((await get(app.url)).status, 403);
      assert.equal(resolverErrors.length, 1);
      assert.equal((await get(appDown.url, { 'x-user': 'bob' })).status, 403);
      assert.equal(down.failures, 1);
    } finally {
      await app.close();
      await appDown.close();
    }
  });

  test('onDenied answers refusals its own way, told why', async () => {
    const denials = [];
    const down = new MandateClient({ url: 'http://127.0.0.1:9' });
    const onDenied = (_req, res, denial) => {
      denials.push(denial);
      res.statusCode = denial.reason === 'denied' ? 403 : 503;
      res.end(denial.reason);
    };
    const app = await serve(expressMiddleware(client, resolve, { onDenied }));
    const appDown = await serve(expressMiddleware(down, resolve, { onDenied }));
    try {
      const denied = await get(app.url, { 'x-user': 'mallory' });
      assert.equal(denied.status, 403);
      assert.equal(denials[0].decision.decision, false);
      const failed = await get(appDown.url, { 'x-user': 'bob' });
      assert.equal(failed.status, 503);
      assert.equal(denials[1].error.kind, 'transport');
    } finally {
      await app.close();
      await appDown.close();
    }
  });

  test('an async resolver, and the incoming X-Request-ID and traceparent are forwarded', async () => {
    const stub = await startStub((_req, res) => json(res, 200, ALLOW));
    const stubClient = new MandateClient({ url: stub.url });
    const app = await serve(expressMiddleware(stubClient, async (req) => resolve(req)));
    const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    try {
      const res = await get(app.url, { 'x-user': 'bob', 'x-request-id': 'edge-123', traceparent });
      assert.equal(res.status, 200);
      assert.equal(stub.requests[0].headers['x-request-id'], 'edge-123');
      assert.equal(stub.requests[0].headers.traceparent, traceparent);
      await get(app.url, { 'x-user': 'bob', 'x-request-id': 'bad id!' });
      assert.match(stub.requests[1].headers['x-request-id'], /^[A-Za-z0-9._:-]+$/);
      assert.notEqual(stub.requests[1].headers['x-request-id'], 'bad id!');
    } finally {
      stubClient.close();
      await app.close();
      await stub.close();
    }
  });
});

function fakeReply() {
  return {
    sent: false,
    statusCode: 200,
    headers: {},
    payload: undefined,
    code(statusCode) {
      this.statusCode = statusCode;
      return this;
    },
    header(name, value) {
      this.headers[name] = value;
      return this;
    },
    send(payload) {
      this.payload = payload;
      this.sent = true;
      return this;
    },
  };
}

describe('fastifyHook', () => {
  test('allowed: resolves undefined and leaves the reply alone', async () => {
    const hook = fastifyHook(client, resolve);
    const reply = fakeReply();
    assert.equal(await hook({ headers: { 'x-user': 'bob' } }, reply), undefined);
    assert.equal(reply.sent, false);
  });

  test('denied or failed: 403, and the reply is returned (as Fastify\'s async hooks require)', async () => {
    const down = new MandateClient({ url: 'http://127.0.0.1:9' });
    for (const [c, headers] of [
      [client, { 'x-user': 'mallory' }],
      [client, {}],
      [down, { 'x-user': 'bob' }],
    ]) {
      const reply = fakeReply();
      const returned = await fastifyPreHandler(c, resolve)({ headers }, reply);
      assert.equal(returned, reply);
      assert.equal(reply.statusCode, 403);
      assert.equal(reply.headers['content-type'], 'application/json');
      assert.deepEqual(JSON.parse(reply.payload), { error: { code: 'forbidden', message: 'Forbidden' } });
    }
  });

  test('onDenied replaces the 403', async () => {
    const hook = fastifyHook(client, resolve, {
      onDenied: (_req, reply, denial) => {
        reply.code(404).send({ hidden: denial.reason });
      },
    });
    const reply = fakeReply();
    assert.equal(await hook({ headers: { 'x-user': 'mallory' } }, reply), reply);
    assert.equal(reply.statusCode, 404);
    assert.deepEqual(reply.payload, { hidden: 'denied' });
  });
});
