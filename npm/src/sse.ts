// Server-sent events: the `text/event-stream` framing of OpenAI-style streams (`data: {json}`
// events, `: keep-alive` comments, `data: [DONE]` at the end, an `{"error": ...}` event when the
// server fails mid-stream).

import { TandemAPIError } from './openai.js';

/** One event of a stream. */
export interface SSEMessage {
  /** `event:` field (`message` when absent). */
  event: string;
  /** The `data:` lines joined with `\n`. */
  data: string;
  /** `id:` field, if any. */
  id?: string;
}

/**
 * Incremental SSE decoder: feed it text in pieces split anywhere (inside a line, between `\r` and
 * `\n`), get the complete events. Follows the WHATWG event-stream rules for lines, fields,
 * comments and dispatch.
 */
export class SSEDecoder {
  private buffer = '';
  private pendingCR = false;
  private data: string[] = [];
  private event = '';
  private id: string | undefined;
  private started = false;

  /** Adds text; returns the events it completed. */
  push(text: string): SSEMessage[] {
    if (!this.started && text.length > 0) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (text.length === 0) return [];
    if (this.pendingCR && text.startsWith('\n')) text = text.slice(1);
    this.pendingCR = false;
    this.buffer += text;
    const out: SSEMessage[] = [];
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const c = this.buffer.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      const line = this.buffer.slice(start, i);
      if (c === 13) {
        if (i + 1 < this.buffer.length) {
          if (this.buffer.charCodeAt(i + 1) === 10) i++;
        } else {
          this.pendingCR = true; // a `\n` may follow in the next piece
        }
      }
      start = i + 1;
      const message = this.line(line);
      if (message) out.push(message);
    }
    this.buffer = this.buffer.slice(start);
    return out;
  }

  /** Ends the input: an unterminated last event is dispatched (lenient, as most clients are). */
  end(): SSEMessage[] {
    const out: SSEMessage[] = [];
    if (this.buffer.length > 0) {
      const message = this.line(this.buffer);
      this.buffer = '';
      if (message) out.push(message);
    }
    const message = this.line('');
    if (message) out.push(message);
    return out;
  }

  private line(line: string): SSEMessage | undefined {
    if (line === '') {
      if (this.data.length === 0) {
        this.event = '';
        return undefined;
      }
      const message: SSEMessage = { event: this.event || 'message', data: this.data.join('\n') };
      if (this.id !== undefined) message.id = this.id;
      this.data = [];
      this.event = '';
      return message;
    }
    if (line.startsWith(':')) return undefined; // comment (keep-alive)
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'data':
        this.data.push(value);
        break;
      case 'event':
        this.event = value;
        break;
      case 'id':
        if (!value.includes('\0')) this.id = value;
        break;
      default:
        break; // `retry` and unknown fields are ignored
    }
    return undefined;
  }
}

/** The byte chunks of a body (a `ReadableStream` or any async iterable of bytes). */
async function* bytesOf(
  body: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>,
): AsyncGenerator<Uint8Array> {
  if (typeof (body as ReadableStream<Uint8Array>).getReader === 'function') {
    const reader = (body as ReadableStream<Uint8Array>).getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        if (value) yield value;
      }
    } finally {
      // Stops the download when the consumer stops early (or the read failed).
      reader.cancel().catch(() => {});
      try {
        reader.releaseLock();
      } catch {
        // already released
      }
    }
  } else {
    yield* body as AsyncIterable<Uint8Array>;
  }
}

/** Decodes a body into SSE events. Breaking out of the loop cancels the body. */
export async function* parseSSE(
  body: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>,
): AsyncGenerator<SSEMessage> {
  const decoder = new SSEDecoder();
  const text = new TextDecoder();
  for await (const bytes of bytesOf(body)) {
    yield* decoder.push(text.decode(bytes, { stream: true }));
  }
  yield* decoder.push(text.decode());
  yield* decoder.end();
}

/**
 * Decodes an OpenAI-style JSON stream: each `data:` event parsed as JSON, up to `data: [DONE]`.
 * An `{"error": ...}` event throws a `TandemAPIError`; so does an event that is not JSON.
 */
export async function* parseJSONStream<T = unknown>(
  body: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>,
): AsyncGenerator<T> {
  for await (const message of parseSSE(body)) {
    const data = message.data;
    if (data.trim() === '[DONE]') return;
    if (data.trim() === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(data);
    } catch {
      throw new TandemAPIError(undefined, `Invalid JSON in stream: ${data.slice(0, 200)}`, {
        type: 'invalid_stream',
      });
    }
    if (message.event === 'error' || (value && typeof value === 'object' && 'error' in value && (value as { error: unknown }).error)) {
      throw TandemAPIError.from(undefined, value, 'The server failed during the stream.');
    }
    yield value as T;
  }
}
