/**
 * Per-direction AES-256-GCM with implicit sequence numbers. The 12-byte IV is
 * a 4-byte per-direction salt followed by the 64-bit frame counter, so a frame
 * that is replayed, reordered, dropped (the next one then fails) or altered
 * fails authentication. Keys ratchet forward every `rekeyFrames` frames
 * through HKDF, so old traffic keys are not kept.
 */
import { createCipheriv, createDecipheriv, hkdfSync } from 'node:crypto';
import { gcmTagBytes, rekeyFrames } from './constants.ts';
import { EkvError } from './errors.ts';

export interface DirectionKeys {
  key: Buffer; // 32 bytes
  salt: Buffer; // 4 bytes
}

export function deriveTrafficKeys(shared: Buffer, transcriptHash: Buffer): { c2s: DirectionKeys; s2c: DirectionKeys } {
  const okm = Buffer.from(hkdfSync('sha256', shared, transcriptHash, 'ekv/1 traffic', 72));
  return {
    c2s: { key: okm.subarray(0, 32), salt: okm.subarray(32, 36) },
    s2c: { key: okm.subarray(36, 68), salt: okm.subarray(68, 72) },
  };
}

function ratchet(k: DirectionKeys): DirectionKeys {
  const okm = Buffer.from(hkdfSync('sha256', k.key, k.salt, 'ekv/1 rekey', 36));
  k.key.fill(0);
  return { key: okm.subarray(0, 32), salt: okm.subarray(32, 36) };
}

/** The next frame number, and the keys for it: ratcheted forward every rekeyFrames frames. */
function advance(seq: number, keys: DirectionKeys): [number, DirectionKeys] {
  const next = seq + 1;
  return [next, next % rekeyFrames === 0 ? ratchet(keys) : keys];
}

function iv(salt: Buffer, seq: number): Buffer {
  const out = Buffer.allocUnsafe(12);
  salt.copy(out, 0);
  out.writeUInt32BE(Math.floor(seq / 0x1_0000_0000), 4);
  out.writeUInt32BE(seq >>> 0, 8);
  return out;
}

export class FrameSealer {
  private keys: DirectionKeys;
  private seq = 0;

  constructor(keys: DirectionKeys) {
    this.keys = keys;
  }

  seal(plaintext: Uint8Array): Buffer {
    const cipher = createCipheriv('aes-256-gcm', this.keys.key, iv(this.keys.salt, this.seq));
    const head = cipher.update(plaintext);
    const tail = cipher.final();
    const out = Buffer.concat([head, tail, cipher.getAuthTag()]);
    [this.seq, this.keys] = advance(this.seq, this.keys);
    return out;
  }
}

export class FrameOpener {
  private keys: DirectionKeys;
  private seq = 0;

  constructor(keys: DirectionKeys) {
    this.keys = keys;
  }

  /** Throws TAMPERED if the frame is not the next authentic frame of this direction. */
  open(frame: Buffer): Buffer {
    if (frame.length < gcmTagBytes) throw new EkvError('TAMPERED', 'frame shorter than its tag');
    const body = frame.subarray(0, frame.length - gcmTagBytes);
    const tag = frame.subarray(frame.length - gcmTagBytes);
    const decipher = createDecipheriv('aes-256-gcm', this.keys.key, iv(this.keys.salt, this.seq));
    decipher.setAuthTag(tag);
    let out: Buffer;
    try {
      const head = decipher.update(body);
      const tail = decipher.final(); // empty for GCM: then the update's output is the plaintext, no copy
      out = tail.length === 0 ? head : Buffer.concat([head, tail]);
    } catch {
      throw new EkvError('TAMPERED', `frame ${this.seq} failed authentication (altered, replayed, reordered or dropped)`);
    }
    [this.seq, this.keys] = advance(this.seq, this.keys);
    return out;
  }
}
