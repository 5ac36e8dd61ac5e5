// Builds dist/esm (ES modules) and dist/cjs (CommonJS), each with its .d.ts,
// with the TypeScript compiler found from this package (its devDependencies,
// or a node_modules above it when installed with `npm install ./clients/typescript`).
import { spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(join(root, 'package.json'));

let tsc;
try {
  tsc = require.resolve('typescript/bin/tsc');
} catch {
  console.error('mandate-client: the TypeScript compiler is missing; run `npm install` (or `npm ci`) in clients/typescript first');
  process.exit(1);
}

rmSync(join(root, 'dist'), { recursive: true, force: true });
for (const [config, type] of [['tsconfig.esm.json', 'module'], ['tsconfig.cjs.json', 'commonjs']]) {
  const run = spawnSync(process.execPath, [tsc, '-p', join(root, config)], { stdio: 'inherit', cwd: root });
  if (run.status !== 0) {
    console.error(`mandate-client: tsc -p ${config} failed`);
    process.exit(run.status ?? 1);
  }
  const out = join(root, 'dist', type === 'module' ? 'esm' : 'cjs');
  writeFileSync(join(out, 'package.json'), JSON.stringify({ type }) + '\n');
}
