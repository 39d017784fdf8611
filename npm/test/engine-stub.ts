// Stands in for src/engine/index.ts in the unit tests (see vitest.config.ts): each test injects
// its own fake engine, so this one only fails loudly if a test forgets to.
import { EngineFailure, type EngineModule } from '../src/engine/types.js';

const missing = () => Promise.reject(new EngineFailure('unsupported', 'no real engine in unit tests'));

export const engine: EngineModule = {
  probeDevice: missing,
  loadEngine: missing,
  isCached: missing,
};
