/**
 * Principals: a person or program is its public key, Ed25519 or P-256.
 *
 * Binary form (what documents and the handshake carry): one algorithm tag
 * byte, then the raw public key.
 *   0x01 || Ed25519 public key (32 bytes)                 = 33 bytes
 *   0x02 || P-256 SEC1 compressed point (0x02|0x03 || x)  = 34 bytes
 *
 * Text form (what people copy): `ekv1` followed by lowercase RFC 4648 base32
 * without padding of `binary || checksum`, where the checksum is the first 4
 * bytes of SHA-256(binary). Base32 survives case changes (parsing lowercases
 * first), and `ekv1` plus an alphabet without punctuation lets a double-click
 * select the whole thing. The checksum catches a mistyped character before a
 * right is granted to a key nobody holds. Ed25519: 64 characters, P-256: 65.
 *
 * Parsing checks structure only (tag, length, compressed-point prefix); a
 * P-256 point that is not on the curve is found when a signature is verified,
 * which then fails. A principal that cannot sign is inert, so ACL entries need
 * no curve arithmetic to load.
 */
import { createHash, createPublicKey, ECDH, sign, verify, type KeyObject } from 'node:crypto';

export type PrincipalAlg = 'ed25519' | 'p256';

export const principalTextPrefix = 'ekv1';
export const principalTag = { ed25519: 0x01, p256: 0x02 } as const;
export const principalSignatureBytes = 64;
const keyBytes = { ed25519: 32, p256: 33 } as const;
const checksumBytes = 4;
/** Longest binary form, for bounding fields that carry one. */
export const principalBytesMax = 1 + keyBytes.p256;

export type PrincipalErrorCode = 'BAD_PRINCIPAL';

export class PrincipalError extends Error {
  readonly code: PrincipalErrorCode = 'BAD_PRINCIPAL';
  constructor(message: string) {
    super(message);
    this.name = 'PrincipalError';
  }
}

const constructToken: unique symbol = Symbol('Principal');

export class Principal {
  readonly alg: PrincipalAlg;
  /** The binary form: tag || raw key. */
  readonly bytes: Buffer;
  /** An in-memory map key (hex of the binary form); never shown to people, use `text`. */
  readonly id: string;
  #text: string | undefined;
  #key: KeyObject | null | undefined;

  /** Use principalFromBytes / principalFromText / principalFromPublicKey (the token keeps others out). */
  constructor(token: typeof constructToken, alg: PrincipalAlg, bytes: Buffer) {
    if (token !== constructToken) throw new TypeError('use principalFromBytes');
    this.alg = alg;
    this.bytes = bytes;
    this.id = bytes.toString('hex');
  }

  get text(): string {
    this.#text ??= principalTextPrefix + base32Encode(Buffer.concat([this.bytes, checksum(this.bytes)]));
    return this.#text;
  }

  equals(other: Principal): boolean {
    return this.id === other.id;
  }

  toString(): string {
    return this.text;
  }

  /** The node:crypto key, or null when the bytes are not a valid point. Cached. */
  publicKey(): KeyObject | null {
    if (this.#key === undefined) this.#key = importKey(this.alg, this.bytes.subarray(1));
    return this.#key;
  }
}

function checksum(bin: Uint8Array): Buffer {
  return createHash('sha256').update(bin).digest().subarray(0, checksumBytes);
}

export function principalFromBytes(bytes: Uint8Array): Principal {
  if (!(bytes instanceof Uint8Array)) throw new PrincipalError('principal: expected bytes');
  const alg = bytes[0] === principalTag.ed25519 ? 'ed25519' : bytes[0] === principalTag.p256 ? 'p256' : null;
  if (alg === null) throw new PrincipalError('principal: unknown algorithm tag');
  if (bytes.length !== 1 + keyBytes[alg]) throw new PrincipalError(`principal: ${bytes.length} bytes for ${alg}`);
  if (alg === 'p256' && bytes[1] !== 0x02 && bytes[1] !== 0x03) {
    throw new PrincipalError('principal: P-256 key is not a compressed point');
  }
  return new Principal(constructToken, alg, Buffer.from(bytes));
}

export function principalFromText(text: string): Principal {
  if (typeof text !== 'string' || text.length > 80) throw new PrincipalError('principal: not a principal text');
  const lower = text.toLowerCase();
  if (!lower.startsWith(principalTextPrefix)) throw new PrincipalError(`principal: must start with ${principalTextPrefix}`);
  const raw = base32Decode(lower.slice(principalTextPrefix.length));
  if (raw === null || raw.length <= checksumBytes) throw new PrincipalError('principal: bad base32');
  const bin = raw.subarray(0, raw.length - checksumBytes);
  if (!checksum(bin).equals(raw.subarray(raw.length - checksumBytes))) {
    throw new PrincipalError('principal: checksum mismatch (a mistyped character?)');
  }
  return principalFromBytes(bin);
}

export function formatPrincipal(p: Principal): string {
  return p.text;
}

/** The principal of a node:crypto public (or private) key. */
export function principalFromPublicKey(key: KeyObject): Principal {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const jwk = pub.export({ format: 'jwk' });
  if (pub.asymmetricKeyType === 'ed25519' && jwk.x !== undefined) {
    return principalFromBytes(Buffer.concat([Buffer.of(principalTag.ed25519), Buffer.from(jwk.x, 'base64url')]));
  }
  if (pub.asymmetricKeyType === 'ec' && jwk.crv === 'P-256' && jwk.x !== undefined && jwk.y !== undefined) {
    const y = Buffer.from(jwk.y, 'base64url');
    const prefix = 0x02 | ((y[y.length - 1] as number) & 1);
    return principalFromBytes(Buffer.concat([Buffer.of(principalTag.p256, prefix), Buffer.from(jwk.x, 'base64url')]));
  }
  throw new PrincipalError('principal: only Ed25519 and P-256 keys are principals');
}

function importKey(alg: PrincipalAlg, raw: Buffer): KeyObject | null {
  try {
    if (alg === 'ed25519') return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') }, format: 'jwk' });
    // Decompressing checks that the point is on the curve.
    const full = ECDH.convertKey(raw, 'prime256v1', undefined, undefined, 'uncompressed') as Buffer;
    const x = full.subarray(1, 33).toString('base64url');
    const y = full.subarray(33, 65).toString('base64url');
    return createPublicKey({ key: { kty: 'EC', crv: 'P-256', x, y }, format: 'jwk' });
  } catch {
    return null;
  }
}

/**
 * Ed25519 (plain) or ECDSA P-256 with SHA-256, signature as r||s (ieee-p1363).
 * Accepts the binary form too, so it plugs into the handshake's VerifyPrincipal.
 * Never throws: anything malformed is simply not a valid signature.
 */
export function verifyPrincipalSignature(principal: Principal | Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (!(signature instanceof Uint8Array) || signature.length !== principalSignatureBytes) return false;
  let p: Principal;
  try {
    p = principal instanceof Principal ? principal : principalFromBytes(principal);
  } catch {
    return false;
  }
  const key = p.publicKey();
  if (key === null) return false;
  try {
    if (p.alg === 'ed25519') return verify(null, message, key, signature);
    return verify('sha256', message, { key, dsaEncoding: 'ieee-p1363' }, signature);
  } catch {
    return false;
  }
}

/** Something that signs as a principal: a loaded identity, a group key. */
export interface Signer {
  readonly principal: Principal;
  sign(message: Uint8Array): Buffer;
}

/** A Signer over a node:crypto private key (Ed25519 or P-256). */
export function signerFromPrivateKey(privateKey: KeyObject): Signer {
  const principal = principalFromPublicKey(privateKey);
  if (principal.alg === 'ed25519') return { principal, sign: (m) => sign(null, m, privateKey) };
  return { principal, sign: (m) => sign('sha256', m, { key: privateKey, dsaEncoding: 'ieee-p1363' }) };
}

// ---------------------------------------------------------------- base32 (RFC 4648, lowercase, no padding)

const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
const alphabetIndex = new Map([...alphabet].map((c, i) => [c, i]));

function base32Encode(bytes: Uint8Array): string {
  let out = '';
  let acc = 0;
  let bits = 0;
  for (const b of bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += alphabet[(acc >>> bits) & 31];
    }
    acc &= (1 << bits) - 1;
  }
  if (bits > 0) out += alphabet[(acc << (5 - bits)) & 31];
  return out;
}

/** Strict: only alphabet characters, and the unused low bits of the last character must be zero. */
function base32Decode(text: string): Buffer | null {
  const out: number[] = [];
  let acc = 0;
  let bits = 0;
  for (const c of text) {
    const v = alphabetIndex.get(c);
    if (v === undefined) return null;
    acc = (acc << 5) | v;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((acc >>> bits) & 0xff);
    }
    acc &= (1 << bits) - 1;
  }
  if (bits >= 5 || acc !== 0) return null;
  return Buffer.from(out);
}
