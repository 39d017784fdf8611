// Messages between the page (./index.ts) and the engine's Web Worker (./worker.ts).

import type { EngineFailureKind, EnginePath, EngineRequest, LoadProgress, WasmSimd } from './types.js';

/** What the worker is asked to load. */
export interface LoadMessage {
  type: 'load';
  url: string;
  sha256: string;
  bytes: number;
  backend: 'auto' | EnginePath;
  contextSize: number;
  /** The largest tensor, to check against the adapter's `maxBufferSize`. */
  maxTensorBytes: number;
  /** Which WebAssembly build of the engine to run. */
  wasmSimd: WasmSimd;
  /** CPU threads (0 = as many as help, where the page allows threads). */
  threads: number;
}

/** Page → worker. */
export type ToWorker =
  | LoadMessage
  | { type: 'generate'; id: number; request: EngineRequest }
  | { type: 'abort'; id: number };

/** What the loaded engine reports about itself. */
export interface EngineInfo {
  backend: EnginePath;
  device: string;
  threads: number;
  model: string;
  context_size: number;
}

/** Worker → page. */
export type FromWorker =
  | { type: 'progress'; progress: LoadProgress }
  | { type: 'loaded'; info: EngineInfo }
  | { type: 'load_error'; kind: EngineFailureKind; message: string }
  | { type: 'delta'; id: number; text: string; tokens: number }
  | {
      type: 'done';
      id: number;
      finish_reason: 'stop' | 'length';
      usage: { prompt_tokens: number; completion_tokens: number; cached_tokens: number };
      timing: { ttft_ms: number; decode_tok_s: number | null; prefill_tok_s: number | null };
    }
  | { type: 'error'; id: number; kind: EngineFailureKind; message: string };
