// Runs a WebAssembly (WASI preview 1) test program in headless Chromium (Debian's):
// `node wasi-chromium.mjs PROGRAM.wasm ARGS...`. Cargo uses it as the runner for wasm32-wasip1
// test binaries built with instructions that only the browser runs correctly (relaxed SIMD:
// Node 20's implementation is experimental and computes other values). The program gets its
// arguments, the `TANDEM_*` environment variables, standard output and error, the clocks and
// random bytes; it has no file system.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const playwright = join(here, "..", "..", "tests", "node", "node_modules", "playwright-core", "index.mjs");
const { chromium } = await import(pathToFileURL(playwright).href);

const [, , program, ...args] = process.argv;
const env = Object.entries(process.env)
  .filter(([k]) => k.startsWith("TANDEM_"))
  .map(([k, v]) => `${k}=${v}`);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox"],
});
try {
  const page = await browser.newPage();
  page.on("console", (m) => process.stdout.write(m.text()));
  const code = await page.evaluate(
    async ({ b64, argv, env }) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const enc = new TextEncoder();
      const dec = new TextDecoder();
      const strings = (list) => list.map((s) => enc.encode(s + "\0"));
      const [argz, envz] = [strings(argv), strings(env)];
      let memory;
      let pending = "";
      const flush = (all) => {
        const cut = all ? pending.length : pending.lastIndexOf("\n") + 1;
        if (cut > 0) console.log(pending.slice(0, cut));
        pending = pending.slice(cut);
      };
      class Exit {
        constructor(code) {
          this.code = code;
        }
      }
      const view = () => new DataView(memory.buffer);
      const sizes = (list, countAt, bytesAt) => {
        view().setUint32(countAt, list.length, true);
        view().setUint32(bytesAt, list.reduce((n, s) => n + s.length, 0), true);
        return 0;
      };
      const fill = (list, ptrs, buf) => {
        for (const [i, s] of list.entries()) {
          view().setUint32(ptrs + 4 * i, buf, true);
          new Uint8Array(memory.buffer, buf, s.length).set(s);
          buf += s.length;
        }
        return 0;
      };
      const wasi = {
        fd_write(fd, iovs, count, written) {
          let total = 0;
          for (let i = 0; i < count; i++) {
            const at = view().getUint32(iovs + 8 * i, true);
            const len = view().getUint32(iovs + 8 * i + 4, true);
            pending += dec.decode(new Uint8Array(memory.buffer, at, len));
            total += len;
          }
          view().setUint32(written, total, true);
          flush(false);
          return 0;
        },
        proc_exit(code) {
          throw new Exit(code);
        },
        args_sizes_get: (c, b) => sizes(argz, c, b),
        args_get: (p, b) => fill(argz, p, b),
        environ_sizes_get: (c, b) => sizes(envz, c, b),
        environ_get: (p, b) => fill(envz, p, b),
        random_get(at, len) {
          crypto.getRandomValues(new Uint8Array(memory.buffer, at, len));
          return 0;
        },
        clock_time_get(_id, _precision, at) {
          view().setBigUint64(at, BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6)), true);
          return 0;
        },
        sched_yield: () => 0,
      };
      // Every other call answers ENOSYS (52).
      const imports = { wasi_snapshot_preview1: new Proxy(wasi, { get: (t, k) => t[k] ?? (() => 52) }) };
      const { instance } = await WebAssembly.instantiate(bytes, imports);
      memory = instance.exports.memory;
      try {
        instance.exports._start();
        return 0;
      } catch (e) {
        if (e instanceof Exit) return e.code;
        return `trapped: ${e}`;
      } finally {
        flush(true);
      }
    },
    { b64: readFileSync(program).toString("base64"), argv: [program, ...args], env },
  );
  if (code !== 0) console.error(`\n${program}: ${typeof code === "number" ? `exit ${code}` : code}`);
  process.exitCode = code === 0 ? 0 : 1;
} finally {
  await browser.close();
}
