import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

// The Tandem server the page talks to. The dev and preview servers proxy its API (/v1) and its
// model files (/models) to it, so that the page, the API and the files share one origin (no CORS,
// and cross-origin isolation works).
const server = process.env.TANDEM_SERVER ?? 'http://127.0.0.1:8080';
const proxy = { '/v1': server, '/models': server };

// Cross-origin isolation gives the CPU engine SharedArrayBuffer, hence threads.
const isolation = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
};

export default defineConfig({
  // The package creates its engine with `new Worker(new URL('./worker.js', import.meta.url),
  // { type: 'module' })`; the worker is an ES module (it imports the wasm glue).
  worker: { format: 'es' },
  // Pre-bundling would move dist/index.js away from dist/worker.js and the .wasm next to it.
  optimizeDeps: { exclude: ['@tandem-inference/web'] },
  build: { target: 'es2022' },
  server: {
    headers: isolation,
    proxy,
    // `file:../..` links the package from outside this folder.
    fs: { allow: [fileURLToPath(new URL('../..', import.meta.url))] },
  },
  preview: { headers: isolation, proxy },
});
