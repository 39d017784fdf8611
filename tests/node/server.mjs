// Starts the real `tandem serve` binary on 127.0.0.1 for the Node tests: `$TANDEM_BIN`, else
// target/debug/tandem of this checkout; the model is `$TANDEM_MODEL`, else the cached default.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const MODEL_ID = "smol";

export function binary() {
  const bin = process.env.TANDEM_BIN || join(root, "target", "debug", "tandem");
  if (!existsSync(bin)) throw new Error(`${bin} not found: build it with cargo build -p control-plane`);
  return bin;
}

export function model() {
  const cache = process.env.TANDEM_CACHE || join(homedir(), ".cache", "tandem");
  const path = process.env.TANDEM_MODEL || join(cache, "models", "SmolLM2-135M-Instruct.Q4_1.gguf");
  if (!existsSync(path)) throw new Error(`default model missing at ${path}: run cargo xtask setup`);
  return path;
}

/** Starts a server on the default model; resolves to { base, log, stop() } once it is ready. */
export function startServer(...extra) {
  return startServerArgs(["--model", model(), "--model-id", MODEL_ID, ...extra]);
}

/** Starts `tandem serve ARGS` on a free port of 127.0.0.1 with two threads. */
export function startServerArgs(args) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("TANDEM_") || k === "TANDEM_CACHE"));
  // Each server keeps its ledger in a scratch folder.
  env.TANDEM_DATA_DIR = mkdtempSync(join(tmpdir(), "tandem-data-"));
  const child = spawn(binary(), ["serve", "--host", "127.0.0.1", "--port", "0", "--threads", "2", ...args], { env, stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  let base = null;
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error("tandem serve did not start:\n" + log)), 120000);
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (text) => {
      log += text;
      const m = log.match(/listening on (http:\/\/\S+)/);
      if (m) base = m[1];
      if (base && log.includes("tandem: ready")) {
        clearTimeout(timer);
        resolvePromise({
          base,
          log: () => log,
          stop: () => new Promise((done) => { child.once("exit", done); child.kill("SIGTERM"); }),
        });
      }
    });
    child.once("exit", (code) => reject(new Error(`tandem serve exited with ${code}:\n${log}`)));
  });
}
