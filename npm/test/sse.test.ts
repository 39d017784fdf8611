import { describe, expect, it } from 'vitest';
import { TandemAPIError } from '../src/openai.js';
import { SSEDecoder, parseJSONStream, parseSSE } from '../src/sse.js';
import { collect } from './helpers.js';

function bytes(pieces: string[]): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  let i = 0;
  return new ReadableStream({
    pull(c) {
      if (i < pieces.length) c.enqueue(enc.encode(pieces[i++]!));
      else c.close();
    },
  });
}

/** Splits a string at every given position. */
function splitAt(s: string, cuts: number[]): string[] {
  const out: string[] = [];
  let prev = 0;
  for (const c of [...cuts, s.length]) {
    out.push(s.slice(prev, c));
    prev = c;
  }
  return out;
}

const STREAM =
  ': keep-alive\r\n\r\n' +
  'data: {"a":1}\r\n\r\n' +
  'event: x\ndata: line1\ndata: line2\n\n' +
  'data:{"b":"é ü 😀"}\r\r' +
  'id: 7\ndata: {"c":3}\n\n' +
  'data: [DONE]\n\n';

const EXPECTED = [
  { event: 'message', data: '{"a":1}' },
  { event: 'x', data: 'line1\nline2' },
  { event: 'message', data: '{"b":"é ü 😀"}' },
  { event: 'message', data: '{"c":3}', id: '7' },
  { event: 'message', data: '[DONE]', id: '7' },
];

describe('SSEDecoder', () => {
  it('decodes a stream given whole', () => {
    const d = new SSEDecoder();
    expect([...d.push(STREAM), ...d.end()]).toEqual(EXPECTED);
  });

  it('decodes a stream split at every position (text)', () => {
    for (let i = 0; i <= STREAM.length; i++) {
      for (const j of [i, Math.min(STREAM.length, i + 1), Math.min(STREAM.length, i + 7)]) {
        const d = new SSEDecoder();
        const got = splitAt(STREAM, [i, j]).flatMap((p) => d.push(p));
        got.push(...d.end());
        expect(got, `cut at ${i},${j}`).toEqual(EXPECTED);
      }
    }
  });

  it('decodes a stream split at every byte (multi-byte characters cut)', async () => {
    const enc = new TextEncoder().encode(STREAM);
    for (let i = 1; i < enc.length; i++) {
      const body = new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(enc.slice(0, i));
          c.enqueue(enc.slice(i));
          c.close();
        },
      });
      expect(await collect(parseSSE(body)), `cut at byte ${i}`).toEqual(EXPECTED);
    }
  });

  it('one byte at a time', async () => {
    const enc = new TextEncoder().encode(STREAM);
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        for (const b of enc) c.enqueue(new Uint8Array([b]));
        c.close();
      },
    });
    expect(await collect(parseSSE(body))).toEqual(EXPECTED);
  });

  it('a CR at the end of a piece then an empty piece then LF is one line ending', () => {
    const d = new SSEDecoder();
    const got = [...d.push('data: a\r'), ...d.push(''), ...d.push('\ndata: b\n\n')];
    expect(got).toEqual([{ event: 'message', data: 'a\nb' }]);
  });

  it('ignores a BOM, comments, unknown fields and events without data', () => {
    const d = new SSEDecoder();
    const got = d.push('\ufeff:hello\nretry: 10\nfoo: bar\nevent: ping\n\ndata\n\n');
    expect(got).toEqual([{ event: 'message', data: '' }]);
  });

  it('dispatches an unterminated last event at the end', async () => {
    expect(await collect(parseSSE(bytes(['data: {"x":1}'])))).toEqual([{ event: 'message', data: '{"x":1}' }]);
  });
});

describe('parseJSONStream', () => {
  it('yields the JSON events up to [DONE]', async () => {
    const got = await collect(parseJSONStream(bytes(['data: {"a":', '1}\r\n\r\n: ping\n\ndata: [DONE]\n\ndata: {"after":1}\n\n'])));
    expect(got).toEqual([{ a: 1 }]);
  });

  it('ends without [DONE] when the body ends', async () => {
    expect(await collect(parseJSONStream(bytes(['data: {"a":1}\n\n'])))).toEqual([{ a: 1 }]);
  });

  it('throws the in-stream error event', async () => {
    const body = bytes([
      'data: {"a":1}\n\n',
      'data: {"error":{"message":"engine exploded","type":"server_error","code":"internal"}}\n\n',
      'data: [DONE]\n\n',
    ]);
    const got: unknown[] = [];
    const err = await (async () => {
      try {
        for await (const x of parseJSONStream(body)) got.push(x);
      } catch (e) {
        return e;
      }
    })();
    expect(got).toEqual([{ a: 1 }]);
    expect(err).toBeInstanceOf(TandemAPIError);
    const e = err as TandemAPIError;
    expect(e.message).toBe('engine exploded');
    expect(e.type).toBe('server_error');
    expect(e.code).toBe('internal');
    expect(e.status).toBeUndefined();
  });

  it('throws on an event that is not JSON', async () => {
    await expect(collect(parseJSONStream(bytes(['data: {nope\n\n'])))).rejects.toBeInstanceOf(TandemAPIError);
  });

  it('cancels the body when the consumer stops early', async () => {
    let cancelled = false;
    const enc = new TextEncoder();
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        c.enqueue(enc.encode('data: {"a":1}\n\n'));
      },
      cancel() {
        cancelled = true;
      },
    });
    for await (const _ of parseJSONStream(body)) break;
    expect(cancelled).toBe(true);
  });
});
