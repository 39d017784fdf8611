// The contract between the package's client (routing, server calls, failover) and the in-browser
// engine (a module Web Worker running engine-wasm). The client only sees these types.

/** One message of a chat, as the OpenAI API takes it (text content only in the browser). */
export interface EngineMessage {
  role: 'system' | 'user' | 'assistant' | 'tool' | 'developer';
  content: string;
}

/** A model file a browser can run, as `GET /v1/models` lists it under `browser_variants`. */
export interface BrowserVariant {
  /** Absolute URL of the GGUF file. */
  url: string;
  /** SHA-256 of the file, lowercase hex (may be empty while the server is still hashing). */
  sha256: string;
  /** File size in bytes. */
  bytes: number;
  /** Quantization name (`Q4_1`, ...). */
  quantization: string;
  /** Memory the engine needs (weights, KV cache, scratch), bytes. */
  memory_bytes: number;
  /** WebGPU features the WebGPU path needs. */
  required_features: string[];
  /** Largest tensor in bytes, when known. */
  max_tensor_bytes?: number;
}

/** Download or cache-read progress of a model file. */
export interface LoadProgress {
  /** The file. */
  url: string;
  /** Bytes received so far. */
  loaded: number;
  /** Total bytes (0 when unknown). */
  total: number;
  /** Recent rate, bytes per second. */
  bytesPerSecond: number;
  /** Whether the bytes come from the browser's cache rather than the network. */
  fromCache: boolean;
  /** `download`, `verify` (checking the SHA-256), `compile` (building the engine on the device). */
  phase: 'download' | 'verify' | 'compile';
}

/** Which compute path the browser engine runs on. */
export type EnginePath = 'webgpu' | 'cpu';

/**
 * Which WebAssembly build of the engine runs: `relaxed` uses relaxed SIMD's 8-bit dot product
 * (Chrome 114 and later; faster on the CPU path), `simd128` only baseline SIMD (every current
 * browser). `auto` (the default) takes `relaxed` where the browser validates it.
 */
export type WasmSimd = 'auto' | 'relaxed' | 'simd128';

/** Options for loading the browser engine. */
export interface LoadOptions {
  /** The variant to run. */
  variant: BrowserVariant;
  /** `auto` = WebGPU when an adapter exists and the model fits its limits, else the CPU. */
  backend?: 'auto' | EnginePath;
  /** Context size in tokens (default: 4096 or the model's, whichever is smaller). */
  contextSize?: number;
  /**
   * CPU threads. The default, 0, takes one per core up to 4 where the page is cross-origin
   * isolated and the browser has relaxed SIMD (the threaded build has it), else 1; more than one
   * where either is missing is an `unsupported` failure.
   */
  threads?: number;
  /** Which WebAssembly build of the engine runs (default `auto`). */
  wasmSimd?: WasmSimd;
  /** Progress callback. */
  onProgress?: (p: LoadProgress) => void;
  /** Cancels the load. */
  signal?: AbortSignal;
}

/** A generation request to the browser engine. */
export interface EngineRequest {
  messages: EngineMessage[];
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  top_k?: number;
  min_p?: number;
  seed?: number;
  stop?: string | string[];
  frequency_penalty?: number;
  presence_penalty?: number;
  repetition_penalty?: number;
  /** Keep generating after the end-of-turn token (benchmarks). */
  ignore_eos?: boolean;
  /** Test hook: the engine fails with `injected` after this many generated tokens. */
  fail_after_tokens?: number;
}

/** Something the engine produced. */
export type EngineEvent =
  | { type: 'delta'; text: string; tokens: number }
  | {
      type: 'done';
      finish_reason: 'stop' | 'length';
      /** `cached_tokens`: prompt tokens whose KV was kept from the previous turn (not computed). */
      usage: { prompt_tokens: number; completion_tokens: number; cached_tokens?: number };
      /** Timing of this request: prefill ms, decode tokens per second. */
      timing: { ttft_ms: number; decode_tok_s: number | null; prefill_tok_s: number | null };
    };

/** Kinds of engine failure; `EngineFailure.kind`. */
export type EngineFailureKind =
  | 'no_adapter' // WebGPU asked for but no adapter
  | 'out_of_memory' // device or wasm memory exhausted
  | 'device_lost' // the GPU device was lost
  | 'worker_crashed' // the worker died
  | 'network' // the model download failed
  | 'quota' // the browser's storage quota was exceeded
  | 'integrity' // the file's SHA-256 does not match
  | 'unsupported' // the model or its format cannot run here
  | 'invalid_request' // bad parameters or a prompt too long
  | 'aborted' // the caller aborted
  | 'injected' // a test-injected failure
  | 'internal';

/** A typed engine error. */
export class EngineFailure extends Error {
  readonly kind: EngineFailureKind;
  constructor(kind: EngineFailureKind, message: string) {
    super(message);
    this.name = 'EngineFailure';
    this.kind = kind;
  }
}

/** A loaded browser engine. */
export interface BrowserEngine {
  /** The path it runs on. */
  readonly path: EnginePath;
  /** The variant it runs. */
  readonly variant: BrowserVariant;
  /** Device description (adapter or `wasm simd128, N threads`). */
  readonly device: string;
  /**
   * Streams a completion. Aborting `signal` stops within one step (the iterator then ends with
   * an `EngineFailure` of kind `aborted`). Failures throw `EngineFailure`.
   */
  generate(req: EngineRequest, signal?: AbortSignal): AsyncIterable<EngineEvent>;
  /** The last measured decode and prefill speeds (tokens/s), once it has run. */
  measured(): { decode_tok_s?: number; prefill_tok_s?: number };
  /** Stops the worker and frees its memory. */
  dispose(): void;
}

/** What `probeDevice` finds out about the browser, in the shape `POST /v1/route` takes. */
export interface DeviceReport {
  webgpu: null | {
    available: boolean;
    adapter: { vendor: string; architecture: string; is_fallback: boolean; device?: string; description?: string };
    features: string[];
    limits: Record<string, number>;
  };
  wasm_simd: boolean;
  cross_origin_isolated: boolean;
  hardware_concurrency?: number;
  device_memory_gb?: number;
  storage_available_bytes?: number;
  /** SHA-256s of cached variants. */
  cached_variants: string[];
  /** SHA-256s of variants whose engine is loaded in this page (nothing left to load). */
  loaded_variants?: string[];
  /** Downloads under way in this page: bytes received and the recent rate (bytes/s). */
  downloading?: { sha256: string; received_bytes: number; bytes_per_sec?: number }[];
  measured?: { decode_tok_s?: number; prefill_tok_s?: number };
}

/** The engine entry points (implemented in `./index.ts`). */
export interface EngineModule {
  /** Reports WebGPU, SIMD, memory, storage and cached variants (`variants`: which to check). */
  probeDevice(variants: BrowserVariant[]): Promise<DeviceReport>;
  /** Loads a variant (from cache or network) into a new worker. */
  loadEngine(opts: LoadOptions): Promise<BrowserEngine>;
  /** Whether a variant's file is in the browser cache (and intact as far as known). */
  isCached(variant: BrowserVariant): Promise<boolean>;
}
