// The web demo (web-demo/, on the @tandem-inference/web bundle in web-demo/pkg/) in headless
// Chromium (Debian's, never a downloaded browser) against a running `tandem serve`: a reply routed
// to the server, then one run in the browser (the model downloaded into the page's Web Worker),
// each with its route badge and statistics, and a screenshot of both in target/web-demo.png.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { MODEL_ID, startServer } from "./server.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const STATS = /^TTFT: \d+ ms · speed: [\d.]+ tok\/s · tokens: \d+$/;
let server, browser;

before(async () => {
  assert.ok(existsSync(join(root, "web-demo", "pkg", "index.js")), "web-demo/pkg/ is missing: copy npm/dist there");
  server = await startServer();
  // --enable-unsafe-webgpu gives the page SwiftShader's (software) WebGPU adapter.
  browser = await chromium.launch({ executablePath, args: ["--no-sandbox", "--enable-unsafe-webgpu"] });
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Types `text` into the chat box, sends it, and waits for reply number `n` (0-based) to finish. */
async function ask(page, text, n, timeout) {
  await page.fill("#input", text);
  await page.click("#send");
  const reply = page.locator(".msg.assistant").nth(n);
  await reply.and(page.locator('[data-done="true"]')).waitFor({ timeout });
  return reply;
}

test("the chat page answers on the server and in the browser", { timeout: 420000 }, async () => {
  const page = await browser.newPage({ viewport: { width: 1200, height: 820 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(server.base + "/");
  assert.equal(await page.title(), "Tandem chat");
  assert.match(await page.textContent("#intro"), /in your browser when it can, and on the server when that is better/);
  await page.waitForFunction(() => document.querySelectorAll("#model option").length > 0);
  assert.equal(await page.inputValue("#model"), MODEL_ID);
  // The capability panel describes this browser (here SwiftShader's adapter, a software fallback).
  await page.waitForFunction(() => /Server\s*✓ reachable/.test(document.querySelector("#caps").textContent));
  const caps = await page.textContent("#caps");
  assert.match(caps, /WebGPU adapter\s*\S.* — (software fallback \(slow\)|hardware)/, caps);
  assert.match(caps, /subgroups/, caps);
  assert.match(caps, /Model cached here\s*✗ no/, caps);

  // (a) On the server: a streamed answer, its statistics and its route badge.
  await page.selectOption("#route", "server");
  assert.ok(await page.isDisabled("#load"), "Load is off when replies run on the server");
  await page.fill("#temperature", "0");
  await page.fill("#max-tokens", "48");
  await page.fill("#input", "Why is the sky blue?");
  await page.click("#send");
  // Tokens show up while the answer is still streaming...
  await page.waitForFunction(() => {
    const m = document.querySelector(".msg.assistant.streaming .text");
    return m && m.textContent.length > 0;
  });
  // ...and the answer completes.
  const first = page.locator(".msg.assistant").first();
  await first.and(page.locator('[data-done="true"]')).waitFor({ timeout: 120000 });
  const answer = await first.locator(".text").textContent();
  assert.ok(answer.length > 20, answer);
  assert.ok(!answer.includes("<|im_"), answer);
  assert.equal(await page.textContent(".msg.user"), "Why is the sky blue?");
  assert.match(await page.textContent("#stats"), STATS);
  assert.equal(await first.getAttribute("data-route"), "server");
  assert.equal(await first.getAttribute("data-path"), "");
  assert.match(await first.locator(".route .where").textContent(), /On the server/);
  const reason = first.locator(".route .reason");
  assert.ok(await reason.isVisible());
  assert.match(await reason.textContent(), /you chose “Server”/);

  // (b) In the browser: load the model (progress bar), then a short greedy answer.
  await page.selectOption("#route", "browser");
  await page.fill("#max-tokens", "8");
  await page.fill("#temperature", "0");
  assert.ok(await page.isEnabled("#load"));
  await page.click("#load");
  await page.waitForFunction(() => /^(download|verify|compile|ready)$/.test(document.querySelector("#progress").dataset.phase));
  await page.waitForSelector('#progress[data-phase="ready"]', { timeout: 240000 });
  const ready = await page.textContent("#progress-text");
  assert.match(ready, /^Model ready in your browser: (CPU \(WebAssembly\)|GPU \(WebGPU\)).* [\d.]+ MB downloaded and prepared in [\d.]+ s$/, ready);
  await page.waitForFunction(() => /Model cached here\s*✓ yes/.test(document.querySelector("#caps").textContent));
  const second = await ask(page, "What is the capital of France?", 1, 300000);
  assert.equal(await second.getAttribute("data-route"), "browser");
  assert.match(await second.getAttribute("data-path"), /^(webgpu|cpu)$/);
  const badge = await second.locator(".route").textContent();
  assert.match(badge, /In your browser/, badge);
  assert.match(badge, /you chose “Browser”/, badge);
  assert.ok((await second.locator(".text").textContent()).length > 0);
  const stats = await page.textContent("#stats");
  assert.match(stats, STATS, stats);
  assert.match(stats, /tokens: [1-8]$/, stats);
  await page.waitForFunction(() => /Browser decode speed\s*[\d.]+ tok\/s/.test(document.querySelector("#caps").textContent));

  // (c) A screenshot showing both replies, their badges and the panel.
  const out = join(root, "target", "web-demo.png");
  mkdirSync(dirname(out), { recursive: true });
  await page.screenshot({ path: out });

  // Multi-turn: the next request carries the whole conversation.
  await page.selectOption("#route", "server");
  await page.fill("#max-tokens", "4");
  const sent = page.waitForRequest((r) => r.url().endsWith("/v1/chat/completions") && r.method() === "POST");
  await ask(page, "Thanks!", 2, 60000);
  const body = (await sent).postDataJSON();
  assert.deepEqual(body.messages.map((m) => m.role), ["user", "assistant", "user", "assistant", "user"]);
  assert.equal(body.messages[0].content, "Why is the sky blue?");
  assert.equal(body.messages[1].content, answer);
  // New chat empties the log.
  await page.click("#clear");
  assert.equal(await page.locator(".msg").count(), 0);

  // (d) Nothing went wrong on the page.
  assert.equal(await page.locator(".msg.error").count(), 0);
  assert.deepEqual(errors, []);
});
