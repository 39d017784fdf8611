// The few WebGPU interfaces the package reads (TypeScript's DOM library does not have them).

/** `GPUAdapterInfo`. */
export interface AdapterInfo {
  vendor?: string;
  architecture?: string;
  device?: string;
  description?: string;
  isFallbackAdapter?: boolean;
}

/** `GPUAdapter`, as far as it is read here. */
export interface Adapter {
  readonly info?: AdapterInfo;
  readonly isFallbackAdapter?: boolean;
  readonly features: Iterable<string>;
  readonly limits: { readonly maxBufferSize: number };
}

/** `navigator.gpu`. */
export interface Gpu {
  requestAdapter(options?: { powerPreference?: 'low-power' | 'high-performance' }): Promise<Adapter | null>;
}

/** `navigator.gpu`, when the browser has WebGPU. */
export function navigatorGpu(): Gpu | undefined {
  return (globalThis.navigator as (Navigator & { gpu?: Gpu }) | undefined)?.gpu;
}
