// `ekv batch` / `ekv shell`: one command per line in, one result per line out, in order, over one
// attested connection; failures are `CODE: message` lines (or JSON lines) and never stop the batch.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { escapeValue, parseBatchLine } from '../cli/commands/batch.ts';
import { startTestRing, type TestRing } from './helpers/local-ring.ts';

const ekvBin = fileURLToPath(new URL('../bin/ekv.js', import.meta.url));

describe('batch line parsing', () => {
  it('reads get, put (value: the rest of the line), del, --if-version; skips blanks and comments', () => {
    expect(parseBatchLine('get k')).toEqual({ op: 'get', key: 'k' });
    expect(parseBatchLine('  GET k\r')).toEqual({ op: 'get', key: 'k' });
    expect(parseBatchLine('put k hello  world ')).toEqual({ op: 'put', key: 'k', value: 'hello  world ' });
    expect(parseBatchLine('set k ')).toEqual({ op: 'put', key: 'k', value: '' });
    expect(parseBatchLine('put --if-version 0 k v')).toEqual({ op: 'put', key: 'k', value: 'v', ifVersion: 0 });
    expect(parseBatchLine('delete --if-version 7 k')).toEqual({ op: 'del', key: 'k', ifVersion: 7 });
    expect(parseBatchLine('put --ttl 30s k v w')).toEqual({ op: 'put', key: 'k', value: 'v w', ttlMs: 30_000 });
    expect(parseBatchLine('put --ttl 5m --if-version 0 k v')).toEqual({ op: 'put', key: 'k', value: 'v', ifVersion: 0, ttlMs: 300_000 });
    expect(parseBatchLine('put --if-version 2 --ttl 500ms k v')).toEqual({ op: 'put', key: 'k', value: 'v', ifVersion: 2, ttlMs: 500 });
    for (const bad of ['put --ttl 30 k v', 'put --ttl 1s --ttl 2s k v', 'get --ttl 1s k', 'del --ttl 1s k', 'put --ttl 400d k v']) expect(() => parseBatchLine(bad), bad).toThrow(/--ttl/);
    expect(parseBatchLine('')).toBeNull();
    expect(parseBatchLine('   # a comment')).toBeNull();
  });

  it('refuses what it cannot read with a usage error', () => {
    for (const bad of ['get', 'put k', 'get a b', 'del a b', 'frob k', 'get --if-version 1 k', 'put --if-version x k v']) {
      expect(() => parseBatchLine(bad), bad).toThrow();
    }
  });

  it('keeps every value on one line in text mode', () => {
    expect(escapeValue(Buffer.from('a\nb\\c\rd'))).toBe('a\\nb\\\\c\\rd');
  });
});

let t: TestRing;

beforeAll(async () => {
  t = await startTestRing({ nodes: 1 });
});

afterAll(async () => {
  await t?.stop();
});

/** The host's counter of inbound relayed connections, from /metrics. */
async function inboundConnections(): Promise<number> {
  const text = await (await fetch(`${t.node().http}/metrics`)).text();
  return Number(/^ekv_host_connections_total\{direction="inbound"\} (\d+)$/m.exec(text)?.[1] ?? 0);
}

function batch(input: string, args: string[] = []): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return ekv(['batch', '-c', t.clusterFile, ...args], input);
}

function ekv(args: string[], input = '', nodeArgs: string[] = []): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...nodeArgs, ekvBin, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input);
  });
}

describe('ekv batch against a node', () => {
  it('answers every line in order; failures are CODE lines and make the exit status 1', async () => {
    const r = await batch([
      'put b/one first value', 'get b/one', '# comment', '', 'get b/missing', 'put --if-version 0 b/one again',
      'put --if-version 1 b/one second', 'get b/one', 'put b/nl a\\nb', 'bogus line', 'del b/one', 'del b/one', 'get b/one',
    ].join('\n') + '\n');
    expect(r.stderr).toBe('');
    expect(r.stdout.split('\n')).toEqual([
      'OK', 'first value', expect.stringMatching(/^NOT_FOUND: /), expect.stringMatching(/^CONFLICT: /),
      'OK', 'second', 'OK', expect.stringMatching(/^USAGE: unknown command/), 'OK', 'OK (no such key)', expect.stringMatching(/^NOT_FOUND: /), '',
    ]);
    expect(r.code).toBe(1);
  });

  it('--json: one object per line; exit 0 when everything succeeded; many lines over one connection', async () => {
    const n = 300;
    const lines: string[] = [];
    for (let i = 0; i < n; i++) lines.push(`put j/${i} v${i}`, `get j/${i}`);
    const before = await inboundConnections();
    const r = await batch(lines.join('\n'), ['--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as { ok: boolean; key: string; value?: string; version: number });
    expect(out).toHaveLength(2 * n);
    for (let i = 0; i < n; i++) {
      expect(out[2 * i]).toEqual({ ok: true, key: `j/${i}`, version: 1 });
      expect(out[2 * i + 1]).toMatchObject({ ok: true, key: `j/${i}`, value: `v${i}`, version: 1 });
    }
    // One attested connection for the whole batch (the host counts inbound relayed connections).
    expect((await inboundConnections()) - before).toBe(1);
  });
});

describe('lazy loading', () => {
  /** The packages (node_modules) a CLI run imports, seen by a module resolution hook. */
  async function packagesLoaded(args: string[]): Promise<{ packages: string[]; stdout: string }> {
    const dir = mkdtempSync(join(tmpdir(), 'ekv-hook-'));
    try {
      const log = join(dir, 'resolved.txt');
      const hook = join(dir, 'hook.mjs');
      writeFileSync(hook, [
        "import { appendFileSync } from 'node:fs';",
        'export async function resolve(specifier, context, next) {',
        '  const r = await next(specifier, context);',
        `  appendFileSync(${JSON.stringify(log)}, r.url + '\\n');`,
        '  return r;',
        '}',
      ].join('\n'));
      const register = join(dir, 'register.mjs');
      writeFileSync(register, `import { register } from 'node:module'; register(${JSON.stringify(pathToFileURL(hook).href)});\n`);
      const r = await ekv(args, '', ['--import', pathToFileURL(register).href]);
      const urls = readFileSync(log, 'utf8').split('\n').filter(Boolean);
      const packages = new Set<string>();
      for (const u of urls) {
        const m = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(u);
        if (m) packages.add(m[1] as string);
      }
      return { packages: [...packages].sort(), stdout: r.stdout };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  const heavy = ['@aws-sdk/client-kms', '@peculiar/x509', 'express', 'pino', 'prom-client', 'pkijs', 'asn1js', 'reflect-metadata'];

  it('ekv get loads none of the AWS SDK, express, pino, the emulator\'s x509 or pkijs', async () => {
    const seen = await packagesLoaded(['put', 'lazy/k', 'v', '-c', t.clusterFile]);
    expect(seen.stdout).toBe('OK\n');
    const get = await packagesLoaded(['get', 'lazy/k', '-c', t.clusterFile]);
    expect(get.stdout).toBe('v');
    expect(get.packages.filter((p) => heavy.includes(p))).toEqual([]);
  });

  it('the hook does see them when a command needs them (ekv up --help)', async () => {
    const up = await packagesLoaded(['up', '--help']);
    expect(up.packages).toEqual(expect.arrayContaining(['pino', '@peculiar/x509']));
  });
});
