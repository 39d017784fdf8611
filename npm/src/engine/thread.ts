// One CPU worker of the threaded engine build: it instantiates the engine's module on the engine
// worker's shared memory and runs one thread of the engine's CPU pool until that worker ends.

import init, { run_thread } from '../../wasm/threads/engine_wasm.js';

/** What the engine worker sends: the compiled module, its memory, and this thread's handle. */
interface Start {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  thread: number;
}

self.onmessage = async (ev: MessageEvent<Start>) => {
  const { module, memory, thread } = ev.data;
  try {
    await init({ module_or_path: module, memory });
  } catch (e) {
    postMessage({ ready: false, error: String(e) });
    return;
  }
  postMessage({ ready: true });
  // Blocks this worker for good: it now serves the pool.
  run_thread(thread);
};
