// Model files in the origin private file system (OPFS), keyed by URL and checked by SHA-256.
//
// OPFS rather than Cache Storage: Chromium turns a cached response's body into a blob first, and
// its blob store, whose limits follow the disk's size and free space, refuses a body of a hundred
// megabytes on a small or fairly full disk (`Cache.put` then fails with a "network error", even
// on a 2 GB disk 86% free). A file written through a sync access handle goes straight to disk,
// within the origin's storage quota.

/** The OPFS folder that holds model files. */
export const STORE_DIR = 'tandem-models-v1';

/** What is recorded beside a file once it is complete and verified. */
interface Entry {
  url: string;
  sha256: string;
  bytes: number;
}

/** A model file's two names in the store: its bytes and its record. */
interface Names {
  data: string;
  meta: string;
}

/** The store's folder, or null where OPFS is unavailable (an insecure page, an old browser). */
async function folder(create: boolean): Promise<FileSystemDirectoryHandle | null> {
  try {
    const root = await globalThis.navigator?.storage?.getDirectory?.();
    return root ? await root.getDirectoryHandle(STORE_DIR, { create }) : null;
  } catch {
    return null;
  }
}

/** Names derived from the URL's SHA-256, so any URL gives valid file names. */
async function namesOf(url: string): Promise<Names> {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(url));
  const key = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
  return { data: `${key}.gguf`, meta: `${key}.json` };
}

/** The cached file for `url` recorded with SHA-256 `sha256` (any when empty), or null. */
export async function cachedFile(url: string, sha256: string): Promise<File | null> {
  const dir = await folder(false);
  if (!dir) return null;
  try {
    const names = await namesOf(url);
    const record = await (await dir.getFileHandle(names.meta)).getFile();
    const entry = JSON.parse(await record.text()) as Entry;
    if (entry.url !== url || (sha256 && entry.sha256 !== sha256.toLowerCase())) return null;
    const file = await (await dir.getFileHandle(names.data)).getFile();
    return file.size === entry.bytes ? file : null;
  } catch {
    return null;
  }
}

/** Whether `url` is cached with SHA-256 `sha256`. */
export async function isCachedUrl(url: string, sha256: string): Promise<boolean> {
  return (await cachedFile(url, sha256)) !== null;
}

/** Removes `url`'s file and record (a damaged or stale copy). */
export async function forget(url: string): Promise<void> {
  const dir = await folder(false);
  if (!dir) return;
  const names = await namesOf(url);
  for (const name of [names.meta, names.data]) await dir.removeEntry(name).catch(() => undefined);
}

/**
 * Writes a model file into the store as it downloads (in a dedicated worker, where OPFS has sync
 * access handles). The file counts as cached only after `commit`, which records its SHA-256.
 */
export class FileWriter {
  private written = 0;

  private constructor(
    private readonly url: string,
    private readonly dir: FileSystemDirectoryHandle,
    private readonly names: Names,
    private readonly handle: FileSystemSyncAccessHandle,
  ) {}

  /** A writer for `url`, or null where the store is unavailable or the file is open elsewhere. */
  static async open(url: string): Promise<FileWriter | null> {
    const dir = await folder(true);
    if (!dir) return null;
    try {
      const names = await namesOf(url);
      // Whatever was there is no longer a complete copy.
      await dir.removeEntry(names.meta).catch(() => undefined);
      const file = await dir.getFileHandle(names.data, { create: true });
      if (typeof file.createSyncAccessHandle !== 'function') return null;
      const handle = await file.createSyncAccessHandle();
      handle.truncate(0);
      return new FileWriter(url, dir, names, handle);
    } catch (e) {
      // Another tab writing the same file holds its lock: this load goes without caching.
      console.warn(`tandem: cannot cache ${url} (${String(e)})`);
      return null;
    }
  }

  /** Appends `chunk`; throws the browser's error (a `QuotaExceededError` when storage is full). */
  write(chunk: Uint8Array): void {
    let done = 0;
    while (done < chunk.byteLength) {
      const n = this.handle.write(chunk.subarray(done), { at: this.written + done });
      if (n <= 0) throw new Error(`wrote nothing at byte ${this.written + done}`);
      done += n;
    }
    this.written += done;
  }

  /** Flushes and closes the file and records it as whole, with SHA-256 `sha256`. */
  async commit(sha256: string): Promise<void> {
    this.handle.flush();
    this.handle.close();
    const entry: Entry = { url: this.url, sha256: sha256.toLowerCase(), bytes: this.written };
    const record = await (await this.dir.getFileHandle(this.names.meta, { create: true })).createSyncAccessHandle();
    try {
      record.truncate(0);
      record.write(new TextEncoder().encode(JSON.stringify(entry)), { at: 0 });
      record.flush();
    } finally {
      record.close();
    }
  }

  /** Closes and deletes the partial file. */
  async discard(): Promise<void> {
    try {
      this.handle.close();
    } catch {
      // Already closed.
    }
    await this.dir.removeEntry(this.names.data).catch(() => undefined);
  }
}

/** Whether an error is the browser's storage quota being exceeded. */
export function isQuotaError(e: unknown): boolean {
  const name = (e as { name?: string } | null)?.name ?? '';
  return name === 'QuotaExceededError' || /quota/i.test(String((e as Error)?.message ?? e));
}
