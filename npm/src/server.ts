// The HTTP client of a Tandem server (`tandem serve`): the model list, `/v1/route`, chat
// completions (whole or streamed) and the browser usage report.

import type { BrowserVariant } from './engine/types.js';
import {
  TandemAbortError,
  TandemAPIError,
  TandemConnectionError,
  type ChatCompletion,
  type ChatCompletionChunk,
  type Model,
  type ModelList,
} from './openai.js';
import type { RouteAnswer, RouteRequest } from './route.js';
import { parseJSONStream } from './sse.js';

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

/** The body of `POST /v1/usage/browser`. */
export interface BrowserUsageReport {
  model: string;
  prompt_tokens: number;
  completion_tokens: number;
  route: 'browser';
  path: 'webgpu' | 'cpu';
  duration_ms: number;
}

/** Whether an error is (or wraps) the caller's abort. */
export function isAbort(err: unknown, signal?: AbortSignal): boolean {
  if (signal?.aborted) return true;
  return (
    typeof err === 'object' &&
    err !== null &&
    ((err as { name?: unknown }).name === 'AbortError' || (err as { kind?: unknown }).kind === 'aborted')
  );
}

/** Throws `TandemAbortError` when `signal` is aborted. */
export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new TandemAbortError(undefined, { cause: signal.reason });
}

/**
 * The server's root URL: trailing slashes and a trailing `/v1` removed (so that both
 * `https://host` and an OpenAI-style `https://host/v1` work).
 */
export function normalizeServerUrl(url: string): string {
  let u = url.trim().replace(/\/+$/, '');
  if (u.endsWith('/v1')) u = u.slice(0, -3).replace(/\/+$/, '');
  return u;
}

/** Resolves a (possibly relative) URL the server gave against its root. */
export function resolveUrl(url: string, serverUrl: string): string {
  try {
    return new URL(url, serverUrl + '/').href;
  } catch {
    return url;
  }
}

export class ServerClient {
  /** Set once `POST /v1/usage/browser` answered 404 or 405: the server does not take reports. */
  usageUnsupported = false;

  constructor(
    readonly baseUrl: string,
    private readonly apiKey: string | undefined,
    private readonly fetchImpl: FetchLike,
  ) {}

  private headers(json: boolean, stream = false): Record<string, string> {
    const h: Record<string, string> = { Accept: stream ? 'text/event-stream' : 'application/json' };
    if (json) h['Content-Type'] = 'application/json';
    if (this.apiKey) h.Authorization = `Bearer ${this.apiKey}`;
    return h;
  }

  /** Sends a request; network failures become `TandemConnectionError`, aborts `TandemAbortError`,
   * non-2xx answers `TandemAPIError`. */
  async request(path: string, init: { method?: string; body?: unknown; signal?: AbortSignal; stream?: boolean } = {}): Promise<Response> {
    throwIfAborted(init.signal);
    const url = this.baseUrl + path;
    let response: Response;
    try {
      const req: RequestInit = {
        method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
        headers: this.headers(init.body !== undefined, init.stream),
      };
      if (init.body !== undefined) req.body = JSON.stringify(init.body);
      if (init.signal) req.signal = init.signal;
      response = await this.fetchImpl(url, req);
    } catch (err) {
      if (isAbort(err, init.signal)) throw new TandemAbortError(undefined, { cause: err });
      const why = err instanceof Error ? err.message : String(err);
      throw new TandemConnectionError(`Cannot reach the Tandem server at ${this.baseUrl}: ${why}`, { cause: err });
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  /** `GET /v1/models`, with variant URLs made absolute. */
  async listModels(signal?: AbortSignal): Promise<ModelList> {
    const response = await this.request('/v1/models', { signal });
    const body = (await readJSON(response)) as Partial<ModelList> | undefined;
    const data = Array.isArray(body?.data) ? body.data : [];
    return {
      object: 'list',
      data: data
        .filter((m): m is Model => !!m && typeof m === 'object' && typeof (m as Model).id === 'string')
        .map((m) => this.absoluteModel(m)),
    };
  }

  /** A model entry with its variant URLs made absolute. */
  absoluteModel(m: Model): Model {
    const variants = Array.isArray(m.browser_variants) ? m.browser_variants : [];
    return { ...m, browser_variants: variants.map((v) => this.absoluteVariant(v)) };
  }

  absoluteVariant<T extends { url: string }>(v: T): T {
    return typeof v?.url === 'string' ? { ...v, url: resolveUrl(v.url, this.baseUrl) } : v;
  }

  /** `POST /v1/route`. */
  async route(body: RouteRequest, signal?: AbortSignal): Promise<RouteAnswer> {
    const response = await this.request('/v1/route', { body, signal });
    const answer = (await readJSON(response)) as RouteAnswer;
    if (!answer || (answer.route !== 'browser' && answer.route !== 'server')) {
      throw new TandemAPIError(response.status, 'Invalid answer from /v1/route', { type: 'invalid_response' });
    }
    if (!Array.isArray(answer.reasons)) answer.reasons = [];
    if (answer.variant) answer.variant = this.absoluteVariant(answer.variant);
    return answer;
  }

  /** `POST /v1/chat/completions` without streaming. */
  async chat(body: Record<string, unknown>, signal?: AbortSignal): Promise<ChatCompletion> {
    const response = await this.request('/v1/chat/completions', { body: { ...body, stream: false }, signal });
    try {
      return (await readJSON(response)) as ChatCompletion;
    } catch (err) {
      if (isAbort(err, signal)) throw new TandemAbortError(undefined, { cause: err });
      throw err;
    }
  }

  /** `POST /v1/chat/completions` streamed: the chunks, up to `[DONE]`. */
  async chatStream(body: Record<string, unknown>, signal?: AbortSignal): Promise<AsyncGenerator<ChatCompletionChunk>> {
    const response = await this.request('/v1/chat/completions', { body: { ...body, stream: true }, signal, stream: true });
    if (!response.body) throw new TandemAPIError(response.status, 'The server sent no stream body', { type: 'invalid_response' });
    const stream = parseJSONStream<ChatCompletionChunk>(response.body);
    return (async function* () {
      try {
        yield* stream;
      } catch (err) {
        if (isAbort(err, signal)) throw new TandemAbortError(undefined, { cause: err });
        if (err instanceof TandemAPIError) throw err;
        const why = err instanceof Error ? err.message : String(err);
        throw new TandemConnectionError(`The stream from the Tandem server broke: ${why}`, { cause: err });
      }
    })();
  }

  /** `POST /v1/usage/browser`, fire-and-forget: never throws; a 404 or 405 turns reports off. */
  async reportUsage(report: BrowserUsageReport): Promise<void> {
    if (this.usageUnsupported) return;
    try {
      const response = await this.fetchImpl(this.baseUrl + '/v1/usage/browser', {
        method: 'POST',
        headers: this.headers(true),
        body: JSON.stringify(report),
        keepalive: true,
      });
      if (response.status === 404 || response.status === 405) this.usageUnsupported = true;
      // Drain or drop the body so the connection is freed.
      response.body?.cancel().catch(() => {});
    } catch {
      // ignored
    }
  }
}

async function readJSON(response: Response): Promise<unknown> {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new TandemAPIError(response.status, `Invalid JSON from the server: ${text.slice(0, 200)}`, {
      type: 'invalid_response',
    });
  }
}

/** The `TandemAPIError` for a non-2xx answer. */
export async function errorOf(response: Response): Promise<TandemAPIError> {
  let text = '';
  try {
    text = await response.text();
  } catch {
    // no body
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const fallback = text.trim().slice(0, 500) || response.statusText || `HTTP ${response.status}`;
  return TandemAPIError.from(response.status, body, fallback);
}

/** Finds the full variant (with `memory_bytes`) a route answer names, among a model's variants. */
export function matchVariant(
  ref: { url: string; sha256: string; bytes: number; quantization: string; required_features?: string[] },
  variants: BrowserVariant[],
): BrowserVariant {
  const sha = ref.sha256?.trim().toLowerCase();
  const found =
    (sha ? variants.find((v) => v.sha256?.trim().toLowerCase() === sha) : undefined) ??
    variants.find((v) => v.url === ref.url);
  if (found) return found;
  return {
    url: ref.url,
    sha256: ref.sha256 ?? '',
    bytes: ref.bytes ?? 0,
    quantization: ref.quantization ?? '',
    memory_bytes: ref.bytes ?? 0,
    required_features: ref.required_features ?? [],
  };
}
