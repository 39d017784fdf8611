// Runs a WebAssembly (WASI preview 1) program under Node: `node wasi-runner.mjs PROGRAM.wasm ARGS...`.
// Cargo uses it as the runner for wasm32-wasip1 test binaries.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';

const [, , program, ...args] = process.argv;
const wasi = new WASI({
  version: 'preview1',
  args: [program, ...args],
  env: process.env,
  preopens: { '/': '/' },
  returnOnExit: true,
});
const module = await WebAssembly.compile(await readFile(program));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
process.exitCode = wasi.start(instance);
