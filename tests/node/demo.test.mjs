// The web demo in headless Chromium (Debian's, never a downloaded browser): load the page from a
// running `tandem serve`, send a message, and see a streamed answer with its statistics.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startServer } from "./server.mjs";

const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
let server, browser;

before(async () => {
  server = await startServer();
  browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

test("the chat page streams an answer", async () => {
  const page = await browser.newPage({ viewport: { width: 1000, height: 700 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(server.base + "/");
  assert.equal(await page.title(), "Tandem chat");
  await page.waitForFunction(() => document.querySelectorAll("#model option").length > 0);
  await page.fill("#temperature", "0");
  await page.fill("#max-tokens", "48");
  await page.fill("#input", "Why is the sky blue?");
  await page.click("#send");
  // Tokens show up while the answer is still streaming...
  await page.waitForFunction(() => {
    const m = document.querySelector(".msg.assistant");
    return m && m.textContent.length > 0;
  });
  // ...and the answer completes.
  await page.waitForSelector('.msg.assistant[data-done="true"]', { timeout: 120000 });
  const answer = await page.textContent(".msg.assistant");
  assert.ok(answer.length > 20, answer);
  assert.ok(!answer.includes("<|im_"), answer);
  assert.equal(await page.textContent(".msg.user"), "Why is the sky blue?");
  const stats = await page.textContent("#stats");
  assert.match(stats, /TTFT: \d+ ms · speed: [\d.]+ tok\/s · tokens: \d+/);
  assert.equal(await page.locator(".msg.error").count(), 0);
  assert.deepEqual(errors, []);
  const out = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "target", "web-demo.png");
  mkdirSync(dirname(out), { recursive: true });
  await page.screenshot({ path: out });
});
