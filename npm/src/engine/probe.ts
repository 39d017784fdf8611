// What the browser can do, in the shape `POST /v1/route` takes.

import { isCachedUrl } from './cache.js';
import { type Adapter, navigatorGpu } from './gpu.js';
import type { BrowserVariant, DeviceReport } from './types.js';

/** A module using one SIMD instruction (`i32x4.splat`): valid only where WebAssembly SIMD is. */
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11,
]);

function wasmSimd(): boolean {
  try {
    return typeof WebAssembly === 'object' && WebAssembly.validate(SIMD_PROBE);
  } catch {
    return false;
  }
}

async function webgpu(): Promise<DeviceReport['webgpu']> {
  const gpu = navigatorGpu();
  if (!gpu) return null;
  let adapter: Adapter | null = null;
  try {
    adapter = await gpu.requestAdapter();
  } catch {
    adapter = null;
  }
  if (!adapter) {
    return { available: false, adapter: { vendor: '', architecture: '', is_fallback: false }, features: [], limits: {} };
  }
  const info = adapter.info;
  const limits: Record<string, number> = {};
  for (const key in adapter.limits) {
    const v = (adapter.limits as unknown as Record<string, unknown>)[key];
    if (typeof v === 'number') limits[key] = v;
  }
  return {
    available: true,
    adapter: {
      vendor: info?.vendor ?? '',
      architecture: info?.architecture ?? '',
      is_fallback: Boolean(info?.isFallbackAdapter ?? adapter.isFallbackAdapter),
      device: info?.device ?? '',
      description: info?.description ?? '',
    },
    features: [...adapter.features].map(String).sort(),
    limits,
  };
}

/** Reports WebGPU, SIMD, memory, storage and which of `variants` are cached. */
export async function probeDevice(variants: BrowserVariant[]): Promise<DeviceReport> {
  const nav = globalThis.navigator as (Navigator & { deviceMemory?: number }) | undefined;
  let storage: number | undefined;
  try {
    const est = await nav?.storage?.estimate?.();
    if (est && typeof est.quota === 'number') storage = Math.max(0, est.quota - (est.usage ?? 0));
  } catch {
    storage = undefined;
  }
  const cached: string[] = [];
  for (const v of variants) {
    if (v.sha256 && (await isCachedUrl(v.url, v.sha256).catch(() => false))) cached.push(v.sha256);
  }
  return {
    webgpu: await webgpu(),
    wasm_simd: wasmSimd(),
    cross_origin_isolated: Boolean((globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated),
    hardware_concurrency: nav?.hardwareConcurrency,
    device_memory_gb: nav?.deviceMemory,
    storage_available_bytes: storage,
    cached_variants: cached,
  };
}
