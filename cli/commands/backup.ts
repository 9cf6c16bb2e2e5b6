/**
 * `ekv export --out FILE --passphrase-file F [--prefix P]` and `ekv import FILE --passphrase-file F
 * [--if-absent]`: a client-side, attested dump of every key the identity may read, to a file encrypted under a
 * key derived from the operator's passphrase (cli/backup-file.ts: scrypt + AES-256-GCM), and back.
 *
 * Consistency (docs/scans.md, docs/deploy.md §7): per key, not a snapshot. Each key's value in the file is
 * one the ring acknowledged and served under its owner's read lease at some moment during the export; writes
 * that run during the export may or may not be in it, each key independently.
 *
 * Progress goes to stderr every 2 s (`exported N keys`, `imported N/M keys`); the summary to stdout (or --json).
 */
import { existsSync, readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { MputResult } from '../../client/index.ts';
import { BackupWriter, passphraseFromFile, readBackup } from '../backup-file.ts';
import { intFlag } from '../flags.ts';
import { errorCode, run, UsageError } from '../output.ts';
import { common, withClient, type CommonOpts } from './kv.ts';
import { escapeKey } from './scan.ts';

const progressMs = 2000;
/** Puts sent together by import (one mput per node each). */
const importGroupKeys = 256;
const importGroupBytes = 8 * 1024 * 1024;

function passphrase(file: string | undefined): Buffer {
  if (file === undefined) throw new UsageError('--passphrase-file FILE is required (the key the file is encrypted under)');
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    throw new UsageError(`cannot read the passphrase file: ${(err as Error).message}`);
  }
  return passphraseFromFile(bytes);
}

function progress(): (line: () => string) => void {
  let at = Date.now();
  return (line) => {
    if (Date.now() - at < progressMs) return;
    at = Date.now();
    process.stderr.write(line() + '\n');
  };
}

export function registerBackup(program: Command): void {
  common(program.command('export'))
    .description('write every key you may read (with --prefix, those under it) and its value to FILE, encrypted under your passphrase; per key, not a snapshot (docs/scans.md)')
    .requiredOption('--out <file>', 'the file to write (refused if it exists, unless --force)')
    .option('--passphrase-file <file>', 'a file holding the passphrase (at least 12 bytes; one trailing newline ignored)')
    .option('--prefix <p>', 'only keys starting with this', '')
    .option('--force', 'replace FILE if it exists')
    .option('--scrypt-log2n <n>', 'scrypt cost, log2 N (14..20)', '17')
    .action(async (o: CommonOpts & { out: string; passphraseFile?: string; prefix: string; force?: boolean; scryptLog2n: string }) =>
      run(o.json, async () => {
        const pass = passphrase(o.passphraseFile);
        const log2N = intFlag(o.scryptLog2n, '--scrypt-log2n', 14, 20);
        if (existsSync(o.out) && o.force !== true) throw new UsageError(`${o.out} exists (pass --force to replace it)`);
        const started = Date.now();
        const count = await withClient(o, async (kv) => {
          const w = new BackupWriter(o.out, pass, { log2N });
          const tick = progress();
          try {
            for await (const it of kv.scanAll({ prefix: o.prefix, values: true })) {
              w.add(it.key, it.value as Buffer, it.ttlMs);
              tick(() => `exported ${w.entries} keys`);
            }
            w.finish();
            return w.entries;
          } catch (err) {
            w.abort();
            throw err;
          }
        });
        const ms = Date.now() - started;
        if (o.json) process.stdout.write(JSON.stringify({ ok: true, file: o.out, keys: count, ms }) + '\n');
        else process.stdout.write(`exported ${count} keys to ${o.out}\n`);
      }),
    );

  common(program.command('import').argument('<file>'))
    .description('put every key of an export FILE back (checked whole before the first put); --if-absent: only keys without a value')
    .option('--passphrase-file <file>', 'a file holding the passphrase the export was written with')
    .option('--if-absent', 'skip keys that have a value now (compare-and-set with version 0)')
    .action(async (file: string, o: CommonOpts & { passphraseFile?: string; ifAbsent?: boolean }) =>
      run(o.json, async () => {
        const pass = passphrase(o.passphraseFile);
        // Pass 1: the whole file authenticates and is complete before anything is written.
        let checked: Buffer | undefined;
        const total = await readBackup(file, pass, () => undefined, { onHeader: (h) => (checked = h) });
        const started = Date.now();
        let done = 0;
        let skipped = 0;
        const failures: Array<{ key: string; code: string; message: string }> = [];
        await withClient(o, async (kv) => {
          const tick = progress();
          let group: Array<{ key: Buffer; value: Buffer; ifVersion?: number; ttlMs?: number }> = [];
          let bytes = 0;
          const send = async (): Promise<void> => {
            const rs: MputResult[] = await kv.mput(group);
            for (const r of rs) {
              if (r.ok) done++;
              else if (o.ifAbsent && r.error.code === 'CONFLICT') skipped++;
              else failures.push({ key: escapeKey(r.key), code: errorCode(r.error), message: r.error.message });
            }
            group = [];
            bytes = 0;
            tick(() => `imported ${done + skipped + failures.length}/${total} keys`);
          };
          await readBackup(file, pass, async (key, value, ttlMs) => {
            group.push({ key, value, ...(o.ifAbsent ? { ifVersion: 0 } : {}), ...(ttlMs === undefined ? {} : { ttlMs }) });
            bytes += key.length + value.length;
            if (group.length >= importGroupKeys || bytes >= importGroupBytes) await send();
          }, { ...(checked ? { expectHeader: checked } : {}) });
          if (group.length > 0) await send();
        });
        const ms = Date.now() - started;
        if (o.json) process.stdout.write(JSON.stringify({ ok: failures.length === 0, file, keys: total, imported: done, skipped, failed: failures.length, failures: failures.slice(0, 20), ms }) + '\n');
        else {
          process.stdout.write(`imported ${done} of ${total} keys${skipped > 0 ? ` (${skipped} skipped: they have a value)` : ''}${failures.length > 0 ? `, ${failures.length} failed` : ''}\n`);
          for (const f of failures.slice(0, 20)) process.stderr.write(`${f.code}: ${f.key}: ${f.message}\n`);
        }
        if (failures.length > 0) process.exitCode = 1;
      }),
    );
}
