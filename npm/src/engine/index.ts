// The in-browser engine as the client sees it: a module Web Worker per loaded model, driven by
// messages (./protocol.ts), so that the page thread never blocks.

import { isCachedUrl } from './cache.js';
import { probeDevice } from './probe.js';
import type { EngineInfo, FromWorker, ToWorker } from './protocol.js';
import {
  EngineFailure,
  type BrowserEngine,
  type BrowserVariant,
  type EngineEvent,
  type EngineModule,
  type EnginePath,
  type EngineRequest,
  type LoadOptions,
} from './types.js';

export * from './types.js';

/** Default context size of the browser engine, in tokens. */
const DEFAULT_CONTEXT = 4096;

/** Events of one request, as they arrive from the worker. */
class EventQueue {
  private items: Array<EngineEvent | EngineFailure> = [];
  private wake: (() => void) | null = null;
  private ended = false;

  push(item: EngineEvent | EngineFailure): void {
    if (this.ended) return;
    this.items.push(item);
    if (item instanceof EngineFailure || item.type === 'done') this.ended = true;
    this.wake?.();
  }

  async *drain(): AsyncGenerator<EngineEvent> {
    for (;;) {
      const item = this.items.shift();
      if (item === undefined) {
        await new Promise<void>((r) => (this.wake = r));
        this.wake = null;
        continue;
      }
      if (item instanceof EngineFailure) throw item;
      yield item;
      if (item.type === 'done') return;
    }
  }
}

class WorkerEngine implements BrowserEngine {
  readonly path: EnginePath;
  readonly device: string;
  private nextId = 1;
  private readonly requests = new Map<number, EventQueue>();
  private last: { decode_tok_s?: number; prefill_tok_s?: number } = {};
  private dead: EngineFailure | null = null;

  constructor(
    private readonly worker: Worker,
    readonly variant: BrowserVariant,
    info: EngineInfo,
  ) {
    this.path = info.backend;
    this.device = info.backend === 'cpu' ? `${info.device}, ${info.threads} thread(s)` : info.device;
    worker.onmessage = (ev: MessageEvent<FromWorker>) => this.onMessage(ev.data);
    worker.onerror = (ev) => this.die(new EngineFailure('worker_crashed', `the engine worker crashed: ${ev.message || 'unknown error'}`));
    worker.onmessageerror = () => this.die(new EngineFailure('worker_crashed', 'the engine worker sent an unreadable message'));
  }

  private die(failure: EngineFailure): void {
    this.dead = failure;
    for (const q of this.requests.values()) q.push(failure);
    this.requests.clear();
    this.worker.terminate();
  }

  private onMessage(m: FromWorker): void {
    if (!('id' in m)) return;
    const q = this.requests.get(m.id);
    if (!q) return;
    switch (m.type) {
      case 'delta':
        q.push({ type: 'delta', text: m.text, tokens: m.tokens });
        break;
      case 'done':
        this.last = {
          decode_tok_s: m.timing.decode_tok_s ?? this.last.decode_tok_s,
          prefill_tok_s: m.timing.prefill_tok_s ?? this.last.prefill_tok_s,
        };
        q.push({ type: 'done', finish_reason: m.finish_reason, usage: m.usage, timing: m.timing });
        this.requests.delete(m.id);
        break;
      case 'error':
        q.push(new EngineFailure(m.kind, m.message));
        this.requests.delete(m.id);
        break;
    }
  }

  async *generate(req: EngineRequest, signal?: AbortSignal): AsyncGenerator<EngineEvent> {
    if (this.dead) throw this.dead;
    if (signal?.aborted) throw new EngineFailure('aborted', 'the request was aborted');
    const id = this.nextId++;
    const q = new EventQueue();
    this.requests.set(id, q);
    const send = (m: ToWorker) => this.worker.postMessage(m);
    const onAbort = () => send({ type: 'abort', id });
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      send({ type: 'generate', id, request: req });
      yield* q.drain();
    } finally {
      signal?.removeEventListener('abort', onAbort);
      if (this.requests.has(id)) {
        // The caller stopped listening: stop the work too.
        send({ type: 'abort', id });
        this.requests.delete(id);
      }
    }
  }

  measured(): { decode_tok_s?: number; prefill_tok_s?: number } {
    return { ...this.last };
  }

  dispose(): void {
    this.dead ??= new EngineFailure('aborted', 'the engine was disposed');
    this.worker.terminate();
  }
}

/** Starts a worker and loads `opts.variant` in it. */
async function loadEngine(opts: LoadOptions): Promise<BrowserEngine> {
  if (opts.signal?.aborted) throw new EngineFailure('aborted', 'the load was aborted');
  let worker: Worker;
  try {
    worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  } catch (e) {
    throw new EngineFailure('worker_crashed', `cannot start the engine worker: ${(e as Error).message}`);
  }
  const v = opts.variant;
  const onAbort = () => abortLoad();
  let abortLoad = () => {};
  const info = await new Promise<EngineInfo>((resolve, reject) => {
    const fail = (f: EngineFailure) => {
      worker.terminate();
      reject(f);
    };
    abortLoad = () => fail(new EngineFailure('aborted', 'the load was aborted'));
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    worker.onerror = (ev) => fail(new EngineFailure('worker_crashed', `the engine worker failed to start: ${ev.message || 'unknown error'}`));
    worker.onmessage = (ev: MessageEvent<FromWorker>) => {
      const m = ev.data;
      if (m.type === 'progress') opts.onProgress?.(m.progress);
      else if (m.type === 'loaded') resolve(m.info);
      else if (m.type === 'load_error') fail(new EngineFailure(m.kind, m.message));
    };
    const msg: ToWorker = {
      type: 'load',
      url: v.url,
      sha256: v.sha256 ?? '',
      bytes: v.bytes,
      backend: opts.backend ?? 'auto',
      contextSize: opts.contextSize ?? DEFAULT_CONTEXT,
      maxTensorBytes: v.max_tensor_bytes ?? 0,
      wasmSimd: opts.wasmSimd ?? 'auto',
      threads: opts.threads ?? 0,
    };
    worker.postMessage(msg);
  }).finally(() => opts.signal?.removeEventListener('abort', onAbort));
  // The load's signal no longer concerns the loaded engine.
  return new WorkerEngine(worker, v, info);
}

/** The engine entry points the client uses. */
export const engine: EngineModule = {
  probeDevice,
  loadEngine,
  isCached: (v: BrowserVariant) => (v.sha256 ? isCachedUrl(v.url, v.sha256) : Promise.resolve(false)),
};
