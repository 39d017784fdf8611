// The local routing rules: the unit tests of control-plane/src/gateway/browser_route.rs, ported.

import { describe, expect, it } from 'vitest';
import type { BrowserVariant, DeviceReport } from '../src/engine/types.js';
import { deviceReport } from './helpers.js';
import {
  BALANCED_SLACK_MS,
  BALANCED_TOLERANCE,
  CPU_EXTRA_THREAD_GAIN,
  CPU_MAX_THREADS,
  CPU_THREAD_BYTES_PER_SEC,
  DEFAULT_MAX_TOKENS,
  DEFAULT_TTFT_TARGET_MS,
  DOWNLOAD_BYTES_PER_SEC,
  LOAD_BYTES_PER_SEC,
  LOAD_OVERHEAD_MS,
  MAX_TIME_MS,
  READING_TOK_S,
  UNREACHABLE_SERVER,
  WEBGPU_FALLBACK_BYTES_PER_SEC,
  answerPath,
  decide,
  totalMs,
  type Estimate,
  type RouteAnswer,
  type RouteRequest,
  type RoutingPolicy,
} from '../src/route.js';

const SHA_SMALL = 'aa11';
const SHA_BIG = 'bb22';
const POLICIES: RoutingPolicy[] = ['cheapest', 'fastest', 'balanced'];

/** SmolLM2-135M Q4_1: 98 MB, f16 shaders. */
function small(): BrowserVariant {
  return {
    url: 'https://models.example/smol-q4_1.gguf',
    sha256: SHA_SMALL,
    bytes: 98_000_000,
    quantization: 'Q4_1',
    required_features: ['shader-f16'],
    memory_bytes: 160_000_000,
    max_tensor_bytes: 30_000_000,
  };
}

/** A 1.2 GB model: too large for the CPU path, with a 300 MB tensor. */
function big(): BrowserVariant {
  return {
    url: 'https://models.example/big-q8_0.gguf',
    sha256: SHA_BIG,
    bytes: 1_200_000_000,
    quantization: 'Q8_0',
    required_features: ['shader-f16'],
    memory_bytes: 1_500_000_000,
    max_tensor_bytes: 300_000_000,
  };
}

function server(): Estimate {
  return { ttft_ms: 300, tok_s: 50, cost_usd: 0.0004 };
}

type Caps = DeviceReport & { webgpu: NonNullable<DeviceReport['webgpu']> | null };

/** A capable laptop: hardware WebGPU with shader-f16, 8 cores, 8 GB (the helpers' report). */
function caps(): Caps {
  return deviceReport() as Caps;
}

function request(capabilities: unknown): RouteRequest {
  return { model: 'smollm2-135m', prompt_tokens: 100, max_tokens: 256, capabilities: capabilities as DeviceReport };
}

function has(a: RouteAnswer, reason: string): boolean {
  return a.reasons.includes(reason);
}

function assertFinite(a: RouteAnswer): void {
  const all = [a.estimates.server, ...(a.estimates.browser ? [a.estimates.browser] : [])];
  for (const e of all) {
    for (const x of [e.ttft_ms, e.tok_s, e.cost_usd]) {
      expect(Number.isFinite(x) && x >= 0, JSON.stringify(a)).toBe(true);
    }
  }
  const v = JSON.parse(JSON.stringify(a));
  for (const side of ['browser', 'server']) {
    const e = v.estimates[side];
    if (e !== null) for (const f of ['ttft_ms', 'tok_s', 'cost_usd']) expect(typeof e[f]).toBe('number');
  }
}

describe('decide (ported from browser_route.rs)', () => {
  it('no WebGPU and no SIMD goes to the server', () => {
    const c = caps();
    c.webgpu = null;
    c.wasm_simd = false;
    for (const policy of POLICIES) {
      const a = decide(request(c), [small()], server(), policy);
      expect(a.route).toBe('server');
      expect(a.variant).toBeNull();
      expect(a.estimates.browser).toBeNull();
      expect(has(a, 'no_webgpu') && has(a, 'no_wasm_simd')).toBe(true);
      expect(has(a, 'no_runnable_variant')).toBe(true);
      expect(has(a, `policy_${policy}`)).toBe(true);
    }
  });

  it('no variants goes to the server', () => {
    const a = decide(request(caps()), [], server(), 'cheapest');
    expect(a.route).toBe('server');
    expect(has(a, 'no_browser_variant')).toBe(true);
  });

  it('CPU path under cheapest', () => {
    const c = caps();
    c.webgpu = null;
    c.cross_origin_isolated = false;
    const a = decide(request(c), [small()], server(), 'cheapest');
    expect(a.route).toBe('browser');
    expect(a.browser_path).toBe('cpu');
    expect(answerPath({ reasons: a.reasons })).toBe('cpu');
    expect(a.variant?.sha256).toBe(SHA_SMALL);
    for (const r of [
      'no_webgpu',
      'path_cpu',
      'not_cross_origin_isolated',
      'download_required',
      'estimated_speed',
      'policy_cheapest',
      'zero_operator_cost',
    ]) {
      expect(a.reasons, r).toContain(r);
    }
    const b = a.estimates.browser!;
    expect(Math.abs(b.tok_s - CPU_THREAD_BYTES_PER_SEC / 98e6)).toBeLessThan(1e-9);
    expect(b.cost_usd).toBe(0);
    expect(b.ttft_ms).toBeGreaterThan((98e6 / DOWNLOAD_BYTES_PER_SEC) * 1000);
  });

  it('CPU threads need cross-origin isolation', () => {
    const c = caps();
    c.webgpu = null;
    const isolated = decide(request(c), [small()], server(), 'cheapest');
    c.cross_origin_isolated = false;
    const single = decide(request(c), [small()], server(), 'cheapest');
    const expected = 1 + CPU_EXTRA_THREAD_GAIN * (CPU_MAX_THREADS - 1);
    expect(Math.abs(isolated.estimates.browser!.tok_s / single.estimates.browser!.tok_s - expected)).toBeLessThan(1e-9);
    expect(has(isolated, 'not_cross_origin_isolated')).toBe(false);
  });

  it('too little memory goes to the server', () => {
    const c = caps();
    c.device_memory_gb = 0.25; // 128 MiB usable < 160 MB
    const a = decide(request(c), [small()], server(), 'cheapest');
    expect(a.route).toBe('server');
    expect(has(a, 'insufficient_memory')).toBe(true);
    expect(has(a, 'no_runnable_variant')).toBe(true);
  });

  it('device memory is capped and defaulted', () => {
    const v = { ...small(), memory_bytes: 5 * 2 ** 30 };
    const c = caps();
    c.device_memory_gb = 64;
    let a = decide(request(c), [v], server(), 'cheapest');
    expect(has(a, 'insufficient_memory')).toBe(true);
    delete c.device_memory_gb;
    a = decide(request(c), [small()], server(), 'cheapest');
    expect(has(a, 'device_memory_unknown')).toBe(true);
    expect(a.route).toBe('browser');
  });

  it('missing feature', () => {
    const c = caps();
    c.webgpu!.features = ['subgroups'];
    c.wasm_simd = false;
    let a = decide(request(c), [small()], server(), 'cheapest');
    expect(a.route).toBe('server');
    expect(has(a, 'missing_feature:shader-f16')).toBe(true);
    expect(has(a, 'no_wasm_simd')).toBe(true);
    c.wasm_simd = true;
    a = decide(request(c), [small()], server(), 'cheapest');
    expect(a.route).toBe('browser');
    expect(a.browser_path).toBe('cpu');
    expect(has(a, 'missing_feature:shader-f16') && has(a, 'path_cpu')).toBe(true);
  });

  it('buffer limit', () => {
    const c = caps();
    c.webgpu!.limits = { maxBufferSize: 268_435_456 };
    let a = decide(request(c), [big()], server(), 'cheapest');
    expect(a.route).toBe('server');
    expect(has(a, 'buffer_limit')).toBe(true);
    expect(has(a, 'variant_too_large_for_cpu')).toBe(true);
    c.webgpu!.limits = {};
    a = decide(request(c), [big()], server(), 'cheapest');
    expect(has(a, 'buffer_limit')).toBe(true);
  });

  it('max_tensor_bytes defaults to the file size, as the server maps it', () => {
    const c = caps();
    c.webgpu!.limits = { maxBufferSize: 50_000_000 };
    c.wasm_simd = false;
    const v = { ...small() };
    delete v.max_tensor_bytes; // 98 MB file > 50 MB buffers
    expect(has(decide(request(c), [v], server(), 'cheapest'), 'buffer_limit')).toBe(true);
  });

  it('a cached variant has no download', () => {
    const c = caps();
    c.cached_variants = [SHA_SMALL.toUpperCase()];
    const cached = decide(request(c), [small()], server(), 'fastest');
    const fresh = decide(request(caps()), [small()], server(), 'fastest');
    expect(has(cached, 'variant_cached') && !has(cached, 'download_required')).toBe(true);
    expect(has(fresh, 'download_required')).toBe(true);
    const cTtft = cached.estimates.browser!.ttft_ms;
    const fTtft = fresh.estimates.browser!.ttft_ms;
    expect(Math.abs(fTtft - cTtft - (98e6 / DOWNLOAD_BYTES_PER_SEC) * 1000)).toBeLessThan(1e-6);
    expect(cTtft).toBeLessThan(1000);
  });

  it('a loaded variant has no load time', () => {
    const cachedCaps = caps();
    cachedCaps.cached_variants = [SHA_SMALL];
    const loadedCaps = caps();
    loadedCaps.loaded_variants = [` ${SHA_SMALL.toUpperCase()} `];
    const c = decide(request(cachedCaps), [small()], server(), 'fastest');
    const l = decide(request(loadedCaps), [small()], server(), 'fastest');
    expect(has(l, 'variant_loaded') && !has(l, 'variant_cached') && !has(l, 'download_required')).toBe(true);
    const load = LOAD_OVERHEAD_MS + (98e6 / LOAD_BYTES_PER_SEC) * 1000;
    const cTtft = c.estimates.browser!.ttft_ms;
    const lTtft = l.estimates.browser!.ttft_ms;
    expect(Math.abs(cTtft - lTtft - load)).toBeLessThan(1e-6);
    // The prompt alone: 100 tokens at 4 x (20 GB/s / 98 MB).
    expect(Math.abs(lTtft - (100 / ((4 * 20e9) / 98e6)) * 1000)).toBeLessThan(1e-6);
  });

  it('a loaded variant is preferred over a cached one', () => {
    const c = caps();
    c.cached_variants = [SHA_SMALL];
    c.loaded_variants = [SHA_BIG];
    const a = decide(request(c), [small(), big()], server(), 'cheapest');
    expect(a.variant?.sha256).toBe(SHA_BIG);
    expect(has(a, 'variant_loaded')).toBe(true);
  });

  it('a cached variant is preferred', () => {
    const c = caps();
    c.cached_variants = [SHA_BIG];
    let a = decide(request(c), [small(), big()], server(), 'cheapest');
    expect(a.variant?.sha256).toBe(SHA_BIG);
    expect(has(a, 'variant_cached')).toBe(true);
    a = decide(request(caps()), [big(), small()], server(), 'cheapest');
    expect(a.variant?.sha256).toBe(SHA_SMALL);
  });

  it('a fast measured device wins under fastest', () => {
    const c = caps();
    c.cached_variants = [SHA_SMALL];
    c.measured = { decode_tok_s: 200, prefill_tok_s: 2000 };
    const a = decide(request(c), [small()], server(), 'fastest');
    expect(a.route).toBe('browser');
    expect(has(a, 'browser_faster') && has(a, 'measured_speed')).toBe(true);
    expect(a.estimates.browser!.tok_s).toBe(200);
  });

  it('a slow measured device loses under fastest and balanced', () => {
    const c = caps();
    c.cached_variants = [SHA_SMALL];
    c.measured = { decode_tok_s: 2 };
    let a = decide(request(c), [small()], server(), 'fastest');
    expect(a.route).toBe('server');
    expect(a.variant).toBeNull();
    expect(has(a, 'server_faster')).toBe(true);
    expect(a.estimates.browser).not.toBeNull();
    a = decide(request(c), [small()], server(), 'balanced');
    expect(a.route).toBe('server');
    expect(has(a, 'beyond_tolerance')).toBe(true);
  });

  it('cheapest refuses only absurd slowness', () => {
    const c = caps();
    c.cached_variants = [SHA_SMALL];
    c.measured = { decode_tok_s: 8 };
    let a = decide(request(c), [small()], server(), 'cheapest');
    expect(a.route).toBe('browser');
    c.measured = { decode_tok_s: 1 };
    a = decide(request(c), [small()], server(), 'cheapest');
    expect(a.route).toBe('server');
    expect(has(a, 'browser_too_slow')).toBe(true);
  });

  it('balanced tolerance', () => {
    const c = caps();
    c.cached_variants = [SHA_SMALL];
    const s = server();
    const bound = totalMs(s, 256) * (1 + BALANCED_TOLERANCE) + BALANCED_SLACK_MS;
    for (const [tokS, browser] of [
      [40, true],
      [256_000 / (bound - 1500), true],
      [25, false],
    ] as const) {
      c.measured = { decode_tok_s: tokS, prefill_tok_s: 1000 };
      const a = decide(request(c), [small()], s, 'balanced');
      expect(a.route === 'browser', `${tokS}`).toBe(browser);
    }
  });

  it('balanced judges a stream by its first token and reading speed', () => {
    const c = caps();
    c.cached_variants = [SHA_SMALL];
    c.loaded_variants = [SHA_SMALL];
    const s = server(); // first token in 300 ms: the bound is 950 ms
    for (const [prefill, decode, browser, reason] of [
      [200, 20, true, 'within_tolerance'],
      [80, 20, false, 'beyond_tolerance'],
      [200, READING_TOK_S * 0.9, false, 'slower_than_reading'],
    ] as const) {
      c.measured = { decode_tok_s: decode, prefill_tok_s: prefill };
      // Awaited whole, 256 tokens at 20 tok/s lose to the server.
      let a = decide(request(c), [small()], s, 'balanced');
      expect(a.route).toBe('server');
      a = decide({ ...request(c), stream: true }, [small()], s, 'balanced');
      expect(a.route === 'browser', `${prefill} ${decode}`).toBe(browser);
      expect(has(a, 'streamed') && has(a, reason)).toBe(true);
    }
  });

  it('balanced takes a stream whose first token meets the target', () => {
    const c = caps();
    c.cached_variants = [SHA_SMALL];
    c.loaded_variants = [SHA_SMALL];
    const s = server(); // first token in 300 ms: the tolerance's bound is 950 ms
    // 100 prompt tokens at 40 tok/s: the first token in 2,500 ms.
    c.measured = { decode_tok_s: 20, prefill_tok_s: 40 };
    const req = { ...request(c), stream: true };
    for (const [target, browser, reason] of [
      [DEFAULT_TTFT_TARGET_MS, false, 'beyond_tolerance'],
      [2400, false, 'beyond_tolerance'],
      [2500, true, 'within_ttft_target'],
      [3000, true, 'within_ttft_target'],
      [Number.NaN, false, 'beyond_tolerance'],
    ] as const) {
      const a = decide(req, [small()], s, 'balanced', target);
      expect(a.route === 'browser', `${target}`).toBe(browser);
      expect(has(a, reason), `${target}`).toBe(true);
    }
    c.measured = { decode_tok_s: READING_TOK_S * 0.9, prefill_tok_s: 40 };
    const slow = decide({ ...request(c), stream: true }, [small()], s, 'balanced', 3000);
    expect(slow.route).toBe('server');
    expect(has(slow, 'slower_than_reading')).toBe(true);
    expect(decide({ ...req, stream: false }, [small()], s, 'balanced', 1e9).route).toBe('server');
    expect(decide(req, [small()], s, 'fastest', 1e9).route).toBe('server');
  });

  it('a download under way counts only what is left', () => {
    const c = caps();
    c.measured = { decode_tok_s: 50, prefill_tok_s: 100 };
    const bytes = 98e6;
    const load = LOAD_OVERHEAD_MS + (bytes / LOAD_BYTES_PER_SEC) * 1e3;
    const whole = (bytes / DOWNLOAD_BYTES_PER_SEC) * 1e3;
    const ttft = (caps: DeviceReport) => decide(request(caps), [small()], server(), 'balanced').estimates.browser!.ttft_ms;
    expect(ttft(c)).toBeCloseTo(whole + load + 1000, 6);
    c.downloading = [{ sha256: SHA_SMALL.toUpperCase(), received_bytes: bytes * 0.75 }];
    expect(ttft(c)).toBeCloseTo(whole / 4 + load + 1000, 6);
    c.downloading = [{ sha256: SHA_SMALL, received_bytes: bytes * 0.75, bytes_per_sec: bytes / 4 }];
    expect(ttft(c)).toBeCloseTo(1000 + load + 1000, 6);
    for (const [received, rate, left] of [
      [-5, Number.NaN, whole],
      [bytes * 2, 1, 0],
    ] as const) {
      c.downloading = [{ sha256: SHA_SMALL, received_bytes: received, bytes_per_sec: rate }];
      expect(ttft(c), `${received}`).toBeCloseTo(left + load + 1000, 6);
    }
    c.downloading = [{ sha256: 'other', received_bytes: bytes }];
    expect(ttft(c)).toBeCloseTo(whole + load + 1000, 6);
    (c as unknown as Record<string, unknown>).downloading = [3, { sha256: SHA_SMALL, received_bytes: bytes / 2, bytes_per_sec: 'x' }];
    expect(ttft(c)).toBeCloseTo(whole / 2 + load + 1000, 6);
    c.cached_variants = [SHA_SMALL];
    expect(ttft(c)).toBeCloseTo(load + 1000, 6);
  });

  it('a loaded engine prefills only what it does not hold', () => {
    const c = caps();
    c.cached_variants = [SHA_SMALL];
    c.measured = { decode_tok_s: 50, prefill_tok_s: 100 };
    const ttft = (r: RouteRequest) => decide(r, [small()], server(), 'balanced').estimates.browser!.ttft_ms;
    const load = LOAD_OVERHEAD_MS + (98e6 / LOAD_BYTES_PER_SEC) * 1e3;
    // Not loaded: the kept keys and values are gone, the whole prompt is computed.
    expect(ttft({ ...request(c), cached_prompt_tokens: 80 })).toBeCloseTo(load + 1000, 6);
    c.loaded_variants = [SHA_SMALL];
    expect(ttft({ ...request(c), cached_prompt_tokens: 80 })).toBeCloseTo(200, 6);
    // At least the last token is computed.
    expect(ttft({ ...request(c), cached_prompt_tokens: 500 })).toBeCloseTo(10, 6);
  });

  it('a fallback adapter is slow', () => {
    const c = caps();
    c.wasm_simd = false;
    c.webgpu!.adapter = { vendor: 'google', architecture: 'swiftshader', is_fallback: false };
    let a = decide(request(c), [small()], server(), 'fastest');
    expect(has(a, 'webgpu_fallback_adapter') && has(a, 'path_webgpu')).toBe(true);
    expect(Math.abs(a.estimates.browser!.tok_s - WEBGPU_FALLBACK_BYTES_PER_SEC / 98e6)).toBeLessThan(1e-9);
    expect(a.route).toBe('server');
    c.wasm_simd = true;
    a = decide(request(c), [small()], server(), 'cheapest');
    expect(a.browser_path).toBe('cpu');
  });

  it('storage too small for a download', () => {
    const c = caps();
    c.storage_available_bytes = 50e6;
    let a = decide(request(c), [small()], server(), 'cheapest');
    expect(a.route).toBe('server');
    expect(has(a, 'insufficient_storage')).toBe(true);
    c.cached_variants = [SHA_SMALL];
    a = decide(request(c), [small()], server(), 'cheapest');
    expect(a.route).toBe('browser');
  });

  it('garbage numbers do not throw', () => {
    const bad = [NaN, Infinity, -Infinity, -1, 0, 1e-300, 1e300, Number.MAX_VALUE, Number.MIN_VALUE];
    const variants: BrowserVariant[] = [
      small(),
      big(),
      {
        url: '',
        sha256: '',
        bytes: Number.MAX_SAFE_INTEGER * 2048,
        quantization: '',
        required_features: [''],
        memory_bytes: Number.MAX_SAFE_INTEGER * 2048,
        max_tensor_bytes: Number.MAX_SAFE_INTEGER * 2048,
      },
      { ...small(), bytes: 0, memory_bytes: 0, max_tensor_bytes: 0 },
      { ...small(), bytes: NaN, memory_bytes: -5, max_tensor_bytes: Infinity },
    ];
    for (const x of bad) {
      for (const y of bad) {
        const c = caps();
        c.device_memory_gb = x;
        c.storage_available_bytes = y;
        c.hardware_concurrency = 2 ** 32 - 1;
        c.cached_variants = ['', SHA_SMALL];
        c.measured = { decode_tok_s: x, prefill_tok_s: y };
        c.webgpu!.limits.maxBufferSize = y;
        const req = request(c);
        req.prompt_tokens = Number.MAX_VALUE;
        req.max_tokens = Number.MAX_VALUE;
        const srv: Estimate = { ttft_ms: x, tok_s: y, cost_usd: x };
        for (const policy of POLICIES) {
          assertFinite(decide(req, variants, srv, policy));
          assertFinite(decide({}, variants, srv, policy));
        }
      }
    }
  });

  it('garbage JSON is read leniently', () => {
    const body = {
      model: 7,
      prompt_tokens: -5,
      max_tokens: 1e30,
      capabilities: {
        webgpu: {
          available: 'maybe',
          adapter: 3,
          features: ['shader-f16', 1, null],
          limits: { maxBufferSize: 'big', maxComputeWorkgroupSizeX: 256 },
        },
        wasm_simd: 'yes',
        cross_origin_isolated: null,
        hardware_concurrency: -2,
        device_memory_gb: '8',
        storage_available_bytes: [1],
        cached_variants: 'nope',
        measured: { decode_tok_s: 'fast' },
        something_new: { x: 1 },
      },
    } as unknown as RouteRequest;
    const a = decide(body, [small()], server(), 'balanced');
    assertFinite(a);
    // WebGPU counts as available with the features that are strings; SIMD "yes" is not true.
    expect(a.route).toBe('browser');
    expect(has(a, 'path_webgpu') && has(a, 'device_memory_unknown')).toBe(true);

    // Empty body, null capabilities.
    for (const req of [{}, { capabilities: null, max_tokens: null }] as RouteRequest[]) {
      const b = decide(req, [small()], server(), 'balanced');
      expect(b.route).toBe('server');
      expect(has(b, 'no_webgpu') && has(b, 'no_wasm_simd') && has(b, 'device_memory_unknown')).toBe(true);
    }
    // `available: false` is no WebGPU.
    const c = decide({ capabilities: { webgpu: { available: false } } } as RouteRequest, [small()], server(), 'cheapest');
    expect(c.reasons).toContain('no_webgpu');
  });

  it('the default max_tokens is 256', () => {
    const c = caps();
    c.cached_variants = [SHA_SMALL];
    c.measured = { decode_tok_s: 10, prefill_tok_s: 1000 };
    const a = decide({ capabilities: c }, [small()], server(), 'fastest');
    const b = decide({ capabilities: c, max_tokens: DEFAULT_MAX_TOKENS }, [small()], server(), 'fastest');
    expect(a.estimates).toEqual(b.estimates);
  });

  it('answer shape', () => {
    const c = caps();
    c.cached_variants = [SHA_SMALL];
    let a = decide(request(c), [small()], server(), 'balanced');
    expect(a.route).toBe('browser');
    const { browser_path: _path, ...wire } = a;
    expect(Object.keys(wire).sort()).toEqual(['estimates', 'reasons', 'route', 'variant']);
    expect(Object.keys(a.variant!).sort()).toEqual(['bytes', 'quantization', 'required_features', 'sha256', 'url']);
    expect(a.variant!.bytes).toBe(98_000_000);
    expect(a.variant!.required_features).toEqual(['shader-f16']);
    expect(Object.keys(a.estimates).sort()).toEqual(['browser', 'server']);
    for (const side of [a.estimates.browser!, a.estimates.server]) {
      expect(Object.keys(side).sort()).toEqual(['cost_usd', 'tok_s', 'ttft_ms']);
    }
    expect(a.estimates.browser!.cost_usd).toBe(0);
    expect(a.estimates.server.tok_s).toBe(50);
    a = decide({}, [small()], server(), 'fastest');
    expect(a.route).toBe('server');
    expect(a.variant).toBeNull();
    expect(a.estimates.browser).toBeNull();
  });

  it('reasons are snake_case and unique', () => {
    const c = caps();
    c.webgpu!.features = [];
    delete c.device_memory_gb;
    const a = decide(request(c), [small(), big()], server(), 'balanced');
    for (const r of a.reasons) {
      const [name, arg] = r.includes(':') ? [r.slice(0, r.indexOf(':')), r.slice(r.indexOf(':') + 1)] : [r, ''];
      expect(/^[a-z_]+$/.test(name), r).toBe(true);
      expect(name === 'missing_feature' || arg === '', r).toBe(true);
    }
    expect(new Set(a.reasons).size).toBe(a.reasons.length);
  });

  it('an invalid server estimate is flagged', () => {
    const a = decide(request(caps()), [small()], { ttft_ms: NaN, tok_s: 0, cost_usd: -1 }, 'balanced');
    expect(has(a, 'server_estimate_invalid')).toBe(true);
    assertFinite(a);
  });

  it('with the server unreachable, any runnable variant runs in the browser', () => {
    for (const policy of POLICIES) {
      const c = caps();
      c.measured = { decode_tok_s: 0.5 };
      const a = decide(request(c), [small()], UNREACHABLE_SERVER, policy);
      expect(a.route, policy).toBe('browser');
      expect(has(a, 'browser_faster')).toBe(true);
      expect(a.estimates.server.ttft_ms).toBe(MAX_TIME_MS);
    }
    const c = caps();
    c.webgpu = null;
    c.wasm_simd = false;
    expect(decide(request(c), [small()], UNREACHABLE_SERVER, 'balanced').route).toBe('server');
  });
});
