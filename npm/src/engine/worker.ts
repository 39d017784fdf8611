// The engine's module Web Worker: downloads (or reads from the cache) and verifies the model,
// builds the engine on WebGPU or the WASM-SIMD CPU backend, and runs one request at a time, one
// forward pass per turn of the worker's event loop, so an abort takes effect within one step.

import init, { ModelBuffer, WasmEngine } from '../../wasm/engine_wasm.js';
import { SHA_HEADER, cachedResponse, isQuotaError, openCache } from './cache.js';
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

let engine: WasmEngine | null = null;
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

/** Streams `body` into a new ModelBuffer, reporting progress. */
async function readInto(
  body: ReadableStream<Uint8Array>,
  url: string,
  total: number,
  fromCache: boolean,
): Promise<ModelBuffer> {
  const buffer = new ModelBuffer(total);
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
      loaded += value.byteLength;
      report(false);
    }
  } catch (e) {
    buffer.free();
    if (e instanceof Error && (KINDS as string[]).includes(e.name)) throw e;
    throw new Failure(fromCache ? 'internal' : 'network', `reading ${url}: ${messageOf(e)}`);
  }
  report(true);
  return buffer;
}

/** The model's bytes from the cache when intact, else from the network (caching them). */
async function fetchModel(msg: LoadMessage): Promise<ModelBuffer> {
  const cache = await openCache();
  const want = msg.sha256.toLowerCase();
  const verify = (fromCache: boolean) =>
    post({
      type: 'progress',
      progress: { url: msg.url, loaded: msg.bytes, total: msg.bytes, bytesPerSecond: 0, fromCache, phase: 'verify' },
    });
  const hit = await cachedResponse(cache, msg.url, want);
  if (hit?.body) {
    const buffer = await readInto(hit.body, msg.url, msg.bytes, true);
    verify(true);
    if (!want || buffer.sha256() === want) return buffer;
    // A damaged copy: forget it and download again.
    buffer.free();
    await cache?.delete(msg.url);
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
  let body = response.body;
  let storing: Promise<void> | null = null;
  if (cache) {
    const [forEngine, forCache] = body.tee();
    body = forEngine;
    const headers = new Headers({ 'content-type': 'application/octet-stream', [SHA_HEADER]: want });
    if (total) headers.set('content-length', String(total));
    storing = cache.put(msg.url, new Response(forCache, { headers }));
    // Observed below; never an unhandled rejection meanwhile.
    storing.catch(() => {});
  }
  const buffer = await readInto(body, msg.url, total, false);
  verify(false);
  if (want && buffer.sha256() !== want) {
    buffer.free();
    await storing?.catch(() => {});
    await cache?.delete(msg.url);
    throw new Failure('integrity', `${msg.url} does not have the SHA-256 the server announced`);
  }
  if (storing) {
    try {
      await storing;
    } catch (e) {
      if (isQuotaError(e)) {
        buffer.free();
        throw new Failure('quota', `the browser's storage quota cannot hold ${msg.url} (${total} bytes)`);
      }
      // The bytes in hand are whole and verified: only the copy for the next load failed (Chromium
      // reports a blob store under pressure as a "network error"). Load from them, drop whatever
      // part of the entry was written, and download again next time.
      console.warn(`tandem: could not cache ${msg.url} (${messageOf(e)}); it will be downloaded again next time`);
      await cache?.delete(msg.url).catch(() => false);
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

/** Instantiates the engine's WebAssembly build chosen by `choice` (once per worker). */
async function initEngine(choice: WasmSimd): Promise<void> {
  const supported = relaxedSimdValidates();
  if (choice === 'relaxed' && !supported) {
    throw new Failure('unsupported', 'this browser has no relaxed SIMD (asked for wasmSimd: "relaxed")');
  }
  const relaxed = choice === 'relaxed' || (choice === 'auto' && supported);
  // Written out in full so that app bundlers find and emit the file, as they do the glue's own
  // `new URL('engine_wasm_bg.wasm', import.meta.url)`.
  if (relaxed) await init({ module_or_path: new URL('engine_wasm_relaxed_bg.wasm', import.meta.url) });
  else await init();
}

async function load(msg: LoadMessage): Promise<EngineInfo> {
  await initEngine(msg.wasmSimd);
  let backend: EnginePath = msg.backend === 'auto' ? await pickBackend(msg.maxTensorBytes) : msg.backend;
  for (;;) {
    const buffer = await fetchModel(msg);
    post({
      type: 'progress',
      progress: { url: msg.url, loaded: msg.bytes, total: msg.bytes, bytesPerSecond: 0, fromCache: true, phase: 'compile' },
    });
    try {
      engine = await WasmEngine.load(buffer, JSON.stringify({ backend, context_size: msg.contextSize }));
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
