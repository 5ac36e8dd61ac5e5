// evaluations: splitting by maxBatchItems, the three semantics, and the
// checks on the answer's length and order, against a stub that decides each
// item by its action's name and counts the requests.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { MandateClient, ProtocolError, TimeoutError } from 'mandate-client';

import { ALLOW, DENY, json, startStub } from './helpers.mjs';

/** A stub deciding `allow*` actions true and the others false, as AuthZEN's semantics say. */
async function decidingStub({ tamper } = {}) {
  return startStub((_req, res, record) => {
    const body = record.json;
    const semantic = body.options?.evaluations_semantic ?? 'execute_all';
    const answers = [];
    for (const item of body.evaluations) {
      const name = (item.action ?? body.action).name;
      const decision = name.startsWith('allow');
      answers.push(decision ? ALLOW : DENY);
      if ((semantic === 'deny_on_first_deny' && !decision) || (semantic === 'permit_on_first_permit' && decision)) break;
    }
    json(res, 200, { evaluations: tamper ? tamper(answers, body) : answers });
  });
}

const items = (...names) => names.map((name) => ({ action: { name } }));
const base = { subject: { type: 'user', id: 'bob' }, resource: { type: 'account', id: 'alice-personal' } };
const decisionsOf = (ds) => ds.map((d) => d.decision);

describe('evaluations: splitting', () => {
  test('a batch longer than maxBatchItems is sent in order, in chunks of at most that many', async () => {
    const stub = await decidingStub();
    const client = new MandateClient({ url: stub.url, maxBatchItems: 3 });
    try {
      const names = ['allow1', 'deny2', 'allow3', 'allow4', 'deny5', 'allow6', 'deny7'];
      const decisions = await client.evaluations({ ...base, evaluations: items(...names) });
      assert.deepEqual(
        decisionsOf(decisions),
        names.map((n) => n.startsWith('allow')),
      );
      assert.deepEqual(
        stub.requests.map((r) => r.json.evaluations.map((i) => i.action.name)),
        [names.slice(0, 3), names.slice(3, 6), names.slice(6)],
      );
      for (const r of stub.requests) {
        assert.deepEqual(r.json.subject, base.subject, 'each chunk carries the defaults');
        assert.deepEqual(r.json.resource, base.resource);
        assert.equal(r.json.options.evaluations_semantic, 'execute_all');
      }
      const ids = new Set(stub.requests.map((r) => r.headers['x-request-id']));
      assert.equal(ids.size, 1, 'the chunks of one call share its X-Request-ID');
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('deny_on_first_deny: nothing after the chunk that stopped is sent', async () => {
    const stub = await decidingStub();
    const client = new MandateClient({ url: stub.url, maxBatchItems: 2 });
    try {
      const names = ['allow1', 'allow2', 'allow3', 'deny4', 'allow5', 'allow6', 'deny7'];
      const decisions = await client.evaluations({ ...base, evaluations: items(...names) }, 'deny_on_first_deny');
      assert.deepEqual(decisionsOf(decisions), [true, true, true, false]);
      assert.equal(stub.requests.length, 2, 'the third and fourth chunks are never sent');
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('deny_on_first_deny: a deny that ends a chunk stops too', async () => {
    const stub = await decidingStub();
    const client = new MandateClient({ url: stub.url, maxBatchItems: 2 });
    try {
      const decisions = await client.evaluations(items('allow1', 'deny2', 'allow3', 'allow4'), 'deny_on_first_deny');
      assert.deepEqual(decisionsOf(decisions), [true, false]);
      assert.equal(stub.requests.length, 1);
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('options may come second; deny_on_first_deny without a deny answers every item', async () => {
    const stub = await decidingStub();
    const client = new MandateClient({ url: stub.url, maxBatchItems: 2 });
    try {
      const decisions = await client.evaluations(items('allow1', 'allow2', 'allow3'), { requestId: 'batch-1' });
      assert.deepEqual(decisionsOf(decisions), [true, true, true]);
      const again = await client.evaluations({ evaluations: items('allow1', 'allow2', 'allow3'), options: { evaluations_semantic: 'deny_on_first_deny' } });
      assert.deepEqual(decisionsOf(again), [true, true, true]);
      assert.equal(stub.requests.length, 4);
      assert.equal(stub.requests[0].headers['x-request-id'], 'batch-1');
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('permit_on_first_permit: nothing after the chunk that stopped is sent', async () => {
    const stub = await decidingStub();
    const client = new MandateClient({ url: stub.url, maxBatchItems: 2 });
    try {
      const decisions = await client.evaluations(items('deny1', 'deny2', 'deny3', 'allow4', 'deny5', 'allow6'), 'permit_on_first_permit');
      assert.deepEqual(decisionsOf(decisions), [false, false, false, true]);
      assert.equal(stub.requests.length, 2);
      assert.equal(stub.requests[1].json.options.evaluations_semantic, 'permit_on_first_permit');
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('a string action in an item or the defaults is sent as {name}', async () => {
    const stub = await decidingStub();
    const client = new MandateClient({ url: stub.url });
    try {
      await client.evaluations({ ...base, action: 'allow_default', evaluations: [{}, { action: 'deny_item' }] });
      assert.deepEqual(stub.requests[0].json.action, { name: 'allow_default' });
      assert.deepEqual(stub.requests[0].json.evaluations, [{}, { action: { name: 'deny_item' } }]);
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('one deadline covers every chunk', async () => {
    const stub = await startStub((_req, res, record) => {
      setTimeout(() => json(res, 200, { evaluations: record.json.evaluations.map(() => ALLOW) }), 80);
    });
    const client = new MandateClient({ url: stub.url, maxBatchItems: 1, timeoutMs: 300 });
    try {
      const start = performance.now();
      const error = await client.evaluations(items('a', 'b', 'c', 'd', 'e', 'f')).then(
        () => assert.fail('resolved'),
        (e) => e,
      );
      assert.ok(error instanceof TimeoutError);
      assert.ok(performance.now() - start < 400);
      assert.ok(stub.requests.length <= 4);
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('an unknown semantic is refused before anything is sent', async () => {
    const stub = await decidingStub();
    const client = new MandateClient({ url: stub.url });
    try {
      await assert.rejects(client.evaluations(items('allow'), 'first_wins'), (e) => e.kind === 'usage');
      assert.equal(stub.requests.length, 0);
    } finally {
      client.close();
      await stub.close();
    }
  });
});

describe('evaluations: checking the answer', () => {
  const bad = [
    ['execute_all: fewer decisions than items', 'execute_all', (a) => a.slice(0, -1)],
    ['execute_all: more decisions than items', 'execute_all', (a) => [...a, ALLOW]],
    ['execute_all: no evaluations array', 'execute_all', () => undefined],
    ['execute_all: a decision that is not a boolean', 'execute_all', (a) => [a[0], { decision: 'no' }, ...a.slice(2)]],
    ['deny_on_first_deny: a deny before the last decision (wrong order)', 'deny_on_first_deny', () => [ALLOW, DENY, ALLOW]],
    ['deny_on_first_deny: shorter without ending on a deny', 'deny_on_first_deny', () => [ALLOW]],
    ['deny_on_first_deny: an empty answer', 'deny_on_first_deny', () => []],
    ['permit_on_first_permit: a permit before the last decision', 'permit_on_first_permit', () => [DENY, ALLOW, DENY]],
    ['permit_on_first_permit: shorter without ending on a permit', 'permit_on_first_permit', () => [DENY]],
  ];
  for (const [name, semantic, tamper] of bad) {
    test(`${name} is a ProtocolError`, async () => {
      const stub = await decidingStub({ tamper });
      const client = new MandateClient({ url: stub.url });
      try {
        const names = semantic === 'permit_on_first_permit' ? ['deny1', 'deny2', 'deny3'] : ['allow1', 'allow2', 'allow3'];
        const error = await client.evaluations(items(...names), semantic).then(
          () => assert.fail('resolved'),
          (e) => e,
        );
        assert.ok(error instanceof ProtocolError, `${error.name}: ${error.message}`);
        assert.equal(stub.requests.length, 1, 'never retried');
        assert.equal(client.failures, 1);
      } finally {
        client.close();
        await stub.close();
      }
    });
  }
});
