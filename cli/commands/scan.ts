/**
 * `ekv keys PREFIX`, `ekv scan`, `ekv mget`, `ekv mput` (and `ekv get --prefix`, registered by kv.ts through
 * `printPrefix`): what a Redis or etcd user expects (docs/scans.md).
 *
 * Text output, one line per entry: a key (keys, scan), `key<TAB>value` (scan --values, get --prefix; both
 * escaped as `ekv batch` escapes values: \ as \\, newline as \n, CR as \r; in a key also a tab as \t, other control
 * characters as \xHH, C1 controls and bidi overrides as \uHHHH: escapeKey), a value or
 * `CODE: message` per key (mget), `OK` or `CODE: message` per pair (mput). --json: one JSON object.
 * mget and mput exit 1 if any key failed (every key is still answered), like `ekv batch`.
 */
import type { Command } from 'commander';
import type { EkvClient, ScanItem } from '../../client/index.ts';
import { EkvError } from '../../protocol/errors.ts';
import { errorCode, run, UsageError } from '../output.ts';
import { durationFlag, intFlag } from '../flags.ts';
import { ttlMsMax } from '../../protocol/constants.ts';
import { escapeValue } from './batch.ts';
import { common, withClient, type CommonOpts } from './kv.ts';

/**
 * Text mode: a key on one line whatever bytes it holds (and a tab would split `key<TAB>value`), and nothing a
 * terminal acts on: keys are written by any principal with a write right, and an operator lists them in a
 * terminal. Other C0 controls and DEL print as `\xHH`, C1 controls and the bidirectional overrides and isolates
 * (which reorder what a line shows) as `\uHHHH`; a backslash is `\\`, so the escapes are unambiguous.
 */
export function escapeKey(key: Buffer): string {
  return escapeValue(key)
    .replace(/\t/g, '\\t')
    .replace(/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
    .replace(/[\u0080-\u009f\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function itemJson(it: ScanItem): Record<string, unknown> {
  return {
    key: it.key.toString('utf8'), keyHex: it.key.toString('hex'), version: it.version,
    ...(it.value !== undefined ? { value: it.value.toString('utf8'), valueHex: it.value.toString('hex') } : {}),
  };
}

function itemLine(it: ScanItem, hex: boolean): string {
  const k = hex ? it.key.toString('hex') : escapeKey(it.key);
  if (it.value === undefined) return k;
  return `${k}\t${hex ? it.value.toString('hex') : escapeValue(it.value)}`;
}

async function write(text: string): Promise<void> {
  if (!process.stdout.write(text)) await new Promise((r) => process.stdout.once('drain', r));
}

/** Every entry with the prefix, streamed (text) or as one JSON object (--json): keys, or keys and values. */
export async function printPrefix(kv: EkvClient, prefix: string, o: { json?: boolean; hex?: boolean }, values: boolean): Promise<void> {
  const json = o.json === true;
  const items: Record<string, unknown>[] = [];
  let lines: string[] = [];
  for await (const it of kv.scanAll({ prefix, values })) {
    if (json) items.push(itemJson(it));
    else {
      lines.push(itemLine(it, o.hex === true));
      if (lines.length >= 256) {
        await write(lines.join('\n') + '\n');
        lines = [];
      }
    }
  }
  if (json) await write(JSON.stringify({ ok: true, prefix, count: items.length, items }) + '\n');
  else if (lines.length > 0) await write(lines.join('\n') + '\n');
}

function itemFailure(err: unknown): { code: string; message: string; reason?: string } {
  const code = errorCode(err);
  const message = (err instanceof Error ? err.message : String(err)).replace(/[\r\n]+/g, ' ');
  const reason = err instanceof EkvError ? err.reason : undefined;
  return { code, message, ...(reason ? { reason } : {}) };
}

export function registerScan(program: Command): void {
  common(program.command('keys').argument('[prefix]', 'only keys starting with this (default: every key you may read)', ''))
    .description('list the keys you may read that start with PREFIX, in byte order (every range asked; not a snapshot: docs/scans.md)')
    .option('--hex', 'print keys as hex')
    .action(async (prefix: string, o: CommonOpts & { hex?: boolean }) =>
      run(o.json, async () => {
        await withClient(o, (kv) => printPrefix(kv, prefix, o, false));
      }),
    );

  common(program.command('scan'))
    .description('one page of keys (--values: and values) in byte order; the next page with --cursor (printed on stderr, or in --json)')
    .option('--prefix <p>', 'only keys starting with this', '')
    .option('--limit <n>', 'entries per page (1..1000)', '100')
    .option('--cursor <c>', 'continue after the page this cursor came from (same --prefix)')
    .option('--values', 'print key<TAB>value')
    .option('--hex', 'print keys and values as hex')
    .action(async (o: CommonOpts & { prefix: string; limit: string; cursor?: string; values?: boolean; hex?: boolean }) =>
      run(o.json, async () => {
        const limit = intFlag(o.limit, '--limit', 1, 1000);
        const page = await withClient(o, (kv) => kv.scan({ prefix: o.prefix, limit, values: o.values === true, ...(o.cursor !== undefined ? { cursor: o.cursor } : {}) }));
        if (o.json) {
          await write(JSON.stringify({ ok: true, prefix: o.prefix, items: page.items.map(itemJson), cursor: page.cursor }) + '\n');
          return;
        }
        if (page.items.length > 0) await write(page.items.map((it) => itemLine(it, o.hex === true)).join('\n') + '\n');
        if (page.cursor !== null) process.stderr.write(`more: --cursor ${page.cursor}\n`);
      }),
    );

  common(program.command('mget').argument('<keys...>'))
    .description('get many keys, one request per node: one line per key, in order (the value, or CODE: message); not a transaction')
    .option('--hex', 'print values as hex')
    .action(async (keys: string[], o: CommonOpts & { hex?: boolean }) =>
      run(o.json, async () => {
        const rs = await withClient(o, (kv) => kv.mget(keys));
        const failed = rs.filter((r) => !r.ok).length;
        if (o.json) {
          await write(JSON.stringify({
            ok: failed === 0,
            results: rs.map((r, i) => r.ok
              ? { ok: true, key: keys[i], version: r.version, value: r.value.toString('utf8'), valueHex: r.value.toString('hex') }
              : { ok: false, key: keys[i], ...itemFailure(r.error) }),
          }) + '\n');
        } else {
          await write(rs.map((r) => {
            if (r.ok) return o.hex ? r.value.toString('hex') : escapeValue(r.value);
            const f = itemFailure(r.error);
            return `${f.code}${f.reason ? ` (${f.reason})` : ''}: ${f.message}`;
          }).join('\n') + '\n');
        }
        if (failed > 0) process.exitCode = 1;
      }),
    );

  common(program.command('mput').argument('<pairs...>', 'KEY VALUE KEY VALUE ...'))
    .description('put many keys, one request per node: one line per key, in order (OK, or CODE: message); not a transaction (some may apply, others not)')
    .option('--ttl <duration>', 'every value expires after this long (as `ekv put --ttl`)')
    .action(async (pairs: string[], o: CommonOpts & { ttl?: string }) =>
      run(o.json, async () => {
        if (pairs.length % 2 !== 0) throw new UsageError('mput takes KEY VALUE pairs (an even number of arguments)');
        const ttl = o.ttl === undefined ? {} : { ttlMs: durationFlag(o.ttl, '--ttl', ttlMsMax) };
        const entries: Array<{ key: string; value: string; ttlMs?: number }> = [];
        for (let i = 0; i < pairs.length; i += 2) entries.push({ key: pairs[i] as string, value: pairs[i + 1] as string, ...ttl });
        const rs = await withClient(o, (kv) => kv.mput(entries));
        const failed = rs.filter((r) => !r.ok).length;
        if (o.json) {
          await write(JSON.stringify({
            ok: failed === 0,
            results: rs.map((r, i) => (r.ok ? { ok: true, key: entries[i]?.key, version: r.version } : { ok: false, key: entries[i]?.key, ...itemFailure(r.error) })),
          }) + '\n');
        } else {
          await write(rs.map((r) => {
            if (r.ok) return 'OK';
            const f = itemFailure(r.error);
            return `${f.code}${f.reason ? ` (${f.reason})` : ''}: ${f.message}`;
          }).join('\n') + '\n');
        }
        if (failed > 0) process.exitCode = 1;
      }),
    );
}
