#!/usr/bin/env node
// The SDK's overhead per call, against a real `mandate serve`:
//  - p50/p99 of client.evaluate against a raw node:http request of the same
//    body over the same keep-alive agent (the raw one parses the JSON too);
//  - throughput of evaluations() with 1000 items, chunked by 100.
// Prints a markdown table.
//
//   node bench.mjs                     # starts target/debug/mandate (or MANDATE_BIN) on a free port
//   node bench.mjs --url http://127.0.0.1:8180   # an already running server
//   N=5000 node bench.mjs
import * as http from 'node:http';
import { randomUUID } from 'node:crypto';
import { cpus } from 'node:os';

import { MandateClient, VERSION } from 'mandate-client';

import { cases, mandateBin, startMandate } from './test/helpers.mjs';

const N = Number(process.env.N ?? 2000);
const WARMUP = 200;
const BATCH_ITEMS = 1000;
const CHUNK = 100;
const BATCH_ROUNDS = Number(process.env.BATCH_ROUNDS ?? 20);

const urlFlag = process.argv.indexOf('--url');
const givenUrl = urlFlag > 0 ? process.argv[urlFlag + 1] : undefined;
const server = givenUrl ? undefined : await startMandate();
const url = givenUrl ?? server.url;

// A generous deadline: this measures speed, not the fail-closed path (a
// debug build of the server is slower than a release one).
const client = new MandateClient({ url, timeoutMs: 10_000, maxBatchItems: CHUNK });
const request = cases.decisions[0].request;
const body = JSON.stringify({ subject: request.subject, action: request.action, resource: request.resource, context: request.context });
const target = new URL('/access/v1/evaluation', url);

function raw() {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        agent: client.agent,
        hostname: target.hostname,
        port: target.port,
        path: target.pathname,
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-request-id': randomUUID() },
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const answer = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          if (res.statusCode !== 200 || answer.decision !== true) reject(new Error(`unexpected answer ${res.statusCode}`));
          else resolve(answer);
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

async function sdk() {
  const decision = await client.evaluate(request.subject, request.action, request.resource, request.context);
  if (decision.decision !== true) throw new Error('unexpected deny');
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];

async function measure(fn, n) {
  const times = new Float64Array(n);
  for (let i = 0; i < n; i += 1) {
    const start = performance.now();
    await fn();
    times[i] = performance.now() - start;
  }
  return times;
}

try {
  for (let i = 0; i < WARMUP; i += 1) {
    await sdk();
    await raw();
  }
  // Alternate blocks of 100 so that drift (another process, the GC) hits both alike.
  const sdkTimes = [];
  const rawTimes = [];
  for (let done = 0; done < N; done += 100) {
    const n = Math.min(100, N - done);
    sdkTimes.push(...(await measure(sdk, n)));
    rawTimes.push(...(await measure(raw, n)));
  }
  sdkTimes.sort((a, b) => a - b);
  rawTimes.sort((a, b) => a - b);

  const items = Array.from({ length: BATCH_ITEMS }, (_, i) => ({ action: { name: i % 3 === 0 ? 'cancel_order' : 'view_account' } }));
  const batch = { subject: { type: 'user', id: 'bob' }, resource: { type: 'account', id: 'alice-personal' }, evaluations: items };
  await client.evaluations(batch);
  const batchTimes = [];
  for (let i = 0; i < BATCH_ROUNDS; i += 1) {
    const start = performance.now();
    const decisions = await client.evaluations(batch);
    batchTimes.push(performance.now() - start);
    if (decisions.length !== BATCH_ITEMS) throw new Error('short batch');
  }
  batchTimes.sort((a, b) => a - b);
  const batchP50 = percentile(batchTimes, 50);

  const us = (ms) => `${(ms * 1000).toFixed(0)} µs`;
  const p50s = percentile(sdkTimes, 50);
  const p50r = percentile(rawTimes, 50);
  const p99s = percentile(sdkTimes, 99);
  const p99r = percentile(rawTimes, 99);
  console.log(`mandate-client ${VERSION} on Node ${process.version}, ${cpus().length} cores; server ${givenUrl ? url : mandateBin}; N=${N} sequential calls (after ${WARMUP} warm-up), keep-alive\n`);
  console.log('| measure | client.evaluate | raw node:http (same agent, same body) | SDK overhead |');
  console.log('|---|---:|---:|---:|');
  console.log(`| p50 latency | ${us(p50s)} | ${us(p50r)} | ${us(p50s - p50r)} |`);
  console.log(`| p99 latency | ${us(p99s)} | ${us(p99r)} | ${us(p99s - p99r)} |`);
  console.log(`| throughput (1 in flight) | ${(1000 / p50s).toFixed(0)} calls/s | ${(1000 / p50r).toFixed(0)} calls/s | |`);
  console.log('');
  console.log(`| evaluations, ${BATCH_ITEMS} items chunked by ${CHUNK} (${BATCH_ITEMS / CHUNK} requests), ${BATCH_ROUNDS} rounds | value |`);
  console.log('|---|---:|');
  console.log(`| p50 per call | ${batchP50.toFixed(1)} ms |`);
  console.log(`| max per call | ${batchTimes.at(-1).toFixed(1)} ms |`);
  console.log(`| throughput | ${((BATCH_ITEMS / batchP50) * 1000).toFixed(0)} decisions/s |`);
} finally {
  client.close();
  await server?.stop();
}
