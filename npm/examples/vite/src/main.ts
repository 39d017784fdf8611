import { Tandem, type LoadProgress, type TandemInfo, type TandemPolicy } from '@tandem-inference/web';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const status = $<HTMLParagraphElement>('status');
const policySelect = $<HTMLSelectElement>('policy');
const modelSelect = $<HTMLSelectElement>('model');
const loadButton = $<HTMLButtonElement>('load');
const progressBar = $<HTMLProgressElement>('progress');
const form = $<HTMLFormElement>('chat');
const prompt = $<HTMLTextAreaElement>('prompt');
const stopButton = $<HTMLButtonElement>('stop');
const route = $<HTMLParagraphElement>('route');
const reply = $<HTMLDivElement>('reply');
const caps = $<HTMLPreElement>('caps');

let tandem: Tandem | undefined;
let running: AbortController | undefined;

function showProgress(p: LoadProgress): void {
  progressBar.hidden = false;
  progressBar.value = p.total > 0 ? p.loaded / p.total : 0;
  const mb = (n: number) => (n / 1e6).toFixed(1);
  status.textContent =
    `${p.phase}${p.fromCache ? ' (from cache)' : ''}: ${mb(p.loaded)} / ${mb(p.total)} MB` +
    (p.bytesPerSecond > 0 ? ` at ${mb(p.bytesPerSecond)} MB/s` : '');
}

function describe(info: TandemInfo | undefined): string {
  if (!info) return '';
  const where = info.route === 'browser' ? `browser (${info.path ?? '?'})` : 'server';
  return `${info.failover ? 'failed over to ' : ''}${where}: ${info.reason}`;
}

async function connect(): Promise<void> {
  status.textContent = 'Connecting…';
  tandem = await Tandem.create({
    // serverUrl defaults to this page's origin; the dev server proxies /v1 to `tandem serve`.
    policy: policySelect.value as TandemPolicy,
    onProgress: showProgress,
  });
  const { data } = await tandem.models.list();
  modelSelect.replaceChildren(
    ...data.map((m) => new Option(`${m.id}${m.browser_variants.length ? '' : ' (server only)'}`, m.id)),
  );
  const c = await tandem.capabilities();
  caps.textContent = JSON.stringify(c, null, 2);
  const gpu = c.webgpu?.available ? `WebGPU (${c.webgpu.adapter.vendor || 'unknown vendor'})` : 'no WebGPU';
  status.textContent = c.server.reachable
    ? `Connected to ${c.server.url}: ${data.length} model(s); ${gpu}, ${c.wasm_simd ? 'WASM SIMD' : 'no SIMD'}.`
    : `Server unreachable (${c.server.error}); requests run in the browser when they can.`;
}

loadButton.addEventListener('click', async () => {
  if (!tandem) return;
  loadButton.disabled = true;
  try {
    const info = await tandem.load(modelSelect.value || undefined);
    status.textContent = `Loaded ${info.variant.quantization} on ${info.path} (${info.device}).`;
    caps.textContent = JSON.stringify(await tandem.capabilities(), null, 2);
  } catch (err) {
    status.textContent = `Load failed: ${err instanceof Error ? err.message : String(err)}`;
  } finally {
    loadButton.disabled = false;
    progressBar.hidden = true;
  }
});

policySelect.addEventListener('change', () => {
  connect().catch((err) => (status.textContent = String(err)));
});

stopButton.addEventListener('click', () => running?.abort());

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  if (!tandem || running) return;
  running = new AbortController();
  stopButton.disabled = false;
  reply.textContent = '';
  route.textContent = 'Routing…';
  const started = performance.now();
  let tokens = 0;
  try {
    const stream = tandem.chat.completions.create({
      model: modelSelect.value,
      messages: [{ role: 'user', content: prompt.value }],
      max_tokens: 256,
      stream: true,
      stream_options: { include_usage: true },
      signal: running.signal,
    });
    for await (const chunk of stream) {
      if (chunk.tandem) route.textContent = describe(chunk.tandem);
      const text = chunk.choices[0]?.delta.content;
      if (text) reply.textContent += text;
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
    }
    const s = (performance.now() - started) / 1000;
    route.textContent += ` — ${tokens} tokens in ${s.toFixed(1)} s`;
  } catch (err) {
    const name = err instanceof Error ? err.name : '';
    route.textContent = name === 'AbortError' ? 'Stopped.' : `Error: ${err instanceof Error ? err.message : String(err)}`;
  } finally {
    running = undefined;
    stopButton.disabled = true;
    progressBar.hidden = true;
  }
});

connect().catch((err) => (status.textContent = `Failed: ${err instanceof Error ? err.message : String(err)}`));
