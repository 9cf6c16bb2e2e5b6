// An in-memory blob store with faults, for unit tests of the sealed log: puts can fail (the host
// proxy is down), land and still fail (the answer was lost), or land later (a delayed write).
import type { BlobClient } from '../../enclave/seal/blob-client.ts';
import { SealError } from '../../enclave/seal/errors.ts';

export type PutFault = 'ok' | 'fail' | 'land-then-fail' | 'hold';

export class FakeBlobs implements BlobClient {
  readonly blobs = new Map<string, Uint8Array>();
  /** What the next puts do. */
  fault: PutFault = 'ok';
  /** Writes taken with 'hold': failed to the caller, to be landed later by landHeld(). */
  readonly held: Array<[string, Uint8Array]> = [];
  puts = 0;

  async put(name: string, bytes: Uint8Array): Promise<void> {
    this.puts++;
    const copy = Uint8Array.from(bytes);
    if (this.fault === 'fail') throw new SealError('SEAL_IO', 'blob store connection closed');
    if (this.fault === 'land-then-fail') {
      this.blobs.set(name, copy);
      throw new SealError('SEAL_IO', 'blob store connection closed');
    }
    if (this.fault === 'hold') {
      this.held.push([name, copy]);
      throw new SealError('SEAL_IO', 'blob store did not answer put in time');
    }
    this.blobs.set(name, copy);
  }

  /** The writes that were held land now (the host wrote them late). */
  landHeld(): void {
    for (const [name, bytes] of this.held.splice(0)) this.blobs.set(name, bytes);
  }

  async get(name: string): Promise<Uint8Array | null> {
    return this.blobs.get(name) ?? null;
  }

  async list(prefix: string): Promise<string[]> {
    return [...this.blobs.keys()].filter((n) => n.startsWith(prefix)).sort();
  }

  async delete(name: string): Promise<void> {
    if (this.fault === 'fail') throw new SealError('SEAL_IO', 'blob store connection closed');
    this.blobs.delete(name);
  }

  close(): void {}
}
