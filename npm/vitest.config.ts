import { fileURLToPath } from 'node:url';
import { defineConfig, type Plugin } from 'vitest/config';

// The unit tests run in Node and never load the real engine (a Web Worker running wasm): the
// client's `import { engine } from './engine/index.js'` is pointed at a stub, and each test
// injects a fake `EngineModule` through `Tandem.create({ engine })`.
const stubEngine: Plugin = {
  name: 'tandem-stub-engine',
  enforce: 'pre',
  resolveId(source, importer) {
    if (source === './engine/index.js' && importer && /[\\/]src[\\/]tandem\.ts$/.test(importer)) {
      return fileURLToPath(new URL('./test/engine-stub.ts', import.meta.url));
    }
    return null;
  },
};

export default defineConfig({
  plugins: [stubEngine],
  test: {
    include: ['test/**/*.test.ts'],
    environment: 'node',
    pool: 'threads',
    poolOptions: { threads: { maxThreads: 2, minThreads: 1 } },
  },
});
