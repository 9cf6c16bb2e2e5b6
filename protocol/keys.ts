/**
 * Raw-key helpers for the two curves the channel uses: Ed25519 (a node's
 * long-term identity, attested in its document) and X25519 (per-session
 * ephemeral keys). node:crypto wants SPKI/PKCS#8; the wire carries raw keys.
 */
import { createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';

const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

function rawPublic(key: KeyObject): Buffer {
  const der = key.export({ format: 'der', type: 'spki' });
  return Buffer.from(der.subarray(der.length - 32));
}

export interface Identity {
  /** Raw 32-byte Ed25519 public key: what the attestation document carries as public_key. */
  readonly publicKey: Buffer;
  sign(message: Uint8Array): Buffer;
  /** PKCS#8 DER of the private key, for sealing the identity. */
  exportPrivate(): Buffer;
}

class Ed25519Identity implements Identity {
  readonly publicKey: Buffer;
  private readonly privateKey: KeyObject;

  constructor(privateKey: KeyObject) {
    this.privateKey = privateKey;
    this.publicKey = rawPublic(createPublicKey(privateKey));
  }

  sign(message: Uint8Array): Buffer {
    return sign(null, message, this.privateKey);
  }

  exportPrivate(): Buffer {
    return this.privateKey.export({ format: 'der', type: 'pkcs8' }) as Buffer;
  }
}

export function generateIdentity(): Identity {
  return new Ed25519Identity(generateKeyPairSync('ed25519').privateKey);
}

export function importIdentity(pkcs8: Uint8Array): Identity {
  return new Ed25519Identity(createPrivateKey({ key: Buffer.from(pkcs8), format: 'der', type: 'pkcs8' }));
}

export function verifyEd25519(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  try {
    const key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, publicKey]), format: 'der', type: 'spki' });
    return verify(null, message, key, signature);
  } catch {
    return false;
  }
}

export interface EphemeralKey {
  readonly publicKey: Buffer;
  agree(peerPublic: Uint8Array): Buffer;
}

export function generateEphemeral(): EphemeralKey {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  return {
    publicKey: rawPublic(publicKey),
    agree(peerPublic: Uint8Array): Buffer {
      const peer = createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, peerPublic]), format: 'der', type: 'spki' });
      return diffieHellman({ privateKey, publicKey: peer });
    },
  };
}
