/**
 * `ekv batch` (alias `ekv shell`): the pipe mode for scripts. One command per line on stdin, one result
 * per line on stdout, in order, over one client (one attested connection per node, verified once):
 *
 *   get KEY                              -> the value (text mode escapes \ as \\, newline as \n, CR as \r)
 *   put [--if-version N] [--ttl D] KEY VALUE...  -> OK  (VALUE: the rest of the line, spaces kept; D as put --ttl)
 *   del [--if-version N] KEY             -> OK | OK (no such key)
 *   a failure                            -> CODE: message (CODE as in the single commands: NOT_FOUND, ...)
 *
 * With --json every result is one JSON object per line, as the single commands print with --json
 * (values as `value` (UTF-8) and `valueHex`). Blank lines and lines starting with # produce no output.
 * Commands run one after another (a get sees the put before it). Exit 0 when every command succeeded,
 * 1 when any failed (every line is still answered), 2 on a usage error of the batch itself.
 */
import type { Command } from 'commander';
import type { EkvClient } from '../../client/index.ts';
import { errorCode, run, UsageError } from '../output.ts';
import { common, withClient, type CommonOpts } from './kv.ts';
import { EkvError } from '../../protocol/errors.ts';
import { ttlMsMax } from '../../protocol/constants.ts';
import { durationFlag } from '../flags.ts';

/** A line longer than this is answered with USAGE (a put's value is bounded by the protocol anyway). */
export const batchLineBytesMax = 1024 * 1024 + 4096;

export interface BatchLine {
  op: 'get' | 'put' | 'del';
  key: string;
  value?: string;
  ifVersion?: number;
  /** put only: expire after this many ms (docs/consistency.md "Expiry"). */
  ttlMs?: number;
}

/** Parses one line; null for a blank or comment line; throws UsageError for anything else it cannot read. */
export function parseBatchLine(line: string): BatchLine | null {
  const text = line.endsWith('\r') ? line.slice(0, -1) : line;
  if (text.trim() === '' || text.trimStart().startsWith('#')) return null;
  // op [--if-version N] [--ttl D] key[ value]: the key ends at the first space; a put's value is all after that one space.
  const m = /^\s*(\S+)((?:\s+--(?:if-version|ttl)\s+\S+)*)(?:\s+(\S+))?(?: ([\s\S]*))?$/.exec(text);
  if (!m) throw new UsageError('cannot read the line: op [--if-version N] [--ttl D] KEY [VALUE]');
  const op = (m[1] as string).toLowerCase();
  const name = op === 'delete' ? 'del' : op === 'set' ? 'put' : op;
  if (name !== 'get' && name !== 'put' && name !== 'del') throw new UsageError(`unknown command ${JSON.stringify(op.slice(0, 40))} (get, put, del)`);
  const [, , flags, key, value] = m;
  let version: string | undefined;
  let ttl: string | undefined;
  for (const f of (flags ?? '').matchAll(/--(if-version|ttl)\s+(\S+)/g)) {
    if (f[1] === 'ttl') {
      if (ttl !== undefined) throw new UsageError('--ttl given twice');
      ttl = f[2];
    } else {
      if (version !== undefined) throw new UsageError('--if-version given twice');
      version = f[2];
    }
  }
  if (key === undefined) throw new UsageError(`${name} needs a key`);
  if (ttl !== undefined && name !== 'put') throw new UsageError(`${name} takes no --ttl`);
  let ifVersion: number | undefined;
  if (version !== undefined) {
    if (name === 'get') throw new UsageError('get takes no --if-version');
    if (!/^\d{1,15}$/.test(version)) throw new UsageError('--if-version must be a version number');
    ifVersion = Number(version);
  }
  const cas = ifVersion === undefined ? {} : { ifVersion };
  if (name === 'put') {
    if (value === undefined) throw new UsageError('put needs a key and a value');
    return { op: 'put', key, value, ...cas, ...(ttl === undefined ? {} : { ttlMs: durationFlag(ttl, '--ttl', ttlMsMax) }) };
  }
  if (value !== undefined && value.trim() !== '') throw new UsageError(`${name} takes one key`);
  return { op: name, key, ...cas };
}

/** Text mode: one line per value, whatever bytes it holds. */
export function escapeValue(value: Buffer): string {
  return value.toString('utf8').replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/\r/g, '\\r');
}

async function execute(kv: EkvClient, c: BatchLine, json: boolean): Promise<string> {
  const cas = c.ifVersion === undefined ? undefined : { ifVersion: c.ifVersion };
  if (c.op === 'get') {
    const r = await kv.getWithVersion(c.key);
    return json
      ? JSON.stringify({ ok: true, key: c.key, version: r.version, value: r.value.toString('utf8'), valueHex: r.value.toString('hex') })
      : escapeValue(r.value);
  }
  if (c.op === 'put') {
    const version = await kv.put(c.key, c.value as string, c.ttlMs === undefined ? cas : { ...cas, ttlMs: c.ttlMs });
    return json ? JSON.stringify({ ok: true, key: c.key, version, ...(c.ttlMs === undefined ? {} : { ttlMs: c.ttlMs }) }) : 'OK';
  }
  const r = await kv.delete(c.key, cas);
  return json ? JSON.stringify({ ok: true, key: c.key, deleted: r.deleted, version: r.version }) : r.deleted ? 'OK' : 'OK (no such key)';
}

function failure(err: unknown, json: boolean): string {
  const code = errorCode(err);
  const message = (err instanceof Error ? err.message : String(err)).replace(/[\r\n]+/g, ' ');
  const reason = err instanceof EkvError ? err.reason : undefined;
  const version = err instanceof EkvError ? err.version : undefined;
  if (json) return JSON.stringify({ ok: false, code, ...(reason ? { reason } : {}), ...(version === undefined ? {} : { version }), message });
  return `${code}${reason ? ` (${reason})` : ''}: ${message}`;
}

export function registerBatch(program: Command): void {
  common(program.command('batch').alias('shell'))
    .description('pipe mode: one command per line on stdin (get KEY | put [--if-version N] [--ttl D] KEY VALUE | del [--if-version N] KEY), one result per line on stdout, over one connection')
    .action(async (o: CommonOpts) =>
      run(o.json, async () => {
        const json = o.json === true;
        let failed = 0;
        const out: string[] = [];
        const flush = async (): Promise<void> => {
          if (out.length === 0) return;
          const text = out.join('\n') + '\n';
          out.length = 0;
          if (!process.stdout.write(text)) await new Promise((r) => process.stdout.once('drain', r));
        };
        await withClient(o, async (kv) => {
          const { createInterface } = await import('node:readline'); // only batch needs it: keep it out of every start-up
          const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
          for await (const line of lines) {
            let result: string;
            try {
              if (Buffer.byteLength(line) > batchLineBytesMax) throw new UsageError(`line longer than ${batchLineBytesMax} bytes`);
              const c = parseBatchLine(line);
              if (c === null) continue;
              result = await execute(kv, c, json);
            } catch (err) {
              failed++;
              result = failure(err, json);
            }
            out.push(result);
            // Answer at once when the input has no more lines waiting (an interactive caller, a coprocess).
            if (out.length >= 256 || process.stdin.readableLength === 0) await flush();
          }
          await flush();
        });
        if (failed > 0) process.exitCode = 1;
      }),
    );
}
