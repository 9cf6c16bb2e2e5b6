// A bounded cache of certificate chains that passed validation. The key is the exact DER bytes of the
// chain (root first, leaf last); an entry records what the chain proved (its validity window and the
// leaf's key), never a verdict about time. Every use still checks `now` against the window, so a cached
// chain can never let a document pass that would fail uncached.
import { createHash, type KeyObject } from 'node:crypto';
import assert from 'node:assert/strict';
import { chainCacheEntriesMax } from './constants.ts';

export interface VerifiedChain {
  /** The latest notBefore of the chain's certificates (ms). */
  notBefore: number;
  /** The earliest notAfter of the chain's certificates (ms). */
  notAfter: number;
  /** When the leaf (the document's signing certificate) expires (ms). */
  leafNotAfter: number;
  /** The leaf's P-384 public key. */
  leafKey: KeyObject;
}

interface Entry {
  chain: Uint8Array[];
  verified: VerifiedChain;
}

export class ChainCache {
  readonly entriesMax: number;
  readonly #entries = new Map<string, Entry>();

  constructor(entriesMax: number = chainCacheEntriesMax) {
    assert.ok(Number.isInteger(entriesMax) && entriesMax > 0, 'entriesMax must be a positive integer');
    this.entriesMax = entriesMax;
  }

  get size(): number {
    return this.#entries.size;
  }

  get(chain: readonly Uint8Array[]): VerifiedChain | undefined {
    const key = chainKey(chain);
    const entry = this.#entries.get(key);
    if (entry === undefined || !sameChain(entry.chain, chain)) return undefined;
    // Re-insert so the Map's insertion order is least-recently-used first.
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    return entry.verified;
  }

  set(chain: readonly Uint8Array[], verified: VerifiedChain): void {
    const key = chainKey(chain);
    this.#entries.delete(key);
    // Copies: the caller's buffers may be reused and overwritten after verification.
    this.#entries.set(key, { chain: chain.map((c) => Uint8Array.prototype.slice.call(c)), verified });
    while (this.#entries.size > this.entriesMax) {
      const oldest = this.#entries.keys().next().value as string;
      this.#entries.delete(oldest);
    }
  }

  clear(): void {
    this.#entries.clear();
  }
}

/** SHA-256 over length-prefixed certificates: a compact index; hits are confirmed byte by byte. */
function chainKey(chain: readonly Uint8Array[]): string {
  const hash = createHash('sha256');
  const length = Buffer.alloc(4);
  for (const cert of chain) {
    length.writeUInt32BE(cert.length);
    hash.update(length);
    hash.update(cert);
  }
  return hash.digest('base64');
}

function sameChain(a: readonly Uint8Array[], b: readonly Uint8Array[]): boolean {
  return a.length === b.length && a.every((cert, i) => Buffer.compare(cert, b[i] as Uint8Array) === 0);
}
