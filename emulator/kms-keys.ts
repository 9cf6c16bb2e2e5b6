/**
 * The emulated KMS's keys: 256-bit master keys, optionally persisted to a
 * directory (so a restarted local ring can still Decrypt its stored
 * CiphertextBlobs), and the CiphertextBlob format:
 *
 *   "EKMS" | version u8 | keyId length u8 | keyId | nonce(12) | AES-256-GCM ciphertext | tag(16)
 *
 * with AAD = the header and the canonical encryption context, so a blob opens
 * only under its own key and its own context (as in KMS).
 */
import { createCipheriv, createDecipheriv, randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KmsFault } from './kms-errors.ts';
import type { KmsKeyPolicy } from './kms-policy.ts';

export const kmsAccountId = '111122223333';
const blobMagic = Buffer.from('EKMS', 'latin1');
const blobVersion = 1;
/** CiphertextBlob of KMS is at most 6144 bytes; ours for a 4096-byte plaintext is far below. */
export const ciphertextBlobBytesMax = 6144;

export interface EmulatedKey {
  keyId: string;
  arn: string;
  alias: string | null;
  description: string;
  createdAt: number; // seconds
  enabled: boolean;
  policy: KmsKeyPolicy;
  material: Buffer;
}

interface StoredKey extends Omit<EmulatedKey, 'material'> {
  material: string; // hex
}

export class KmsKeyRing {
  private readonly keys = new Map<string, EmulatedKey>();

  constructor(private readonly region: string, private readonly dir: string | null) {
    if (dir === null) return;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    let stored: StoredKey[] = [];
    try {
      stored = JSON.parse(readFileSync(this.file(), 'utf8')) as StoredKey[];
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    for (const k of stored) this.keys.set(k.keyId, { ...k, material: Buffer.from(k.material, 'hex') });
  }

  create(init: { alias?: string; policy: KmsKeyPolicy; description?: string; keyId?: string }): EmulatedKey {
    if (init.alias !== undefined && this.findAlias(init.alias) !== undefined) {
      throw new KmsFault('ValidationException', `alias ${init.alias} already exists`);
    }
    if (init.keyId !== undefined && (!/^[0-9a-f-]{36}$/.test(init.keyId) || this.keys.has(init.keyId))) {
      throw new KmsFault('ValidationException', `key id ${init.keyId.slice(0, 64)} is not a free UUID`);
    }
    const keyId = init.keyId ?? randomUUID();
    const key: EmulatedKey = {
      keyId,
      arn: `arn:aws:kms:${this.region}:${kmsAccountId}:key/${keyId}`,
      alias: init.alias ?? null,
      description: init.description ?? '',
      createdAt: Math.floor(Date.now() / 1000),
      enabled: true,
      policy: init.policy,
      material: randomBytes(32),
    };
    this.keys.set(keyId, key);
    this.save();
    return key;
  }

  /** Accepts a key id, a key ARN, an alias name (alias/x) or an alias ARN, as KMS does. */
  resolve(ref: string): EmulatedKey {
    const key = ref.startsWith('alias/') || ref.includes(':alias/')
      ? this.findAlias(ref.slice(ref.indexOf('alias/')))
      : this.keys.get(ref.includes(':key/') ? ref.slice(ref.indexOf(':key/') + 5) : ref);
    if (key === undefined) throw new KmsFault('NotFoundException', `Key '${ref.slice(0, 256)}' does not exist`);
    if (!key.enabled) throw new KmsFault('DisabledException', `${key.arn} is disabled.`);
    return key;
  }

  get(keyId: string): EmulatedKey | undefined {
    return this.keys.get(keyId);
  }

  findAlias(alias: string): EmulatedKey | undefined {
    for (const k of this.keys.values()) if (k.alias === alias) return k;
    return undefined;
  }

  seal(key: EmulatedKey, plaintext: Uint8Array, context: Record<string, string>): Buffer {
    const id = Buffer.from(key.keyId, 'utf8');
    const nonce = randomBytes(12);
    const header = Buffer.concat([blobMagic, Buffer.from([blobVersion, id.length]), id, nonce]);
    const cipher = createCipheriv('aes-256-gcm', key.material, nonce);
    cipher.setAAD(Buffer.concat([header, canonicalContext(context)]));
    return Buffer.concat([header, cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  }

  open(blob: Buffer, context: Record<string, string>): { key: EmulatedKey; plaintext: Buffer } {
    const invalid = (): KmsFault => new KmsFault('InvalidCiphertextException', 'The ciphertext is invalid or was encrypted under another key or encryption context');
    if (blob.length < 6 || blob.length > ciphertextBlobBytesMax || !blob.subarray(0, 4).equals(blobMagic) || blob[4] !== blobVersion) {
      throw invalid();
    }
    const idLen = blob[5]!;
    const headerLen = 6 + idLen + 12;
    if (blob.length < headerLen + 16) throw invalid();
    const key = this.keys.get(blob.subarray(6, 6 + idLen).toString('utf8'));
    if (key === undefined) throw invalid();
    if (!key.enabled) throw new KmsFault('DisabledException', `${key.arn} is disabled.`);
    try {
      const decipher = createDecipheriv('aes-256-gcm', key.material, blob.subarray(6 + idLen, headerLen));
      decipher.setAAD(Buffer.concat([blob.subarray(0, headerLen), canonicalContext(context)]));
      decipher.setAuthTag(blob.subarray(blob.length - 16));
      const plaintext = Buffer.concat([decipher.update(blob.subarray(headerLen, blob.length - 16)), decipher.final()]);
      return { key, plaintext };
    } catch {
      throw invalid();
    }
  }

  private file(): string {
    return join(this.dir as string, 'kms-keys.json');
  }

  private save(): void {
    if (this.dir === null) return;
    const stored: StoredKey[] = [...this.keys.values()].map((k) => ({ ...k, material: k.material.toString('hex') }));
    const tmp = `${this.file()}.tmp`;
    writeFileSync(tmp, JSON.stringify(stored, null, 1), { mode: 0o600 });
    renameSync(tmp, this.file());
  }
}

/** The encryption context as sorted [key, value] pairs: order-independent, as KMS treats it. */
function canonicalContext(context: Record<string, string>): Buffer {
  const entries = Object.entries(context).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return Buffer.from(JSON.stringify(entries), 'utf8');
}
