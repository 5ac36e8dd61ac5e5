// The package itself: both builds through package.json's exports, no
// runtime dependency, one error hierarchy, the version.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describe, test } from 'node:test';

import * as esm from 'mandate-client';

import { ALLOW, FAULT_REQUEST, args, json, packageDir, startStub } from './helpers.mjs';

const require = createRequire(import.meta.url);
const cjs = require('mandate-client');
const pkg = JSON.parse(readFileSync(join(packageDir, 'package.json'), 'utf8'));

describe('the package', () => {
  test('no runtime dependencies', () => {
    assert.equal(pkg.dependencies, undefined);
    assert.equal(pkg.peerDependencies, undefined);
    assert.equal(pkg.optionalDependencies, undefined);
  });

  test('exports: import, require and types for each', () => {
    const root = pkg.exports['.'];
    assert.equal(root.import.types, './dist/esm/index.d.ts');
    assert.equal(root.import.default, './dist/esm/index.js');
    assert.equal(root.require.types, './dist/cjs/index.d.ts');
    assert.equal(root.require.default, './dist/cjs/index.js');
    assert.equal(require.resolve('mandate-client'), join(packageDir, 'dist', 'cjs', 'index.js'));
    assert.ok(pkg.engines.node.includes('20'));
    assert.equal(pkg.name, 'mandate-client');
  });

  test('the ESM and CommonJS builds export the same names', () => {
    const names = (m) => Object.keys(m).filter((k) => k !== 'default' && k !== '__esModule').sort();
    assert.deepEqual(names(esm), names(cjs));
    for (const name of ['MandateClient', 'MandateError', 'TransportError', 'TimeoutError', 'ProtocolError', 'ServerError', 'expressMiddleware', 'fastifyHook', 'fastifyPreHandler', 'SearchResults', 'ActionSearchResults']) {
      assert.equal(typeof esm[name], 'function', name);
    }
  });

  test('the version is package.json\'s', () => {
    assert.equal(esm.VERSION, pkg.version);
    assert.equal(cjs.VERSION, pkg.version);
  });

  test('the four errors share one base class, and say their kind', () => {
    const { MandateError, TransportError, TimeoutError, ProtocolError, ServerError, isMandateError } = esm;
    const errors = [
      new TransportError('t', { code: 'ECONNREFUSED', refused: true }),
      new TimeoutError('t', { phase: 'deadline', timeoutMs: 500 }),
      new ProtocolError('p'),
      new ServerError('s', { status: 500, code: 'internal' }),
    ];
    assert.deepEqual(
      errors.map((e) => e.kind),
      ['transport', 'timeout', 'protocol', 'server'],
    );
    assert.deepEqual(
      errors.map((e) => e.name),
      ['TransportError', 'TimeoutError', 'ProtocolError', 'ServerError'],
    );
    for (const e of errors) {
      assert.ok(e instanceof MandateError);
      assert.ok(e instanceof Error);
      assert.ok(isMandateError(e));
      assert.ok(cjs.isMandateError(e), 'recognised across builds');
    }
    assert.equal(isMandateError(new Error('x')), false);
  });

  test('the CommonJS build works the same', async () => {
    const stub = await startStub((_req, res) => json(res, 200, ALLOW));
    const client = new cjs.MandateClient({ url: stub.url });
    try {
      assert.equal(await client.allowed(...args(FAULT_REQUEST)), true);
      const closed = new cjs.MandateClient({ url: 'http://127.0.0.1:9' });
      const error = await closed.evaluate(...args(FAULT_REQUEST)).catch((e) => e);
      assert.ok(error instanceof cjs.TransportError);
      assert.equal(error.attempts, 2);
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('Retry-After: seconds or an HTTP date', () => {
    assert.equal(esm.parseRetryAfter('0'), 0);
    assert.equal(esm.parseRetryAfter('5'), 5000);
    assert.equal(esm.parseRetryAfter(undefined), undefined);
    assert.equal(esm.parseRetryAfter('soon'), undefined);
    assert.equal(esm.parseRetryAfter('-1'), undefined);
    const inTwo = esm.parseRetryAfter(new Date(Date.now() + 2000).toUTCString());
    assert.ok(inTwo > 500 && inTwo <= 2000, String(inTwo));
    assert.equal(esm.parseRetryAfter(new Date(Date.now() - 2000).toUTCString()), 0);
  });

  test('the defaults are the contract\'s', () => {
    assert.equal(esm.DEFAULT_TIMEOUT_MS, 500);
    assert.equal(esm.DEFAULT_CONNECT_TIMEOUT_MS, 100);
    assert.equal(esm.DEFAULT_MAX_BATCH_ITEMS, 1000);
    const client = new esm.MandateClient({ url: 'http://127.0.0.1:9' });
    assert.equal(client.timeoutMs, 500);
    assert.equal(client.connectTimeoutMs, 100);
    assert.equal(client.maxBatchItems, 1000);
    assert.equal(client.failures, 0);
  });
});
