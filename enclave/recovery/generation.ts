/**
 * A reopened ring's generation as the sealed log records it (docs/recovery.md):
 *   ['gen', generation, ringId, [previous ring ids, newest first], [signers' binary principals], policyDigest]
 * Generation 0 (a ring never reopened) has no record: its id is the ring secret's (protocol/ring.ts).
 */
import { previousRingIdsMax, ringIdBytes } from '../../protocol/ring.ts';
import { principalBytesMax } from '../../protocol/principal.ts';
import { recoveryMembersMax } from '../../protocol/recovery.ts';

export interface Generation {
  generation: number;
  ringId: Buffer;
  /** The ids this ring had before, newest first (at most previousRingIdsMax). */
  previous: Buffer[];
  /** The recovery members who signed the open that made this generation. */
  signers: Buffer[];
  policyDigest: Buffer;
}

export function encodeGeneration(g: Generation): unknown[] {
  return [g.generation, g.ringId, g.previous.slice(0, previousRingIdsMax), g.signers, g.policyDigest];
}

const isId = (x: unknown): x is Uint8Array => x instanceof Uint8Array && x.length === ringIdBytes;

/** Our own sealed record (authenticated), still checked for shape: null when it is not one. */
export function decodeGeneration(r: unknown[]): Generation | null {
  const [g, id, prev, signers, pd] = r;
  if (typeof g !== 'number' || !Number.isSafeInteger(g) || g < 1 || !isId(id) || !isId(pd)) return null;
  if (!Array.isArray(prev) || prev.length > previousRingIdsMax || !prev.every(isId)) return null;
  if (!Array.isArray(signers) || signers.length > recoveryMembersMax || !signers.every((s) => s instanceof Uint8Array && s.length <= principalBytesMax)) return null;
  return {
    generation: g, ringId: Buffer.from(id), previous: prev.map((p) => Buffer.from(p)), signers: signers.map((s) => Buffer.from(s as Uint8Array)), policyDigest: Buffer.from(pd),
  };
}
