// The browser engine in headless Chromium (Debian's, never a downloaded browser), through the
// npm package as a web app uses it, against a real `tandem serve`:
// (1) WebGPU (SwiftShader's adapter): load progress, greedy answers to the reference prompts keep
//     llama.cpp's stable prefixes and agree with the server's CPU backend;
// (2) a reload reads the model from the browser's cache, with no request for the weights;
// (3) without WebGPU the WASM CPU path (its relaxed-SIMD build) answers the same (exactly as the
//     server's CPU backend), a chat's next turn reuses the KV cache of the earlier messages, and
//     a damaged cached copy of the model is detected and fetched again; on a cross-origin
//     isolated page (the demo's) its threaded build answers the same on 2 threads;
// (4) a device too small for the model under `auto`: the server answers, saying why;
// (5) a failure injected mid-stream in the browser engine (its baseline SIMD build): the server
//     finishes the answer in the same stream, from the text already produced.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { MODEL_ID, startServer } from "./server.mjs";

const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const reference = JSON.parse(readFileSync(join(root, "tests", "reference", "generate.json"), "utf8"));
/** Reference cases with a stable prefix worth checking, and how many tokens to generate. */
const CASES = reference.cases.filter((c) => c.stable_prefix_len > 0);
const TOKENS = Math.max(...CASES.map((c) => c.stable_prefix_len)) + 2;

let server;
const browsers = [];
const profiles = [];

/** A Chromium with (or without) WebGPU and its own profile (so its own storage). */
async function launch({ webgpu }) {
  const dir = mkdtempSync(join(tmpdir(), "tandem-chromium-"));
  profiles.push(dir);
  const args = ["--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
  if (webgpu) args.push("--enable-unsafe-webgpu");
  const context = await chromium.launchPersistentContext(dir, { executablePath, headless: true, args });
  browsers.push(context);
  return context;
}

/** Closes a test's Chromium when it is done, so later tests do not share the machine with it. */
async function closeBrowser(context) {
  browsers.splice(browsers.indexOf(context), 1);
  await context.close();
}

/** A plain page on the server's origin (so the package and the model come from it). No request
 * interception: with it, Chromium's worker requests would escape the request counts below. */
async function blankPage(context, init) {
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  if (init) await page.addInitScript(init);
  await page.goto(server.base + "/health");
  return { page, errors };
}

/** Runs `body` in the page with `Tandem` imported and `tandem` created with `options`. */
function inPage(page, options, body, arg) {
  return page.evaluate(
    async ({ options, body, arg }) => {
      const { Tandem } = await import("/pkg/index.js");
      const progress = [];
      const tandem = await Tandem.create({ ...options, onProgress: (p) => progress.push(p) });
      const fn = new Function("tandem", "progress", "arg", `return (async () => { ${body} })()`);
      return fn(tandem, progress, arg);
    },
    { options, body, arg },
  );
}

/** Greedy answers to the reference cases (non-streamed), with the route each took. */
const ANSWER_CASES = `
  const out = [];
  for (const c of arg.cases) {
    const r = await tandem.chat.completions.create({ model: arg.model, messages: c.messages, temperature: 0, max_tokens: arg.tokens });
    out.push({ text: r.choices[0].message.content, tandem: r.tandem, usage: r.usage });
  }
  return { out, progress: progress.map((p) => ({ phase: p.phase, loaded: p.loaded, total: p.total, fromCache: p.fromCache })), caps: await tandem.capabilities() };
`;

/** The server's own greedy answers (its CPU backend), through the HTTP API. */
async function serverAnswers(cases, tokens) {
  const out = [];
  for (const c of cases) {
    const r = await fetch(server.base + "/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL_ID, messages: c.messages, temperature: 0, max_tokens: tokens }),
    });
    assert.equal(r.status, 200);
    out.push((await r.json()).choices[0].message.content);
  }
  return out;
}

function checkProgress(progress, bytes, { fromCache }) {
  const downloads = progress.filter((p) => p.phase === "download");
  assert.ok(downloads.length >= 1, JSON.stringify(progress));
  const last = downloads[downloads.length - 1];
  assert.equal(last.loaded, bytes);
  assert.equal(last.total, bytes);
  for (let i = 1; i < downloads.length; i++) assert.ok(downloads[i].loaded >= downloads[i - 1].loaded);
  assert.ok(downloads.every((p) => p.fromCache === fromCache), JSON.stringify(downloads.slice(0, 3)));
  const phases = progress.map((p) => p.phase);
  assert.ok(phases.indexOf("verify") > phases.lastIndexOf("download") - 1 && phases.includes("compile"), phases.join(","));
}

let variant;
let serverTexts;

before(async () => {
  server = await startServer();
  // The server hashes the model file in the background and lists it for browsers once it knows
  // the SHA-256 they check against.
  for (let i = 0; i < 1200 && !variant?.sha256; i++) {
    if (i) await new Promise((r) => setTimeout(r, 100));
    const models = await (await fetch(server.base + "/v1/models")).json();
    variant = models.data.find((m) => m.id === MODEL_ID)?.browser_variants?.[0];
  }
  assert.ok(variant && variant.bytes > 0, "the server lists no browser variant");
  // The page fetches it by its absolute URL (the list may give it relative to the server).
  variant = { ...variant, url: new URL(variant.url, server.base).href };
  assert.match(variant.sha256, /^[0-9a-f]{64}$/);
  serverTexts = await serverAnswers(CASES, TOKENS);
  for (const [i, c] of CASES.entries()) assert.ok(serverTexts[i].startsWith(c.stable_prefix_text), serverTexts[i]);
});

after(async () => {
  for (const b of browsers) await b.close().catch(() => {});
  await server?.stop();
  for (const d of profiles) rmSync(d, { recursive: true, force: true });
});

test("WebGPU: progress, reference stable prefixes, the server's answers; a reload reads the cache", async () => {
  const context = await launch({ webgpu: true });
  const weightRequests = [];
  context.on("request", (req) => {
    if (req.url() === variant.url) weightRequests.push(req.url());
  });
  const { page, errors } = await blankPage(context);
  const r = await inPage(page, { policy: "browser", backend: "webgpu" }, ANSWER_CASES, { cases: CASES, model: MODEL_ID, tokens: TOKENS });
  assert.equal(weightRequests.length, 1);
  assert.equal(r.caps.webgpu.available, true);
  assert.equal(r.caps.webgpu.adapter.is_fallback, true);
  checkProgress(r.progress, variant.bytes, { fromCache: false });
  for (const [i, c] of CASES.entries()) {
    const got = r.out[i];
    assert.equal(got.tandem.route, "browser", JSON.stringify(got.tandem));
    assert.equal(got.tandem.path, "webgpu", JSON.stringify(got.tandem));
    assert.ok(got.text.startsWith(c.stable_prefix_text), `${JSON.stringify(got.text)} lacks the stable prefix ${JSON.stringify(c.stable_prefix_text)}`);
    assert.ok(serverTexts[i].startsWith(c.stable_prefix_text));
  }
  assert.deepEqual(errors, []);

  // (2) A reload: the weights come from the browser's storage (OPFS); nothing more is fetched for them.
  const again = await blankPage(context);
  const r2 = await inPage(again.page, { policy: "browser", backend: "webgpu" }, ANSWER_CASES, { cases: CASES.slice(0, 1), model: MODEL_ID, tokens: 2 });
  checkProgress(r2.progress, variant.bytes, { fromCache: true });
  assert.equal(weightRequests.length, 1);
  assert.deepEqual(r2.caps.cached_variants, [variant.sha256]);
  assert.ok(r2.out[0].text.startsWith(CASES[0].stable_prefix_text.slice(0, 1)));
  await again.page.close();
  await page.close();
  await closeBrowser(context);
});

test("without WebGPU the WASM CPU path answers exactly as the server's CPU backend; a damaged cache is refetched", async () => {
  const context = await launch({ webgpu: false });
  const { page, errors } = await blankPage(context);
  const r = await inPage(page, { policy: "browser" }, ANSWER_CASES, { cases: CASES, model: MODEL_ID, tokens: TOKENS });
  assert.ok(!r.caps.webgpu || r.caps.webgpu.available === false, JSON.stringify(r.caps.webgpu));
  assert.equal(r.caps.wasm_simd, true);
  // Chromium has relaxed SIMD, so the engine's faster build runs.
  assert.match(r.caps.engines[0].device, /simd128\+relaxed/, JSON.stringify(r.caps.engines));
  checkProgress(r.progress, variant.bytes, { fromCache: false });
  for (const [i, c] of CASES.entries()) {
    const got = r.out[i];
    assert.equal(got.tandem.route, "browser");
    assert.equal(got.tandem.path, "cpu");
    assert.ok(got.text.startsWith(c.stable_prefix_text), got.text);
    assert.equal(got.text, serverTexts[i]);
    assert.equal(got.usage.completion_tokens, TOKENS);
  }
  assert.ok(r.caps.measured?.decode_tok_s > 0 || r.caps.engines?.[0]?.measured?.decode_tok_s > 0, JSON.stringify(r.caps));

  // A chat's second turn reuses the KV cache of the first (reported as OpenAI's cached prompt
  // tokens) and answers exactly as the server does from scratch.
  const question = [{ role: "user", content: "Why is the sky blue?" }];
  const turns = await inPage(
    page,
    { policy: "browser" },
    `
      const first = await tandem.chat.completions.create({ model: arg.model, messages: arg.question, temperature: 0, max_tokens: 8 });
      const messages = [...arg.question, { role: "assistant", content: first.choices[0].message.content }, { role: "user", content: "And why are sunsets red?" }];
      const second = await tandem.chat.completions.create({ model: arg.model, messages, temperature: 0, max_tokens: 8 });
      return { first: first.usage, second: second.usage, text: second.choices[0].message.content, messages };
    `,
    { model: MODEL_ID, question },
  );
  assert.ok(turns.second.prompt_tokens_details.cached_tokens >= turns.first.prompt_tokens, JSON.stringify(turns));
  assert.ok(turns.second.prompt_tokens_details.cached_tokens < turns.second.prompt_tokens);
  const [fromScratch] = await serverAnswers([{ messages: turns.messages }], 8);
  assert.equal(turns.text, fromScratch);
  assert.deepEqual(errors, []);
  await page.close();

  // A damaged cached copy (same URL, same recorded SHA-256, wrong bytes) is detected and the
  // file is fetched again, once.
  const weightRequests = [];
  context.on("request", (req) => {
    if (req.url() === variant.url) weightRequests.push(req.url());
  });
  const damaged = await blankPage(context);
  await damaged.page.evaluate(async () => {
    // The one model file in the package's OPFS folder: flip a byte in its middle.
    const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle("tandem-models-v1");
    const files = [];
    for await (const [name, handle] of dir.entries()) if (name.endsWith(".gguf")) files.push(handle);
    if (files.length !== 1) throw new Error(`${files.length} cached model files`);
    const file = await files[0].getFile();
    const at = file.size >> 1;
    const [byte] = new Uint8Array(await file.slice(at, at + 1).arrayBuffer());
    const writable = await files[0].createWritable({ keepExistingData: true });
    await writable.write({ type: "write", position: at, data: new Uint8Array([byte ^ 0xff]) });
    await writable.close();
  });
  const r2 = await inPage(damaged.page, { policy: "browser" }, ANSWER_CASES, { cases: CASES.slice(0, 1), model: MODEL_ID, tokens: TOKENS });
  assert.equal(r2.out[0].text, serverTexts[0]);
  assert.equal(weightRequests.length, 1);
  assert.ok(r2.progress.some((p) => p.phase === "download" && p.fromCache === false));
  await damaged.page.close();
  // The fresh copy is cached again.
  const healed = await blankPage(context);
  const r3 = await inPage(healed.page, { policy: "browser" }, ANSWER_CASES, { cases: CASES.slice(0, 1), model: MODEL_ID, tokens: 2 });
  assert.equal(weightRequests.length, 1);
  checkProgress(r3.progress, variant.bytes, { fromCache: true });
  assert.deepEqual([...errors, ...damaged.errors, ...healed.errors], []);
  await healed.page.close();
  await closeBrowser(context);
});

test("cross-origin isolated (the demo page): the CPU path runs on 2 threads and answers exactly as the server's CPU backend", async () => {
  const context = await launch({ webgpu: false });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // The server serves the demo with COOP and COEP, so its page may share memory with workers.
  await page.goto(server.base + "/");
  assert.equal(await page.evaluate(() => globalThis.crossOriginIsolated), true);
  const r = await inPage(page, { policy: "browser", threads: 2 }, ANSWER_CASES, { cases: CASES, model: MODEL_ID, tokens: TOKENS });
  assert.match(r.caps.engines[0].device, /simd128\+relaxed\), 2 thread/, JSON.stringify(r.caps.engines));
  for (const [i, c] of CASES.entries()) {
    assert.equal(r.out[i].tandem.path, "cpu");
    assert.equal(r.out[i].text, serverTexts[i], `case ${c.id ?? i}`);
  }
  assert.deepEqual(errors, []);
  await page.close();
  await closeBrowser(context);
});

test("a device too small for the model: under auto the server answers, and says why", async () => {
  const context = await launch({ webgpu: false });
  // A phone-class device: 256 MB of memory as the browser reports it.
  const { page, errors } = await blankPage(context, () => Object.defineProperty(navigator, "deviceMemory", { value: 0.25 }));
  const r = await inPage(page, { policy: "auto" }, ANSWER_CASES, { cases: CASES.slice(0, 1), model: MODEL_ID, tokens: 6 });
  const t = r.out[0].tandem;
  assert.equal(t.route, "server", JSON.stringify(t));
  assert.equal(t.decided_by, "server");
  assert.match(t.reason, /insufficient_memory/);
  assert.ok(r.out[0].text.length > 0);
  // Nothing was downloaded for the browser.
  assert.equal(r.progress.length, 0);
  assert.deepEqual(errors, []);
  await page.close();
  await closeBrowser(context);
});

test("a failure mid-stream in the browser: the server finishes the answer in the same stream", async () => {
  const context = await launch({ webgpu: false });
  const { page, errors } = await blankPage(context);
  const c = CASES[CASES.length - 1];
  // The baseline build (WebAssembly SIMD only, for browsers without relaxed SIMD) this time.
  const { chunks: r, device } = await inPage(
    page,
    { policy: "browser", wasmSimd: "simd128" },
    `
      const chunks = [];
      const stream = await tandem.chat.completions.create({ model: arg.model, messages: arg.messages, temperature: 0, max_tokens: arg.tokens, stream: true, fail_after_tokens: 3 });
      for await (const chunk of stream) chunks.push(chunk);
      return { chunks, device: (await tandem.capabilities()).engines[0]?.device };
    `,
    { model: MODEL_ID, messages: c.messages, tokens: 12 },
  );
  assert.match(device, /\(simd128\)/);
  const text = r.map((ch) => ch.choices[0]?.delta?.content ?? "").join("");
  assert.equal(r[0].tandem.route, "browser", JSON.stringify(r[0]));
  const last = r.find((ch) => ch.choices[0]?.finish_reason);
  assert.equal(last.tandem.route, "server", JSON.stringify(last.tandem));
  assert.equal(last.tandem.failover, true);
  assert.equal(last.tandem.browser_tokens, 3);
  assert.match(last.tandem.reason, /injected/);
  // One answer: the server went on from the browser's text, as if it had answered alone.
  const [alone] = await serverAnswers([c], 12);
  assert.equal(text, alone);
  assert.equal(r.filter((ch) => ch.choices[0]?.delta?.role).length, 1);
  assert.deepEqual(errors, []);
  await page.close();
  await closeBrowser(context);
});
