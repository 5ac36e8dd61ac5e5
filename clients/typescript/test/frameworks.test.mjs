// The guards mounted in a real Express app and a real Fastify app, each
// listening on a port, asking the real `mandate serve`: an allow reaches
// the handler (200), a deny is a 403, and Mandate down is a 403 too (fail
// closed). Neither framework is a dependency of the package: both are dev
// dependencies, for these tests.
import assert from 'node:assert/strict';
import * as http from 'node:http';
import { after, before, describe, test } from 'node:test';

import express from 'express';
import Fastify from 'fastify';
import { MandateClient, expressMiddleware, fastifyHook } from 'mandate-client';

import { freePort, startMandate } from './helpers.mjs';

const FORBIDDEN = { error: { code: 'forbidden', message: 'Forbidden' } };

let mandate;
let client; // the real server
let down; // a port nothing listens on
before(async () => {
  mandate = await startMandate();
  client = new MandateClient({ url: mandate.url, timeoutMs: 5000 });
  down = new MandateClient({ url: `http://127.0.0.1:${await freePort()}` });
});
after(async () => {
  client?.close();
  down?.close();
  await mandate?.stop();
});

/** A withdrawal from the account in the path, by the user the x-user header names (the app's authentication). */
function withdrawal(user, params, body) {
  if (typeof user !== 'string') throw new Error('no user');
  return {
    subject: { type: 'user', id: user },
    action: 'withdraw',
    resource: { type: 'account', id: params.id },
    context: { amount: body.amount, destination: { type: 'Brokerage::Destination', id: body.to } },
  };
}

/** POSTs JSON on a fresh connection; resolves {status, type, body} (the body parsed when it is JSON). */
function post(url, user, body) {
  const data = JSON.stringify(body);
  const headers = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) };
  if (user !== undefined) headers['x-user'] = user;
  return new Promise((ok, ko) => {
    const req = http.request(url, { method: 'POST', headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => {
        let body = text;
        try {
          body = JSON.parse(text);
        } catch {
          // not JSON: the text itself
        }
        ok({ status: res.statusCode, type: res.headers['content-type'], body });
      });
    });
    req.on('error', ko);
    req.end(data);
  });
}

const TO_OWN_BANK = { amount: '500.00', to: 'alice-bank' };
const TO_A_STRANGER = { amount: '500.00', to: 'mallory-wallet' };

/**
 * The same checks for both frameworks: `base` serves
 * POST /accounts/:id/withdraw guarded by `client`, and
 * POST /down/accounts/:id/withdraw guarded by `down`; `handled` counts the
 * handler's runs; an allowed withdrawal answers `allowedBody`.
 */
async function checkGuards(base, handled, allowedBody) {
  const allowed = await post(`${base}/accounts/alice-personal/withdraw`, 'erin', TO_OWN_BANK);
  assert.equal(allowed.status, 200);
  assert.deepEqual(allowed.body, allowedBody);
  assert.equal(handled(), 1);

  const denied = await post(`${base}/accounts/alice-personal/withdraw`, 'erin', TO_A_STRANGER);
  assert.equal(denied.status, 403, 'F1 forbids it');
  assert.deepEqual(denied.body, FORBIDDEN);
  assert.match(denied.type, /^application\/json/);
  const stranger = await post(`${base}/accounts/alice-personal/withdraw`, 'mallory', TO_OWN_BANK);
  assert.equal(stranger.status, 403);
  const anonymous = await post(`${base}/accounts/alice-personal/withdraw`, undefined, TO_OWN_BANK);
  assert.equal(anonymous.status, 403, 'a resolver that throws');
  assert.equal(handled(), 1, 'the handler never ran for a refusal');

  const failuresBefore = down.failures;
  const unreachable = await post(`${base}/down/accounts/alice-personal/withdraw`, 'erin', TO_OWN_BANK);
  assert.equal(unreachable.status, 403, 'Mandate down: fail closed');
  assert.deepEqual(unreachable.body, FORBIDDEN);
  assert.equal(down.failures, failuresBefore + 1, 'the failure is counted');
  assert.equal(handled(), 1);
  assert.equal(client.failures, 0, 'a deny is no failure');
}

describe('a real Express app', () => {
  test('allowed: the handler runs (200); denied: 403; Mandate down: 403', async () => {
    let handled = 0;
    const app = express();
    app.use(express.json());
    const resolve = (req) => withdrawal(req.get('x-user'), req.params, req.body);
    const handler = (req, res) => {
      handled += 1;
      res.json({ withdrawn: req.params.id, summary: res.locals.mandate.summary });
    };
    app.post('/accounts/:id/withdraw', expressMiddleware(client, resolve), handler);
    app.post('/down/accounts/:id/withdraw', expressMiddleware(down, resolve), handler);
    const server = await new Promise((ok, ko) => {
      const s = app.listen(0, '127.0.0.1', (error) => (error ? ko(error) : ok(s)));
    });
    try {
      // The decision reached the handler in res.locals.mandate.
      await checkGuards(`http://127.0.0.1:${server.address().port}`, () => handled, { withdrawn: 'alice-personal', summary: 'allowed by S3, S4' });
    } finally {
      server.closeAllConnections();
      await new Promise((ok) => server.close(ok));
    }
  });
});

describe('a real Fastify app', () => {
  test('allowed: the handler runs (200); denied: 403; Mandate down: 403', async () => {
    let handled = 0;
    const fastify = Fastify();
    const resolve = (request) => withdrawal(request.headers['x-user'], request.params, request.body);
    const handler = async (request) => {
      handled += 1;
      return { withdrawn: request.params.id };
    };
    // Per route, as the README shows it ...
    fastify.post('/accounts/:id/withdraw', { preHandler: fastifyHook(client, resolve) }, handler);
    // ... and as a hook of a scope.
    await fastify.register(async (scope) => {
      scope.addHook('preHandler', fastifyHook(down, resolve));
      scope.post('/down/accounts/:id/withdraw', handler);
    });
    const address = await fastify.listen({ port: 0, host: '127.0.0.1' });
    try {
      await checkGuards(address, () => handled, { withdrawn: 'alice-personal' });
    } finally {
      await fastify.close();
    }
  });
});
