/**
 * The ring's ring-secret blob (a KMS CiphertextBlob, docs/membership.md) as the hosts pass it around. It is
 * not secret: only KMS, under the deployment's key policy and for the measured image, can open it. A host
 * serves its copy at GET /v1/ring-secret; a host whose node joins a ring fetches it from a member's host
 * before its enclave's first boot. A wrong or hostile copy only makes the new node fail to start (KMS
 * refuses it) or join another ring (which this ring's peers and pinned clients refuse).
 */
import { existsSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';

export const ringSecretBlob = 'ring-secret';
/** The record is CBOR { v, ciphertextBlob } with a blob of at most 6 KiB. */
export const ringSecretBytesMax = 8192;

/** The bytes of `file`, or null if it does not exist (or is over the limit). */
export async function readRingSecretFile(file: string): Promise<Buffer | null> {
  try {
    const bytes = await readFile(file);
    return bytes.length > 0 && bytes.length <= ringSecretBytesMax ? bytes : null;
  } catch {
    return null;
  }
}

/**
 * Fetch the ring-secret from `url` into `dest` unless `dest` exists, retrying (the member may not have
 * founded yet) until it arrives or `signal` aborts. Written atomically (temporary file, rename).
 */
export async function fetchRingSecret(url: string, dest: string, o: { logger: Logger; retryMs?: number; signal?: AbortSignal }): Promise<boolean> {
  while (!o.signal?.aborted) {
    if (existsSync(dest)) return true;
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(5000) });
      const len = Number(r.headers.get('content-length') ?? '0');
      if (r.ok && len > 0 && len <= ringSecretBytesMax) {
        const bytes = Buffer.from(await r.arrayBuffer());
        if (bytes.length > 0 && bytes.length <= ringSecretBytesMax) {
          await writeFile(`${dest}.tmp`, bytes, { mode: 0o600 });
          await rename(`${dest}.tmp`, dest);
          o.logger.info({ url, bytes: bytes.length }, 'ring-secret fetched');
          return true;
        }
      }
      o.logger.warn({ url, status: r.status }, 'no ring-secret yet; retrying');
    } catch (err) {
      o.logger.warn({ url, err: (err as Error).message }, 'ring-secret fetch failed; retrying');
    }
    await sleep(o.retryMs ?? 5000, undefined, o.signal ? { signal: o.signal } : undefined).catch(() => undefined);
  }
  return false;
}
