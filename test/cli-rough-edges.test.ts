// The CLI's rough edges from issue 14, each as a user meets it (a child process per command):
// numeric flags checked (exit 2), an empty stdin refused, `put --hex`, the cluster file found in .ekv/ and the
// error naming EKV_CLUSTER, an HTTP port named as such, `verify -` with base64 and hex, `whoami`, and
// `ekv node`: a graceful leave takes it out of cluster.json; an image the KMS refuses ends in a few attempts
// with the KMS error instead of a crash loop.
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCluster } from '../client/cluster.ts';
import { generateIdentity, saveIdentity } from '../client/identity.ts';
import { connect, EkvError } from '../client/index.ts';
import { documentBytes } from '../cli/commands/verify.ts';
import { durationFlag, intFlag } from '../cli/flags.ts';
import { UsageError } from '../cli/output.ts';
import { startAttemptsMax } from '../cli/local/node.ts';
import { imageFor, startTestRing, type TestRing } from './helpers/local-ring.ts';
import { fixtureDir, loadFixtures } from './helpers/nitro-fixtures.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));
const ekvBin = join(repo, 'bin/ekv.js');
const scratch = mkdtempSync(join(tmpdir(), 'ekv-cli-edges-'));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function ekv(args: string[], o: { cwd?: string; input?: string | Buffer; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [ekvBin, ...args], {
      cwd: o.cwd ?? repo, timeout: o.timeoutMs ?? 30_000, env: { ...process.env, EKV_CLUSTER: '', ...o.env }, encoding: 'buffer',
    }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
      resolve({ code, stdout: stdout.toString(), stderr: stderr.toString() });
    });
    if (o.input !== undefined) child.stdin?.end(o.input);
    else child.stdin?.end();
  });
}

let ring: TestRing;
const trust = () => ['--cluster', ring.clusterFile, '--trust-cluster-file'];

beforeAll(async () => {
  ring = await startTestRing({ nodes: 1 });
}, 60_000);
afterAll(async () => {
  await ring?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

describe('data commands', () => {
  it('checks numeric flags (exit 2, naming the flag), refuses an empty stdin, and stores --hex values', async () => {
    expect(() => intFlag('abc', '--timeout', 1, 10)).toThrow(/--timeout must be a whole number from 1 to 10/);
    expect(() => intFlag('1e3', '--timeout', 1, 10_000)).toThrow(UsageError);
    expect(intFlag(' 250 ', '--timeout', 1, 10_000)).toBe(250);
    expect([durationFlag('500ms', '--ttl', 1e12), durationFlag('30s', '--ttl', 1e12), durationFlag('5m', '--ttl', 1e12), durationFlag('1h', '--ttl', 1e12), durationFlag('2d', '--ttl', 1e12)])
      .toEqual([500, 30_000, 300_000, 3_600_000, 172_800_000]);
    for (const bad of ['30', '0s', '-1s', '1.5s', '1e3ms', '3w', '', '367d']) expect(() => durationFlag(bad, '--ttl', 366 * 86_400_000), bad).toThrow(UsageError);
    const [timeout, port, level, empty, hex, ttlBad, ttlOk] = await Promise.all([
      ekv(['get', 'k', '--timeout', 'abc', ...trust()]),
      ekv(['node', '--port', 'x']),
      ekv(['up', '--log-level', 'loud', '--dir', join(scratch, 'never')]),
      ekv(['put', 'edge-empty', ...trust()], { input: '' }),
      ekv(['put', 'edge-hex', '--hex', '00ff41', ...trust()]),
      ekv(['put', 'edge-ttl', 'v', '--ttl', '30', ...trust()]),
      ekv(['put', 'edge-ttl', 'v', '--ttl', '1h', '--json', ...trust()]),
    ]);
    expect(ttlBad.code, ttlBad.stderr).toBe(2);
    expect(ttlBad.stderr).toMatch(/--ttl must be a duration with its unit/);
    expect(ttlOk.code, ttlOk.stderr).toBe(0);
    expect(JSON.parse(ttlOk.stdout)).toMatchObject({ ok: true, version: 1, ttlMs: 3_600_000 });
    for (const r of [timeout, port]) {
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(/--(timeout|port) must be a whole number/);
    }
    expect(level.code, level.stderr).toBe(2);
    expect(level.stderr).toMatch(/--log-level must be one of trace, debug, info, warn, error, fatal, silent/);
    expect(empty.code).toBe(2);
    expect(empty.stderr).toMatch(/empty stdin.*--allow-empty/);
    expect(hex.code, hex.stderr).toBe(0);
    const [got, allowed] = await Promise.all([
      ekv(['get', 'edge-hex', '--hex', ...trust()]),
      ekv(['put', 'edge-empty', '--allow-empty', ...trust()], { input: '' }),
    ]);
    expect(got.stdout.trim()).toBe('00ff41');
    expect(allowed.code, allowed.stderr).toBe(0);
  });

  it('finds .ekv/cluster.json without --cluster, and names EKV_CLUSTER when there is none', async () => {
    const cwd = join(scratch, 'project');
    const other = join(scratch, 'elsewhere');
    mkdirSync(join(cwd, '.ekv'), { recursive: true });
    mkdirSync(other, { recursive: true });
    writeFileSync(join(cwd, '.ekv', 'cluster.json'), readFileSync(ring.clusterFile));
    const [none, found] = await Promise.all([
      ekv(['get', 'edge-hex', '--hex', '--trust-cluster-file'], { cwd: other }),
      ekv(['get', 'edge-hex', '--hex', '--trust-cluster-file'], { cwd }),
    ]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/EKV_CLUSTER/);
    expect(none.stderr).toMatch(/\.ekv\/cluster\.json/);
    expect(found.stdout.trim(), found.stderr).toBe('00ff41');
  });

  it('says "not an enclave-kv node (it answered HTTP)" for a node address that is an HTTP port', async () => {
    const httpAddr = ring.node(0).http.replace('http://', '');
    const kv = await connect({ nodes: [httpAddr], trust: ring.cluster.trust, timeoutMs: 5000 });
    try {
      const err = await kv.get('k').catch((e: unknown) => e as EkvError);
      expect(err).toBeInstanceOf(EkvError);
      expect((err as EkvError).message).toMatch(/not an enclave-kv node: it answered HTTP/);
      expect((err as EkvError).message).not.toMatch(/1213486160/);
    } finally {
      await kv.close();
    }
  });
});

describe('verify and whoami', () => {
  const good = loadFixtures().find((f) => !f.debug && f.nonceBytes !== null)!;
  const raw = readFileSync(join(fixtureDir, good.file));
  const at = ['--at', String(good.timestampMs), '--json'];

  it('reads the document raw, in base64 (standard or URL alphabet) or in hex, whitespace ignored', () => {
    const forms: Array<[string | Buffer, string]> = [
      [raw, 'raw'],
      [raw.toString('base64').replace(/(.{76})/g, '$1\n'), 'base64'],
      [raw.toString('base64url'), 'base64'],
      [raw.toString('hex').replace(/(.{64})/g, '$1\n'), 'hex'],
    ];
    for (const [input, form] of forms) {
      const r = documentBytes(typeof input === 'string' ? Buffer.from(input) : input);
      expect(r.form).toBe(form);
      expect(Buffer.from(r.bytes).equals(raw)).toBe(true);
    }
    expect(documentBytes(Buffer.from('this is not a document')).form).toBe('unknown');
  });

  it('verify - reads stdin; other text says what was expected; whoami prints a key file\'s principal', async () => {
    const key = join(scratch, 'me.key');
    const principal = saveIdentity(key, generateIdentity()).text;
    const [b64, junk, who, nobody] = await Promise.all([
      ekv(['verify', '-', ...at], { input: raw.toString('base64') }),
      ekv(['verify', '-'], { input: 'this is not a document\n' }),
      ekv(['whoami', '--identity', key]),
      ekv(['whoami'], { env: { EKV_IDENTITY: '' } }),
    ]);
    expect(b64.code, b64.stderr).toBe(0);
    expect(JSON.parse(b64.stdout).moduleId).toBe(good.moduleId);
    expect(junk.code).toBe(1);
    expect(junk.stderr).toMatch(/^MALFORMED: not an attestation document: expected .*base64 or hex/);
    expect(who.stdout.trim(), who.stderr).toBe(principal);
    expect(nobody.code).toBe(2);
  });
});

describe('ekv node', () => {
  /** `ekv node --join` in `dir`, until its JSON ready line (or exit): the child, its output so far, its exit. */
  async function joinedNode(dir: string, logLevel: string) {
    const child = spawn(process.execPath, [ekvBin, 'node', '--join', ring.node(0).addr, '--cluster', ring.clusterFile, '--dir', dir, '--log-level', logLevel, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const io = { out: '', err: '' };
    child.stdout.on('data', (d: Buffer) => (io.out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (io.err += d.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const deadline = Date.now() + 40_000;
    while (!io.out.includes('"ok":true') && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 100));
    const ready = JSON.parse(io.out.split('\n').find((l) => l.startsWith('{')) ?? 'null') as { addr: string } | null;
    return { child, io, exited, ready };
  }

  it('leaves gracefully on Ctrl-C and takes itself out of cluster.json (ekv status is clean after)', async () => {
    const { child, io, exited, ready } = await joinedNode(join(scratch, 'joiner'), 'silent');
    try {
      expect(ready, io.err).not.toBeNull();
      expect(loadCluster(ring.clusterFile).nodes.map((n) => n.addr)).toContain(ready!.addr);
      child.kill('SIGINT');
      expect(await exited).toBe(0);
      expect(loadCluster(ring.clusterFile).nodes.map((n) => n.addr)).not.toContain(ready!.addr);
      const status = await ekv(['status', ...trust()]);
      expect(status.code, status.stdout + status.stderr).toBe(0);
    } finally {
      child.kill('SIGKILL');
    }
  }, 60_000);

  it('decommissions on SIGUSR2 through the host channel: leaves, waits for its ranges to move, retires, and takes itself out of cluster.json', async () => {
    const dir = join(scratch, 'decommissioned');
    const { child, io, exited, ready } = await joinedNode(dir, 'warn');
    try {
      expect(ready, io.err).not.toBeNull();
      child.kill('SIGUSR2');
      expect(await exited).toBe(0);
      expect(io.err).toContain('SIGUSR2: decommissioning');
      // The enclave answered over its host channel once its ranges had moved away (none names it), and retired.
      expect(io.err).toMatch(/^ekv node: retired for good \(0 ranges still named it/m);
      expect(loadCluster(ring.clusterFile).nodes.map((n) => n.addr)).not.toContain(ready!.addr);
      // Its directory is retired for good: the node will not start from it again.
      const again = await ekv(['node', '--join', ring.node(0).addr, '--cluster', ring.clusterFile, '--dir', dir, '--log-level', 'silent']);
      expect(again.code).toBe(3);
      expect(again.stderr).toMatch(/^DECOMMISSIONED: /m);
    } finally {
      child.kill('SIGKILL');
    }
  }, 90_000);

  it('ekv host will not start from a decommissioned data directory (exit 3, DECOMMISSIONED; systemd does not restart it)', async () => {
    const data = join(scratch, 'host-decommissioned');
    mkdirSync(data, { recursive: true });
    writeFileSync(join(data, 'decommissioned'), '{}\n');
    const r = await ekv(['host', '--vsock-dir', join(scratch, 'hv'), '--data-dir', data, '--listen', '0', '--http', '0', '--bind', '127.0.0.1', '--log-level', 'silent']);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/^DECOMMISSIONED: /m);
  });

  it('gives up on an image the KMS refuses after a few attempts, with the KMS error (no endless restart loop)', async () => {
    const refused = await imageFor({ nodes: 2, replicas: 2 });
    const r = await ekv(['node', '--join', ring.node(0).addr, '--cluster', ring.clusterFile, '--dir', join(scratch, 'refused'), '--enclave-image', refused, '--log-level', 'silent'], { timeoutMs: 90_000 });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`UNAVAILABLE: the enclave failed to start ${startAttemptsMax} times \\(the last time: .*\\); giving up\\. Its last error: .*KMS`));
  }, 100_000);
});
