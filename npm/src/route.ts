// Browser-or-server routing, ported from the server's `control-plane/src/gateway/browser_route.rs`
// (see `control-plane/src/gateway/ROUTING.md`): the same constants, checks, estimates, policies
// and reason strings. The client asks the server (`POST /v1/route`) first and decides here only
// when the server cannot be reached. Pure logic: no I/O, no clock, and no exception on any input
// (non-finite or negative numbers in a report count as absent).

import type { BrowserVariant, DeviceReport, EnginePath } from './engine/types.js';

// ------------------------------------------------------------------------------------------------
// Constants (keep in step with browser_route.rs)
// ------------------------------------------------------------------------------------------------

/** `max_tokens` when a request does not give one. */
export const DEFAULT_MAX_TOKENS = 256;
/** Download bandwidth assumed for a variant that is not cached, bytes/s (50 Mbit/s). */
export const DOWNLOAD_BYTES_PER_SEC = 6.25e6;
/** Rate at which a cached variant is read, parsed and uploaded to the engine, bytes/s. */
export const LOAD_BYTES_PER_SEC = 500e6;
/** Fixed part of the load time, ms. */
export const LOAD_OVERHEAD_MS = 500.0;
/** Decode bandwidth of one thread of the WASM-SIMD CPU engine, bytes/s. */
export const CPU_THREAD_BYTES_PER_SEC = 3.0e9;
/** Fraction of `CPU_THREAD_BYTES_PER_SEC` each thread after the first adds. */
export const CPU_EXTRA_THREAD_GAIN = 0.9;
/** Most threads the CPU path is assumed to use. */
export const CPU_MAX_THREADS = 4;
/** Largest variant (file bytes) the CPU path runs: 1 GiB. */
export const CPU_MAX_VARIANT_BYTES = 2 ** 30;
/** Largest memory the CPU path can address: 4 GiB (wasm32). */
export const WASM_MAX_MEMORY_BYTES = 4 * 2 ** 30;
/** Decode bandwidth of the WebGPU path on a hardware adapter, bytes/s. */
export const WEBGPU_BYTES_PER_SEC = 20e9;
/** Decode bandwidth of the WebGPU path on a fallback (software) adapter, bytes/s. */
export const WEBGPU_FALLBACK_BYTES_PER_SEC = 0.3e9;
/** `maxBufferSize` assumed when the report does not give it: 256 MiB. */
export const WEBGPU_DEFAULT_MAX_BUFFER_SIZE = 256 * 2 ** 20;
/** Prefill speed as a multiple of decode speed when prefill was not measured. */
export const PREFILL_SPEEDUP = 4.0;
/** Largest `device_memory_gb` believed. */
export const DEVICE_MEMORY_CAP_GB = 8.0;
/** `device_memory_gb` assumed when not reported. */
export const DEFAULT_DEVICE_MEMORY_GB = 4.0;
/** Fraction of the device's memory a tab may use for the engine. */
export const TAB_MEMORY_FRACTION = 0.5;
/** `cheapest`: the browser is refused only when more than this many times slower... */
export const CHEAPEST_MAX_SLOWDOWN = 10.0;
/** ...and also more than this many ms. */
export const CHEAPEST_MIN_BOUND_MS = 60_000.0;
/** `balanced`: browser when its total is at most `(1 + tolerance) * server + slack`. */
export const BALANCED_TOLERANCE = 0.5;
/** `balanced`: absolute slack, ms. */
export const BALANCED_SLACK_MS = 500.0;
/**
 * `balanced`, streamed answers: the slowest decode (tokens/s) that still streams faster than people
 * read (about 240 words a minute, some 5 tokens/s (Brysbaert 2019); twice that, for skimming).
 */
export const READING_TOK_S = 10.0;
/**
 * `balanced`, streamed answers: the first-token time (ms) that is good enough whatever the server's,
 * unless the tier sets its own (`ttft_target_ms`): one second, the limit for the user's flow of
 * thought to stay uninterrupted (Nielsen 1993).
 */
export const DEFAULT_TTFT_TARGET_MS = 1000.0;
/** Ceiling on every time in an estimate, ms. */
export const MAX_TIME_MS = 1e12;
/** Ceiling on every speed in an estimate, tokens/s. */
export const MAX_TOK_S = 1e9;

// ------------------------------------------------------------------------------------------------
// Types
// ------------------------------------------------------------------------------------------------

/** How `decide` trades the operator's cost against the user's latency (server default: `balanced`). */
export type RoutingPolicy = 'cheapest' | 'fastest' | 'balanced';

export type Route = 'browser' | 'server';

/** Expected performance and cost of running a request somewhere. */
export interface Estimate {
  ttft_ms: number;
  tok_s: number;
  cost_usd: number;
}

/** The variant a browser should run, as `/v1/route` answers it. */
export interface VariantRef {
  url: string;
  sha256: string;
  bytes: number;
  quantization: string;
  required_features: string[];
}

/** The answer of `POST /v1/route` (and of the local `decide`). */
export interface RouteAnswer {
  route: Route;
  variant: VariantRef | null;
  reasons: string[];
  estimates: { browser: Estimate | null; server: Estimate };
  /** The path of the best runnable browser option; only from the local `decide` (the server's
   * answer carries it as the `path_webgpu` / `path_cpu` reason: see `answerPath`). */
  browser_path?: EnginePath | null;
}

/** What a browser reports about itself (`DeviceReport`, read leniently). */
export type Capabilities = Partial<DeviceReport> | Record<string, unknown>;

/** The body of `POST /v1/route`. */
export interface RouteRequest {
  model?: string;
  prompt_tokens?: number;
  max_tokens?: number;
  capabilities?: Capabilities | null;
  /**
   * Of `prompt_tokens`, those whose keys and values the loaded engine still holds (the earlier turns
   * of the conversation it served last; default 0): only the rest is prefilled in the browser.
   */
  cached_prompt_tokens?: number;
  /**
   * Whether the answer streams to a reader (default false): `balanced` then judges the browser by
   * its first token and by whether it streams faster than people read, not by its total time.
   */
  stream?: boolean;
}

/** The estimate used for the server when it cannot be reached: it would never answer. */
export const UNREACHABLE_SERVER: Estimate = { ttft_ms: MAX_TIME_MS, tok_s: MAX_TOK_S, cost_usd: 0 };

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function finite(x: unknown): number | undefined {
  return typeof x === 'number' && Number.isFinite(x) ? x : undefined;
}

/** A finite, positive number, else undefined. */
function positive(x: unknown): number | undefined {
  const v = finite(x);
  return v !== undefined && v > 0 ? v : undefined;
}

/** A finite, non-negative number, else undefined. */
function nonNegative(x: unknown): number | undefined {
  const v = finite(x);
  return v !== undefined && v >= 0 ? v : undefined;
}

/** A token or byte count: negative gives 0, fractions round down, +Infinity saturates. */
function count(x: unknown, fallback: number): number {
  if (typeof x !== 'number' || Number.isNaN(x)) return fallback;
  if (x === Infinity) return Number.MAX_SAFE_INTEGER;
  if (x === -Infinity) return 0;
  return Math.max(0, Math.floor(x));
}

function strings(x: unknown): string[] {
  return Array.isArray(x) ? x.filter((s): s is string => typeof s === 'string') : [];
}

/** Whether a non-blank `sha256` is in `list` (compared case-insensitively, blanks trimmed). */
function listed(list: string[], sha256: string): boolean {
  const s = sha256.trim().toLowerCase();
  return s !== '' && list.some((c) => c.trim().toLowerCase() === s);
}

/** Clamps a time into [0, MAX_TIME_MS] (NaN becomes the cap). */
function capTime(ms: number): number {
  if (Number.isNaN(ms)) return MAX_TIME_MS;
  return Math.min(Math.max(ms, 0), MAX_TIME_MS);
}

/** Clamps a speed into [0, MAX_TOK_S] (NaN becomes 0). */
function capRate(tokS: number): number {
  if (Number.isNaN(tokS)) return 0;
  return Math.min(Math.max(tokS, 0), MAX_TOK_S);
}

/** Milliseconds to process `n` tokens at `tokS`. */
function msFor(n: number, tokS: number): number {
  if (Number.isNaN(n) || n <= 0) return 0;
  if (!(Number.isFinite(tokS) && tokS > 0)) return MAX_TIME_MS;
  return capTime((n / tokS) * 1000);
}

/** Expected time for a whole request: `ttft_ms + max_tokens / tok_s`, capped. */
export function totalMs(e: Estimate, maxTokens: number): number {
  return capTime(capTime(e.ttft_ms) + msFor(maxTokens, e.tok_s));
}

function cmp(a: number, b: number): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Reasons in order, without duplicates. */
class Reasons {
  readonly list: string[] = [];
  push(reason: string): void {
    if (!this.list.includes(reason)) this.list.push(reason);
  }
  extend(reasons: Iterable<string>): void {
    for (const r of reasons) this.push(r);
  }
  get empty(): boolean {
    return this.list.length === 0;
  }
}

function policyReason(policy: RoutingPolicy): string {
  return `policy_${policy}`;
}

function isSoftware(adapter: unknown): boolean {
  if (!isObject(adapter)) return false;
  const emulated = (s: unknown) => {
    const t = typeof s === 'string' ? s.toLowerCase() : '';
    return ['swiftshader', 'lavapipe', 'llvmpipe'].some((name) => t.includes(name));
  };
  return adapter.is_fallback === true || emulated(adapter.vendor) || emulated(adapter.architecture);
}

/** A variant with every number made a count (`max_tensor_bytes` defaults to the file size, as the server does). */
interface Variant {
  source: BrowserVariant | VariantRef;
  url: string;
  sha256: string;
  bytes: number;
  quantization: string;
  required_features: string[];
  memory_bytes: number;
  max_tensor_bytes: number;
}

function normalizeVariant(v: BrowserVariant): Variant {
  const bytes = count(v.bytes, 0);
  return {
    source: v,
    url: typeof v.url === 'string' ? v.url : '',
    sha256: typeof v.sha256 === 'string' ? v.sha256 : '',
    bytes,
    quantization: typeof v.quantization === 'string' ? v.quantization : '',
    required_features: strings(v.required_features),
    memory_bytes: count(v.memory_bytes, 0),
    max_tensor_bytes: v.max_tensor_bytes == null ? bytes : count(v.max_tensor_bytes, bytes),
  };
}

interface Gpu {
  features: string[];
  maxBufferSize: number;
  software: boolean;
}

/** A report with every number sanitized. */
class Device {
  readonly gpu: Gpu | null;
  readonly wasmSimd: boolean;
  readonly crossOriginIsolated: boolean;
  readonly cpuThreads: number;
  readonly usableMemory: number;
  readonly memoryUnknown: boolean;
  readonly storage: number | undefined;
  readonly cached: string[];
  readonly loaded: string[];
  readonly downloading: { sha256: string; received: number; rate: number | undefined }[];
  readonly decode: number | undefined;
  readonly prefill: number | undefined;

  constructor(caps: Record<string, unknown>) {
    const w = caps.webgpu;
    if (isObject(w) && w.available !== false) {
      const limits = isObject(w.limits) ? w.limits : {};
      this.gpu = {
        features: strings(w.features),
        maxBufferSize: nonNegative(limits.maxBufferSize) ?? WEBGPU_DEFAULT_MAX_BUFFER_SIZE,
        software: isSoftware(w.adapter),
      };
    } else {
      this.gpu = null;
    }
    this.wasmSimd = caps.wasm_simd === true;
    this.crossOriginIsolated = caps.cross_origin_isolated === true;
    const hc = caps.hardware_concurrency;
    const threads = typeof hc === 'number' && Number.isInteger(hc) && hc >= 0 && hc <= 0xffffffff ? hc : 1;
    this.cpuThreads = this.crossOriginIsolated ? Math.min(Math.max(threads, 1), CPU_MAX_THREADS) : 1;
    const reported = positive(caps.device_memory_gb);
    const memoryGb = Math.min(reported ?? DEFAULT_DEVICE_MEMORY_GB, DEVICE_MEMORY_CAP_GB);
    this.usableMemory = memoryGb * 2 ** 30 * TAB_MEMORY_FRACTION;
    this.memoryUnknown = reported === undefined;
    this.storage = nonNegative(caps.storage_available_bytes);
    this.cached = strings(caps.cached_variants);
    this.loaded = strings(caps.loaded_variants);
    this.downloading = (Array.isArray(caps.downloading) ? caps.downloading : []).filter(isObject).map((d) => ({
      sha256: typeof d.sha256 === 'string' ? d.sha256 : '',
      received: nonNegative(d.received_bytes) ?? 0,
      rate: positive(d.bytes_per_sec),
    }));
    const measured = isObject(caps.measured) ? caps.measured : {};
    const d = positive(measured.decode_tok_s);
    const p = positive(measured.prefill_tok_s);
    this.decode = d === undefined ? undefined : capRate(d);
    this.prefill = p === undefined ? undefined : capRate(p);
  }

  isCached(sha256: string): boolean {
    return listed(this.cached, sha256) || this.isLoaded(sha256);
  }

  isLoaded(sha256: string): boolean {
    return listed(this.loaded, sha256);
  }

  /** Ms to download `v`: what is left of a download under way (at its measured rate, if any), else the whole file. */
  downloadMs(v: Variant): number {
    const bytes = Math.max(v.bytes, 1);
    const d = this.downloading.find((x) => listed([x.sha256], v.sha256));
    const left = d ? bytes - Math.min(d.received, bytes) : bytes;
    return capTime((left / (d?.rate ?? DOWNLOAD_BYTES_PER_SEC)) * 1000);
  }

  static memoryNeed(v: Variant): number {
    return Math.max(v.memory_bytes, v.bytes);
  }

  /** What stops the variant on every path: memory, and storage for a download. */
  commonBlockers(v: Variant, cached: boolean): Reasons {
    const blocked = new Reasons();
    if (Device.memoryNeed(v) > this.usableMemory) blocked.push('insufficient_memory');
    if (!cached && this.storage !== undefined && v.bytes > this.storage) blocked.push('insufficient_storage');
    return blocked;
  }

  /** What stops the variant on one path, besides memory and storage. */
  pathBlockers(v: Variant, path: EnginePath): Reasons {
    const blocked = new Reasons();
    if (path === 'webgpu') {
      const gpu = this.gpu;
      if (!gpu) {
        blocked.push('no_webgpu');
      } else {
        for (const raw of v.required_features) {
          const feature = raw.trim();
          if (feature === '') continue;
          const f = feature.toLowerCase();
          if (!gpu.features.some((g) => g.trim().toLowerCase() === f)) blocked.push(`missing_feature:${feature}`);
        }
        if (v.max_tensor_bytes > gpu.maxBufferSize) blocked.push('buffer_limit');
      }
    } else {
      if (!this.wasmSimd) blocked.push('no_wasm_simd');
      if (v.bytes > CPU_MAX_VARIANT_BYTES) blocked.push('variant_too_large_for_cpu');
      if (Device.memoryNeed(v) > WASM_MAX_MEMORY_BYTES) blocked.push('wasm_memory_limit');
    }
    return blocked;
  }

  /** Effective decode bandwidth of a path, bytes/s. */
  bandwidth(path: EnginePath): number {
    if (path === 'webgpu') return this.gpu?.software ? WEBGPU_FALLBACK_BYTES_PER_SEC : WEBGPU_BYTES_PER_SEC;
    return CPU_THREAD_BYTES_PER_SEC * (1 + CPU_EXTRA_THREAD_GAIN * Math.max(this.cpuThreads - 1, 0));
  }

  candidate(
    v: Variant,
    index: number,
    path: EnginePath,
    fullPromptTokens: number,
    keptTokens: number,
    maxTokens: number,
  ): Candidate {
    const cached = this.isCached(v.sha256);
    const loaded = this.isLoaded(v.sha256);
    // A loaded engine that kept the conversation's earlier turns computes only the rest (at least
    // the last token, for the logits).
    const promptTokens = loaded && keptTokens > 0 ? Math.max(fullPromptTokens - keptTokens, 1) : fullPromptTokens;
    const bytes = Math.max(v.bytes, 1);
    const estimatedDecode = capRate(this.bandwidth(path) / bytes);
    const estimatedPrefill = capRate(estimatedDecode * PREFILL_SPEEDUP);
    const decode = this.decode ?? estimatedDecode;
    const prefill = this.prefill ?? capRate(decode * PREFILL_SPEEDUP);
    const downloadMs = cached ? 0 : this.downloadMs(v);
    const loadMs = loaded ? 0 : capTime(LOAD_OVERHEAD_MS + (bytes / LOAD_BYTES_PER_SEC) * 1000);
    const ttft = (p: number) => capTime(downloadMs + loadMs + msFor(promptTokens, p));
    const estimate: Estimate = { ttft_ms: ttft(prefill), tok_s: decode, cost_usd: 0 };
    const estimated: Estimate = { ttft_ms: ttft(estimatedPrefill), tok_s: estimatedDecode, cost_usd: 0 };
    return {
      index,
      path,
      cached,
      loaded,
      bytes: v.bytes,
      estimate,
      totalMs: totalMs(estimate, maxTokens),
      estimatedTotalMs: totalMs(estimated, maxTokens),
    };
  }
}

interface Candidate {
  index: number;
  path: EnginePath;
  cached: boolean;
  /** Its engine is loaded in the page (implies `cached`). */
  loaded: boolean;
  bytes: number;
  estimate: Estimate;
  totalMs: number;
  estimatedTotalMs: number;
}

/** Loaded first, then cached, then the lowest expected total time, then the smaller file, then the earlier
 * variant, then WebGPU. */
function betterThan(a: Candidate, b: Candidate): boolean {
  const rank = (p: EnginePath) => (p === 'webgpu' ? 0 : 1);
  const order =
    cmp(a.loaded ? 0 : 1, b.loaded ? 0 : 1) ||
    cmp(a.cached ? 0 : 1, b.cached ? 0 : 1) ||
    cmp(a.totalMs, b.totalMs) ||
    cmp(a.estimatedTotalMs, b.estimatedTotalMs) ||
    cmp(a.bytes, b.bytes) ||
    cmp(a.index, b.index) ||
    cmp(rank(a.path), rank(b.path));
  return order < 0;
}

/** Replaces non-finite or negative numbers by 0; says whether the estimate was usable. */
function sanitizeServer(server: Estimate, maxTokens: number): [Estimate, boolean] {
  const clean = (x: unknown, cap: number): [number, boolean] => {
    const v = nonNegative(x);
    return v === undefined ? [0, false] : [Math.min(v, cap), true];
  };
  const [ttft_ms, ttftOk] = clean(server?.ttft_ms, MAX_TIME_MS);
  const [tok_s, tokOk] = clean(server?.tok_s, MAX_TOK_S);
  const [cost_usd, costOk] = clean(server?.cost_usd, Number.MAX_VALUE);
  const speedOk = tok_s > 0 || maxTokens === 0;
  return [{ ttft_ms, tok_s, cost_usd }, ttftOk && tokOk && costOk && speedOk];
}

function variantRef(v: Variant): VariantRef {
  return {
    url: v.url,
    sha256: v.sha256,
    bytes: v.bytes,
    quantization: v.quantization,
    required_features: [...v.required_features],
  };
}

// ------------------------------------------------------------------------------------------------
// Decision
// ------------------------------------------------------------------------------------------------

/**
 * Decides where a request runs, exactly as the server's `browser_route::decide`: picks the best
 * variant the browser can run (a cached one first, then the lowest expected total time) on the
 * faster of its runnable paths, estimates it, and compares it with `server` under `policy`. A
 * streamed request under `balanced` goes to the browser when its first token is expected within
 * `ttftTargetMs` or within the tolerance of the server's (and it streams faster than people read).
 */
export function decide(
  req: RouteRequest,
  variants: BrowserVariant[],
  server: Estimate,
  policy: RoutingPolicy = 'balanced',
  ttftTargetMs: number = DEFAULT_TTFT_TARGET_MS,
): RouteAnswer {
  const caps = isObject(req?.capabilities) ? (req.capabilities as Record<string, unknown>) : {};
  const device = new Device(caps);
  const maxTokens = count(req?.max_tokens, DEFAULT_MAX_TOKENS);
  const promptTokens = count(req?.prompt_tokens, 0);
  const keptTokens = count(req?.cached_prompt_tokens, 0);
  const reasons = new Reasons();

  if (!device.gpu) reasons.push('no_webgpu');
  else if (device.gpu.software) reasons.push('webgpu_fallback_adapter');
  if (device.memoryUnknown) reasons.push('device_memory_unknown');

  const [serverEstimate, serverValid] = sanitizeServer(server, maxTokens);
  if (!serverValid) reasons.push('server_estimate_invalid');
  const serverTotal = totalMs(serverEstimate, maxTokens);

  const list = (Array.isArray(variants) ? variants : []).filter(isObject).map((v) => normalizeVariant(v as BrowserVariant));
  let best: Candidate | undefined;
  const blockers = new Reasons();
  list.forEach((variant, index) => {
    const cached = device.isCached(variant.sha256);
    const common = device.commonBlockers(variant, cached);
    for (const path of ['webgpu', 'cpu'] as const) {
      const blocked = new Reasons();
      blocked.extend(common.list);
      blocked.extend(device.pathBlockers(variant, path).list);
      if (!blocked.empty) {
        blockers.extend(blocked.list);
        continue;
      }
      const candidate = device.candidate(variant, index, path, promptTokens, keptTokens, maxTokens);
      if (!best || betterThan(candidate, best)) best = candidate;
    }
  });

  if (!best) {
    if (list.length === 0) {
      reasons.push('no_browser_variant');
    } else {
      reasons.extend(blockers.list);
      reasons.push('no_runnable_variant');
    }
    reasons.push(policyReason(policy));
    return {
      route: 'server',
      variant: null,
      reasons: reasons.list,
      estimates: { browser: null, server: serverEstimate },
      browser_path: null,
    };
  }

  const chosen = best as Candidate;
  const variant = list[chosen.index]!;
  const other: EnginePath = chosen.path === 'webgpu' ? 'cpu' : 'webgpu';
  reasons.extend(device.pathBlockers(variant, other).list);
  reasons.push(chosen.path === 'webgpu' ? 'path_webgpu' : 'path_cpu');
  if (chosen.path === 'cpu' && !device.crossOriginIsolated) reasons.push('not_cross_origin_isolated');
  reasons.push(chosen.loaded ? 'variant_loaded' : chosen.cached ? 'variant_cached' : 'download_required');
  reasons.push(device.decode !== undefined ? 'measured_speed' : 'estimated_speed');

  const browserTotal = chosen.totalMs;
  reasons.push(
    browserTotal < serverTotal ? 'browser_faster' : browserTotal > serverTotal ? 'server_faster' : 'equal_speed',
  );
  reasons.push(policyReason(policy));

  let toBrowser: boolean;
  switch (policy) {
    case 'cheapest': {
      const bound = Math.max(serverTotal * CHEAPEST_MAX_SLOWDOWN, CHEAPEST_MIN_BOUND_MS);
      toBrowser = browserTotal <= bound;
      reasons.push(toBrowser ? 'zero_operator_cost' : 'browser_too_slow');
      break;
    }
    case 'fastest':
      toBrowser = browserTotal <= serverTotal;
      break;
    default: {
      if (req?.stream === true) {
        // A reader of a stream waits for the first token; after it, any speed faster than reading
        // keeps ahead of them.
        reasons.push('streamed');
        const relative = serverEstimate.ttft_ms * (1 + BALANCED_TOLERANCE) + BALANCED_SLACK_MS;
        const target = Number.isFinite(ttftTargetMs)
          ? Math.min(Math.max(ttftTargetMs, 0), MAX_TIME_MS)
          : DEFAULT_TTFT_TARGET_MS;
        const readable = chosen.estimate.tok_s >= READING_TOK_S;
        const withinTolerance = chosen.estimate.ttft_ms <= relative;
        const withinTarget = chosen.estimate.ttft_ms <= target;
        toBrowser = readable && (withinTolerance || withinTarget);
        reasons.push(
          !readable
            ? 'slower_than_reading'
            : withinTolerance
              ? 'within_tolerance'
              : withinTarget
                ? 'within_ttft_target'
                : 'beyond_tolerance',
        );
        break;
      }
      const bound = serverTotal * (1 + BALANCED_TOLERANCE) + BALANCED_SLACK_MS;
      toBrowser = browserTotal <= bound;
      reasons.push(toBrowser ? 'within_tolerance' : 'beyond_tolerance');
      break;
    }
  }

  return {
    route: toBrowser ? 'browser' : 'server',
    variant: toBrowser ? variantRef(variant) : null,
    reasons: reasons.list,
    estimates: { browser: chosen.estimate, server: serverEstimate },
    browser_path: chosen.path,
  };
}

/** The browser path an answer names (`path_webgpu` / `path_cpu` reason), if any. */
export function answerPath(answer: Pick<RouteAnswer, 'reasons' | 'browser_path'>): EnginePath | undefined {
  if (answer.browser_path) return answer.browser_path;
  if (!Array.isArray(answer.reasons)) return undefined;
  if (answer.reasons.includes('path_webgpu')) return 'webgpu';
  if (answer.reasons.includes('path_cpu')) return 'cpu';
  return undefined;
}
