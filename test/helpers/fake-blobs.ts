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
  readonly held: Array<() => void> = [];
  puts = 0;
  appends = 0;

  async put(name: string, bytes: Uint8Array): Promise<void> {
    this.puts++;
    const copy = Uint8Array.from(bytes);
    if (this.fault === 'fail') throw new SealError('SEAL_IO', 'blob store connection closed');
    if (this.fault === 'land-then-fail') {
      this.blobs.set(name, copy);
      throw new SealError('SEAL_IO', 'blob store connection closed');
    }
    if (this.fault === 'hold') {
      this.held.push(() => this.blobs.set(name, copy));
      throw new SealError('SEAL_IO', 'blob store did not answer put in time');
    }
    this.blobs.set(name, copy);
  }

  /** Appends as the host does (create starts the blob anew; appending to a missing blob fails), with the same faults. */
  async append(name: string, bytes: Uint8Array, create: boolean): Promise<void> {
    this.appends++;
    const land = (): void => {
      const old = create ? new Uint8Array(0) : this.blobs.get(name);
      if (old === undefined) return;
      this.blobs.set(name, Buffer.concat([old, bytes]));
    };
    if (this.fault === 'fail') throw new SealError('SEAL_IO', 'blob store connection closed');
    if (this.fault === 'land-then-fail') {
      land();
      throw new SealError('SEAL_IO', 'blob store connection closed');
    }
    if (this.fault === 'hold') {
      const copy = Uint8Array.from(bytes);
      this.held.push(() => {
        const old = create ? new Uint8Array(0) : this.blobs.get(name);
        if (old !== undefined) this.blobs.set(name, Buffer.concat([old, copy]));
      });
      throw new SealError('SEAL_IO', 'blob store did not answer append in time');
    }
    if (!create && !this.blobs.has(name)) throw new SealError('SEAL_IO', 'blob store refused append: IO');
    land();
  }

  /** The writes that were held land now (the host wrote them late). */
  landHeld(): void {
    for (const land of this.held.splice(0)) land();
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
