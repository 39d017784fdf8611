// Model files in the browser's Cache Storage, keyed by URL and checked by SHA-256.

/** The cache that holds model files. */
export const CACHE_NAME = 'tandem-models-v1';
/** Header of a cached response that records the file's SHA-256. */
export const SHA_HEADER = 'x-tandem-sha256';

/** Opens the model cache, or returns null where Cache Storage is unavailable. */
export async function openCache(): Promise<Cache | null> {
  try {
    if (typeof caches === 'undefined') return null;
    return await caches.open(CACHE_NAME);
  } catch {
    return null;
  }
}

/** The cached response for `url` whose recorded SHA-256 is `sha256` (any when `sha256` is empty). */
export async function cachedResponse(cache: Cache | null, url: string, sha256: string): Promise<Response | null> {
  if (!cache) return null;
  const hit = await cache.match(url);
  if (!hit) return null;
  const recorded = (hit.headers.get(SHA_HEADER) || '').toLowerCase();
  if (sha256 && recorded !== sha256.toLowerCase()) {
    await cache.delete(url);
    return null;
  }
  return hit;
}

/** Whether `url` is cached with SHA-256 `sha256`. */
export async function isCachedUrl(url: string, sha256: string): Promise<boolean> {
  const cache = await openCache();
  return (await cachedResponse(cache, url, sha256)) !== null;
}

/** Whether an error is the browser's storage quota being exceeded. */
export function isQuotaError(e: unknown): boolean {
  const name = (e as { name?: string } | null)?.name ?? '';
  return name === 'QuotaExceededError' || /quota/i.test(String((e as Error)?.message ?? e));
}
