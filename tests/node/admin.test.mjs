// The admin page (/admin/) in headless Chromium (Debian's) against a running `tandem serve` with
// tenants: signed in with the admin key it shows the tenant, its key (never the key itself),
// usage and cost per day, what browsers served and saved, and the upstream's health; a
// screenshot goes to target/admin-page.png. A wrong key shows the server's error.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { model, startServerArgs } from "./server.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const ADMIN = "node-admin-key-0123456789";
let server, browser;

async function admin(method, path, body) {
  const r = await fetch(server.base + "/admin/v1/" + path, {
    method,
    headers: { Authorization: `Bearer ${ADMIN}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await r.json();
  assert.ok(r.ok, `${method} ${path}: ${r.status} ${JSON.stringify(json)}`);
  return json;
}

before(async () => {
  // The local model with a price, so that the page has costs to show.
  const dir = mkdtempSync(join(tmpdir(), "tandem-admin-"));
  const config = join(dir, "tandem.toml");
  writeFileSync(
    config,
    `[[upstreams]]\nid = "engine"\nkind = "local"\nsource = ${JSON.stringify(model())}\ncost = { input_per_1m = 50.0, output_per_1m = 150.0 }\n[[upstreams.models]]\nname = "smol"\n`,
  );
  server = await startServerArgs(["--config", config, "--admin-key", ADMIN, "--ctx-size", "512"]);
  browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

test("the admin page shows tenants, keys, usage, savings and upstreams", { timeout: 180000 }, async () => {
  await admin("POST", "tiers", { id: "pro", requests_per_minute: 600, monthly_budget_usd: 25 });
  await admin("POST", "tenants", { id: "acme", name: "Acme Corp", tier: "pro" });
  const { key, prefix } = await admin("POST", "tenants/acme/keys", { name: "backend" });
  for (let i = 0; i < 3; i++) {
    const r = await fetch(server.base + "/v1/chat/completions", {
      method: "POST",
      headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
      body: JSON.stringify({ model: "smol", messages: [{ role: "user", content: "Say hi." }], max_tokens: 8, temperature: 0 }),
    });
    const text = await r.text();
    assert.equal(r.status, 200, text);
  }
  const report = await fetch(server.base + "/v1/usage/browser", {
    method: "POST",
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify({ model: "smol", prompt_tokens: 400, completion_tokens: 2000, route: "browser", path: "webgpu", duration_ms: 9000 }),
  });
  assert.equal(report.status, 200, await report.text());

  const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(server.base + "/admin/");
  assert.equal(await page.title(), "Tandem admin");
  // A wrong key: the server's answer, no data.
  await page.fill("#key", "not-the-admin-key");
  await page.click("#load");
  await page.waitForFunction(() => document.querySelector("#status").classList.contains("error"));
  assert.match(await page.textContent("#status"), /admin key/);
  assert.ok(await page.isHidden("#dashboard"));

  await page.fill("#key", ADMIN);
  await page.click("#load");
  await page.waitForSelector("#dashboard:not([hidden])");
  const tenants = await page.textContent("#tenants");
  assert.match(tenants, /acme\s*Acme Corp\s*pro\s*600 req\/min, budget \$25\.00/);
  const keys = await page.textContent("#keys");
  assert.ok(keys.includes(prefix) && !keys.includes(key), keys);
  assert.match(keys, /backend/);
  const routes = await page.textContent("#routes");
  assert.match(routes, /browser\s*1\s*2,400\s*\$0\.000000\s*\$0\.320000/, routes);
  assert.match(routes, /server\s*3/, routes);
  const totals = await page.textContent("#totals");
  assert.match(totals, /4\s*requests/, totals);
  assert.match(await page.textContent("#days tbody"), /^\d{4}-\d{2}-\d{2}\s*4\s*0/);
  assert.match(await page.textContent("#upstreams"), /engine\s*local\s*smol\s*healthy/);
  assert.equal(await page.locator("#chart rect").count() >= 2, true);
  mkdirSync(join(root, "target"), { recursive: true });
  const shot = join(root, "target", "admin-page.png");
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(statSync(shot).size > 20000, "the screenshot is not blank");
  assert.deepEqual(errors, []);
});
