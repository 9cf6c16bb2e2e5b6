// The emulated Nitro Security Module: signs attestation documents that are
// byte-for-byte shaped like real ones (untagged COSE_Sign1, ES384, the same
// payload keys in the same order, CBOR null for absent fields) with the
// emulator CA's chain, so the production verifier runs unchanged against it.
import assert from 'node:assert/strict';
import { sign } from 'node:crypto';
import { Encoder } from 'cbor-x';
import type { EmulatorCa, SigningLeaf } from './ca.ts';
import { leafRemainingMinMs, nsmFieldBytesMax, pcrBytes, pcrCount } from './tee-constants.ts';

export { serveNsm } from './nsm-server.ts';

/** The NSM's own error names (aws-nitro-enclaves-nsm-api `ErrorCode`), as sent on the wire. */
export type NsmErrorName =
  | 'InvalidArgument' | 'InvalidIndex' | 'InvalidResponse' | 'ReadOnlyIndex'
  | 'InvalidOperation' | 'BufferTooSmall' | 'InputTooLarge' | 'InternalError';

/** A request the emulated NSM refuses, carrying the NSM's error name. */
export class EmulatedNsmError extends Error {
  readonly code: NsmErrorName;
  constructor(code: NsmErrorName, message: string) {
    super(message);
    this.name = 'EmulatedNsmError';
    this.code = code;
  }
}

export interface AttestRequest {
  userData?: Uint8Array | null;
  nonce?: Uint8Array | null;
  publicKey?: Uint8Array | null;
}

export interface EmulatedNsmInit {
  ca: EmulatorCa;
  pcrs: Map<number, Uint8Array>;  // 16 registers of 48 bytes, as real Nitro reports
  moduleId: string;
  now?: () => number;             // ms since epoch
}

// ES384 ({1: -35}) as the NSM encodes it: the protected header bytes are signed
// as they are, so they must match real documents exactly.
const protectedHeader = Uint8Array.of(0xa1, 0x01, 0x38, 0x22);
const encoder = new Encoder({ useRecords: false, mapsAsObjects: false, tagUint8Array: false });

export class EmulatedNsm {
  readonly moduleId: string;
  readonly #ca: EmulatorCa;
  readonly #pcrs: Map<number, Uint8Array>;
  readonly #now: () => number;
  #leaf: SigningLeaf | null = null;
  #leafPending: Promise<SigningLeaf> | null = null;

  constructor(init: EmulatedNsmInit) {
    checkPcrs(init.pcrs);
    assert.ok(init.moduleId.length > 0 && init.moduleId.length <= 64, 'moduleId');
    this.moduleId = init.moduleId;
    this.#ca = init.ca;
    this.#pcrs = new Map([...init.pcrs].sort(([a], [b]) => a - b).map(([i, v]) => [i, Uint8Array.from(v)]));
    this.#now = init.now ?? Date.now;
  }

  /** The registers this NSM reports (copies). */
  get pcrs(): Map<number, Uint8Array> {
    return new Map([...this.#pcrs].map(([i, v]) => [i, Uint8Array.from(v)]));
  }

  /** A signed attestation document (COSE_Sign1 bytes), or an EmulatedNsmError. */
  async attest(req: AttestRequest): Promise<Uint8Array> {
    const userData = checkField(req.userData, 'user_data');
    const nonce = checkField(req.nonce, 'nonce');
    const publicKey = checkField(req.publicKey, 'public_key');
    const now = Math.floor(this.#now());
    const leaf = await this.#currentLeaf(now);
    const payload = encodeCopy(new Map<string, unknown>([
      ['module_id', this.moduleId],
      ['digest', 'SHA384'],
      ['timestamp', BigInt(now)],      // bigint: always the 8-byte uint real documents carry
      ['pcrs', this.#pcrs],
      ['certificate', leaf.certificate],
      ['cabundle', leaf.cabundle],
      ['public_key', publicKey],
      ['user_data', userData],
      ['nonce', nonce],
    ]));
    const toBeSigned = encodeCopy(['Signature1', protectedHeader, new Uint8Array(0), payload]);
    const signature = sign('sha384', toBeSigned, { key: leaf.privateKey, dsaEncoding: 'ieee-p1363' });
    assert.equal(signature.length, 96);
    return encodeCopy([protectedHeader, new Map(), payload, signature]);
  }

  // A leaf signs many documents, as on AWS, and is replaced while it still has
  // leafRemainingMinMs to live; concurrent callers share one issue.
  async #currentLeaf(now: number): Promise<SigningLeaf> {
    const leaf = this.#leaf;
    if (leaf && leaf.notAfter - now >= leafRemainingMinMs && leaf.notBefore <= now) return leaf;
    if (!this.#leafPending) {
      this.#leafPending = this.#ca.issueLeaf(this.moduleId).then(
        (fresh) => { this.#leaf = fresh; this.#leafPending = null; return fresh; },
        (err: unknown) => { this.#leafPending = null; throw err; },
      );
    }
    return this.#leafPending;
  }
}

function checkField(value: Uint8Array | null | undefined, name: string): Uint8Array | null {
  if (value === undefined || value === null) return null;
  if (!(value instanceof Uint8Array)) throw new EmulatedNsmError('InvalidArgument', `${name} is not bytes`);
  if (value.length > nsmFieldBytesMax) {
    throw new EmulatedNsmError('InputTooLarge', `${name} is ${value.length} bytes, over ${nsmFieldBytesMax}`);
  }
  return Uint8Array.from(value);
}

function checkPcrs(pcrs: Map<number, Uint8Array>): void {
  assert.equal(pcrs.size, pcrCount, `expected ${pcrCount} PCRs`);
  for (let i = 0; i < pcrCount; i++) assert.equal(pcrs.get(i)?.length, pcrBytes, `PCR${i} must be ${pcrBytes} bytes`);
}

// cbor-x may hand back a view of its reusable buffer; a copy is ours to keep.
function encodeCopy(value: unknown): Uint8Array {
  return Uint8Array.from(encoder.encode(value));
}
