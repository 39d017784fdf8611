// The browser path of a request as one stream of chat chunks, and its failover: when the browser
// engine fails at load or mid-stream, the server continues from the text already produced
// (`continue_final_message`), and the caller sees one uninterrupted stream.

import {
  EngineFailure,
  type BrowserEngine,
  type EngineEvent,
  type EngineFailureKind,
} from './engine/types.js';
import {
  completionId,
  makeChunk,
  makeUsageChunk,
  maxTokensOf,
  TandemAbortError,
  toEngineRequest,
  unixNow,
  usageOf,
  type ChatCompletionChunk,
  type ChatCompletionCreateParamsBase,
  type ChunkHeader,
  type CompletionUsage,
  type FinishReason,
  type TandemInfo,
} from './openai.js';
import { isAbort, type ServerClient } from './server.js';

/** Kinds of engine failure the server does not take over: the caller's abort, a bad request. */
export const NO_FAILOVER: ReadonlySet<EngineFailureKind> = new Set(['aborted', 'invalid_request']);

/** The failure as an `EngineFailure` (anything else counts as `internal`). */
export function asEngineFailure(err: unknown): EngineFailure {
  if (err instanceof EngineFailure) return err;
  if (err && typeof err === 'object' && typeof (err as { kind?: unknown }).kind === 'string') {
    const e = err as { kind: EngineFailureKind; message?: unknown };
    return new EngineFailure(e.kind, typeof e.message === 'string' ? e.message : String(e.kind));
  }
  return new EngineFailure('internal', err instanceof Error ? err.message : String(err));
}

/** The request body for the server: the caller's parameters without client-only fields. */
export function serverBody(params: ChatCompletionCreateParamsBase): Record<string, unknown> {
  const body: Record<string, unknown> = { ...params };
  delete body.signal;
  delete body.fail_after_tokens;
  return body;
}

/**
 * The body that makes the server continue an answer the browser started: the original messages
 * plus the partial assistant message, `continue_final_message: true`,
 * `add_generation_prompt: false` (vLLM's extension), the token budget reduced by what the browser
 * produced, and always a usage chunk (to merge the counts).
 */
export function continuationBody(
  params: ChatCompletionCreateParamsBase,
  textSoFar: string,
  tokensSoFar: number,
): Record<string, unknown> {
  const body = serverBody(params);
  if (textSoFar.length > 0) {
    body.messages = [...params.messages, { role: 'assistant', content: textSoFar }];
    body.continue_final_message = true;
    body.add_generation_prompt = false;
  }
  for (const key of ['max_tokens', 'max_completion_tokens'] as const) {
    const v = params[key];
    if (typeof v === 'number' && Number.isFinite(v)) body[key] = Math.max(1, v - tokensSoFar);
  }
  body.stream_options = { ...(params.stream_options ?? {}), include_usage: true };
  return body;
}

/** What the browser path reports when the engine finished a request. */
export interface BrowserDone {
  engine: BrowserEngine;
  usage: { prompt_tokens: number; completion_tokens: number };
  timing: Extract<EngineEvent, { type: 'done' }>['timing'];
  duration_ms: number;
  /** The answer's text. */
  text: string;
}

export interface BrowserStreamOptions {
  params: ChatCompletionCreateParamsBase;
  /** The model name put in chunks. */
  model: string;
  /** The routing decision (route `browser`). */
  info: TandemInfo;
  /** Gets the (possibly shared, lazily loaded) engine. */
  loadEngine: () => Promise<BrowserEngine>;
  server: ServerClient;
  /** Aborts the request on both paths. */
  signal?: AbortSignal;
  /** Continue on the server when the browser fails (default true). */
  failover?: boolean;
  /** Emit `usage: null` on chunks and a last usage chunk. */
  includeUsage: boolean;
  /** Called once when the browser finished the whole request. */
  onDone?: (done: BrowserDone) => void;
  /** Called when the engine failed (the caller may drop a broken engine). */
  onFailure?: (failure: EngineFailure, engine: BrowserEngine | undefined) => void;
}

/** Resolves with `promise`, or rejects with `TandemAbortError` as soon as `signal` aborts. */
function raceAbort<T>(promise: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(new TandemAbortError(undefined, { cause: signal.reason }));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new TandemAbortError(undefined, { cause: signal.reason }));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

/**
 * The chunks of a browser-routed request: a role chunk (carrying `tandem`), content chunks, the
 * finish chunk (carrying the final `tandem`), and a usage chunk when asked. On an engine failure
 * (other than `aborted` / `invalid_request`) the server continues the answer in the same stream.
 */
export async function* browserStream(opts: BrowserStreamOptions): AsyncGenerator<ChatCompletionChunk> {
  const { params, signal } = opts;
  const header: ChunkHeader = { id: completionId(), created: unixNow(), model: opts.model };
  const usageNull = opts.includeUsage ? { usage: null } : {};
  let started = false;
  let text = '';
  let tokens = 0;
  let engine: BrowserEngine | undefined;
  let failure: EngineFailure;
  let phase: 'at_load' | 'mid_stream' = 'at_load';
  const browserInfo = (): TandemInfo => {
    const info: TandemInfo = { ...opts.info, route: 'browser' };
    if (engine) {
      info.path = engine.path;
      if (engine.variant?.quantization) info.quantization = engine.variant.quantization;
    }
    return info;
  };
  const roleChunk = (info: TandemInfo) =>
    makeChunk(header, { role: 'assistant', content: '' }, null, { ...usageNull, tandem: info });

  try {
    engine = await raceAbort(opts.loadEngine(), signal);
    phase = 'mid_stream';
    const start = Date.now();
    const request = toEngineRequest(params);
    for await (const event of engine.generate(request, signal)) {
      if (signal?.aborted) throw new TandemAbortError(undefined, { cause: signal.reason });
      if (event.type === 'delta') {
        if (!started) {
          started = true;
          yield roleChunk(browserInfo());
        }
        tokens += Number.isFinite(event.tokens) ? event.tokens : 0;
        if (event.text.length === 0) continue;
        text += event.text;
        yield makeChunk(header, { content: event.text }, null, usageNull);
      } else if (event.type === 'done') {
        const info = browserInfo();
        if (!started) {
          started = true;
          yield roleChunk(info);
        }
        yield makeChunk(header, {}, event.finish_reason, { ...usageNull, tandem: info });
        const duration_ms = Date.now() - start;
        try {
          opts.onDone?.({ engine, usage: event.usage, timing: event.timing, duration_ms, text });
        } catch {
          // a reporting hook never breaks the stream
        }
        if (opts.includeUsage) {
          yield makeUsageChunk(header, usageOf(event.usage.prompt_tokens, event.usage.completion_tokens, event.usage.cached_tokens));
        }
        return;
      }
    }
    throw new EngineFailure('internal', 'The engine stream ended without finishing.');
  } catch (err) {
    if (err instanceof TandemAbortError || isAbort(err, signal)) {
      throw err instanceof TandemAbortError ? err : new TandemAbortError(undefined, { cause: err });
    }
    failure = asEngineFailure(err);
    try {
      opts.onFailure?.(failure, engine);
    } catch {
      // ignored
    }
    if (NO_FAILOVER.has(failure.kind) || opts.failover === false) throw failure;
  }

  // Failover: the server continues from `text`.
  const info: TandemInfo = {
    ...opts.info,
    route: 'server',
    reason: `browser_failed_${phase}: ${failure.kind}`,
    failover: true,
    browser_tokens: tokens,
    error: failure.message,
  };
  if (engine) {
    info.path = engine.path;
    if (engine.variant?.quantization) info.quantization = engine.variant.quantization;
  } else {
    delete info.path;
    delete info.quantization;
  }

  const max = maxTokensOf(params);
  if (max !== undefined && tokens >= max) {
    // The browser produced the whole budget before failing: nothing is left to ask for.
    if (!started) yield roleChunk(info);
    yield makeChunk(header, {}, 'length', { ...usageNull, tandem: info });
    if (opts.includeUsage) yield makeUsageChunk(header, usageOf(0, tokens));
    return;
  }

  const chunks = await opts.server.chatStream(continuationBody(params, text, tokens), signal);
  let serverUsage: CompletionUsage | undefined;
  let finished = false;
  for await (const chunk of chunks) {
    if (chunk.usage) serverUsage = chunk.usage;
    if (!Array.isArray(chunk.choices) || chunk.choices.length === 0) continue; // the usage chunk
    if (chunk.system_fingerprint != null && header.system_fingerprint === undefined) {
      header.system_fingerprint = chunk.system_fingerprint;
    }
    for (const choice of chunk.choices) {
      const delta = { ...(choice.delta ?? {}) };
      delete delta.role;
      const hasDelta = Object.keys(delta).some((k) => delta[k] != null && delta[k] !== '');
      const finish = (choice.finish_reason ?? null) as FinishReason | null;
      if (!hasDelta && !finish) continue;
      if (!started) {
        started = true;
        yield roleChunk(info);
      }
      const out = makeChunk(header, delta, finish, usageNull);
      out.choices[0]!.index = choice.index ?? 0;
      if (choice.logprobs !== undefined) out.choices[0]!.logprobs = choice.logprobs;
      if (finish) {
        out.tandem = { ...info };
        finished = true;
      }
      yield out;
    }
  }
  if (!started) yield roleChunk(info);
  if (!finished) yield makeChunk(header, {}, 'stop', { ...usageNull, tandem: info });
  if (opts.includeUsage) {
    const serverPrompt = serverUsage?.prompt_tokens ?? 0;
    const serverCompletion = serverUsage?.completion_tokens ?? 0;
    // The server's prompt included the browser's text (about `tokens` tokens).
    yield makeUsageChunk(header, usageOf(Math.max(0, serverPrompt - tokens), tokens + serverCompletion));
  }
}

/** The chunks of a server-routed request, with `tandem` on the first and the finish chunks. */
export async function* serverStream(
  server: ServerClient,
  body: Record<string, unknown>,
  info: TandemInfo,
  signal?: AbortSignal,
): AsyncGenerator<ChatCompletionChunk> {
  const chunks = await server.chatStream(body, signal);
  let first = true;
  for await (const chunk of chunks) {
    if (first || (Array.isArray(chunk.choices) && chunk.choices.some((c) => c?.finish_reason))) {
      chunk.tandem = { ...info };
      first = false;
    }
    yield chunk;
  }
}
