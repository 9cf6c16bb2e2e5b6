// The export file (cli/backup-file.ts): round trip, and every way a file can be wrong is refused with its code
// before any entry of a bad chunk is handed out.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { BackupWriter, passphraseFromFile, readBackup } from '../cli/backup-file.ts';

const dir = mkdtempSync(join(tmpdir(), 'ekv-backup-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const pass = Buffer.from('correct horse battery staple');
const fast = { log2N: 14 };

function write(name: string, entries: Array<[Buffer, Buffer]>): string {
  const path = join(dir, name);
  const w = new BackupWriter(path, pass, fast);
  for (const [k, v] of entries) w.add(k, v);
  w.finish();
  return path;
}

async function read(path: string, p = pass): Promise<Array<[string, string]>> {
  const out: Array<[string, string]> = [];
  await readBackup(path, p, (k, v) => void out.push([k.toString('hex'), v.toString('hex')]));
  return out;
}

it('keeps what was left of a ttl per entry', async () => {
  const path = join(dir, 'ttl.ekvx');
  const w = new BackupWriter(path, pass, fast);
  w.add(Buffer.from('a'), Buffer.from('1'), 30_000);
  w.add(Buffer.from('b'), Buffer.from('2'));
  w.finish();
  const out: Array<[string, string, number | undefined]> = [];
  await readBackup(path, pass, (k, v, t) => void out.push([k.toString(), v.toString(), t]));
  expect(out).toEqual([['a', '1', 30_000], ['b', '2', undefined]]);
});

// Enough data for several chunks (1 MiB each).
const entries: Array<[Buffer, Buffer]> = Array.from({ length: 40 }, (_, i) => [Buffer.from(`key/${i}`), randomBytes(i % 7 === 0 ? 300_000 : 100 + i)]);
const want = entries.map(([k, v]) => [k.toString('hex'), v.toString('hex')]);

describe('the export file', () => {
  it('round-trips every entry in order (an empty export too), and is not readable without the passphrase', async () => {
    const path = write('a.ekvx', entries);
    expect(await read(path)).toEqual(want);
    expect(await read(write('empty.ekvx', []))).toEqual([]);
    await expect(read(path, Buffer.from('another passphrase!'))).rejects.toMatchObject({ code: 'BAD_PASSPHRASE' });
    // No plaintext in the file.
    const bytes = readFileSync(path);
    expect(bytes.includes(Buffer.from('key/1'))).toBe(false);
  });

  it('refuses a truncated, tampered, reordered or extended file', async () => {
    const path = write('b.ekvx', entries);
    const bytes = readFileSync(path);
    const variant = async (name: string, b: Buffer): Promise<unknown> => {
      const p = join(dir, name);
      writeFileSync(p, b);
      return read(p).then(() => null, (e: unknown) => e);
    };
    // Cut at the end of the first chunk, and in the middle of one.
    const first = 44 + 4 + bytes.readUInt32BE(44);
    expect(await variant('cut1', bytes.subarray(0, first))).toMatchObject({ code: 'TRUNCATED' });
    expect(await variant('cut2', bytes.subarray(0, bytes.length - 10))).toMatchObject({ code: 'TRUNCATED' });
    // A flipped bit anywhere after the header; in the header's salt (a wrong key) or magic.
    for (const at of [first - 3, first + 100, bytes.length - 1]) {
      const b = Buffer.from(bytes);
      b[at] = (b[at] as number) ^ 1;
      expect(await variant(`flip${at}`, b)).toMatchObject({ code: expect.stringMatching(/TAMPERED|TRUNCATED/) });
    }
    const salt = Buffer.from(bytes);
    salt[20] = (salt[20] as number) ^ 1;
    expect(await variant('salt', salt)).toMatchObject({ code: 'BAD_PASSPHRASE' });
    expect(await variant('magic', Buffer.concat([Buffer.from('NOTEKV!!'), bytes.subarray(8)]))).toMatchObject({ code: 'BAD_FILE' });
    // Two chunks swapped; the last chunk twice; bytes after the end.
    const second = first + 4 + bytes.readUInt32BE(first);
    const swapped = Buffer.concat([bytes.subarray(0, 44), bytes.subarray(first, second), bytes.subarray(44, first), bytes.subarray(second)]);
    expect(await variant('swap', swapped)).toMatchObject({ code: 'TAMPERED' });
    expect(await variant('tail', Buffer.concat([bytes, Buffer.from([0, 0, 0, 1])]))).toMatchObject({ code: 'TAMPERED' });
    // A huge declared chunk length is refused before allocation.
    const huge = Buffer.from(bytes.subarray(0, 48));
    huge.writeUInt32BE(0xffffffff, 44);
    expect(await variant('huge', huge)).toMatchObject({ code: 'TAMPERED' });
  });

  it('takes a passphrase file with one trailing newline, and refuses a short one', () => {
    expect(passphraseFromFile(Buffer.from('0123456789abcdef\n')).toString()).toBe('0123456789abcdef');
    expect(passphraseFromFile(Buffer.from('0123456789abcdef\r\n')).toString()).toBe('0123456789abcdef');
    expect(() => passphraseFromFile(Buffer.from('short\n'))).toThrow(/at least 12/);
  });
});
