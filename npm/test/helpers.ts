// Fakes for the unit tests: an in-memory engine module and a fake Tandem server behind `fetch`.

import {
  EngineFailure,
  type BrowserEngine,
  type BrowserVariant,
  type DeviceReport,
  type EngineEvent,
  type EngineFailureKind,
  type EngineModule,
  type EnginePath,
  type EngineRequest,
  type LoadOptions,
} from '../src/engine/types.js';

// ------------------------------------------------------------------------------------------------
// Engine
// ------------------------------------------------------------------------------------------------

export interface EngineScript {
  /** Text deltas to produce (one token each). */
  deltas?: string[];
  /** Fail with `failKind` before producing delta number `failAfter` (0 = before the first). */
  failAfter?: number;
  failKind?: EngineFailureKind;
  finish?: 'stop' | 'length';
  promptTokens?: number;
  /** Wait this many ms before each delta (lets tests abort mid-stream). */
  delayMs?: number;
}

export class FakeEngine implements BrowserEngine {
  readonly device = 'fake adapter';
  readonly requests: EngineRequest[] = [];
  readonly signals: Array<AbortSignal | undefined> = [];
  disposed = false;
  ran = false;
  /** Generations running now, and the most at once. */
  active = 0;
  maxActive = 0;

  constructor(
    readonly variant: BrowserVariant,
    readonly path: EnginePath,
    private readonly script: () => EngineScript,
  ) {}

  async *generate(req: EngineRequest, signal?: AbortSignal): AsyncIterable<EngineEvent> {
    this.requests.push(req);
    this.signals.push(signal);
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    try {
      yield* this.run(req, signal);
    } finally {
      this.active--;
    }
  }

  private async *run(req: EngineRequest, signal?: AbortSignal): AsyncIterable<EngineEvent> {
    const s = this.script();
    const deltas = s.deltas ?? ['Hello', ',', ' world', '!'];
    let produced = 0;
    for (let i = 0; i < deltas.length; i++) {
      if (s.delayMs) await sleep(s.delayMs, signal);
      else await Promise.resolve();
      if (signal?.aborted) throw new EngineFailure('aborted', 'aborted');
      if (s.failAfter === i) throw new EngineFailure(s.failKind ?? 'internal', `fake failure after ${i} tokens`);
      if (req.max_tokens !== undefined && produced >= req.max_tokens) break;
      produced++;
      yield { type: 'delta', text: deltas[i]!, tokens: 1 };
    }
    if (s.failAfter !== undefined && s.failAfter >= deltas.length) {
      throw new EngineFailure(s.failKind ?? 'internal', 'fake failure at the end');
    }
    this.ran = true;
    yield {
      type: 'done',
      finish_reason: s.finish ?? 'stop',
      usage: { prompt_tokens: s.promptTokens ?? 11, completion_tokens: produced },
      timing: { ttft_ms: 5, decode_tok_s: 42, prefill_tok_s: 300 },
    };
  }

  measured(): { decode_tok_s?: number; prefill_tok_s?: number } {
    return this.ran ? { decode_tok_s: 42, prefill_tok_s: 300 } : {};
  }

  dispose(): void {
    this.disposed = true;
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(t);
        resolve();
      },
      { once: true },
    );
  });
}

export function deviceReport(over: Partial<DeviceReport> = {}): DeviceReport {
  return {
    webgpu: {
      available: true,
      adapter: { vendor: 'intel', architecture: 'gen-12lp', is_fallback: false },
      features: ['shader-f16', 'subgroups'],
      limits: { maxBufferSize: 2147483648, maxStorageBufferBindingSize: 1073741824 },
    },
    wasm_simd: true,
    cross_origin_isolated: true,
    hardware_concurrency: 8,
    device_memory_gb: 8,
    storage_available_bytes: 10e9,
    cached_variants: [],
    ...over,
  };
}

export interface FakeEngineModule extends EngineModule {
  loads: LoadOptions[];
  engines: FakeEngine[];
  probes: BrowserVariant[][];
  /** What the next `generate` does (read at each call). */
  script: EngineScript;
  /** Makes `loadEngine` fail. */
  loadFailure?: EngineFailureKind;
  report: DeviceReport;
  cached: Set<string>;
}

export function fakeEngine(report: DeviceReport = deviceReport()): FakeEngineModule {
  const m: FakeEngineModule = {
    loads: [],
    engines: [],
    probes: [],
    script: {},
    report,
    cached: new Set(),
    async probeDevice(variants) {
      m.probes.push(variants);
      return { ...m.report, cached_variants: variants.filter((v) => m.cached.has(v.sha256)).map((v) => v.sha256) };
    },
    async loadEngine(opts) {
      m.loads.push(opts);
      opts.onProgress?.({ url: opts.variant.url, loaded: 50, total: 100, bytesPerSecond: 1e6, fromCache: false, phase: 'download' });
      await Promise.resolve();
      if (m.loadFailure) throw new EngineFailure(m.loadFailure, `fake load failure: ${m.loadFailure}`);
      opts.onProgress?.({ url: opts.variant.url, loaded: 100, total: 100, bytesPerSecond: 1e6, fromCache: false, phase: 'compile' });
      m.cached.add(opts.variant.sha256);
      const e = new FakeEngine(opts.variant, opts.backend === 'cpu' ? 'cpu' : 'webgpu', () => m.script);
      m.engines.push(e);
      return e;
    },
    async isCached(v) {
      return m.cached.has(v.sha256);
    },
  };
  return m;
}

/**
 * Holds the engine's loads until the returned `release` is called; `first` runs as each load
 * starts (to report progress, say).
 */
export function holdLoads(engine: FakeEngineModule, first?: (opts: LoadOptions) => void): () => void {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const load = engine.loadEngine;
  engine.loadEngine = async (opts) => {
    first?.(opts);
    await gate;
    return load(opts);
  };
  return release;
}

// ------------------------------------------------------------------------------------------------
// Server
// ------------------------------------------------------------------------------------------------

export const SERVER = 'http://tandem.test';

export const SMALL: BrowserVariant = {
  url: '/v1/models/smol/browser/q4_1.gguf',
  sha256: 'aa11',
  bytes: 98_000_000,
  quantization: 'Q4_1',
  memory_bytes: 160_000_000,
  required_features: ['shader-f16'],
  max_tensor_bytes: 30_000_000,
};

export const MODELS = {
  object: 'list',
  data: [
    {
      id: 'smol',
      object: 'model',
      created: 1,
      owned_by: 'tandem',
      max_model_len: 2048,
      root: 'smol',
      upstreams: ['local'],
      browser_variants: [SMALL],
    },
  ],
};

export interface Recorded {
  url: string;
  path: string;
  method: string;
  headers: Record<string, string>;
  body: any;
  signal: AbortSignal | undefined;
}

type Handler = (req: Recorded) => Response | Promise<Response>;

export function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
}

/** An SSE response whose body arrives in the given pieces. */
export function sse(pieces: string[], status = 200): Response {
  const enc = new TextEncoder();
  let i = 0;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      await Promise.resolve();
      if (i < pieces.length) controller.enqueue(enc.encode(pieces[i++]!));
      else controller.close();
    },
  });
  return new Response(body, { status, headers: { 'Content-Type': 'text/event-stream' } });
}

/** The SSE text of chunks followed by `[DONE]`. */
export function sseText(chunks: unknown[]): string {
  return chunks.map((c) => `data: ${JSON.stringify(c)}\n\n`).join('') + 'data: [DONE]\n\n';
}

/** Server chunks for `text`, split into the given deltas. */
export function serverChunks(deltas: string[], opts: { usage?: { prompt_tokens: number; completion_tokens: number }; finish?: string } = {}): unknown[] {
  const base = { id: 'chatcmpl-server', object: 'chat.completion.chunk', created: 7, model: 'smol', system_fingerprint: 'fp_srv' };
  const out: unknown[] = [
    { ...base, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }] },
  ];
  for (const d of deltas) out.push({ ...base, choices: [{ index: 0, delta: { content: d }, logprobs: null, finish_reason: null }] });
  out.push({ ...base, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: opts.finish ?? 'stop' }] });
  if (opts.usage) {
    const u = opts.usage;
    out.push({ ...base, choices: [], usage: { ...u, total_tokens: u.prompt_tokens + u.completion_tokens } });
  }
  return out;
}

export function serverCompletion(text: string, usage = { prompt_tokens: 9, completion_tokens: 3 }): unknown {
  return {
    id: 'chatcmpl-server',
    object: 'chat.completion',
    created: 7,
    model: 'smol',
    choices: [{ index: 0, message: { role: 'assistant', content: text }, logprobs: null, finish_reason: 'stop' }],
    usage: { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens },
  };
}

export interface FakeServer {
  fetch: (input: string, init?: RequestInit) => Promise<Response>;
  requests: Recorded[];
  handlers: Record<string, Handler>;
  /** Requests to one path. */
  to(path: string): Recorded[];
}

export const unreachable: Handler = () => {
  throw new TypeError('fetch failed');
};

/** A fake server: `handlers` keyed by path; every request is recorded. */
export function fakeServer(handlers: Record<string, Handler> = {}): FakeServer {
  const server: FakeServer = {
    requests: [],
    handlers: {
      '/v1/models': () => json(MODELS),
      '/v1/usage/browser': () => new Response(null, { status: 204 }),
      ...handlers,
    },
    to(path) {
      return server.requests.filter((r) => r.path === path);
    },
    async fetch(input, init = {}) {
      const url = new URL(input);
      const headers: Record<string, string> = {};
      new Headers(init.headers).forEach((v, k) => (headers[k] = v));
      const rec: Recorded = {
        url: input,
        path: url.pathname,
        method: init.method ?? 'GET',
        headers,
        body: typeof init.body === 'string' ? JSON.parse(init.body) : undefined,
        signal: init.signal ?? undefined,
      };
      server.requests.push(rec);
      if (init.signal?.aborted) throw new DOMException('The operation was aborted.', 'AbortError');
      const h = server.handlers[url.pathname];
      if (!h) return json({ error: { message: 'Not found', type: 'not_found_error', code: null } }, 404);
      return h(rec);
    },
  };
  return server;
}

/** Reads an async iterable into an array. */
export async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/** The content of a list of chunks. */
export function textOf(chunks: Array<{ choices: Array<{ delta: { content?: string | null } }> }>): string {
  return chunks.map((c) => c.choices.map((ch) => ch.delta.content ?? '').join('')).join('');
}
