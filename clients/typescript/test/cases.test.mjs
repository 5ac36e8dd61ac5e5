// Every case of clients/cases.json that runs against a real `mandate serve`:
// decisions, batches (whole and one item per request), searches (whole and
// one result per page), bad requests.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { MandateClient, ServerError } from 'mandate-client';

import { args, cases, startMandate } from './helpers.mjs';

let mandate;
let client;
const hooked = [];

before(async () => {
  mandate = await startMandate();
  client = new MandateClient({ url: mandate.url, timeoutMs: 5000, onError: (e) => hooked.push(e) });
});

after(async () => {
  client?.close();
  await mandate?.stop();
});

describe('decisions (real server)', () => {
  for (const c of cases.decisions) {
    test(c.name, async () => {
      const decision = await client.evaluate(...args(c.request));
      assert.equal(decision.decision, c.decision);
      assert.deepEqual(decision.reasons, c.reasons);
      assert.deepEqual(
        decision.errors.map((e) => e.code),
        c.errors,
      );
      assert.match(decision.policyVersion, /^[0-9a-f]{12}$/);
      assert.ok(decision.summary.startsWith(c.decision ? 'allowed' : 'denied'), decision.summary);
      assert.match(decision.requestId, /^[A-Za-z0-9._:-]{1,128}$/);
      assert.equal(await client.allowed(...args(c.request)), c.decision);
    });
  }

  test('a deny the policies made is not a failure', () => {
    assert.equal(client.failures, 0);
    assert.deepEqual(hooked, []);
  });

  test('an action may be given by its name alone', async () => {
    const c = cases.decisions[0];
    assert.equal(await client.allowed(c.request.subject, c.request.action.name, c.request.resource, c.request.context), true);
  });

  test('connections are kept alive and reused', async () => {
    const c = cases.decisions[0];
    // Each new socket the agent makes goes through createConnection.
    const agent = client.agent;
    const original = agent.createConnection;
    let made = 0;
    agent.createConnection = function (...a) {
      made += 1;
      return original.apply(this, a);
    };
    try {
      for (let i = 0; i < 10; i += 1) await client.evaluate(...args(c.request));
    } finally {
      agent.createConnection = original;
    }
    assert.ok(made <= 1, `${made} connections for 10 sequential calls`);
  });
});

describe('batches (real server)', () => {
  for (const c of cases.batches) {
    test(c.name, async () => {
      const decisions = await client.evaluations(c.request);
      assert.deepEqual(
        decisions.map((d) => d.decision),
        c.decisions,
      );
    });

    test(`${c.name}, one item per request (maxBatchItems 1)`, async () => {
      const one = new MandateClient({ url: mandate.url, timeoutMs: 5000, maxBatchItems: 1 });
      try {
        const decisions = await one.evaluations(c.request);
        assert.deepEqual(
          decisions.map((d) => d.decision),
          c.decisions,
        );
      } finally {
        one.close();
      }
    });
  }

  test('a long batch split in chunks keeps its order', async () => {
    const actions = ['view_account', 'cancel_order', 'view_account', 'cancel_order', 'cancel_order', 'view_account', 'view_account'];
    const request = {
      subject: { type: 'user', id: 'bob' },
      resource: { type: 'account', id: 'alice-personal' },
      evaluations: actions.map((name) => ({ action: { name } })),
    };
    const expected = actions.map((a) => a === 'view_account');
    for (const maxBatchItems of [1, 2, 3, 1000]) {
      const chunked = new MandateClient({ url: mandate.url, timeoutMs: 5000, maxBatchItems });
      try {
        const decisions = await chunked.evaluations(request);
        assert.deepEqual(
          decisions.map((d) => d.decision),
          expected,
          `maxBatchItems ${maxBatchItems}`,
        );
        assert.deepEqual(
          decisions.map((d) => d.reasons),
          expected.map((allowed) => (allowed ? ['S1'] : [])),
        );
      } finally {
        chunked.close();
      }
    }
  });

  test('the semantic may be given as an argument, over the request\'s', async () => {
    const c = cases.batches[1];
    const { options: _options, ...request } = c.request;
    const decisions = await client.evaluations(request, 'deny_on_first_deny');
    assert.deepEqual(
      decisions.map((d) => d.decision),
      c.decisions,
    );
    const all = await client.evaluations(c.request, 'execute_all');
    assert.equal(all.length, c.request.evaluations.length);
  });

  test('an empty batch is an empty answer', async () => {
    assert.deepEqual(await client.evaluations([]), []);
  });

  test('a malformed item is a deny with its error, not a failure', async () => {
    const before = client.failures;
    const decisions = await client.evaluations({
      resource: { type: 'account', id: 'alice-personal' },
      action: { name: 'view_account' },
      evaluations: [{ subject: { type: 'user', id: 'bob' } }, { subject: { type: 'user' } }],
    });
    assert.deepEqual(
      decisions.map((d) => d.decision),
      [true, false],
    );
    assert.equal(decisions[1].error?.status, 400);
    assert.equal(typeof decisions[1].error?.code, 'string');
    assert.equal(client.failures, before);
  });
});

describe('searches (real server)', () => {
  const kinds = { subject: 'searchSubjects', resource: 'searchResources', action: 'searchActions' };
  for (const c of cases.searches) {
    test(c.name, async () => {
      const results = client[kinds[c.kind]](c.request);
      const found = [];
      for await (const result of results) found.push(result);
      assert.deepEqual(found, c.results);
      assert.equal(results.pagesRead, 1);
      assert.equal(results.total, c.results.length);
    });

    test(`${c.name}, one result per page`, async () => {
      const results = client[kinds[c.kind]](c.request, { pageSize: 1 });
      assert.deepEqual(await results.toArray(), c.results);
      assert.equal(results.pagesRead, c.results.length);
      const pages = [];
      for await (const page of results.pages()) pages.push(page);
      assert.equal(pages.length, c.results.length);
      assert.ok(pages.every((p) => p.results.length === 1));
      assert.equal(pages.at(-1).nextToken, '');
      assert.ok(pages.slice(0, -1).every((p) => p.nextToken !== ''));
    });
  }

  test('an action search exposes what it skipped for lack of context', async () => {
    const c = cases.searches.find((s) => s.kind === 'action');
    const paged = client.searchActions(c.request, { pageSize: 1 });
    assert.deepEqual(paged.skipped, []);
    const names = (await paged.toArray()).map((a) => a.name);
    assert.ok(paged.skipped.length > 0, 'the demo pack has actions this context cannot decide');
    for (const s of paged.skipped) {
      assert.equal(typeof s.name, 'string');
      assert.ok(s.reason.length > 0);
      assert.ok(!names.includes(s.name));
    }
    assert.equal(new Set(paged.skipped.map((s) => s.name)).size, paged.skipped.length, 'each skipped action once');
    const whole = client.searchActions(c.request);
    await whole.toArray();
    assert.deepEqual(
      whole.skipped.map((s) => s.name).sort(),
      paged.skipped.map((s) => s.name).sort(),
    );
    // Without the context, more actions are skipped.
    const { context: _context, ...bare } = c.request;
    const noContext = client.searchActions(bare);
    await noContext.toArray();
    assert.ok(noContext.skipped.length > paged.skipped.length);
    assert.ok(noContext.skipped.some((s) => s.name === 'place_order'));
  });

  test('a search can be iterated again, and stopped early', async () => {
    const c = cases.searches.find((s) => s.kind === 'subject');
    const results = client.searchSubjects(c.request, { pageSize: 2 });
    for await (const first of results) {
      assert.deepEqual(first, c.results[0]);
      break;
    }
    assert.deepEqual(await results.toArray(), c.results);
  });
});

describe('bad requests (real server)', () => {
  for (const c of cases.bad_requests) {
    test(c.name, async () => {
      const before = client.failures;
      const seen = hooked.length;
      const error = await client.evaluate(...args(c.request)).then(
        () => assert.fail('evaluate resolved'),
        (e) => e,
      );
      assert.ok(error instanceof ServerError, String(error));
      assert.equal(error.kind, 'server');
      assert.equal(error.status, c.status);
      assert.equal(error.code, c.code);
      assert.equal(error.field, c.field);
      assert.ok(error.message.length > 0);
      assert.equal(error.attempts, 1);
      assert.equal(client.failures, before + 1);
      assert.equal(hooked[seen], error);
      assert.equal(await client.allowed(...args(c.request)), false);
      assert.equal(client.failures, before + 2);
    });
  }
});
