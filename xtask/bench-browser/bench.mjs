// `cargo xtask bench browser`: Tandem's browser engine (WASM CPU path, WebGPU path) and
// @wllama/wllama (llama.cpp compiled to WebAssembly) on the same GGUF file, in the same headless
// Chromium (Debian's), in the same run. Prefill and decode speeds come from each engine's own
// timers inside its worker; the page is cross-origin isolated, so wllama may use threads.
//
// Use: node bench.mjs --model PATH [--json OUT] [--reps N] [--tokens N]
import { createHash } from "node:crypto";
import { createReadStream, readFileSync, statSync, writeFileSync } from "node:fs";
import http from "node:http";
import { dirname, extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const modelPath = args.model;
if (!modelPath) throw new Error("--model PATH is required");
const reps = Number(args.reps || 3);
const tokens = Number(args.tokens || 128);
const dist = join(root, "npm", "dist");
const wllamaDir = join(here, "node_modules", "@wllama", "wllama", "esm");

const bytes = statSync(modelPath).size;
const sha256 = createHash("sha256").update(readFileSync(modelPath)).digest("hex");
const TYPES = { ".js": "text/javascript", ".wasm": "application/wasm", ".html": "text/html", ".json": "application/json" };

/** Serves the package, wllama and the model from one cross-origin-isolated origin. */
function serve() {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    const headers = {
      "Cross-Origin-Opener-Policy": "same-origin",
      "Cross-Origin-Embedder-Policy": "require-corp",
      "Cross-Origin-Resource-Policy": "same-origin",
    };
    const file = (base, rel) => {
      const path = normalize(join(base, rel));
      if (!path.startsWith(base)) return null;
      try {
        return statSync(path).isFile() ? path : null;
      } catch {
        return null;
      }
    };
    let path = null;
    if (url.pathname === "/") {
      res.writeHead(200, { ...headers, "content-type": "text/html" });
      return res.end("<!doctype html><title>bench</title>");
    } else if (url.pathname === "/v1/models") {
      res.writeHead(200, { ...headers, "content-type": "application/json" });
      const variant = { url: "/model.gguf", sha256, bytes, quantization: "", memory_bytes: bytes * 2, required_features: [] };
      return res.end(JSON.stringify({ object: "list", data: [{ id: "bench", object: "model", max_model_len: 2048, browser_variants: [variant] }] }));
    } else if (url.pathname === "/model.gguf") {
      path = modelPath;
    } else if (url.pathname.startsWith("/pkg/")) {
      path = file(dist, url.pathname.slice(5));
    } else if (url.pathname.startsWith("/wllama/")) {
      path = file(wllamaDir, url.pathname.slice(8));
    }
    if (!path) {
      res.writeHead(404, headers);
      return res.end();
    }
    res.writeHead(200, { ...headers, "content-type": TYPES[extname(path)] || "application/octet-stream", "content-length": statSync(path).size });
    createReadStream(path).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

/** Distinct prompts of about 120 tokens (distinct, so no run reuses another's cache). */
function messages(i) {
  const text =
    `Run ${i}. ` +
    "Here are some notes about the history of astronomy, from the earliest star catalogues of Babylon and the models of Ptolemy, " +
    "through Copernicus, Tycho Brahe, Kepler and Galileo, to Newton's law of gravitation and the discovery of Neptune from the " +
    "motion of Uranus. Write a long, detailed essay that explains how each of these steps changed what people believed about the " +
    "sky, with examples, dates and the names of the instruments they used.";
  return [{ role: "user", content: text }];
}

const median = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN;
};

/** Tandem through its npm package, as an app runs it. */
async function tandem(page, backend, n, count, wasmSimd = "auto", threads = 1) {
  return page.evaluate(
    async ({ backend, n, count, msgs, wasmSimd, threads }) => {
      const { Tandem } = await import("/pkg/index.js");
      const t = await Tandem.create({ policy: "browser", backend, wasmSimd, threads });
      const info = await t.load("bench");
      const runs = [];
      for (let i = 0; i < count; i++) {
        const r = await t.chat.completions.create({ model: "bench", messages: msgs[i], temperature: 0, max_tokens: n, ignore_eos: true });
        const caps = await t.capabilities();
        const m = caps.engines[0].measured;
        runs.push({ prompt: r.usage.prompt_tokens, generated: r.usage.completion_tokens, decode: m.decode_tok_s, prefill: m.prefill_tok_s, route: r.tandem });
      }
      return { device: info.device, path: info.path, runs };
    },
    { backend, n, count, wasmSimd, threads, msgs: Array.from({ length: count }, (_, i) => messages(i + 1)) },
  );
}

/** @wllama/wllama (llama.cpp in WebAssembly) on the CPU with `threads` threads. */
async function wllama(page, threads, n, count) {
  return page.evaluate(
    async ({ threads, n, count, msgs }) => {
      const { Wllama } = await import("/wllama/index.js");
      const w = new Wllama({ default: "/wllama/wasm/wllama.wasm" }, { suppressNativeLog: true });
      await w.loadModelFromUrl(location.origin + "/model.gguf", { n_threads: threads, n_gpu_layers: 0, n_ctx: 1024, n_batch: 512, useCache: false });
      const runs = [];
      for (let i = 0; i < count; i++) {
        const r = await w.createChatCompletion({ messages: msgs[i], max_tokens: n, temperature: 0, ignore_eos: true });
        const t = r.timings;
        runs.push({ prompt: t.prompt_n, generated: t.predicted_n, decode: t.predicted_per_second, prefill: t.prompt_per_second });
      }
      await w.exit();
      return { device: `wasm, ${threads} thread(s)`, runs, isolated: crossOriginIsolated };
    },
    { threads, n, count, msgs: Array.from({ length: count }, (_, i) => messages(100 + i)) },
  );
}

const server = await serve();
const origin = `http://127.0.0.1:${server.address().port}`;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--enable-unsafe-webgpu", "--disable-quic", "--no-first-run", "--disable-background-networking"],
});
const rows = [];
async function measure(name, threads, fn) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(origin + "/");
  try {
    const r = await fn(page);
    // The first run warms up (compiles, touches memory); the median of the others counts.
    const counted = r.runs.length > 1 ? r.runs.slice(1) : r.runs;
    const row = {
      engine: name,
      threads,
      device: r.device,
      prompt_tokens: counted[0]?.prompt,
      generated: counted[0]?.generated,
      prefill_tok_s: median(counted.map((x) => x.prefill)),
      decode_tok_s: median(counted.map((x) => x.decode)),
      runs: r.runs,
    };
    rows.push(row);
    console.error(`${name} (${threads} thread(s)): prefill ${row.prefill_tok_s?.toFixed(1)} tok/s, decode ${row.decode_tok_s?.toFixed(1)} tok/s`);
  } catch (e) {
    rows.push({ engine: name, threads, error: String(e.message || e) });
    console.error(`${name} (${threads}): failed: ${e.message || e}`);
  }
  if (errors.length) console.error(`${name}: page errors: ${errors.join("; ")}`);
  await context.close();
}

// The engine's WebAssembly builds: relaxed SIMD (what Chromium loads) on 1 and 2 threads (the
// threaded build), and baseline SIMD (for browsers without relaxed SIMD).
await measure("Tandem WASM CPU", 1, (p) => tandem(p, "cpu", tokens, reps + 1, "relaxed", 1));
await measure("Tandem WASM CPU", 2, (p) => tandem(p, "cpu", tokens, reps + 1, "relaxed", 2));
await measure("Tandem WASM CPU", 1, (p) => tandem(p, "cpu", tokens, reps + 1, "simd128", 1));
await measure("wllama", 1, (p) => wllama(p, 1, tokens, reps + 1));
await measure("wllama", 2, (p) => wllama(p, 2, tokens, reps + 1));
// SwiftShader emulates the GPU on the CPU: a few tokens show its speed.
await measure("Tandem WebGPU", 0, (p) => tandem(p, "webgpu", 8, 2));
await browser.close();
server.close();

const gz = (f) => gzipSync(readFileSync(join(dist, f)), { level: 9 }).length;
const sizes = {
  wasm_bytes: statSync(join(dist, "engine_wasm_bg.wasm")).size,
  wasm_gzip: gz("engine_wasm_bg.wasm"),
  wasm_relaxed_bytes: statSync(join(dist, "engine_wasm_relaxed_bg.wasm")).size,
  wasm_relaxed_gzip: gz("engine_wasm_relaxed_bg.wasm"),
  wasm_threads_bytes: statSync(join(dist, "engine_wasm_threads_bg.wasm")).size,
  wasm_threads_gzip: gz("engine_wasm_threads_bg.wasm"),
  js_bytes: ["index.js", "worker.js", "thread.js"].reduce((n, f) => n + statSync(join(dist, f)).size, 0),
  js_gzip: gz("index.js") + gz("worker.js") + gz("thread.js"),
};
const fmt = (x) => (Number.isFinite(x) ? x.toFixed(1) : "–");
console.log(`| engine | threads | prompt | generated | prefill tok/s | decode tok/s |`);
console.log(`| --- | ---: | ---: | ---: | ---: | ---: |`);
for (const r of rows) {
  if (r.error) console.log(`| ${r.engine} | ${r.threads || "GPU"} | | | failed: ${r.error} | |`);
  else console.log(`| ${r.engine} (${r.device}) | ${r.threads || "GPU"} | ${r.prompt_tokens} | ${r.generated} | ${fmt(r.prefill_tok_s)} | ${fmt(r.decode_tok_s)} |`);
}
console.log(
  `\nTandem's package: wasm ${(sizes.wasm_bytes / 1e6).toFixed(2)} MB (${(sizes.wasm_gzip / 1e6).toFixed(3)} MB gzipped), ` +
    `relaxed-SIMD wasm ${(sizes.wasm_relaxed_bytes / 1e6).toFixed(2)} MB (${(sizes.wasm_relaxed_gzip / 1e6).toFixed(3)} MB gzipped), ` +
    `threaded wasm ${(sizes.wasm_threads_bytes / 1e6).toFixed(2)} MB (${(sizes.wasm_threads_gzip / 1e6).toFixed(3)} MB gzipped; a browser downloads one of the three), ` +
    `JS ${(sizes.js_bytes / 1e3).toFixed(1)} kB (${(sizes.js_gzip / 1e3).toFixed(1)} kB gzipped)`,
);
if (args.json) writeFileSync(args.json, JSON.stringify({ model: modelPath, bytes, sha256, tokens, reps, rows, sizes }, null, 2));
