// The engine's module Web Worker: downloads (or reads from OPFS) and verifies the model,
// builds the engine on WebGPU or the WASM-SIMD CPU backend, and runs one request at a time, one
// forward pass per turn of the worker's event loop, so an abort takes effect within one step.

import * as single from '../../wasm/engine_wasm.js';
import * as threaded from '../../wasm/threads/engine_wasm.js';
import { FileWriter, cachedFile, forget, isQuotaError } from './cache.js';
import { CPU_MAX_THREADS } from '../route.js';
import { navigatorGpu } from './gpu.js';
import type { EngineInfo, FromWorker, LoadMessage, ToWorker } from './protocol.js';
import type { EngineFailureKind, EnginePath, EngineRequest, LoadProgress, WasmSimd } from './types.js';

/** A failure with its kind, on its way to the page. */
class Failure extends Error {
  constructor(
    readonly kind: EngineFailureKind,
    message: string,
  ) {
    super(message);
  }
}

const KINDS: EngineFailureKind[] = [
  'no_adapter',
  'out_of_memory',
  'device_lost',
  'integrity',
  'unsupported',
  'invalid_request',
  'internal',
];

/** The kind of anything thrown: engine-wasm names its errors by kind. */
function kindOf(e: unknown): EngineFailureKind {
  if (e instanceof Failure) return e.kind;
  const name = (e as { name?: string } | null)?.name ?? '';
  if ((KINDS as string[]).includes(name)) return name as EngineFailureKind;
  if (e instanceof WebAssembly.RuntimeError || name === 'RangeError') {
    return /memory|allocat/i.test(String((e as Error).message)) ? 'out_of_memory' : 'internal';
  }
  return 'internal';
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

const post = (m: FromWorker) => (self as unknown as Worker).postMessage(m);

type ModelBuffer = single.ModelBuffer;

/**
 * The build this worker runs: a single-threaded one (baseline or relaxed SIMD, which share their
 * glue) or the threaded one. Their engine APIs are the same; the threaded glue adds the thread
 * entry points.
 */
let glue: typeof single = single;
let engine: single.WasmEngine | null = null;
/** Set when the engine failed in a way that leaves it unusable. */
let broken: string | null = null;
/** The request being generated, if any. */
let running: { id: number; aborted: boolean } | null = null;

/** Lets the worker handle its messages (an abort) without the 4 ms clamp of nested timers. */
const channel = new MessageChannel();
const waiting: Array<() => void> = [];
channel.port1.onmessage = () => waiting.shift()?.();
function yieldToEvents(): Promise<void> {
  return new Promise((resolve) => {
    waiting.push(resolve);
    channel.port2.postMessage(0);
  });
}

/** Streams `body` into a new ModelBuffer, reporting progress and passing each chunk to `onChunk`. */
async function readInto(
  body: ReadableStream<Uint8Array>,
  url: string,
  total: number,
  fromCache: boolean,
  onChunk?: (chunk: Uint8Array) => void,
): Promise<ModelBuffer> {
  const buffer = new glue.ModelBuffer(total);
  const reader = body.getReader();
  let loaded = 0;
  let lastReport = 0;
  const start = performance.now();
  const report = (force: boolean) => {
    const now = performance.now();
    if (!force && now - lastReport < 100) return;
    lastReport = now;
    const seconds = (now - start) / 1000;
    const progress: LoadProgress = {
      url,
      loaded,
      total,
      bytesPerSecond: seconds > 0 ? loaded / seconds : 0,
      fromCache,
      phase: 'download',
    };
    post({ type: 'progress', progress });
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer.push(value);
      onChunk?.(value);
      loaded += value.byteLength;
      report(false);
    }
  } catch (e) {
    buffer.free();
    await reader.cancel().catch(() => undefined);
    if (e instanceof Failure || (e instanceof Error && (KINDS as string[]).includes(e.name))) throw e;
    throw new Failure(fromCache ? 'internal' : 'network', `reading ${url}: ${messageOf(e)}`);
  }
  report(true);
  return buffer;
}

/** The model's bytes from the cache when intact, else from the network (caching them). */
async function fetchModel(msg: LoadMessage): Promise<ModelBuffer> {
  const want = msg.sha256.toLowerCase();
  const verify = (fromCache: boolean) =>
    post({
      type: 'progress',
      progress: { url: msg.url, loaded: msg.bytes, total: msg.bytes, bytesPerSecond: 0, fromCache, phase: 'verify' },
    });
  const file = await cachedFile(msg.url, want);
  if (file) {
    try {
      const buffer = await readInto(file.stream(), msg.url, msg.bytes, true);
      verify(true);
      if (!want || buffer.sha256() === want) return buffer;
      buffer.free();
    } catch (e) {
      if (kindOf(e) === 'out_of_memory') throw e;
      console.warn(`tandem: cannot read the cached ${msg.url} (${messageOf(e)}); downloading it again`);
    }
    // A damaged or unreadable copy: forget it and download again.
    await forget(msg.url);
  }
  let response: Response;
  try {
    response = await fetch(msg.url);
  } catch (e) {
    throw new Failure('network', `downloading ${msg.url}: ${messageOf(e)}`);
  }
  if (!response.ok || !response.body) {
    throw new Failure('network', `downloading ${msg.url}: HTTP ${response.status}`);
  }
  const total = Number(response.headers.get('content-length')) || msg.bytes;
  const writer = await FileWriter.open(msg.url);
  let storing = writer !== null;
  const store = (chunk: Uint8Array) => {
    if (!storing || !writer) return;
    try {
      writer.write(chunk);
    } catch (e) {
      storing = false;
      void writer.discard();
      if (isQuotaError(e)) {
        throw new Failure('quota', `the browser's storage quota cannot hold ${msg.url} (${total} bytes)`);
      }
      // The download goes on: only the copy for the next load is lost.
      console.warn(`tandem: could not cache ${msg.url} (${messageOf(e)}); it will be downloaded again next time`);
    }
  };
  let buffer: ModelBuffer;
  try {
    buffer = await readInto(response.body, msg.url, total, false, store);
  } catch (e) {
    await writer?.discard();
    throw e;
  }
  verify(false);
  if (want && buffer.sha256() !== want) {
    buffer.free();
    await writer?.discard();
    throw new Failure('integrity', `${msg.url} does not have the SHA-256 the server announced`);
  }
  if (writer && storing) {
    try {
      await writer.commit(want);
    } catch (e) {
      console.warn(`tandem: could not cache ${msg.url} (${messageOf(e)}); it will be downloaded again next time`);
      await writer.discard();
    }
  }
  return buffer;
}

/** WebGPU when an adapter exists and the largest tensor fits one buffer; else the CPU. */
async function pickBackend(maxTensorBytes: number): Promise<EnginePath> {
  const gpu = navigatorGpu();
  if (!gpu) return 'cpu';
  try {
    const adapter = await gpu.requestAdapter();
    if (!adapter) return 'cpu';
    if (maxTensorBytes && maxTensorBytes > adapter.limits.maxBufferSize) return 'cpu';
    return 'webgpu';
  } catch {
    return 'cpu';
  }
}

/**
 * A module whose one function is relaxed SIMD's `i32x4.relaxed_dot_i8x16_i7x16_add_s` on three
 * constants: it validates exactly where the browser has the instruction the relaxed build uses.
 */
function relaxedSimdValidates(): boolean {
  const v128 = [0xfd, 0x0c, ...new Array<number>(16).fill(0)];
  const body = [0x00, ...v128, ...v128, ...v128, 0xfd, 0x93, 0x02, 0x0b];
  const module = new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...[0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b], // type: () -> v128
    ...[0x03, 0x02, 0x01, 0x00], // one function of that type
    ...[0x0a, body.length + 2, 0x01, body.length, ...body], // its code
  ]);
  try {
    return WebAssembly.validate(module);
  } catch {
    return false;
  }
}

/** How long the CPU workers may take to start. */
const THREAD_START_MS = 30_000;

/**
 * CPU threads for `msg` on `backend`: more than one needs a cross-origin isolated page (shared
 * memory) and relaxed SIMD (the threaded build has it). Asked for explicitly where either is
 * missing, it is an `unsupported` failure; under auto, one thread.
 */
function cpuThreads(msg: LoadMessage, backend: EnginePath, relaxed: boolean): number {
  if (backend !== 'cpu') return 1;
  const cores = globalThis.navigator?.hardwareConcurrency || 1;
  const wanted = msg.threads > 0 ? msg.threads : Math.min(cores, CPU_MAX_THREADS);
  if (wanted <= 1) return 1;
  const isolated = globalThis.crossOriginIsolated === true && typeof SharedArrayBuffer !== 'undefined';
  const missing = !isolated
    ? 'the page is not cross-origin isolated (serve it with COOP: same-origin and COEP: require-corp)'
    : !relaxed
      ? 'the threaded build needs relaxed SIMD'
      : null;
  if (!missing) return wanted;
  if (msg.threads > 1) throw new Failure('unsupported', `cannot run ${msg.threads} CPU threads: ${missing}`);
  return 1;
}

/**
 * Starts the threaded build's CPU workers for `threads` threads in all (this worker computes
 * too, so `threads - 1` of them) and waits until each runs.
 */
async function startThreads(threads: number): Promise<void> {
  const started: Promise<void>[] = [];
  const workers: Worker[] = [];
  const spawn = (module: WebAssembly.Module, memory: WebAssembly.Memory, thread: number) => {
    // Written out in full so that app bundlers find and emit the file.
    const worker = new Worker(new URL('./thread.js', import.meta.url), { type: 'module', name: 'tandem-cpu' });
    workers.push(worker);
    started.push(
      new Promise<void>((resolve, reject) => {
        worker.onmessage = (ev: MessageEvent<{ ready: boolean; error?: string }>) =>
          ev.data.ready ? resolve() : reject(new Error(ev.data.error));
        worker.onerror = (ev) => reject(new Error(ev.message || 'the CPU worker failed to start'));
      }),
    );
    worker.postMessage({ module, memory, thread });
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the CPU workers did not start in ${THREAD_START_MS} ms`)), THREAD_START_MS);
  });
  try {
    threaded.start_threads(threads, spawn);
    await Promise.race([Promise.all(started), timeout]);
  } catch (e) {
    for (const w of workers) w.terminate();
    throw new Failure('unsupported', `cannot start ${threads} CPU threads: ${messageOf(e)}`);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Instantiates the engine's WebAssembly build for `choice` and `threads` (once per worker): the
 * threaded one for more than one thread, else relaxed or baseline SIMD.
 */
async function initEngine(choice: WasmSimd, relaxed: boolean, threads: number): Promise<void> {
  // Each URL is written out in full so that app bundlers find and emit the file, as they do the
  // glue's own `new URL('engine_wasm_bg.wasm', import.meta.url)`.
  if (threads > 1) {
    await threaded.default({ module_or_path: new URL('engine_wasm_threads_bg.wasm', import.meta.url) });
    // The same engine API as the single-threaded glue's, plus the thread entry points.
    glue = threaded as unknown as typeof single;
    await startThreads(threads);
  } else if (choice === 'relaxed' || (choice === 'auto' && relaxed)) {
    await single.default({ module_or_path: new URL('engine_wasm_relaxed_bg.wasm', import.meta.url) });
  } else {
    await single.default();
  }
}

async function load(msg: LoadMessage): Promise<EngineInfo> {
  const supported = relaxedSimdValidates();
  if (msg.wasmSimd === 'relaxed' && !supported) {
    throw new Failure('unsupported', 'this browser has no relaxed SIMD (asked for wasmSimd: "relaxed")');
  }
  let backend: EnginePath = msg.backend === 'auto' ? await pickBackend(msg.maxTensorBytes) : msg.backend;
  const threads = cpuThreads(msg, backend, supported && msg.wasmSimd !== 'simd128');
  await initEngine(msg.wasmSimd, supported, threads);
  for (;;) {
    const buffer = await fetchModel(msg);
    post({
      type: 'progress',
      progress: { url: msg.url, loaded: msg.bytes, total: msg.bytes, bytesPerSecond: 0, fromCache: true, phase: 'compile' },
    });
    try {
      engine = await glue.WasmEngine.load(buffer, JSON.stringify({ backend, context_size: msg.contextSize }));
      const info = JSON.parse(engine.info()) as EngineInfo;
      info.backend = backend;
      return info;
    } catch (e) {
      const kind = kindOf(e);
      // Under `auto`, a GPU that cannot take the model leaves the CPU.
      if (msg.backend === 'auto' && backend === 'webgpu' && ['no_adapter', 'out_of_memory', 'device_lost'].includes(kind)) {
        backend = 'cpu';
        continue;
      }
      throw e;
    }
  }
}

async function generate(id: number, request: EngineRequest): Promise<void> {
  if (broken) throw new Failure('device_lost', `the engine failed earlier: ${broken}`);
  if (!engine) throw new Failure('internal', 'no model is loaded');
  if (running) throw new Failure('invalid_request', 'the browser engine runs one request at a time');
  const { fail_after_tokens: failAfter, ...params } = request;
  const seed = crypto.getRandomValues(new Uint32Array(1))[0];
  const promptTokens = engine.start(JSON.stringify(params), seed);
  const current = { id, aborted: false };
  running = current;
  const t0 = performance.now();
  let tFirst = 0;
  let tLast = 0;
  let generated = 0;
  let computed = 0;
  let pendingTokens = 0;
  let injected = false;
  try {
    for (;;) {
      if (current.aborted) engine.cancel();
      const out = JSON.parse(await engine.step()) as {
        events: Array<
          | { type: 'token'; id: number; text: string }
          | { type: 'finished'; reason: 'stop' | 'length' | 'cancelled'; text: string; prompt_tokens: number; completion_tokens: number }
          | { type: 'failed'; message: string }
        >;
        prefill_tokens: number;
        done: boolean;
      };
      computed += out.prefill_tokens;
      for (const ev of out.events) {
        if (ev.type === 'token') {
          const now = performance.now();
          if (!tFirst) tFirst = now;
          tLast = now;
          generated += 1;
          pendingTokens += 1;
          if (ev.text && !injected) {
            post({ type: 'delta', id, text: ev.text, tokens: pendingTokens });
            pendingTokens = 0;
          }
          if (failAfter !== undefined && generated >= failAfter && !injected) {
            injected = true;
            engine.cancel();
          }
        } else if (ev.type === 'failed') {
          throw new Failure('internal', ev.message);
        } else if (injected) {
          throw new Failure('injected', `failure injected after ${failAfter} tokens`);
        } else if (ev.reason === 'cancelled') {
          throw new Failure('aborted', 'the request was aborted');
        } else {
          if (ev.text || pendingTokens) post({ type: 'delta', id, text: ev.text, tokens: pendingTokens });
          const ttft = tFirst ? tFirst - t0 : performance.now() - t0;
          post({
            type: 'done',
            id,
            finish_reason: ev.reason,
            usage: {
              prompt_tokens: promptTokens,
              completion_tokens: ev.completion_tokens,
              cached_tokens: Math.max(0, promptTokens - computed),
            },
            timing: {
              ttft_ms: ttft,
              decode_tok_s: generated > 1 && tLast > tFirst ? ((generated - 1) * 1000) / (tLast - tFirst) : null,
              prefill_tok_s: computed > 0 && ttft > 0 ? (computed * 1000) / ttft : null,
            },
          });
        }
      }
      if (out.done) return;
      await yieldToEvents();
    }
  } catch (e) {
    const kind = kindOf(e);
    if (['device_lost', 'out_of_memory', 'internal'].includes(kind) && !(e instanceof Failure)) {
      broken = messageOf(e);
      try {
        engine?.free();
      } catch {
        // Already unusable.
      }
      engine = null;
    }
    throw e;
  } finally {
    running = null;
  }
}

self.onmessage = async (ev: MessageEvent<ToWorker>) => {
  const msg = ev.data;
  switch (msg.type) {
    case 'load':
      try {
        post({ type: 'loaded', info: await load(msg) });
      } catch (e) {
        post({ type: 'load_error', kind: kindOf(e), message: messageOf(e) });
      }
      break;
    case 'generate':
      try {
        await generate(msg.id, msg.request);
      } catch (e) {
        post({ type: 'error', id: msg.id, kind: kindOf(e), message: messageOf(e) });
      }
      break;
    case 'abort':
      if (running?.id === msg.id) running.aborted = true;
      break;
  }
};
