// Builds the package into dist/:
//   dist/index.js              src/index.ts bundled (ESM, browser, es2022)
//   dist/worker.js             src/engine/worker.ts bundled with the wasm-bindgen glue (ESM)
//   dist/engine_wasm_bg.wasm   the engine, next to worker.js (the glue finds it with
//                              `new URL('engine_wasm_bg.wasm', import.meta.url)`)
//   dist/engine_wasm_relaxed_bg.wasm
//                              the same engine built with relaxed SIMD, which the worker loads
//                              instead where the browser has it (same glue)
//   dist/engine_wasm_threads_bg.wasm
//                              the engine with relaxed SIMD and CPU threads (shared memory), for
//                              cross-origin isolated pages; its own glue, in worker.js and
//   dist/thread.js             src/engine/thread.ts bundled with that glue: one CPU worker
//   dist/*.d.ts                declarations (tsc --emitDeclarationOnly)
// The wasm comes from `cargo xtask build-wasm` (npm/wasm/).

import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, 'dist');
const wasmDir = join(root, 'wasm');
const wasm = join(wasmDir, 'engine_wasm_bg.wasm');
const wasmRelaxed = join(wasmDir, 'engine_wasm_relaxed_bg.wasm');
const wasmThreads = join(wasmDir, 'engine_wasm_threads_bg.wasm');
const glue = join(wasmDir, 'engine_wasm.js');
const glueThreads = join(wasmDir, 'threads', 'engine_wasm.js');
const workerEntry = join(root, 'src', 'engine', 'worker.ts');
const threadEntry = join(root, 'src', 'engine', 'thread.ts');

function fail(message) {
  console.error(`\nbuild.mjs: ${message}\n`);
  process.exit(1);
}

for (const [file, what] of [
  [wasm, 'the engine wasm'],
  [wasmRelaxed, 'the engine wasm built with relaxed SIMD'],
  [glue, 'the wasm-bindgen glue'],
  [wasmThreads, 'the threaded engine wasm'],
  [glueThreads, "the threaded engine's wasm-bindgen glue"],
]) {
  if (!existsSync(file)) {
    fail(
      `${what} is missing: ${relative(root, file)}.\n` +
        `Build it first, from the repository root:\n\n    cargo xtask build-wasm\n\n` +
        `(it writes npm/wasm/engine_wasm.js and npm/wasm/engine_wasm_bg.wasm), then run npm run build again.`,
    );
  }
}
if (!existsSync(workerEntry)) fail(`the worker entry ${relative(root, workerEntry)} is missing.`);

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });

const common = {
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  sourcemap: true,
  minify: false,
  legalComments: 'inline',
  logLevel: 'warning',
};

await esbuild.build({
  ...common,
  entryPoints: [join(root, 'src', 'index.ts')],
  outfile: join(dist, 'index.js'),
  // The worker is a separate file: `new URL('./worker.js', import.meta.url)` must stay as written
  // so that the app's bundler (or the browser) finds dist/worker.js next to dist/index.js.
  external: ['./worker.js'],
});

await esbuild.build({
  ...common,
  entryPoints: [workerEntry],
  outfile: join(dist, 'worker.js'),
  // The glue's `new URL('engine_wasm_bg.wasm', import.meta.url)` stays as written too, and the
  // file is copied next to worker.js below.
  external: ['*.wasm'],
});

await esbuild.build({
  ...common,
  entryPoints: [threadEntry],
  outfile: join(dist, 'thread.js'),
  external: ['*.wasm'],
});

copyFileSync(wasm, join(dist, 'engine_wasm_bg.wasm'));
copyFileSync(wasmRelaxed, join(dist, 'engine_wasm_relaxed_bg.wasm'));
copyFileSync(wasmThreads, join(dist, 'engine_wasm_threads_bg.wasm'));

// Declarations.
const tsc = spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'tsconfig.build.json')], {
  stdio: 'inherit',
});
if (tsc.status !== 0) fail('tsc --emitDeclarationOnly failed.');

// Check what the bundlers of the apps depend on.
const index = readFileSync(join(dist, 'index.js'), 'utf8');
if (!/new\s+Worker\(\s*new\s+URL\(\s*["']\.\/worker\.js["']\s*,\s*import\.meta\.url\s*\)/.test(index)) {
  fail("dist/index.js does not contain `new Worker(new URL('./worker.js', import.meta.url), ...)` as written.");
}
if (index.includes('engine_wasm_bg.wasm')) {
  fail('dist/index.js contains the wasm glue: only dist/worker.js may import it.');
}
const worker = readFileSync(join(dist, 'worker.js'), 'utf8');
if (!/new\s+URL\(\s*["']engine_wasm_bg\.wasm["']\s*,\s*import\.meta\.url\s*\)/.test(worker)) {
  fail("dist/worker.js does not contain the glue's `new URL('engine_wasm_bg.wasm', import.meta.url)`.");
}
if (!/new\s+URL\(\s*["']engine_wasm_relaxed_bg\.wasm["']\s*,\s*import\.meta\.url\s*\)/.test(worker)) {
  fail("dist/worker.js does not contain `new URL('engine_wasm_relaxed_bg.wasm', import.meta.url)` as written.");
}
if (!/new\s+URL\(\s*["']engine_wasm_threads_bg\.wasm["']\s*,\s*import\.meta\.url\s*\)/.test(worker)) {
  fail("dist/worker.js does not contain `new URL('engine_wasm_threads_bg.wasm', import.meta.url)` as written.");
}
if (!/new\s+Worker\(\s*new\s+URL\(\s*["']\.\/thread\.js["']\s*,\s*import\.meta\.url\s*\)/.test(worker)) {
  fail("dist/worker.js does not contain `new Worker(new URL('./thread.js', import.meta.url), ...)` as written.");
}
if (!existsSync(join(dist, 'index.d.ts'))) fail('dist/index.d.ts was not emitted.');

const size = (f) => `${(statSync(join(dist, f)).size / 1024).toFixed(1)} KiB`;
console.log(
  `built dist/: index.js ${size('index.js')}, worker.js ${size('worker.js')}, engine_wasm_bg.wasm ${size('engine_wasm_bg.wasm')}, ` +
    `engine_wasm_relaxed_bg.wasm ${size('engine_wasm_relaxed_bg.wasm')}, thread.js ${size('thread.js')}, ` +
    `engine_wasm_threads_bg.wasm ${size('engine_wasm_threads_bg.wasm')}, index.d.ts`,
);
