// OpenAI-shaped request and response types (the subset Tandem speaks), Tandem's extensions to
// them, and the builders of completions and chunks for answers produced in the browser.

import type { BrowserVariant, EngineMessage, EnginePath, EngineRequest } from './engine/types.js';

// ------------------------------------------------------------------------------------------------
// Requests
// ------------------------------------------------------------------------------------------------

/** A text part of a message's content. */
export interface ChatCompletionContentPartText {
  type: 'text';
  text: string;
}

/** A part of a message's content (only text parts run in the browser; others go to the server). */
export type ChatCompletionContentPart =
  | ChatCompletionContentPartText
  | { type: string; [key: string]: unknown };

/** One message of a chat. */
export interface ChatCompletionMessageParam {
  role: 'system' | 'user' | 'assistant' | 'tool' | 'developer';
  content: string | ChatCompletionContentPart[] | null;
  name?: string;
  [key: string]: unknown;
}

/** `stream_options`. */
export interface ChatCompletionStreamOptions {
  /** Add a last chunk with `usage` (and `usage: null` on the others). */
  include_usage?: boolean;
}

/** The parameters of `chat.completions.create`. Unknown fields are sent to the server as is. */
export interface ChatCompletionCreateParamsBase {
  /** The model id, as `models.list()` gives it. */
  model: string;
  messages: ChatCompletionMessageParam[];
  stream?: boolean | null;
  stream_options?: ChatCompletionStreamOptions | null;
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  stop?: string | string[] | null;
  seed?: number | null;
  frequency_penalty?: number | null;
  presence_penalty?: number | null;
  n?: number | null;
  user?: string;
  /** vLLM / llama.cpp extensions (also honoured by the browser engine). */
  top_k?: number | null;
  min_p?: number | null;
  repetition_penalty?: number | null;
  /** vLLM's extension: keep generating after the end-of-turn token (benchmarks). */
  ignore_eos?: boolean | null;
  /** Cancels the request, on whichever side it runs (not sent to the server). */
  signal?: AbortSignal;
  [key: string]: unknown;
}

export interface ChatCompletionCreateParamsStreaming extends ChatCompletionCreateParamsBase {
  stream: true;
}

export interface ChatCompletionCreateParamsNonStreaming extends ChatCompletionCreateParamsBase {
  stream?: false | null;
}

export type ChatCompletionCreateParams =
  | ChatCompletionCreateParamsStreaming
  | ChatCompletionCreateParamsNonStreaming;

/** The second argument of `create`, as in the `openai` package. */
export interface RequestOptions {
  signal?: AbortSignal;
  /** This request's routing policy, instead of the client's (`Tandem.create({ policy })`). */
  policy?: 'auto' | 'browser' | 'server';
}

// ------------------------------------------------------------------------------------------------
// Responses
// ------------------------------------------------------------------------------------------------

/** Where a request ran and why (Tandem's extension of completions and chunks). */
export interface TandemInfo {
  /** Where the answer (or, after a failover, its end) came from. */
  route: 'browser' | 'server';
  /**
   * Why: the `/v1/route` reasons joined by `, `, `policy_browser` / `policy_server`, or, after a
   * failover, `browser_failed_at_load: KIND` / `browser_failed_mid_stream: KIND`.
   */
  reason: string;
  /** Who decided: the server's `/v1/route`, this client by the same rules (server unreachable),
   * or the client's fixed `policy`. */
  decided_by?: 'server' | 'local' | 'policy';
  /** The browser engine's compute path, when the browser ran (part of) the request. */
  path?: EnginePath;
  /** The browser variant's quantization, when the browser ran (part of) the request. */
  quantization?: string;
  /** True when the browser failed and the server completed the request. */
  failover?: boolean;
  /** Tokens the browser produced before a failover. */
  browser_tokens?: number;
  /** The browser's failure message, after a failover. */
  error?: string;
}

export interface CompletionUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  [key: string]: unknown;
}

export type FinishReason = 'stop' | 'length' | 'tool_calls' | 'content_filter' | 'function_call';

export interface ChatCompletionMessage {
  role: 'assistant';
  content: string | null;
  refusal?: string | null;
  [key: string]: unknown;
}

export interface ChatCompletionChoice {
  index: number;
  message: ChatCompletionMessage;
  finish_reason: FinishReason | null;
  logprobs: unknown | null;
  [key: string]: unknown;
}

export interface ChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  system_fingerprint?: string | null;
  choices: ChatCompletionChoice[];
  usage?: CompletionUsage;
  tandem: TandemInfo;
  [key: string]: unknown;
}

export interface ChatCompletionChunkDelta {
  role?: 'assistant';
  content?: string | null;
  [key: string]: unknown;
}

export interface ChatCompletionChunkChoice {
  index: number;
  delta: ChatCompletionChunkDelta;
  finish_reason: FinishReason | null;
  logprobs?: unknown | null;
  [key: string]: unknown;
}

export interface ChatCompletionChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  system_fingerprint?: string | null;
  choices: ChatCompletionChunkChoice[];
  usage?: CompletionUsage | null;
  /** On the first chunk and on the chunk that carries `finish_reason`. */
  tandem?: TandemInfo;
  [key: string]: unknown;
}

/** One entry of `GET /v1/models` (with Tandem's extensions). */
export interface Model {
  id: string;
  object: 'model';
  created: number;
  owned_by: string;
  /** Context size in tokens (vLLM's extension). */
  max_model_len?: number | null;
  /** The model an alias points to. */
  root?: string;
  /** The upstreams that serve it. */
  upstreams?: string[];
  /** Files a browser can run it from, with absolute URLs. */
  browser_variants: BrowserVariant[];
  [key: string]: unknown;
}

export interface ModelList {
  object: 'list';
  data: Model[];
}

// ------------------------------------------------------------------------------------------------
// Builders
// ------------------------------------------------------------------------------------------------

/** A fresh completion id in OpenAI's style. */
export function completionId(): string {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return `chatcmpl-${s}`;
}

/** Unix seconds now. */
export function unixNow(): number {
  return Math.floor(Date.now() / 1000);
}

export function usageOf(prompt: number, completion: number, cached?: number): CompletionUsage {
  const usage: CompletionUsage = { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
  // OpenAI's field for prompt tokens served from a cache (the browser engine keeps a chat's KV).
  if (cached !== undefined) usage.prompt_tokens_details = { cached_tokens: cached };
  return usage;
}

/** The text of a message's content (text parts joined; other parts dropped). */
export function contentText(content: ChatCompletionMessageParam['content']): string {
  if (content == null) return '';
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return String(content);
  return content
    .map((part) => (part && part.type === 'text' && typeof part.text === 'string' ? part.text : ''))
    .join('');
}

/** Whether every message can run in the browser (text parts only). */
export function textOnly(messages: ChatCompletionMessageParam[]): boolean {
  return messages.every(
    (m) =>
      m.content == null ||
      typeof m.content === 'string' ||
      (Array.isArray(m.content) && m.content.every((p) => p && p.type === 'text')),
  );
}

const ROLES = new Set(['system', 'user', 'assistant', 'tool', 'developer']);

/** The messages as the browser engine takes them. */
export function toEngineMessages(messages: ChatCompletionMessageParam[]): EngineMessage[] {
  return messages.map((m) => ({
    role: (ROLES.has(m.role) ? m.role : 'user') as EngineMessage['role'],
    content: contentText(m.content),
  }));
}

/** A finite number, else undefined. */
function num(x: unknown): number | undefined {
  return typeof x === 'number' && Number.isFinite(x) ? x : undefined;
}

/** `max_completion_tokens`, else `max_tokens`, when given. */
export function maxTokensOf(params: ChatCompletionCreateParamsBase): number | undefined {
  return num(params.max_completion_tokens) ?? num(params.max_tokens);
}

/** Maps OpenAI parameters onto the browser engine's request. */
export function toEngineRequest(params: ChatCompletionCreateParamsBase): EngineRequest {
  const req: EngineRequest = { messages: toEngineMessages(params.messages) };
  const max = maxTokensOf(params);
  if (max !== undefined) req.max_tokens = max;
  const copy = [
    'temperature',
    'top_p',
    'top_k',
    'min_p',
    'seed',
    'frequency_penalty',
    'presence_penalty',
    'repetition_penalty',
  ] as const;
  for (const key of copy) {
    const v = num(params[key]);
    if (v !== undefined) req[key] = v;
  }
  if (typeof params.stop === 'string' || Array.isArray(params.stop)) {
    const stop = typeof params.stop === 'string' ? params.stop : params.stop.filter((s) => typeof s === 'string');
    if (stop.length > 0) req.stop = stop;
  }
  if (params.ignore_eos === true) req.ignore_eos = true;
  const fail = num(params.fail_after_tokens);
  if (fail !== undefined) req.fail_after_tokens = fail;
  return req;
}

/** Rough prompt size in tokens: characters / 4. */
export function estimatePromptTokens(messages: ChatCompletionMessageParam[]): number {
  let chars = 0;
  for (const m of messages) chars += contentText(m.content).length + 4;
  return Math.ceil(chars / 4);
}

/** Fields of a chunk shared by a whole stream. */
export interface ChunkHeader {
  id: string;
  created: number;
  model: string;
  system_fingerprint?: string | null;
}

export function makeChunk(
  header: ChunkHeader,
  delta: ChatCompletionChunkDelta,
  finish_reason: FinishReason | null,
  extra?: { tandem?: TandemInfo; usage?: CompletionUsage | null },
): ChatCompletionChunk {
  const chunk: ChatCompletionChunk = {
    id: header.id,
    object: 'chat.completion.chunk',
    created: header.created,
    model: header.model,
    choices: [{ index: 0, delta, logprobs: null, finish_reason }],
  };
  if (header.system_fingerprint !== undefined) chunk.system_fingerprint = header.system_fingerprint;
  if (extra?.usage !== undefined) chunk.usage = extra.usage;
  if (extra?.tandem) chunk.tandem = { ...extra.tandem };
  return chunk;
}

export function makeUsageChunk(header: ChunkHeader, usage: CompletionUsage): ChatCompletionChunk {
  const chunk: ChatCompletionChunk = {
    id: header.id,
    object: 'chat.completion.chunk',
    created: header.created,
    model: header.model,
    choices: [],
    usage,
  };
  if (header.system_fingerprint !== undefined) chunk.system_fingerprint = header.system_fingerprint;
  return chunk;
}

/**
 * Folds a chat stream into one completion, as the non-streamed endpoint answers: the deltas'
 * text concatenated, the last finish_reason, the usage chunk's usage, the last `tandem`.
 */
export async function collectCompletion(
  chunks: AsyncIterable<ChatCompletionChunk>,
  fallbackModel: string,
): Promise<ChatCompletion> {
  let header: ChunkHeader | undefined;
  let text = '';
  let finish: FinishReason | null = null;
  let usage: CompletionUsage | undefined;
  let tandem: TandemInfo | undefined;
  for await (const chunk of chunks) {
    header ??= { id: chunk.id, created: chunk.created, model: chunk.model, system_fingerprint: chunk.system_fingerprint };
    if (chunk.tandem) tandem = chunk.tandem;
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      if (choice.index !== 0) continue;
      if (typeof choice.delta?.content === 'string') text += choice.delta.content;
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  header ??= { id: completionId(), created: unixNow(), model: fallbackModel };
  const completion: ChatCompletion = {
    id: header.id,
    object: 'chat.completion',
    created: header.created,
    model: header.model,
    choices: [
      { index: 0, message: { role: 'assistant', content: text }, finish_reason: finish ?? 'stop', logprobs: null },
    ],
    tandem: tandem ?? { route: 'browser', reason: '' },
  };
  if (header.system_fingerprint !== undefined) completion.system_fingerprint = header.system_fingerprint;
  if (usage) completion.usage = usage;
  return completion;
}

// ------------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------------

/** Base class of the errors this package throws (engine failures surface as `EngineFailure`). */
export class TandemError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TandemError';
  }
}

/** An OpenAI-shaped error from the server: `{"error": {"message", "type", "param", "code"}}`. */
export class TandemAPIError extends TandemError {
  /** HTTP status (`undefined` for an error event inside a stream). */
  readonly status: number | undefined;
  /** OpenAI error type (`invalid_request_error`, ...). */
  readonly type: string | undefined;
  /** Machine-readable code, if any. */
  readonly code: string | undefined;
  /** The parameter at fault, if any. */
  readonly param: string | undefined;
  /** The parsed error body. */
  readonly error: unknown;

  constructor(
    status: number | undefined,
    message: string,
    fields: { type?: string; code?: string; param?: string; error?: unknown } = {},
  ) {
    super(status === undefined ? message : `${status} ${message}`);
    this.name = 'TandemAPIError';
    this.status = status;
    this.type = fields.type;
    this.code = fields.code;
    this.param = fields.param;
    this.error = fields.error;
  }

  /** Builds the error from an `{"error": ...}` body (or anything else the server sent). */
  static from(status: number | undefined, body: unknown, fallback: string): TandemAPIError {
    const err = body && typeof body === 'object' && 'error' in body ? (body as { error: unknown }).error : undefined;
    if (err && typeof err === 'object') {
      const e = err as Record<string, unknown>;
      const str = (v: unknown) => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : undefined);
      return new TandemAPIError(status, str(e.message) ?? fallback, {
        type: str(e.type),
        code: str(e.code),
        param: str(e.param),
        error: err,
      });
    }
    if (typeof err === 'string') return new TandemAPIError(status, err, { error: err });
    return new TandemAPIError(status, fallback);
  }
}

/** The server could not be reached (network error, CORS, DNS...). */
export class TandemConnectionError extends TandemError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TandemConnectionError';
  }
}

/** The caller aborted the request (`signal`). Its `name` is `AbortError`, as `fetch`'s is. */
export class TandemAbortError extends TandemError {
  constructor(message = 'Request was aborted.', options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AbortError';
  }
}
