import { describe, expect, it } from 'vitest';
import { EngineFailure, type LoadProgress } from '../src/engine/types.js';
import {
  Tandem,
  TandemAbortError,
  TandemAPIError,
  type ChatCompletionChunk,
  type TandemOptions,
} from '../src/index.js';
import {
  MODELS,
  SERVER,
  SMALL,
  collect,
  deviceReport,
  fakeEngine,
  holdLoads,
  fakeServer,
  json,
  serverChunks,
  serverCompletion,
  sse,
  sseText,
  textOf,
  unreachable,
  type FakeEngineModule,
  type FakeServer,
} from './helpers.js';

const ABS_URL = `${SERVER}/v1/models/smol/browser/q4_1.gguf`;

const BROWSER_ANSWER = {
  route: 'browser',
  variant: { url: SMALL.url, sha256: SMALL.sha256, bytes: SMALL.bytes, quantization: 'Q4_1', required_features: ['shader-f16'] },
  reasons: ['path_webgpu', 'download_required', 'estimated_speed', 'browser_faster', 'policy_balanced', 'within_tolerance'],
  estimates: { browser: { ttft_ms: 100, tok_s: 200, cost_usd: 0 }, server: { ttft_ms: 300, tok_s: 50, cost_usd: 0.0004 } },
};

const SERVER_ANSWER = {
  route: 'server',
  variant: null,
  reasons: ['no_webgpu', 'no_wasm_simd', 'no_runnable_variant', 'policy_balanced'],
  estimates: { browser: null, server: { ttft_ms: 300, tok_s: 50, cost_usd: 0.0004 } },
};

const MESSAGES = [
  { role: 'system' as const, content: 'Be brief.' },
  { role: 'user' as const, content: [{ type: 'text', text: 'Why is the sky ' }, { type: 'text', text: 'blue?' }] },
];

async function setup(
  handlers: FakeServer['handlers'] = {},
  options: Partial<TandemOptions> = {},
  engine: FakeEngineModule = fakeEngine(),
): Promise<{ tandem: Tandem; server: FakeServer; engine: FakeEngineModule }> {
  const server = fakeServer(handlers);
  const tandem = await Tandem.create({ serverUrl: SERVER, apiKey: 'sk-test', fetch: server.fetch, engine, ...options });
  return { tandem, server, engine };
}

/** Waits for fire-and-forget work (the usage report). */
const settle = () => new Promise((r) => setTimeout(r, 0));

describe('Tandem.create', () => {
  it('fetches the model list with the API key and probes the device with absolute variant URLs', async () => {
    const { tandem, server, engine } = await setup();
    const [req] = server.to('/v1/models');
    expect(req!.method).toBe('GET');
    expect(req!.headers.authorization).toBe('Bearer sk-test');
    expect(engine.probes).toEqual([[{ ...SMALL, url: ABS_URL }]]);
    const list = await tandem.models.list();
    expect(list.object).toBe('list');
    expect(list.data[0]!.id).toBe('smol');
    expect(list.data[0]!.max_model_len).toBe(2048);
    expect(list.data[0]!.browser_variants[0]!.url).toBe(ABS_URL);
    expect(tandem.serverUrl).toBe(SERVER);
  });

  it('accepts an OpenAI-style base URL ending in /v1', async () => {
    const server = fakeServer();
    const tandem = await Tandem.create({ serverUrl: `${SERVER}/v1/`, fetch: server.fetch, engine: fakeEngine() });
    expect(tandem.serverUrl).toBe(SERVER);
    expect(server.requests[0]!.url).toBe(`${SERVER}/v1/models`);
    expect(server.requests[0]!.headers.authorization).toBeUndefined();
  });

  it('defaults serverUrl to the page origin', async () => {
    const server = fakeServer();
    const g = globalThis as { location?: unknown };
    g.location = { origin: SERVER };
    try {
      const tandem = await Tandem.create({ fetch: server.fetch, engine: fakeEngine() });
      expect(tandem.serverUrl).toBe(SERVER);
    } finally {
      delete g.location;
    }
  });

  it('does not fail when the server is unreachable, and says so in capabilities()', async () => {
    const { tandem } = await setup({ '/v1/models': unreachable });
    expect((await tandem.models.list()).data).toEqual([]);
    const caps = await tandem.capabilities();
    expect(caps.server.reachable).toBe(false);
    expect(caps.server.error).toMatch(/Cannot reach/);
  });

  it('survives a failing probe', async () => {
    const engine = fakeEngine();
    engine.probeDevice = () => Promise.reject(new Error('no navigator'));
    const { tandem } = await setup({}, {}, engine);
    const caps = await tandem.capabilities();
    expect(caps.webgpu).toBeNull();
    expect(caps.wasm_simd).toBe(false);
  });
});

describe('capabilities()', () => {
  it('reports the device, cached variants and the measured speed once the engine ran', async () => {
    const { tandem } = await setup({ '/v1/route': () => json(BROWSER_ANSWER) });
    let caps = await tandem.capabilities();
    expect(caps.device_memory_gb).toBe(8);
    expect(caps.hardware_concurrency).toBe(8);
    expect(caps.storage_available_bytes).toBe(10e9);
    expect(caps.models).toEqual([{ id: 'smol', variants: [{ ...SMALL, url: ABS_URL, cached: false }] }]);
    expect(caps.engines).toEqual([]);
    expect(caps.measured).toBeUndefined();
    await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    caps = await tandem.capabilities();
    expect(caps.models[0]!.variants[0]!.cached).toBe(true);
    expect(caps.cached_variants).toEqual(['aa11']);
    expect(caps.measured).toEqual({ decode_tok_s: 42, prefill_tok_s: 300 });
    expect(caps.engines).toHaveLength(1);
    expect(caps.engines[0]).toMatchObject({ model: 'smol', path: 'webgpu', device: 'fake adapter' });
    expect(caps.server.reachable).toBe(true);
  });
});

describe('server route', () => {
  it('auto: asks /v1/route, then returns the server completion with tandem info', async () => {
    const { tandem, server } = await setup({
      '/v1/route': () => json(SERVER_ANSWER),
      '/v1/chat/completions': () => json(serverCompletion('Rayleigh.')),
    });
    const ac = new AbortController();
    const r = await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES, max_tokens: 64, temperature: 0.2, signal: ac.signal });
    const [route] = server.to('/v1/route');
    expect(route!.method).toBe('POST');
    expect(route!.headers.authorization).toBe('Bearer sk-test');
    expect(route!.body.model).toBe('smol');
    expect(route!.body.max_tokens).toBe(64);
    // 'Be brief.' (9) + 'Why is the sky blue?' (20) + 4 per message = 37 chars: 10 tokens
    expect(route!.body.prompt_tokens).toBe(10);
    expect(route!.body.capabilities).toMatchObject({ wasm_simd: true, device_memory_gb: 8, cached_variants: [] });
    const [chat] = server.to('/v1/chat/completions');
    expect(chat!.body).toEqual({ model: 'smol', messages: MESSAGES, max_tokens: 64, temperature: 0.2, stream: false });
    expect(chat!.headers.authorization).toBe('Bearer sk-test');
    expect(r.object).toBe('chat.completion');
    expect(r.choices[0]!.message).toEqual({ role: 'assistant', content: 'Rayleigh.' });
    expect(r.tandem).toEqual({ route: 'server', reason: SERVER_ANSWER.reasons.join(', '), decided_by: 'server' });
  });

  it('streams the server chunks with tandem on the first and the last', async () => {
    const { tandem, server } = await setup({
      '/v1/route': () => json(SERVER_ANSWER),
      '/v1/chat/completions': () => sse([sseText(serverChunks(['Ray', 'leigh'], { usage: { prompt_tokens: 9, completion_tokens: 2 } }))]),
    });
    const stream = await tandem.chat.completions.create({
      model: 'smol',
      messages: MESSAGES,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = await collect(stream);
    expect(server.to('/v1/chat/completions')[0]!.body).toMatchObject({ stream: true, stream_options: { include_usage: true } });
    expect(textOf(chunks)).toBe('Rayleigh');
    expect(chunks[0]!.tandem).toMatchObject({ route: 'server', decided_by: 'server' });
    const finish = chunks.find((c) => c.choices[0]?.finish_reason);
    expect(finish!.tandem).toMatchObject({ route: 'server' });
    expect(chunks[1]!.tandem).toBeUndefined();
    expect(chunks.at(-1)!.usage).toEqual({ prompt_tokens: 9, completion_tokens: 2, total_tokens: 11 });
  });

  it('policy server never asks /v1/route', async () => {
    const { tandem, server, engine } = await setup(
      { '/v1/chat/completions': () => json(serverCompletion('ok')) },
      { policy: 'server' },
    );
    const r = await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    expect(server.to('/v1/route')).toHaveLength(0);
    expect(engine.loads).toHaveLength(0);
    expect(r.tandem).toEqual({ route: 'server', reason: 'policy_server', decided_by: 'policy' });
  });

  it('a request can choose its own policy', async () => {
    const { tandem, server, engine } = await setup({
      '/v1/route': () => json(SERVER_ANSWER),
      '/v1/chat/completions': () => json(serverCompletion('ok')),
    });
    const s = await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES }, { policy: 'server' });
    expect(s.tandem).toEqual({ route: 'server', reason: 'policy_server', decided_by: 'policy' });
    const b = await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES }, { policy: 'browser' });
    expect(b.tandem).toMatchObject({ route: 'browser', reason: 'policy_browser', decided_by: 'policy' });
    expect(server.to('/v1/route')).toHaveLength(0);
    expect(engine.loads).toHaveLength(1);
    const a = await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    expect(a.tandem).toMatchObject({ route: 'server', decided_by: 'server' });
    expect(server.to('/v1/route')).toHaveLength(1);
    await expect(
      tandem.chat.completions.create({ model: 'smol', messages: MESSAGES }, { policy: 'nowhere' as 'auto' }),
    ).rejects.toThrow(/unknown policy/);
  });

  it('auto sends requests the browser cannot honour to the server', async () => {
    const { tandem, server } = await setup({ '/v1/chat/completions': () => json(serverCompletion('ok')) });
    const r = await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES, tools: [{ type: 'function' }] });
    expect(server.to('/v1/route')).toHaveLength(0);
    expect(r.tandem.reason).toBe('unsupported_in_browser: tools');
  });

  it('throws TandemAPIError with the OpenAI error fields', async () => {
    const { tandem } = await setup({
      '/v1/route': () => json(SERVER_ANSWER),
      '/v1/chat/completions': () =>
        json({ error: { message: 'The model `x` does not exist.', type: 'invalid_request_error', param: 'model', code: 'model_not_found' } }, 404),
    });
    const err = await tandem.chat.completions.create({ model: 'x', messages: MESSAGES }).catch((e) => e);
    expect(err).toBeInstanceOf(TandemAPIError);
    expect(err).toMatchObject({ status: 404, message: '404 The model `x` does not exist.', type: 'invalid_request_error', code: 'model_not_found', param: 'model' });
    const s = await tandem.chat.completions.create({ model: 'x', messages: MESSAGES, stream: true }).catch((e) => e);
    expect(s).toBeInstanceOf(TandemAPIError);
    expect(s.status).toBe(404);
  });

  it('throws an in-stream error event', async () => {
    const { tandem } = await setup({
      '/v1/route': () => json(SERVER_ANSWER),
      '/v1/chat/completions': () =>
        sse([
          `data: ${JSON.stringify(serverChunks(['a'])[0])}\n\ndata: ${JSON.stringify(serverChunks(['a'])[1])}\n\n`,
          'data: {"error":{"message":"upstream died","type":"server_error","code":"upstream_error"}}\n\n',
        ]),
    });
    const stream = await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES, stream: true });
    const got: ChatCompletionChunk[] = [];
    const err = await (async () => {
      try {
        for await (const c of stream) got.push(c);
      } catch (e) {
        return e;
      }
    })();
    expect(textOf(got)).toBe('a');
    expect(err).toBeInstanceOf(TandemAPIError);
    expect(err).toMatchObject({ message: 'upstream died', code: 'upstream_error' });
  });
});

describe('browser route', () => {
  it('auto: once the engine is loaded, the next /v1/route lists the variant as loaded and cached', async () => {
    const { tandem, server } = await setup({ '/v1/route': () => json(BROWSER_ANSWER) });
    await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    const [first, second] = server.to('/v1/route');
    expect(first!.body.capabilities).toMatchObject({ cached_variants: [], loaded_variants: [] });
    expect(second!.body.capabilities).toMatchObject({
      cached_variants: ['aa11'],
      loaded_variants: ['aa11'],
      measured: { decode_tok_s: 42, prefill_tok_s: 300 },
    });
  });

  it('auto: runs in the browser, maps the parameters, reports usage once', async () => {
    const progress: LoadProgress[] = [];
    const { tandem, server, engine } = await setup({ '/v1/route': () => json(BROWSER_ANSWER) }, { onProgress: (p) => progress.push(p) });
    const r = await tandem.chat.completions.create({
      model: 'smol',
      messages: MESSAGES,
      max_completion_tokens: 100,
      temperature: 0.5,
      top_p: 0.9,
      top_k: 40,
      min_p: 0.05,
      repetition_penalty: 1.1,
      frequency_penalty: 0.1,
      presence_penalty: 0.2,
      seed: 7,
      stop: ['\n\n'],
      user: 'ignored-in-browser',
    });
    expect(server.to('/v1/chat/completions')).toHaveLength(0);
    expect(engine.loads).toHaveLength(1);
    expect(engine.loads[0]!.variant).toEqual({ ...SMALL, url: ABS_URL });
    expect(engine.loads[0]!.backend).toBe('webgpu');
    expect(progress.map((p) => p.phase)).toEqual(['download', 'compile']);
    expect(engine.engines[0]!.requests[0]).toEqual({
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Why is the sky blue?' },
      ],
      max_tokens: 100,
      temperature: 0.5,
      top_p: 0.9,
      top_k: 40,
      min_p: 0.05,
      repetition_penalty: 1.1,
      frequency_penalty: 0.1,
      presence_penalty: 0.2,
      seed: 7,
      stop: ['\n\n'],
    });
    expect(r.id).toMatch(/^chatcmpl-[0-9a-f]{24}$/);
    expect(r.object).toBe('chat.completion');
    expect(r.model).toBe('smol');
    expect(typeof r.created).toBe('number');
    expect(r.choices).toEqual([
      { index: 0, message: { role: 'assistant', content: 'Hello, world!' }, finish_reason: 'stop', logprobs: null },
    ]);
    expect(r.usage).toEqual({ prompt_tokens: 11, completion_tokens: 4, total_tokens: 15 });
    expect(r.tandem).toEqual({
      route: 'browser',
      reason: BROWSER_ANSWER.reasons.join(', '),
      decided_by: 'server',
      path: 'webgpu',
      quantization: 'Q4_1',
    });
    await settle();
    const usage = server.to('/v1/usage/browser');
    expect(usage).toHaveLength(1);
    expect(usage[0]!.headers.authorization).toBe('Bearer sk-test');
    expect(usage[0]!.body).toMatchObject({ model: 'smol', prompt_tokens: 11, completion_tokens: 4, route: 'browser', path: 'webgpu' });
    expect(typeof usage[0]!.body.duration_ms).toBe('number');
  });

  it('streams browser chunks: role + tandem first, deltas, finish + tandem, usage last', async () => {
    const { tandem, engine } = await setup({ '/v1/route': () => json(BROWSER_ANSWER) });
    const stream = await tandem.chat.completions.create({
      model: 'smol',
      messages: MESSAGES,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = await collect(stream);
    expect(engine.loads).toHaveLength(1);
    expect(chunks[0]!.choices[0]!.delta).toEqual({ role: 'assistant', content: '' });
    expect(chunks[0]!.tandem).toMatchObject({ route: 'browser', decided_by: 'server', path: 'webgpu' });
    expect(chunks.slice(1, 5).map((c) => c.choices[0]!.delta.content)).toEqual(['Hello', ',', ' world', '!']);
    const finish = chunks[5]!;
    expect(finish.choices[0]!.finish_reason).toBe('stop');
    expect(finish.tandem).toMatchObject({ route: 'browser' });
    expect(chunks[6]).toMatchObject({ choices: [], usage: { prompt_tokens: 11, completion_tokens: 4, total_tokens: 15 } });
    expect(chunks).toHaveLength(7);
    for (const c of chunks.slice(0, 6)) expect(c.usage).toBeNull();
    for (const c of chunks) {
      expect(c.object).toBe('chat.completion.chunk');
      expect(c.id).toBe(chunks[0]!.id);
    }
  });

  it('without include_usage there is no usage chunk and no usage field', async () => {
    const { tandem } = await setup({ '/v1/route': () => json(BROWSER_ANSWER) });
    const chunks = await collect(await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES, stream: true }));
    expect(chunks).toHaveLength(6);
    for (const c of chunks) expect('usage' in c).toBe(false);
  });

  it('the returned value can be iterated without await', async () => {
    const { tandem } = await setup({ '/v1/route': () => json(BROWSER_ANSWER) });
    const got: ChatCompletionChunk[] = [];
    for await (const c of tandem.chat.completions.create({ model: 'smol', messages: MESSAGES, stream: true })) got.push(c);
    expect(textOf(got)).toBe('Hello, world!');
  });

  it('loads the engine once and reuses it; load() loads eagerly', async () => {
    const { tandem, engine } = await setup({ '/v1/route': () => json(BROWSER_ANSWER) });
    const info = await tandem.load();
    expect(info).toMatchObject({ model: 'smol', path: 'webgpu', device: 'fake adapter' });
    expect(info.variant.url).toBe(ABS_URL);
    expect(engine.loads).toHaveLength(1);
    await Promise.all([
      tandem.chat.completions.create({ model: 'smol', messages: MESSAGES }),
      tandem.chat.completions.create({ model: 'smol', messages: MESSAGES }),
    ]);
    await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    expect(engine.loads).toHaveLength(1);
    expect(engine.engines[0]!.requests).toHaveLength(3);
  });

  it('sends the measured speed and the cached variant to /v1/route after a run', async () => {
    const { tandem, server } = await setup({ '/v1/route': () => json(BROWSER_ANSWER) });
    await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    const second = server.to('/v1/route')[1]!.body;
    expect(second.capabilities.measured).toEqual({ decode_tok_s: 42, prefill_tok_s: 300 });
    expect(second.capabilities.cached_variants).toEqual(['aa11']);
    expect('max_tokens' in second).toBe(false);
  });

  it('a next turn of the conversation the browser served says how much of its prompt the engine keeps', async () => {
    const { tandem, server } = await setup({ '/v1/route': () => json(BROWSER_ANSWER) });
    const first = await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    const answer = first.choices[0]!.message.content;
    const next = [...MESSAGES, { role: 'assistant' as const, content: answer }, { role: 'user' as const, content: 'And then?' }];
    for await (const _ of await tandem.chat.completions.create({ model: 'smol', messages: next, stream: true })) {
      // drained
    }
    // Another conversation: nothing of it is kept.
    await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    const [one, two, three] = server.to('/v1/route').map((r) => r.body);
    expect('cached_prompt_tokens' in one!).toBe(false);
    expect(one!.stream).toBe(false);
    expect(two!.cached_prompt_tokens).toBe(first.usage!.prompt_tokens + first.usage!.completion_tokens);
    expect(two!.stream).toBe(true);
    expect('cached_prompt_tokens' in three!).toBe(false);
  });

  it('a download under way is reported to /v1/route with its progress, and forgotten once loaded', async () => {
    const engine = fakeEngine();
    const release = holdLoads(engine, (opts) =>
      opts.onProgress?.({ url: opts.variant.url, loaded: 40e6, total: 98e6, bytesPerSecond: 2e6, fromCache: false, phase: 'download' }),
    );
    const { tandem, server } = await setup(
      { '/v1/route': () => json(SERVER_ANSWER), '/v1/chat/completions': () => json(serverCompletion('Rayleigh.')) },
      {},
      engine,
    );
    const loading = tandem.load();
    await settle();
    await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    release();
    await loading;
    await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    const [during, after] = server.to('/v1/route').map((r) => r.body);
    expect(during!.capabilities.downloading).toEqual([{ sha256: 'aa11', received_bytes: 40e6, bytes_per_sec: 2e6 }]);
    expect('downloading' in after!.capabilities).toBe(false);
    expect(after!.capabilities.loaded_variants).toEqual(['aa11']);
  });

  it('policy browser never asks /v1/route', async () => {
    const { tandem, server, engine } = await setup({}, { policy: 'browser' });
    const r = await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    expect(server.to('/v1/route')).toHaveLength(0);
    expect(engine.loads[0]!.backend).toBe('webgpu');
    expect(r.tandem).toMatchObject({ route: 'browser', reason: 'policy_browser', decided_by: 'policy', path: 'webgpu' });
  });

  it('decides locally by the same rules when /v1/route is unreachable', async () => {
    const engine = fakeEngine(deviceReport({ webgpu: null }));
    const { tandem } = await setup({ '/v1/route': unreachable }, {}, engine);
    const r = await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    expect(r.tandem.route).toBe('browser');
    expect(r.tandem.decided_by).toBe('local');
    expect(r.tandem.reason).toMatch(/^server_unreachable, no_webgpu, .*path_cpu/);
    expect(engine.loads[0]!.backend).toBe('cpu');
    expect(r.tandem.path).toBe('cpu');
  });

  it('decides locally when /v1/route answers 5xx, and with the models option when /v1/models is down', async () => {
    const engine = fakeEngine();
    const server = fakeServer({
      '/v1/models': unreachable,
      '/v1/route': () => json({ error: { message: 'down', type: 'server_error' } }, 503),
    });
    const tandem = await Tandem.create({
      serverUrl: SERVER,
      fetch: server.fetch,
      engine,
      models: MODELS.data as TandemOptions['models'],
    });
    const r = await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    expect(r.tandem).toMatchObject({ route: 'browser', decided_by: 'local' });
    expect(r.tandem.reason.startsWith('route_unavailable: 503, ')).toBe(true);
    expect(engine.loads[0]!.variant.url).toBe(ABS_URL);
  });

  it('decides locally when /v1/route does not answer in time', async () => {
    const { tandem } = await setup(
      { '/v1/route': (req) => new Promise((_, reject) => req.signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')))) },
      { routeTimeoutMs: 20 },
    );
    const r = await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    expect(r.tandem).toMatchObject({ route: 'browser', decided_by: 'local' });
    expect(r.tandem.reason.startsWith('route_timeout, ')).toBe(true);
  });

  it('runs concurrent requests on one engine one at a time', async () => {
    const { tandem, engine } = await setup({ '/v1/route': () => json(BROWSER_ANSWER) });
    engine.script = { delayMs: 2 };
    const ac = new AbortController();
    const results = await Promise.allSettled([
      tandem.chat.completions.create({ model: 'smol', messages: MESSAGES }),
      tandem.chat.completions.create({ model: 'smol', messages: MESSAGES, signal: ac.signal }),
      tandem.chat.completions.create({ model: 'smol', messages: MESSAGES }),
      (async () => {
        await new Promise((r) => setTimeout(r, 3));
        ac.abort(); // the second leaves the queue
      })(),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
    expect((results[1] as PromiseRejectedResult).reason).toBeInstanceOf(TandemAbortError);
    expect(engine.engines).toHaveLength(1);
    expect(engine.engines[0]!.maxActive).toBe(1);
    expect(engine.engines[0]!.requests).toHaveLength(2);
  });

  it('routes to the server when the local rules say the browser cannot run it', async () => {
    const engine = fakeEngine(deviceReport({ webgpu: null, wasm_simd: false }));
    const { tandem } = await setup(
      { '/v1/route': unreachable, '/v1/chat/completions': () => json(serverCompletion('srv')) },
      {},
      engine,
    );
    const r = await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    expect(r.tandem).toMatchObject({ route: 'server', decided_by: 'local' });
    expect(r.tandem.reason).toContain('no_runnable_variant');
  });
});

describe('failover', () => {
  it('streamed: the server continues from the browser text in one stream', async () => {
    const { tandem, server, engine } = await setup({
      '/v1/route': () => json(BROWSER_ANSWER),
      '/v1/chat/completions': () =>
        sse([sseText(serverChunks([' from', ' the server.'], { usage: { prompt_tokens: 30, completion_tokens: 3 } })).slice(0, 50), sseText(serverChunks([' from', ' the server.'], { usage: { prompt_tokens: 30, completion_tokens: 3 } })).slice(50)]),
    });
    engine.script = { deltas: ['Hello', ',', ' world', '!'], failAfter: 3, failKind: 'device_lost' };
    const stream = await tandem.chat.completions.create({
      model: 'smol',
      messages: MESSAGES,
      max_tokens: 50,
      temperature: 0.3,
      stream: true,
    });
    const chunks = await collect(stream);
    expect(textOf(chunks)).toBe('Hello, world from the server.');
    // One role chunk (the server's is dropped), one id.
    expect(chunks.filter((c) => c.choices[0]?.delta.role)).toHaveLength(1);
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    expect(chunks[0]!.tandem).toMatchObject({ route: 'browser', path: 'webgpu' });
    const finish = chunks.at(-1)!;
    expect(finish.choices[0]!.finish_reason).toBe('stop');
    expect(finish.tandem).toMatchObject({
      route: 'server',
      reason: 'browser_failed_mid_stream: device_lost',
      failover: true,
      browser_tokens: 3,
      path: 'webgpu',
      decided_by: 'server',
    });
    // No usage requested: none shown even though the continuation asked for it.
    for (const c of chunks) expect('usage' in c).toBe(false);
    const [cont] = server.to('/v1/chat/completions');
    expect(cont!.body).toEqual({
      model: 'smol',
      messages: [...MESSAGES, { role: 'assistant', content: 'Hello, world' }],
      continue_final_message: true,
      add_generation_prompt: false,
      max_tokens: 47,
      temperature: 0.3,
      stream: true,
      stream_options: { include_usage: true },
    });
    // The lost device is disposed; the next request loads a new engine.
    expect(engine.engines[0]!.disposed).toBe(true);
    engine.script = {};
    await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    expect(engine.loads).toHaveLength(2);
    // No usage report for a request the browser did not finish; one for the second.
    await settle();
    expect(server.to('/v1/usage/browser')).toHaveLength(1);
  });

  it('streamed with include_usage: merged usage', async () => {
    const { tandem, engine } = await setup({
      '/v1/route': () => json(BROWSER_ANSWER),
      '/v1/chat/completions': () => sse([sseText(serverChunks([' more'], { usage: { prompt_tokens: 30, completion_tokens: 5 } }))]),
    });
    engine.script = { failAfter: 2, failKind: 'worker_crashed' };
    const chunks = await collect(
      await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES, stream: true, stream_options: { include_usage: true } }),
    );
    expect(chunks.at(-1)).toMatchObject({ choices: [], usage: { prompt_tokens: 28, completion_tokens: 7, total_tokens: 35 } });
    for (const c of chunks.slice(0, -1)) expect(c.usage).toBeNull();
  });

  it('not streamed: the result has the concatenated text', async () => {
    const { tandem, server, engine } = await setup({
      '/v1/route': () => json(BROWSER_ANSWER),
      '/v1/chat/completions': () => sse([sseText(serverChunks([' world', '!'], { usage: { prompt_tokens: 20, completion_tokens: 2 } }))]),
    });
    engine.script = { failAfter: 2, failKind: 'out_of_memory' };
    const r = await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    expect(r.choices[0]!.message.content).toBe('Hello, world!');
    expect(r.choices[0]!.finish_reason).toBe('stop');
    expect(r.usage).toEqual({ prompt_tokens: 18, completion_tokens: 4, total_tokens: 22 });
    expect(r.tandem).toMatchObject({ route: 'server', reason: 'browser_failed_mid_stream: out_of_memory', failover: true, browser_tokens: 2 });
    expect(server.to('/v1/chat/completions')[0]!.body.messages.at(-1)).toEqual({ role: 'assistant', content: 'Hello,' });
  });

  it('at load: the server answers the original request', async () => {
    const engine = fakeEngine();
    engine.loadFailure = 'network';
    const { tandem, server } = await setup(
      {
        '/v1/route': () => json(BROWSER_ANSWER),
        '/v1/chat/completions': () => sse([sseText(serverChunks(['All', ' server']))]),
      },
      {},
      engine,
    );
    const chunks = await collect(await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES, max_tokens: 10, stream: true }));
    expect(textOf(chunks)).toBe('All server');
    expect(chunks[0]!.choices[0]!.delta.role).toBe('assistant');
    expect(chunks[0]!.tandem).toMatchObject({ route: 'server', reason: 'browser_failed_at_load: network', failover: true, browser_tokens: 0 });
    expect(chunks[0]!.tandem!.path).toBeUndefined();
    const body = server.to('/v1/chat/completions')[0]!.body;
    expect(body.messages).toEqual(MESSAGES);
    expect(body.continue_final_message).toBeUndefined();
    expect(body.max_tokens).toBe(10);
    // A failed load is not cached: the next request tries again.
    engine.loadFailure = undefined;
    await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    expect(engine.loads).toHaveLength(2);
  });

  it('policy browser with no variant for the model fails over to the server', async () => {
    const { tandem } = await setup({ '/v1/chat/completions': () => sse([sseText(serverChunks(['x']))]) }, { policy: 'browser' });
    const r = await tandem.chat.completions.create({ model: 'other', messages: MESSAGES });
    expect(r.tandem).toMatchObject({ route: 'server', reason: 'browser_failed_at_load: unsupported', failover: true });
  });

  it('invalid_request and failover: false do not fail over', async () => {
    const { tandem, server, engine } = await setup({ '/v1/route': () => json(BROWSER_ANSWER) });
    engine.script = { failAfter: 0, failKind: 'invalid_request' };
    await expect(tandem.chat.completions.create({ model: 'smol', messages: MESSAGES })).rejects.toMatchObject({ kind: 'invalid_request' });
    const off = await setup({ '/v1/route': () => json(BROWSER_ANSWER) }, { failover: false });
    off.engine.script = { failAfter: 1, failKind: 'device_lost' };
    const err = await off.tandem.chat.completions.create({ model: 'smol', messages: MESSAGES }).catch((e) => e);
    expect(err).toBeInstanceOf(EngineFailure);
    expect(err.kind).toBe('device_lost');
    expect(server.to('/v1/chat/completions')).toHaveLength(0);
    expect(off.server.to('/v1/chat/completions')).toHaveLength(0);
  });
});

describe('usage report', () => {
  it('a 404 is ignored and remembered; other errors are ignored', async () => {
    let status = 404;
    const { tandem, server } = await setup({
      '/v1/route': () => json(BROWSER_ANSWER),
      '/v1/usage/browser': () => new Response('nope', { status }),
    });
    await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    await settle();
    await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    await collect(await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES, stream: true }));
    await settle();
    expect(server.to('/v1/usage/browser')).toHaveLength(1);

    const other = await setup({ '/v1/route': () => json(BROWSER_ANSWER), '/v1/usage/browser': unreachable });
    await other.tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    await settle();
    status = 500;
    other.server.handlers['/v1/usage/browser'] = () => new Response('', { status });
    await other.tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    await settle();
    await other.tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    await settle();
    expect(other.server.to('/v1/usage/browser')).toHaveLength(3);
  });

  it('is not sent for server-routed requests', async () => {
    const { tandem, server } = await setup(
      { '/v1/chat/completions': () => json(serverCompletion('ok')) },
      { policy: 'server' },
    );
    await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    await settle();
    expect(server.to('/v1/usage/browser')).toHaveLength(0);
  });
});

describe('abort', () => {
  it('aborts a browser stream mid-way', async () => {
    const { tandem, server, engine } = await setup({ '/v1/route': () => json(BROWSER_ANSWER) });
    engine.script = { deltas: ['a', 'b', 'c', 'd', 'e', 'f'], delayMs: 5 };
    const ac = new AbortController();
    const got: ChatCompletionChunk[] = [];
    const err = await (async () => {
      try {
        for await (const c of tandem.chat.completions.create({ model: 'smol', messages: MESSAGES, stream: true, signal: ac.signal })) {
          got.push(c);
          if (textOf(got) === 'ab') ac.abort();
        }
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(TandemAbortError);
    expect((err as Error).name).toBe('AbortError');
    expect(textOf(got)).toBe('ab');
    expect(engine.engines[0]!.signals[0]!.aborted).toBe(true);
    // No failover and no usage report.
    await settle();
    expect(server.to('/v1/chat/completions')).toHaveLength(0);
    expect(server.to('/v1/usage/browser')).toHaveLength(0);
    // The engine stays usable.
    expect(engine.engines[0]!.disposed).toBe(false);
  });

  it('aborts a server stream via stream.abort()', async () => {
    const enc = new TextEncoder();
    let cancelled = false;
    const { tandem, server } = await setup({
      '/v1/route': () => json(SERVER_ANSWER),
      '/v1/chat/completions': (req) =>
        new Response(
          new ReadableStream<Uint8Array>({
            start(c) {
              c.enqueue(enc.encode(`data: ${JSON.stringify(serverChunks(['x'])[1])}\n\n`));
              req.signal?.addEventListener('abort', () => c.error(new DOMException('aborted', 'AbortError')));
            },
            cancel() {
              cancelled = true;
            },
          }),
          { headers: { 'Content-Type': 'text/event-stream' } },
        ),
    });
    const stream = await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES, stream: true });
    const it = stream[Symbol.asyncIterator]();
    expect((await it.next()).value.choices[0].delta.content).toBe('x');
    const pending = it.next();
    stream.abort();
    await expect(pending).rejects.toBeInstanceOf(TandemAbortError);
    expect(server.to('/v1/chat/completions')[0]!.signal!.aborted).toBe(true);
  });

  it('aborts a non-streamed request with the second argument', async () => {
    const { tandem, engine } = await setup({ '/v1/route': () => json(BROWSER_ANSWER) });
    engine.script = { deltas: ['a', 'b', 'c'], delayMs: 20 };
    const ac = new AbortController();
    const p = tandem.chat.completions.create({ model: 'smol', messages: MESSAGES }, { signal: ac.signal });
    setTimeout(() => ac.abort(), 5);
    await expect(p).rejects.toBeInstanceOf(TandemAbortError);
  });

  it('an already aborted signal rejects before any request', async () => {
    const { tandem, server } = await setup({ '/v1/route': () => json(BROWSER_ANSWER) });
    const before = server.requests.length;
    await expect(
      tandem.chat.completions.create({ model: 'smol', messages: MESSAGES, signal: AbortSignal.abort() }),
    ).rejects.toBeInstanceOf(TandemAbortError);
    await expect(
      tandem.chat.completions.create({ model: 'smol', messages: MESSAGES, stream: true, signal: AbortSignal.abort() }),
    ).rejects.toBeInstanceOf(TandemAbortError);
    expect(server.requests.length).toBe(before);
  });

  it('aborting during the engine load rejects at once and keeps the load for later', async () => {
    const engine = fakeEngine();
    const release = holdLoads(engine);
    const { tandem } = await setup({ '/v1/route': () => json(BROWSER_ANSWER) }, {}, engine);
    const ac = new AbortController();
    const p = tandem.chat.completions.create({ model: 'smol', messages: MESSAGES, signal: ac.signal });
    await settle();
    ac.abort();
    await expect(p).rejects.toBeInstanceOf(TandemAbortError);
    release();
    const r = await tandem.chat.completions.create({ model: 'smol', messages: MESSAGES });
    expect(r.choices[0]!.message.content).toBe('Hello, world!');
    expect(engine.loads).toHaveLength(1);
  });
});
