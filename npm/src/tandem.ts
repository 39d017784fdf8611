// The `Tandem` client: an OpenAI-shaped `chat.completions.create` that runs each request in the
// browser (engine in a Web Worker) or on the Tandem server, as the server's `/v1/route` (or, when
// the server is unreachable, the same rules applied here) decides.

import { engine as defaultEngine } from './engine/index.js';
import {
  EngineFailure,
  type BrowserEngine,
  type BrowserVariant,
  type DeviceReport,
  type EngineModule,
  type EnginePath,
  type LoadProgress,
  type WasmSimd,
} from './engine/types.js';
import { browserStream, serverBody, serverStream } from './failover.js';
import {
  collectCompletion,
  estimatePromptTokens,
  maxTokensOf,
  TandemAbortError,
  TandemAPIError,
  TandemConnectionError,
  TandemError,
  textOnly,
  type ChatCompletion,
  type ChatCompletionChunk,
  type ChatCompletionCreateParamsBase,
  type ChatCompletionCreateParamsNonStreaming,
  type ChatCompletionCreateParamsStreaming,
  type Model,
  type ModelList,
  type RequestOptions,
  type TandemInfo,
} from './openai.js';
import { answerPath, decide, DEFAULT_TTFT_TARGET_MS, UNREACHABLE_SERVER, type RouteAnswer, type RouteRequest, type RoutingPolicy } from './route.js';
import { matchVariant, normalizeServerUrl, ServerClient, type FetchLike } from './server.js';

/** Where requests run: as the server advises (`auto`), always in the browser, always on the server. */
export type TandemPolicy = 'auto' | 'browser' | 'server';

export interface TandemOptions {
  /** The Tandem server's root URL (default: the page's origin). A trailing `/v1` is accepted. */
  serverUrl?: string;
  /** Sent as `Authorization: Bearer ...` to the server. */
  apiKey?: string;
  /** Where requests run (default `auto`). */
  policy?: TandemPolicy;
  /** Model download, verification and compilation progress. */
  onProgress?: (progress: LoadProgress) => void;
  /** The policy for decisions made here when `/v1/route` is unreachable (the server's default, `balanced`). */
  routingPolicy?: RoutingPolicy;
  /** The first-token target (ms) for those decisions: `balanced` runs a streamed request here when its first token is expected within it (default 1000, as the server's tiers). */
  ttftTargetMs?: number;
  /** Complete a request on the server when the browser engine fails (default true). */
  failover?: boolean;
  /** Models to use when the server's `/v1/models` cannot be fetched (variant URLs absolute). */
  models?: Model[];
  /** The browser engine's backend (default: the path routing chose, else `auto`). */
  backend?: 'auto' | EnginePath;
  /** The browser engine's context size in tokens. */
  contextSize?: number;
  /** The browser engine's CPU threads. */
  threads?: number;
  /** Which WebAssembly build of the browser engine runs (default `auto`: relaxed SIMD where the browser has it). */
  wasmSimd?: WasmSimd;
  /**
   * How long to wait for `/v1/models` and `/v1/route` before deciding here, ms (default 5000).
   * Completions themselves have no timeout (use `signal`).
   */
  routeTimeoutMs?: number;
  /** A `fetch` to use instead of the global one. */
  fetch?: FetchLike;
  /**
   * The in-browser engine. For tests and custom builds only: the default is the package's own
   * Web Worker engine.
   */
  engine?: EngineModule;
}

/** A model's browser variant and whether the browser has it cached. */
export interface VariantStatus extends BrowserVariant {
  cached: boolean;
}

/** A loaded browser engine. */
export interface LoadedEngineInfo {
  model: string;
  variant: BrowserVariant;
  path: EnginePath;
  device: string;
  measured: { decode_tok_s?: number; prefill_tok_s?: number };
}

/** What this browser can do, as `tandem.capabilities()` reports it. */
export interface TandemCapabilities extends DeviceReport {
  /** Each model's browser variants, with whether each is cached. */
  models: Array<{ id: string; variants: VariantStatus[] }>;
  /** The engines loaded so far, with their measured speeds. */
  engines: LoadedEngineInfo[];
  /** The server, and why it could not be reached, if it could not. */
  server: { url: string; reachable: boolean; error?: string };
}

/** The value of a streamed `create`: await it (resolves at the first chunk) or `for await` it. */
export type ChatCompletionStreamRequest = Promise<ChatCompletionStream> & AsyncIterable<ChatCompletionChunk>;

/** A stream of chunks, iterable once. */
export class ChatCompletionStream implements AsyncIterable<ChatCompletionChunk> {
  private used = false;

  /** @internal */
  constructor(
    private readonly iterator: AsyncGenerator<ChatCompletionChunk>,
    private readonly first: IteratorResult<ChatCompletionChunk>,
    /** Aborts the request. */
    readonly controller: AbortController,
  ) {}

  /** Aborts the request (the iteration then throws an `AbortError`). */
  abort(): void {
    this.controller.abort();
  }

  [Symbol.asyncIterator](): AsyncIterator<ChatCompletionChunk> {
    if (this.used) throw new TandemError('A chat completion stream can be iterated only once.');
    this.used = true;
    let first: IteratorResult<ChatCompletionChunk> | undefined = this.first;
    const it = this.iterator;
    return {
      next: async () => {
        if (first) {
          const r = first;
          first = undefined;
          return r;
        }
        return it.next();
      },
      return: async (value?: unknown) => {
        first = undefined;
        await it.return(undefined);
        return { done: true, value: value as ChatCompletionChunk };
      },
    };
  }

  /** Reads the whole stream into one `ChatCompletion`. */
  async finalCompletion(): Promise<ChatCompletion> {
    return collectCompletion(this, '');
  }
}

/** The routing of one request. */
type Decision =
  | { route: 'server'; info: TandemInfo }
  | { route: 'browser'; info: TandemInfo; variant: BrowserVariant | undefined; path: EnginePath | undefined };

/** Parameters the browser engine cannot honour: such requests go to the server under `auto`. */
const SERVER_ONLY = ['tools', 'functions', 'tool_choice', 'response_format', 'logprobs', 'top_logprobs', 'logit_bias', 'audio', 'modalities'];

function minimalReport(): DeviceReport {
  return { webgpu: null, wasm_simd: false, cross_origin_isolated: false, cached_variants: [] };
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class Tandem {
  /** The server's root URL. */
  readonly serverUrl: string;
  /** Where requests run. */
  readonly policy: TandemPolicy;
  readonly chat: {
    completions: {
      create(params: ChatCompletionCreateParamsStreaming, options?: RequestOptions): ChatCompletionStreamRequest;
      create(params: ChatCompletionCreateParamsNonStreaming, options?: RequestOptions): Promise<ChatCompletion>;
      create(
        params: ChatCompletionCreateParamsBase,
        options?: RequestOptions,
      ): Promise<ChatCompletion> | ChatCompletionStreamRequest;
    };
  };
  readonly models: { list(): Promise<ModelList> };

  private readonly server: ServerClient;
  private readonly engineModule: EngineModule;
  private readonly options: TandemOptions;
  private modelList: Model[] = [];
  private serverError: unknown;
  private device: DeviceReport = minimalReport();
  private readonly engines = new Map<string, Promise<BrowserEngine>>();
  private readonly loaded = new Map<string, BrowserEngine>();
  /** Downloads under way, by variant SHA-256, as the last progress event said. */
  private readonly downloads = new Map<string, NonNullable<DeviceReport['downloading']>[number]>();
  /**
   * The conversation the browser served last, whose keys and values its engine keeps (messages
   * with the answer, as `messageKey`s, and their tokens): a next turn prefills only what follows.
   */
  private kept: { engine: BrowserEngine; messages: string[]; tokens: number } | undefined;

  private constructor(options: TandemOptions) {
    this.options = options;
    const origin = (globalThis as { location?: { origin?: string } }).location?.origin;
    const url = options.serverUrl ?? (origin && origin !== 'null' ? origin : undefined);
    if (!url) throw new TypeError('Tandem.create: serverUrl is required outside a web page.');
    this.serverUrl = normalizeServerUrl(url);
    this.policy = options.policy ?? 'auto';
    if (!['auto', 'browser', 'server'].includes(this.policy)) {
      throw new TypeError(`Tandem.create: unknown policy ${JSON.stringify(this.policy)}`);
    }
    const fetchImpl: FetchLike = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.server = new ServerClient(this.serverUrl, options.apiKey, fetchImpl);
    this.engineModule = options.engine ?? defaultEngine;
    this.modelList = (options.models ?? []).map((m) => this.server.absoluteModel(m));
    const create = ((params: ChatCompletionCreateParamsBase, opts?: RequestOptions) =>
      this.createCompletion(params, opts)) as Tandem['chat']['completions']['create'];
    this.chat = { completions: { create } };
    this.models = { list: () => this.listModels() };
  }

  /**
   * Connects to the server (its model list) and probes the device. Never fails because the
   * server is unreachable: requests are then routed here, by the server's rules.
   */
  static async create(options: TandemOptions = {}): Promise<Tandem> {
    const tandem = new Tandem(options);
    await tandem.refreshModels();
    await tandem.probe();
    return tandem;
  }

  // ----------------------------------------------------------------------------------------------
  // Models, device
  // ----------------------------------------------------------------------------------------------

  private async refreshModels(signal?: AbortSignal): Promise<boolean> {
    const t = withTimeout(signal, this.routeTimeoutMs);
    try {
      const list = await this.server.listModels(t.signal);
      this.modelList = list.data;
      this.serverError = undefined;
      return true;
    } catch (err) {
      if (signal?.aborted) throw err;
      this.serverError = t.timedOut()
        ? new TandemConnectionError(`The Tandem server at ${this.serverUrl} did not answer /v1/models in time.`)
        : err;
      return false;
    } finally {
      t.clear();
    }
  }

  private get routeTimeoutMs(): number {
    const ms = this.options.routeTimeoutMs;
    return typeof ms === 'number' && ms > 0 ? ms : 5000;
  }

  private allVariants(): BrowserVariant[] {
    const seen = new Set<string>();
    const out: BrowserVariant[] = [];
    for (const m of this.modelList) {
      for (const v of m.browser_variants ?? []) {
        const key = v.sha256 || v.url;
        if (seen.has(key)) continue;
        seen.add(key);
        out.push(v);
      }
    }
    return out;
  }

  private async probe(): Promise<DeviceReport> {
    try {
      this.device = await this.engineModule.probeDevice(this.allVariants());
    } catch {
      this.device = { ...minimalReport(), cached_variants: this.device.cached_variants };
    }
    return this.device;
  }

  /** `GET /v1/models` (the last list known when the server is unreachable). */
  private async listModels(): Promise<ModelList> {
    await this.refreshModels();
    return { object: 'list', data: this.modelList.map((m) => ({ ...m })) };
  }

  private modelCard(model: string | undefined): Model | undefined {
    if (!model) return this.modelList[0];
    return this.modelList.find((m) => m.id === model);
  }

  /** Speeds measured by a loaded engine of the model, if any. */
  private measuredFor(model: string | undefined): DeviceReport['measured'] {
    const card = this.modelCard(model);
    for (const v of card?.browser_variants ?? []) {
      const e = this.loaded.get(v.sha256 || v.url);
      if (!e) continue;
      const m = e.measured();
      if (m && (m.decode_tok_s !== undefined || m.prefill_tok_s !== undefined)) return { ...m };
    }
    return this.device.measured;
  }

  /** Prompt tokens the loaded engine still holds for `messages`: the last conversation it served, when they continue it. */
  private keptTokens(messages: ChatCompletionCreateParamsBase['messages']): number {
    const kept = this.kept;
    if (!kept || ![...this.loaded.values()].includes(kept.engine) || messages.length <= kept.messages.length) return 0;
    return kept.messages.every((k, i) => k === messageKey(messages[i])) ? kept.tokens : 0;
  }

  /** The device report for a request: loaded engines and the model's measured speeds added. */
  private reportFor(model: string | undefined): DeviceReport {
    const loaded = [...this.loaded.values()].map((e) => e.variant.sha256).filter((s) => s !== '');
    const report: DeviceReport = { ...this.device, loaded_variants: loaded, measured: this.measuredFor(model) };
    if (this.downloads.size > 0) report.downloading = [...this.downloads.values()];
    return report;
  }

  /**
   * The device report, each model's variants and whether they are cached, the loaded engines and
   * their measured speeds, and whether the server was reachable.
   */
  async capabilities(): Promise<TandemCapabilities> {
    const report = await this.probe();
    const models = await Promise.all(
      this.modelList.map(async (m) => ({
        id: m.id,
        variants: await Promise.all(
          (m.browser_variants ?? []).map(async (v) => ({
            ...v,
            cached: await this.engineModule.isCached(v).catch(() => false),
          })),
        ),
      })),
    );
    const engines: LoadedEngineInfo[] = [];
    for (const e of this.loaded.values()) engines.push(this.engineInfo(e));
    const measured = engines.find((e) => e.measured.decode_tok_s !== undefined)?.measured ?? report.measured;
    const caps: TandemCapabilities = {
      ...report,
      models,
      engines,
      server: { url: this.serverUrl, reachable: this.serverError === undefined },
    };
    if (measured) caps.measured = measured;
    if (this.serverError !== undefined) caps.server.error = errorText(this.serverError);
    return caps;
  }

  private engineInfo(e: BrowserEngine, model?: string): LoadedEngineInfo {
    const key = e.variant.sha256 || e.variant.url;
    const name =
      model ??
      this.modelList.find((m) => (m.browser_variants ?? []).some((v) => (v.sha256 || v.url) === key))?.id ??
      '';
    return { model: name, variant: e.variant, path: e.path, device: e.device, measured: { ...e.measured() } };
  }

  // ----------------------------------------------------------------------------------------------
  // Engines
  // ----------------------------------------------------------------------------------------------

  /** The engine of a variant: loaded once, shared by every request. */
  private engineFor(variant: BrowserVariant, path: EnginePath | undefined): Promise<BrowserEngine> {
    const key = variant.sha256 || variant.url;
    const existing = this.engines.get(key);
    if (existing) return existing;
    const opts: Parameters<EngineModule['loadEngine']>[0] = {
      variant,
      backend: this.options.backend ?? path ?? 'auto',
    };
    if (this.options.contextSize !== undefined) opts.contextSize = this.options.contextSize;
    if (this.options.threads !== undefined) opts.threads = this.options.threads;
    if (this.options.wasmSimd !== undefined) opts.wasmSimd = this.options.wasmSimd;
    const onProgress = this.options.onProgress;
    opts.onProgress = (p) => {
      // Routing counts only what is left of a download under way.
      if (variant.sha256 && p.phase === 'download' && !p.fromCache) {
        this.downloads.set(variant.sha256, {
          sha256: variant.sha256,
          received_bytes: p.loaded,
          ...(p.bytesPerSecond > 0 ? { bytes_per_sec: p.bytesPerSecond } : {}),
        });
      }
      if (!onProgress) return;
      try {
        onProgress(p);
      } catch {
        // the app's callback never breaks a load
      }
    };
    let promise: Promise<BrowserEngine>;
    try {
      promise = Promise.resolve(this.engineModule.loadEngine(opts)).then(serialized);
    } catch (err) {
      promise = Promise.reject(err);
    }
    this.engines.set(key, promise);
    promise.then(
      (e) => {
        this.downloads.delete(variant.sha256);
        this.loaded.set(key, e);
        if (variant.sha256 && !this.device.cached_variants.includes(variant.sha256)) {
          this.device = { ...this.device, cached_variants: [...this.device.cached_variants, variant.sha256] };
        }
      },
      () => {
        this.downloads.delete(variant.sha256);
        if (this.engines.get(key) === promise) this.engines.delete(key);
      },
    );
    return promise;
  }

  /** Drops an engine that failed in a way that leaves it unusable; the next request reloads. */
  private dropEngine(engine: BrowserEngine | undefined, failure: EngineFailure): void {
    if (!engine || !['device_lost', 'worker_crashed', 'out_of_memory', 'internal'].includes(failure.kind)) return;
    const key = engine.variant.sha256 || engine.variant.url;
    if (this.loaded.get(key) === engine) {
      this.loaded.delete(key);
      this.engines.delete(key);
    }
    try {
      engine.dispose();
    } catch {
      // already gone
    }
  }

  /** The variant and path the browser would use for a model (the server's rules, cheapest policy). */
  private pickVariant(model: string | undefined): { variant: BrowserVariant; path: EnginePath | undefined } | undefined {
    const variants = this.modelCard(model)?.browser_variants ?? [];
    if (variants.length === 0) return undefined;
    // A variant already loaded wins.
    for (const v of variants) {
      const e = this.loaded.get(v.sha256 || v.url);
      if (e) return { variant: v, path: e.path };
    }
    const answer = decide(
      { model, capabilities: this.reportFor(model) },
      variants,
      UNREACHABLE_SERVER,
      'cheapest',
    );
    if (answer.variant) return { variant: matchVariant(answer.variant, variants), path: answerPath(answer) };
    return { variant: variants[0]!, path: undefined };
  }

  /**
   * Loads the browser engine for a model (default: the first model with browser variants) ahead
   * of the first request, reporting progress to `onProgress`.
   */
  async load(model?: string): Promise<LoadedEngineInfo> {
    const id = model ?? this.modelList.find((m) => (m.browser_variants ?? []).length > 0)?.id;
    const pick = this.pickVariant(id);
    if (!id || !pick) {
      throw new EngineFailure('unsupported', `No browser variant for model ${JSON.stringify(model ?? '')}.`);
    }
    const e = await this.engineFor(pick.variant, pick.path);
    return this.engineInfo(e, id);
  }

  // ----------------------------------------------------------------------------------------------
  // Routing
  // ----------------------------------------------------------------------------------------------

  private async decideRoute(
    params: ChatCompletionCreateParamsBase,
    signal: AbortSignal,
    policy: TandemPolicy = this.policy,
  ): Promise<Decision> {
    const model = params.model;
    if (!['auto', 'browser', 'server'].includes(policy)) {
      throw new TypeError(`chat.completions.create: unknown policy ${JSON.stringify(policy)}`);
    }
    if (policy === 'server') {
      return { route: 'server', info: { route: 'server', reason: 'policy_server', decided_by: 'policy' } };
    }
    if (policy === 'browser') {
      const pick = this.pickVariant(model);
      return {
        route: 'browser',
        info: { route: 'browser', reason: 'policy_browser', decided_by: 'policy' },
        variant: pick?.variant,
        path: pick?.path,
      };
    }
    // auto
    const unsupported = SERVER_ONLY.filter((k) => params[k] != null && params[k] !== false);
    if (!textOnly(params.messages)) unsupported.push('non_text_content');
    if (typeof params.n === 'number' && params.n > 1) unsupported.push('n');
    if (unsupported.length > 0) {
      return {
        route: 'server',
        info: { route: 'server', reason: `unsupported_in_browser: ${unsupported.join(', ')}`, decided_by: 'local' },
      };
    }
    if (this.serverError !== undefined) await this.refreshModels(signal);
    const body: RouteRequest = {
      prompt_tokens: estimatePromptTokens(params.messages),
      capabilities: this.reportFor(model),
      stream: params.stream === true,
    };
    const kept = this.keptTokens(params.messages);
    if (kept > 0) body.cached_prompt_tokens = kept;
    if (model) body.model = model;
    const max = maxTokensOf(params);
    if (max !== undefined) body.max_tokens = max;
    const variants = this.modelCard(model)?.browser_variants ?? [];

    let answer: RouteAnswer;
    let decidedBy: 'server' | 'local' = 'server';
    let prefix: string[] = [];
    const t = withTimeout(signal, this.routeTimeoutMs);
    try {
      answer = await this.server.route(body, t.signal);
    } catch (err) {
      if (signal.aborted) throw err instanceof TandemAbortError ? err : new TandemAbortError(undefined, { cause: err });
      const local = t.timedOut()
        ? 'route_timeout'
        : err instanceof TandemConnectionError
          ? 'server_unreachable'
          : err instanceof TandemAPIError &&
              err.status !== undefined &&
              (err.status >= 500 ||
                err.status === 429 ||
                err.status === 405 ||
                (err.status === 404 && err.code !== 'model_not_found'))
            ? `route_unavailable: ${err.status}`
            : undefined;
      if (!local) {
        // The server answered but refused (bad key, unknown model...): its chat endpoint will say why.
        const status = err instanceof TandemAPIError ? err.status : undefined;
        return { route: 'server', info: { route: 'server', reason: `route_error: ${status ?? errorText(err)}`, decided_by: 'server' } };
      }
      if (err instanceof TandemConnectionError) this.serverError = err;
      answer = decide(
        body,
        variants,
        UNREACHABLE_SERVER,
        this.options.routingPolicy ?? 'balanced',
        this.options.ttftTargetMs ?? DEFAULT_TTFT_TARGET_MS,
      );
      decidedBy = 'local';
      prefix = [local];
    } finally {
      t.clear();
    }
    const reason = [...prefix, ...answer.reasons].join(', ');
    if (answer.route === 'browser' && answer.variant) {
      return {
        route: 'browser',
        info: { route: 'browser', reason, decided_by: decidedBy },
        variant: matchVariant(answer.variant, variants),
        path: answerPath(answer),
      };
    }
    return { route: 'server', info: { route: 'server', reason, decided_by: decidedBy } };
  }

  // ----------------------------------------------------------------------------------------------
  // Completions
  // ----------------------------------------------------------------------------------------------

  private createCompletion(
    params: ChatCompletionCreateParamsBase,
    options?: RequestOptions,
  ): Promise<ChatCompletion> | ChatCompletionStreamRequest {
    if (!params || !Array.isArray(params.messages)) {
      const err = new TypeError('chat.completions.create: `messages` must be an array.');
      if (params?.stream) return streamRequest(Promise.reject(err));
      return Promise.reject<ChatCompletion>(err);
    }
    const controller = new AbortController();
    const unlink = linkSignals(controller, [params.signal, options?.signal]);
    if (params.stream) {
      const gen = this.streamChunks(params, controller.signal, unlink, options?.policy);
      const ready = gen.next().then(
        (first) => new ChatCompletionStream(gen, first, controller),
        (err) => {
          unlink();
          throw err;
        },
      );
      return streamRequest(ready);
    }
    return this.complete(params, controller.signal, options?.policy).finally(unlink);
  }

  private async complete(
    params: ChatCompletionCreateParamsBase,
    signal: AbortSignal,
    policy?: TandemPolicy,
  ): Promise<ChatCompletion> {
    const decision = await this.decideRoute(params, signal, policy);
    if (decision.route === 'server') {
      const completion = await this.server.chat(serverBody(params), signal);
      completion.tandem = { ...decision.info };
      return completion;
    }
    return collectCompletion(this.browserChunks(params, decision, signal, true), params.model ?? '');
  }

  private async *streamChunks(
    params: ChatCompletionCreateParamsBase,
    signal: AbortSignal,
    unlink: () => void,
    policy?: TandemPolicy,
  ): AsyncGenerator<ChatCompletionChunk> {
    try {
      const decision = await this.decideRoute(params, signal, policy);
      if (decision.route === 'server') {
        yield* serverStream(this.server, serverBody(params), decision.info, signal);
      } else {
        yield* this.browserChunks(params, decision, signal, params.stream_options?.include_usage === true);
      }
    } finally {
      unlink();
    }
  }

  private browserChunks(
    params: ChatCompletionCreateParamsBase,
    decision: Extract<Decision, { route: 'browser' }>,
    signal: AbortSignal,
    includeUsage: boolean,
  ): AsyncGenerator<ChatCompletionChunk> {
    const model = params.model ?? '';
    const variant = decision.variant;
    // Whatever happens, this request replaces what the engine keeps.
    this.kept = undefined;
    return browserStream({
      params,
      model: model || this.modelCard(model)?.id || '',
      info: decision.info,
      server: this.server,
      signal,
      failover: this.options.failover !== false,
      includeUsage,
      loadEngine: () =>
        variant
          ? this.engineFor(variant, decision.path)
          : Promise.reject(new EngineFailure('unsupported', `No browser variant for model ${JSON.stringify(model)}.`)),
      onDone: (done) => {
        this.kept = {
          engine: done.engine,
          messages: [...params.messages, { role: 'assistant', content: done.text }].map(messageKey),
          tokens: done.usage.prompt_tokens + done.usage.completion_tokens,
        };
        void this.server.reportUsage({
          model: model || done.engine.variant.url,
          prompt_tokens: done.usage.prompt_tokens,
          completion_tokens: done.usage.completion_tokens,
          route: 'browser',
          path: done.engine.path,
          duration_ms: done.duration_ms,
        });
      },
      onFailure: (failure, engine) => this.dropEngine(engine, failure),
    });
  }
}

/** A message as the engine's kept conversation is compared: its role and content. */
function messageKey(m: { role: string; content?: unknown }): string {
  return JSON.stringify([m.role, m.content ?? null]);
}

/** A signal that aborts with `parent` or after `ms`. */
function withTimeout(parent: AbortSignal | undefined, ms: number): { signal: AbortSignal; timedOut: () => boolean; clear: () => void } {
  const controller = new AbortController();
  let timedOut = false;
  const unlink = linkSignals(controller, [parent]);
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort(new TandemConnectionError('timeout'));
  }, ms);
  return {
    signal: controller.signal,
    timedOut: () => timedOut,
    clear: () => {
      clearTimeout(timer);
      unlink();
    },
  };
}

/**
 * The engine with its `generate` calls run one at a time, in order (one worker, one model
 * state); a request waiting for its turn can be aborted.
 */
function serialized(engine: BrowserEngine): BrowserEngine {
  let tail: Promise<void> = Promise.resolve();
  const turn = async (signal?: AbortSignal): Promise<() => void> => {
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const before = tail;
    tail = before.then(() => mine);
    if (!signal) {
      await before;
      return release;
    }
    if (signal.aborted) {
      release();
      throw new EngineFailure('aborted', 'aborted');
    }
    return new Promise<() => void>((resolve, reject) => {
      const onAbort = () => {
        // Leave the queue: the next request waits only for the ones before this one.
        void before.then(release);
        reject(new EngineFailure('aborted', 'aborted'));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      void before.then(() => {
        signal.removeEventListener('abort', onAbort);
        if (signal.aborted) return;
        resolve(release);
      });
    });
  };
  return {
    get path() {
      return engine.path;
    },
    get variant() {
      return engine.variant;
    },
    get device() {
      return engine.device;
    },
    async *generate(req, signal) {
      const release = await turn(signal);
      try {
        yield* engine.generate(req, signal);
      } finally {
        release();
      }
    },
    measured: () => engine.measured(),
    dispose: () => engine.dispose(),
  };
}

/** Aborts `controller` when any of `signals` aborts; returns the unlinking function. */
function linkSignals(controller: AbortController, signals: Array<AbortSignal | undefined>): () => void {
  const cleanups: Array<() => void> = [];
  for (const s of signals) {
    if (!s) continue;
    if (s.aborted) {
      controller.abort(s.reason);
      continue;
    }
    const onAbort = () => controller.abort(s.reason);
    s.addEventListener('abort', onAbort, { once: true });
    cleanups.push(() => s.removeEventListener('abort', onAbort));
  }
  return () => {
    for (const c of cleanups.splice(0)) c();
  };
}

/** A promise of a stream that is also async-iterable itself. */
function streamRequest(ready: Promise<ChatCompletionStream>): ChatCompletionStreamRequest {
  ready.catch(() => {}); // the caller sees the error through `await` or the iteration
  const request = ready as ChatCompletionStreamRequest;
  Object.defineProperty(request, Symbol.asyncIterator, {
    value: (): AsyncIterator<ChatCompletionChunk> => {
      let inner: AsyncIterator<ChatCompletionChunk> | undefined;
      const get = async () => (inner ??= (await ready)[Symbol.asyncIterator]());
      return {
        next: async () => (await get()).next(),
        return: async (value?: unknown) => {
          const it = await get().catch(() => undefined);
          if (it?.return) return it.return(value);
          return { done: true, value: value as ChatCompletionChunk };
        },
      };
    },
  });
  return request;
}
