/**
 * The file `ekv export` writes and `ekv import` reads (docs/scans.md "Export and import", docs/deploy.md §7):
 * a keyspace dump encrypted under a key derived from the operator's passphrase, nothing else.
 *
 *   header  = "EKVEXP01" | version u8 (1) | log2(N) u8 | r u8 | p u8 | salt (16) | check (16)      (44 bytes)
 *   key     = scrypt(passphrase, salt, 32, N, r, p); check = HMAC-SHA256(key, "ekv-export-check")[0..16]
 *   chunks  = (u32 BE length | AES-256-GCM ciphertext with its 16-byte tag)*, chunk i sealed with nonce
 *             0^4 | u64 BE i and associated data header | final u8 (1 on the last chunk only)
 *   records = (0x01 | u16 key length | key | u32 value length | value
 *              | 0x03 | u16 key length | key | u32 value length | value | u64 ttl left in ms)*,
 *             then in the last chunk 0x02 | u64 count
 *
 * A fresh random salt per file gives a fresh key, so counter nonces never repeat under one key. The header is
 * authenticated by every chunk (associated data); a chunk cannot be dropped, reordered, duplicated or moved
 * from another file (its index is its nonce, and a file's key is its own); a truncated file has no final chunk
 * and is refused (TRUNCATED); the count in the last chunk must equal the records read. A wrong passphrase is
 * told apart from tampering by the check value (BAD_PASSPHRASE vs TAMPERED). Every length is checked before
 * anything is allocated; scrypt's cost read from a header is bounded (log2 N in 14..20, r 1..16, p 1..4, and its
 * memory 128·N·r and work N·r·p at most the writer's largest: 1 GiB and 2^23, scryptCostAccepted).
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes, scryptSync, timingSafeEqual } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';
import { keyBytesMax, ttlMsMax, valueBytesMax } from '../protocol/constants.ts';

export type BackupErrorCode = 'BAD_FILE' | 'BAD_PASSPHRASE' | 'TAMPERED' | 'TRUNCATED';

export class BackupError extends Error {
  readonly code: BackupErrorCode;
  constructor(code: BackupErrorCode, message: string) {
    super(message);
    this.name = 'BackupError';
    this.code = code;
  }
}

export const backupMagic = Buffer.from('EKVEXP01', 'latin1');
const headerBytes = 8 + 4 + 16 + 16;
/** A chunk's plaintext is flushed once it passes this (a record is never split). */
const chunkTargetBytes = 1024 * 1024;
/** The largest chunk ciphertext accepted: a full chunk plus one largest record, and the tag. */
export const chunkBytesMax = chunkTargetBytes + 1 + 2 + keyBytesMax + 4 + valueBytesMax + 16;
export const scryptLog2NDefault = 17;
const scryptBounds = { log2N: [14, 20], r: [1, 16], p: [1, 4] } as const;
/**
 * The cost a file may ask of its reader, at most what the writer can make (log2 N 20, r 8, p 1): scrypt's memory
 * 128·N·r bytes (1 GiB) and its work N·r·p. Each bound above alone let a file ask for 2 GiB (N 2^20, r 16) and
 * eight times the writer's work (p 4): a malicious file made import allocate and spin before anything was checked.
 */
export const scryptMemoryBytesMax = 128 * 2 ** 20 * 8;
export const scryptWorkMax = 2 ** 20 * 8;

/** Whether a reader runs scrypt with these parameters (each within its bounds, and memory and work within the writer's). */
export function scryptCostAccepted(log2N: number, r: number, p: number): boolean {
  const inb = (x: number, [lo, hi]: readonly [number, number]): boolean => Number.isInteger(x) && x >= lo && x <= hi;
  if (!inb(log2N, scryptBounds.log2N) || !inb(r, scryptBounds.r) || !inb(p, scryptBounds.p)) return false;
  const N = 2 ** log2N;
  return 128 * N * r <= scryptMemoryBytesMax && N * r * p <= scryptWorkMax;
}
/** Passphrases shorter than this are refused (a key file of random bytes is the intended use). */
export const passphraseBytesMin = 12;
export const passphraseBytesMax = 4096;

function deriveKey(passphrase: Buffer, salt: Buffer, log2N: number, r: number, p: number): Buffer {
  const N = 2 ** log2N;
  return scryptSync(passphrase, salt, 32, { N, r, p, maxmem: 128 * N * r * 2 + 1024 * 1024 });
}

function checkValue(key: Buffer): Buffer {
  return createHmac('sha256', key).update('ekv-export-check').digest().subarray(0, 16);
}

function nonceOf(i: number): Buffer {
  const n = Buffer.alloc(12);
  n.writeBigUInt64BE(BigInt(i), 4);
  return n;
}

function aad(header: Buffer, final: boolean): Buffer {
  return Buffer.concat([header, Buffer.from([final ? 1 : 0])]);
}

/** The passphrase from a file's bytes: one trailing newline (LF or CRLF) dropped; bounded. */
export function passphraseFromFile(bytes: Buffer): Buffer {
  let end = bytes.length;
  if (end > 0 && bytes[end - 1] === 0x0a) end--;
  if (end > 0 && bytes[end - 1] === 0x0d) end--;
  const p = bytes.subarray(0, end);
  if (p.length < passphraseBytesMin) throw new BackupError('BAD_PASSPHRASE', `the passphrase file holds ${p.length} bytes; at least ${passphraseBytesMin} are needed`);
  if (p.length > passphraseBytesMax) throw new BackupError('BAD_PASSPHRASE', `the passphrase file holds more than ${passphraseBytesMax} bytes`);
  return p;
}

/** Writes an export: to `path` + a temporary suffix, renamed into place by finish() (mode 0600). */
export class BackupWriter {
  private readonly fd: number;
  private readonly tmp: string;
  private readonly key: Buffer;
  private readonly header: Buffer;
  private parts: Buffer[] = [];
  private size = 0;
  private chunk = 0;
  private count = 0;
  private done = false;

  constructor(private readonly path: string, passphrase: Buffer, opts: { log2N?: number } = {}) {
    const log2N = opts.log2N ?? scryptLog2NDefault;
    if (!Number.isInteger(log2N) || log2N < scryptBounds.log2N[0] || log2N > scryptBounds.log2N[1]) throw new RangeError('scrypt log2 N out of bounds');
    const salt = randomBytes(16);
    this.key = deriveKey(passphrase, salt, log2N, 8, 1);
    this.header = Buffer.concat([backupMagic, Buffer.from([1, log2N, 8, 1]), salt, checkValue(this.key)]);
    this.tmp = `${path}.tmp-${randomBytes(4).toString('hex')}`;
    this.fd = openSync(this.tmp, 'wx', 0o600);
    writeSync(this.fd, this.header);
  }

  get entries(): number {
    return this.count;
  }

  /** One entry; `ttlMs`: what was left of the value's ttl (the import counts it again from then). */
  add(key: Buffer, value: Buffer, ttlMs?: number): void {
    if (key.length < 1 || key.length > keyBytesMax || value.length > valueBytesMax) throw new RangeError('key or value out of bounds');
    if (ttlMs !== undefined && (!Number.isSafeInteger(ttlMs) || ttlMs < 1 || ttlMs > ttlMsMax)) throw new RangeError('ttl out of bounds');
    const head = Buffer.alloc(1 + 2);
    head[0] = ttlMs === undefined ? 1 : 3;
    head.writeUInt16BE(key.length, 1);
    const vlen = Buffer.alloc(4);
    vlen.writeUInt32BE(value.length, 0);
    this.parts.push(head, key, vlen, value);
    this.size += head.length + key.length + 4 + value.length;
    if (ttlMs !== undefined) {
      const t = Buffer.alloc(8);
      t.writeBigUInt64BE(BigInt(ttlMs), 0);
      this.parts.push(t);
      this.size += 8;
    }
    this.count++;
    if (this.size >= chunkTargetBytes) this.flush(false);
  }

  private flush(final: boolean): void {
    const c = createCipheriv('aes-256-gcm', this.key, nonceOf(this.chunk++));
    c.setAAD(aad(this.header, final));
    const body = Buffer.concat([c.update(Buffer.concat(this.parts)), c.final(), c.getAuthTag()]);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(body.length, 0);
    writeSync(this.fd, len);
    writeSync(this.fd, body);
    this.parts = [];
    this.size = 0;
  }

  /** The end record and the final chunk, then fsync and rename into place. */
  finish(): void {
    const end = Buffer.alloc(9);
    end[0] = 2;
    end.writeBigUInt64BE(BigInt(this.count), 1);
    this.parts.push(end);
    this.flush(true);
    fsyncSync(this.fd);
    closeSync(this.fd);
    renameSync(this.tmp, this.path);
    this.done = true;
  }

  /** Drops the temporary file (an export that failed leaves nothing behind). */
  abort(): void {
    if (this.done) return;
    try {
      closeSync(this.fd);
    } catch {
      // already closed
    }
    rmSync(this.tmp, { force: true });
  }
}

function readExactly(fd: number, n: number, what: string, eofOk = false): Buffer | null {
  const buf = Buffer.alloc(n);
  let got = 0;
  while (got < n) {
    const r = readSync(fd, buf, got, n - got, null);
    if (r === 0) {
      if (got === 0 && eofOk) return null;
      throw new BackupError('TRUNCATED', `the file ends inside ${what}`);
    }
    got += r;
  }
  return buf;
}

/**
 * Reads an export from start to end, calling `onEntry` for each record in order; resolves with the count.
 * Throws BackupError (BAD_FILE, BAD_PASSPHRASE, TAMPERED, TRUNCATED) on anything but an intact file for this
 * passphrase. Entries of a chunk are handed out only after that chunk authenticated; a caller that must not act
 * on a file that later proves truncated reads it twice (import does).
 */
export async function readBackup(
  path: string, passphrase: Buffer, onEntry: (key: Buffer, value: Buffer, ttlMs?: number) => void | Promise<void>,
  opts: { onHeader?: (header: Buffer) => void; expectHeader?: Buffer } = {},
): Promise<number> {
  const fd = openSync(path, 'r');
  try {
    const header = readExactly(fd, headerBytes, 'the header') as Buffer;
    // A second pass (import's) must read the file the first pass checked: its header (a fresh random salt per
    // file) names it; another export put in its place between the passes is refused before anything is put.
    if (opts.expectHeader && !header.equals(opts.expectHeader)) throw new BackupError('TAMPERED', 'the file changed since it was checked');
    opts.onHeader?.(Buffer.from(header));
    if (!header.subarray(0, 8).equals(backupMagic)) throw new BackupError('BAD_FILE', 'not an enclave-kv export (bad magic)');
    const [version, log2N, r, p] = [header[8], header[9], header[10], header[11]] as [number, number, number, number];
    if (version !== 1) throw new BackupError('BAD_FILE', `export format version ${version} is not supported`);
    if (!scryptCostAccepted(log2N, r, p)) throw new BackupError('BAD_FILE', 'scrypt parameters out of bounds');
    const key = deriveKey(passphrase, header.subarray(12, 28), log2N, r, p);
    if (!timingSafeEqual(checkValue(key), header.subarray(28, 44))) throw new BackupError('BAD_PASSPHRASE', 'this passphrase does not open this file');
    let count = 0;
    let ended = false;
    for (let i = 0; ; i++) {
      const lenBuf = readExactly(fd, 4, 'a chunk length', true);
      if (lenBuf === null) break;
      if (ended) throw new BackupError('TAMPERED', 'data after the final chunk');
      const len = lenBuf.readUInt32BE(0);
      if (len < 16 || len > chunkBytesMax) throw new BackupError('TAMPERED', `a chunk of ${len} bytes`);
      const body = readExactly(fd, len, 'a chunk') as Buffer;
      let plain: Buffer | null = null;
      for (const final of [false, true]) {
        try {
          const d = createDecipheriv('aes-256-gcm', key, nonceOf(i));
          d.setAAD(aad(header, final));
          d.setAuthTag(body.subarray(len - 16));
          plain = Buffer.concat([d.update(body.subarray(0, len - 16)), d.final()]);
          ended = final;
          break;
        } catch {
          // not this flag
        }
      }
      if (plain === null) throw new BackupError('TAMPERED', `chunk ${i} fails authentication`);
      let at = 0;
      while (at < plain.length) {
        const t = plain[at];
        if (t === 1 || t === 3) {
          if (at + 3 > plain.length) throw new BackupError('TAMPERED', 'a record header is cut');
          const kl = plain.readUInt16BE(at + 1);
          if (kl < 1 || kl > keyBytesMax || at + 3 + kl + 4 > plain.length) throw new BackupError('TAMPERED', 'a key length out of bounds');
          const k = plain.subarray(at + 3, at + 3 + kl);
          const vl = plain.readUInt32BE(at + 3 + kl);
          const vs = at + 3 + kl + 4;
          if (vl > valueBytesMax || vs + vl > plain.length) throw new BackupError('TAMPERED', 'a value length out of bounds');
          let ttlMs: number | undefined;
          if (t === 3) {
            if (vs + vl + 8 > plain.length) throw new BackupError('TAMPERED', 'a ttl is cut');
            const x = plain.readBigUInt64BE(vs + vl);
            if (x < 1n || x > BigInt(ttlMsMax)) throw new BackupError('TAMPERED', 'a ttl out of bounds');
            ttlMs = Number(x);
          }
          await onEntry(Buffer.from(k), Buffer.from(plain.subarray(vs, vs + vl)), ttlMs);
          count++;
          at = vs + vl + (t === 3 ? 8 : 0);
        } else if (t === 2) {
          if (!ended || at + 9 !== plain.length) throw new BackupError('TAMPERED', 'the end record is not last');
          const n = plain.readBigUInt64BE(at + 1);
          if (n !== BigInt(count)) throw new BackupError('TAMPERED', `the file says ${n} records, ${count} were read`);
          if (readExactly(fd, 1, 'the end', true) !== null) throw new BackupError('TAMPERED', 'data after the final chunk');
          return count;
        } else {
          throw new BackupError('TAMPERED', `unknown record type ${t}`);
        }
      }
      if (ended) throw new BackupError('TAMPERED', 'the final chunk has no end record');
    }
    throw new BackupError('TRUNCATED', 'the file has no final chunk (cut short)');
  } finally {
    closeSync(fd);
  }
}
