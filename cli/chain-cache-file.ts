/**
 * A chain cache that survives the process, for the CLI: every `ekv get` is a new process, and verifying
 * a node's certificate chain (five certificates parsed, four P-384 signatures) is most of the CPU its
 * attested handshake costs. Entries live in the trust store's directory (cli/trust-store.ts), in its
 * subdirectory `chains/`, one file per chain.
 *
 * What is cached, and why that is safe:
 * - Only the verifier's step 2 apart from time (verifier/cache.ts VerifiedChain: the chain's validity
 *   window, the leaf's expiry and public key), keyed by the SHA-256 of the exact DER bytes of the chain
 *   (root first, length-prefixed). Never an answer, never a document, never a verdict about time.
 * - Every document is still checked in full where it matters for freshness and identity: its root must
 *   be byte-equal to one the caller trusts (checked before the cache is consulted), `now` must lie in
 *   the chain's window, the COSE signature over the document must verify with the leaf key, and the
 *   nonce (fresh per connection), PCRs and age are checked as always. A replayed document fails its
 *   nonce; an expired chain fails its window; another chain misses the cache.
 * - Whoever can write this directory can already write the trust store next to it (which decides which
 *   cluster files are trusted), so the cache gives such a writer nothing new. Files are created 0600 in a
 *   0700 directory and written atomically (rename); one that does not parse, or names another chain, is
 *   ignored. Entries whose chain has expired are never used and are removed when new ones are written;
 *   at most `fileChainCacheEntriesMax` files are kept.
 */
import { createHash, createPublicKey } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ChainCache, type VerifiedChain } from '../verifier/index.ts';
import { trustStoreDir } from './trust-store.ts';

export const fileChainCacheEntriesMax = 64;
const entryBytesMax = 4096;

export function chainCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(trustStoreDir(env), 'chains');
}

function chainHash(chain: readonly Uint8Array[]): string {
  const hash = createHash('sha256');
  const length = Buffer.alloc(4);
  for (const cert of chain) {
    length.writeUInt32BE(cert.length);
    hash.update(length);
    hash.update(cert);
  }
  return hash.digest('hex');
}

interface Entry {
  v: 1;
  chain: string;
  notBefore: number;
  notAfter: number;
  leafNotAfter: number;
  leafSpki: string;
}

export class FileChainCache extends ChainCache {
  readonly dir: string;
  private readonly now: () => number;

  constructor(dir: string = chainCacheDir(), now: () => number = Date.now) {
    super();
    this.dir = dir;
    this.now = now;
  }

  override get(chain: readonly Uint8Array[]): VerifiedChain | undefined {
    const inMemory = super.get(chain);
    if (inMemory !== undefined) return inMemory;
    const key = chainHash(chain);
    let entry: Entry;
    try {
      const path = join(this.dir, key);
      if (statSync(path).size > entryBytesMax) return undefined;
      entry = JSON.parse(readFileSync(path, 'utf8')) as Entry;
    } catch {
      return undefined;
    }
    if (entry?.v !== 1 || entry.chain !== key || typeof entry.leafSpki !== 'string') return undefined;
    if (![entry.notBefore, entry.notAfter, entry.leafNotAfter].every(Number.isFinite)) return undefined;
    if (entry.notAfter < this.now()) return undefined; // expired: the full check (and its EXPIRED) decides
    let verified: VerifiedChain;
    try {
      const leafKey = createPublicKey({ key: Buffer.from(entry.leafSpki, 'base64'), format: 'der', type: 'spki' });
      if (leafKey.asymmetricKeyType !== 'ec' || leafKey.asymmetricKeyDetails?.namedCurve !== 'secp384r1') return undefined;
      verified = { notBefore: entry.notBefore, notAfter: entry.notAfter, leafNotAfter: entry.leafNotAfter, leafKey };
    } catch {
      return undefined;
    }
    super.set(chain, verified);
    return verified;
  }

  override set(chain: readonly Uint8Array[], verified: VerifiedChain): void {
    super.set(chain, verified);
    const key = chainHash(chain);
    const entry: Entry = {
      v: 1, chain: key, notBefore: verified.notBefore, notAfter: verified.notAfter, leafNotAfter: verified.leafNotAfter,
      leafSpki: verified.leafKey.export({ format: 'der', type: 'spki' }).toString('base64'),
    };
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      this.prune();
      const tmp = join(this.dir, `${key}.${process.pid}.tmp`);
      writeFileSync(tmp, JSON.stringify(entry), { mode: 0o600 });
      renameSync(tmp, join(this.dir, key));
    } catch {
      // A cache that cannot be written only costs the next process a full check.
    }
  }

  /** Drops expired entries, then the oldest, to stay under the bound. */
  private prune(): void {
    const files = readdirSync(this.dir).filter((f) => /^[0-9a-f]{64}$/.test(f));
    const now = this.now();
    const live: Array<{ f: string; mtime: number }> = [];
    for (const f of files) {
      const path = join(this.dir, f);
      try {
        const e = JSON.parse(readFileSync(path, 'utf8')) as Entry;
        if (!(e.notAfter >= now)) {
          rmSync(path, { force: true });
          continue;
        }
        live.push({ f, mtime: statSync(path).mtimeMs });
      } catch {
        rmSync(path, { force: true });
      }
    }
    live.sort((a, b) => a.mtime - b.mtime);
    while (live.length >= fileChainCacheEntriesMax) rmSync(join(this.dir, live.shift()!.f), { force: true });
  }
}
