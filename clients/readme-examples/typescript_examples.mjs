// Runs the examples of clients/typescript/README.md against a real Mandate
// and checks the answers the README writes beside them.
//
// The code is read from the README's ```ts blocks, never copied: what runs
// is what a reader sees. A one-line statement followed by a comment that
// starts with a literal (`d.reasons; // ['G2']: …`, `const allowed = …; //
// [{name: 'cancel_order'}, …]`) is checked: the expression, or the constant
// declared, must deep-equal that literal. A block may need names the README
// leaves to the reader (`withdraw`, `items`, an Express `app`); the preludes
// below give them, and the checks after a block say what must have happened.
//
// Usage: node typescript_examples.mjs README.md CASES.json DIR
// DIR is where `mandate-client` is installed (node_modules/mandate-client):
// the examples are written there, as a module, and run (MANDATE_URL set).
// Prints one `ok`/`not ok` line per check and `typescript: N passed, M failed`.
import { spawnSync } from 'node:child_process';
import { readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

const [readmePath, casesPath, dir] = process.argv.slice(2);
const readme = readFileSync(readmePath, 'utf8');
const cases = JSON.parse(readFileSync(casesPath, 'utf8'));

/** The README's ```ts blocks: {heading, line (of the first code line), code}. */
function blocks(text) {
  const found = [];
  const lines = text.split('\n');
  let heading = '';
  for (let i = 0; i < lines.length; i += 1) {
    if (/^#+ /.test(lines[i])) heading = lines[i].replace(/^#+ /, '').trim();
    if (lines[i].trim() === '```ts') {
      let j = i + 1;
      while (lines[j].trim() !== '```') j += 1;
      found.push({ heading, line: i + 2, code: lines.slice(i + 1, j) });
      i = j;
    }
  }
  return found;
}

/** The longest start of a comment that is a JSON-like literal (single quotes and bare keys allowed). */
function literalPrefix(comment) {
  const text = comment.trim();
  for (let end = text.length; end > 0; end -= 1) {
    const candidate = text.slice(0, end).trim();
    if (!/[\]}'"\w]$/.test(candidate)) continue; // a literal ends with a bracket, a quote or a word
    const json = candidate
      .replace(/'((?:[^'\\]|\\.)*)'/g, (_, inner) => JSON.stringify(inner))
      .replace(/([{,]\s*)([A-Za-z_$][\w$]*)\s*:/g, '$1"$2":');
    try {
      return { ok: true, value: JSON.parse(json) };
    } catch {
      // a shorter start, then
    }
  }
  return { ok: false };
}

/** The bracket depth a line changes by, strings skipped (enough for README code). */
function depthChange(line) {
  let depth = 0;
  let quote = null;
  for (let i = 0; i < line.length; i += 1) {
    const c = line[i];
    if (quote) {
      if (c === '\\') i += 1;
      else if (c === quote) quote = null;
    } else if (c === "'" || c === '"' || c === '`') quote = c;
    else if (c === '/' && line[i + 1] === '/') break;
    else if ('([{'.includes(c)) depth += 1;
    else if (')]}'.includes(c)) depth -= 1;
  }
  return depth;
}

/** A block's code with its imports taken out and its answered lines turned into checks. */
function instrument(block, imports) {
  const out = [];
  let depth = 0;
  block.code.forEach((line, index) => {
    const readmeLine = block.line + index;
    if (/^import .* from '[^']+';$/.test(line.trim())) {
      imports.add(line.trim());
      return;
    }
    const change = depthChange(line);
    const answered = depth === 0 && change === 0 ? /^(\s*)(.*?;)\s+\/\/\s?(.*)$/.exec(line) : null;
    depth += change;
    if (!answered) {
      out.push(line);
      return;
    }
    const [, indent, statement, comment] = answered;
    const literal = literalPrefix(comment);
    if (!literal.ok && /\(/.test(statement)) {
      out.push(line); // `app.post(…); // res.locals.mandate holds the decision`: nothing to show
      return;
    }
    const declared = /^(?:const|let|var)\s+([A-Za-z_$][\w$]*)\s*=/.exec(statement);
    const source = declared ? declared[1] : statement.replace(/;$/, '');
    const what = JSON.stringify(`README line ${readmeLine}: ${source}`);
    const call = literal.ok
      ? `__check(${declared ? source : `(${source})`}, ${JSON.stringify(literal.value)}, ${what});`
      : `__show(${declared ? source : `(${source})`}, ${what}, ${JSON.stringify(comment)});`;
    if (declared) out.push(line, indent + call);
    else out.push(indent + call);
  });
  return out.join('\n');
}

const packageJson = JSON.stringify(join(dirname(realpathSync(join(dir, 'node_modules', 'mandate-client', 'package.json'))), 'package.json'));
const who = cases.searches.find((s) => s.kind === 'subject');
const batch = cases.batches[0];
const stopping = cases.batches.find((b) => b.request.options?.evaluations_semantic === 'deny_on_first_deny');
const itemsOf = (request) => request.evaluations.map((item) => ({ subject: request.subject, resource: request.resource, ...item }));

// Each block, by its heading: what it needs first, and what must hold after it.
const plan = [
  {
    heading: /^In application code$/,
    prelude: `
      const log = { warn: (fields, message) => console.log('# log.warn:', message, fields.err.kind) };
      let withdrawn = 0;
      const withdraw = async () => { withdrawn += 1; };`,
    after: `
      __check(withdrawn, 1, 'In application code: erin withdrew (allowed is true)');
      __check(mandate.failures, 0, 'In application code: no failure');
      mandate.close();`,
  },
  {
    heading: /^`evaluate\(/,
    prelude: 'const mandate = new MandateClient();',
    after: 'mandate.close();',
  },
  {
    heading: /^`evaluations\(/,
    prelude: `
      const mandate = new MandateClient();
      const items = ${JSON.stringify(itemsOf(stopping.request))};`,
    after: `
      __check([view.decision, cancel.decision], ${JSON.stringify(batch.decisions)}, 'evaluations: bob views, and may not cancel');
      __check((await mandate.evaluations(items, 'deny_on_first_deny')).map((d) => d.decision), ${JSON.stringify(stopping.decisions)}, 'evaluations: deny_on_first_deny stops at the deny');
      mandate.close();`,
  },
  {
    heading: /^Search/,
    prelude: `
      const mandate = new MandateClient();
      const __printed = [];
      console.log = (...args) => { __printed.push(args.join(' ')); };`,
    after: `
      console.log = __log;
      __check(__printed, ${JSON.stringify(who.results.map((r) => r.id))}, 'Search: the users printed, page after page');
      mandate.close();`,
  },
  {
    heading: /^Express and Fastify$/,
    prelude: `
      const __require = createRequire(${packageJson});
      const express = __require('express');
      const Fastify = __require('fastify');
      const mandate = new MandateClient();
      const app = express();
      app.use(express.json());
      app.use((req, _res, next) => { req.user = { id: req.get('x-user') }; next(); }); // the app's authentication
      const fastify = Fastify();
      const resolve = (request) => ({
        subject: { type: 'user', id: request.headers['x-user'] },
        action: 'withdraw',
        resource: { type: 'account', id: request.params.id },
        context: { amount: request.body.amount, destination: { type: 'Brokerage::Destination', id: request.body.to } },
      });
      let __handled = 0;
      function handler(req, res) {
        __handled += 1;
        if (res.locals) { res.json({ summary: res.locals.mandate.summary }); return undefined; }
        return res.send({ handled: true });
      }`,
    after: `
      const __server = await new Promise((ok) => { const s = app.listen(0, '127.0.0.1', () => ok(s)); });
      const __fastify = await fastify.listen({ port: 0, host: '127.0.0.1' });
      try {
        for (const [name, base, allowedBody] of [
          ['Express', 'http://127.0.0.1:' + __server.address().port, { summary: 'allowed by S3, S4' }],
          ['Fastify', __fastify, { handled: true }],
        ]) {
          const before = __handled;
          const post = async (user, to) => {
            const res = await fetch(base + '/accounts/alice-personal/withdraw', {
              method: 'POST',
              headers: { 'content-type': 'application/json', 'x-user': user },
              body: JSON.stringify({ amount: '500.00', to }),
            });
            return { status: res.status, body: await res.json() };
          };
          __check(await post('erin', 'alice-bank'), { status: 200, body: allowedBody }, name + ': erin withdraws to alice-bank: the handler runs');
          __check(await post('erin', 'mallory-wallet'), { status: 403, body: { error: { code: 'forbidden', message: 'Forbidden' } } }, name + ': to mallory-wallet: 403');
          __check(__handled - before, 1, name + ': the handler ran once');
        }
      } finally {
        __server.closeAllConnections();
        await new Promise((ok) => __server.close(ok));
        await fastify.close();
        mandate.close();
      }`,
  },
];

const found = blocks(readme);
const imports = new Set();
const parts = [];
found.forEach((block, index) => {
  const step = plan[index];
  const matches = step !== undefined && step.heading.test(block.heading);
  parts.push(`__report(${matches}, ${JSON.stringify(`the README's ts block ${index + 1} is the one this script knows (${block.heading})`)});`);
  if (!matches) return;
  parts.push(`
await (async () => {
  const __log = console.log;
  try {
    ${step.prelude}
    // README line ${block.line}
${instrument(block, imports)}
    ${step.after}
    __report(true, ${JSON.stringify(`the example '${block.heading}' runs`)});
  } catch (error) {
    __report(false, ${JSON.stringify(`the example '${block.heading}' runs`)}, error?.stack ?? String(error));
  } finally {
    console.log = __log;
  }
})();`);
});
parts.unshift(`__report(${found.length === plan.length}, 'the README has ${plan.length} ts blocks (it has ${found.length})');`);

const module = `// Generated by clients/readme-examples/typescript_examples.mjs from ${readmePath}.
import { isDeepStrictEqual } from 'node:util';
import { createRequire } from 'node:module';
${[...imports].join('\n')}

let __passed = 0;
let __failed = 0;
function __report(ok, what, detail) {
  if (ok) __passed += 1;
  else __failed += 1;
  process.stdout.write((ok ? 'ok - ' : 'not ok - ') + what + (!ok && detail ? '\\n    ' + String(detail).replace(/\\n/g, '\\n    ') : '') + '\\n');
}
function __check(actual, expected, what) {
  __report(isDeepStrictEqual(actual, expected), what + ' == ' + JSON.stringify(expected), "the server's answer is " + JSON.stringify(actual));
}
function __show(value, what, comment) {
  process.stdout.write('# ' + what + ' = ' + JSON.stringify(value) + '  (' + comment + ')\\n');
}
${parts.join('\n')}
process.stdout.write('typescript: ' + __passed + ' passed, ' + __failed + ' failed\\n');
process.exitCode = __failed > 0 || __passed === 0 ? 1 : 0;
`;

const file = join(dir, 'readme-examples.mjs');
writeFileSync(file, module);
const run = spawnSync(process.execPath, [file], { stdio: 'inherit', cwd: dir });
process.exit(run.status ?? 1);
