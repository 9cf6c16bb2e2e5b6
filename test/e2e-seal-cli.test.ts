// Sealed persistence from the command line (issue 5): `ekv up --dir DIR` stopped with SIGTERM and run
// again brings the same ring back with every acknowledged key; `ekv node --dir DIR2` likewise alone.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import type { ClusterFile } from '../client/cluster.ts';
import { shortTempDir } from './helpers/local-ring.ts';

const ekvBin = fileURLToPath(new URL('../bin/ekv.js', import.meta.url));
const readyMs = 60_000;
const dirs: string[] = [];
const running = new Set<ChildProcess>();

afterAll(async () => {
  for (const p of running) await stopProcess(p, 'SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(prefix: string): string {
  const d = shortTempDir(prefix);
  dirs.push(d);
  return d;
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function ekv(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [ekvBin, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

/** Start a long-running ekv command; resolves with its first stdout line starting `ready:`. */
function startEkv(args: string[]): Promise<{ proc: ChildProcess; ready: string; stderr: () => string }> {
  const proc = spawn(process.execPath, [ekvBin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(proc);
  let out = '';
  let err = '';
  proc.stderr?.on('data', (c: Buffer) => (err += c.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ready line within ${readyMs} ms; stderr:\n${err}`)), readyMs);
    proc.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
      const line = out.split('\n').find((l) => l.startsWith('ready:'));
      if (line) {
        clearTimeout(timer);
        resolve({ proc, ready: line, stderr: () => err });
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`ekv ${args[0]} exited (${code}) before it was ready; stderr:\n${err}`));
    });
  });
}

/** Signal a process and wait for it to exit; returns its exit code. */
function stopProcess(proc: ChildProcess, signal: NodeJS.Signals): Promise<number | null> {
  running.delete(proc);
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve(proc.exitCode);
  return new Promise((resolve) => {
    const hard = setTimeout(() => proc.kill('SIGKILL'), 20_000);
    proc.once('exit', (code) => {
      clearTimeout(hard);
      resolve(code);
    });
    proc.kill(signal);
  });
}

function entries(tag: string, n: number): Array<[string, string]> {
  const salt = randomBytes(3).toString('hex');
  return Array.from({ length: n }, (_, i) => [`${tag}-${salt}-k${i}`, `${tag} value ${i} ${salt}`]);
}

async function putAll(cluster: string, kvs: Array<[string, string]>, flags: string[] = []): Promise<void> {
  for (const [k, v] of kvs) expect(await ekv(['put', k, v, '-c', cluster, ...flags])).toMatchObject({ code: 0, stdout: 'OK\n' });
}

async function getAll(cluster: string, kvs: Array<[string, string]>, flags: string[] = []): Promise<Array<[string, string]>> {
  return Promise.all(kvs.map(async ([k]) => {
    const r = await ekv(['get', k, '-c', cluster, ...flags]);
    return [k, r.code === 0 ? r.stdout : `exit ${r.code}: ${r.stderr.trim()}`] as [string, string];
  }));
}

describe('ekv up, stopped with SIGTERM and run again on the same directory', () => {
  it('brings the same ring back with every acknowledged key', async () => {
    const dir = tempDir('ekv-scu-');
    const cluster = join(dir, 'cluster.json');
    const first = await startEkv(['up', '--nodes', '3', '--dir', dir]);
    expect(first.ready).toMatch(/^ready: 3 node\(s\)/);
    const kvs = entries('up', 6);
    await putAll(cluster, kvs);
    const nodesBefore = (JSON.parse(readFileSync(cluster, 'utf8')) as ClusterFile).nodes;
    expect(await stopProcess(first.proc, 'SIGTERM')).toBe(0);

    const second = await startEkv(['up', '--dir', dir]);
    expect(first.stderr()).toContain('SIGTERM: stopping 3 node(s)');
    expect(second.stderr()).toContain(`restarting the ring in ${dir} (3 nodes, as it was)`);
    // A whole-ring restart is a recovery; ekv up's own recovery member reopens it and says so (docs/recovery.md).
    expect(second.stderr()).toMatch(/reopened the ring as generation 1 .*signed by your recovery key/);
    expect((JSON.parse(readFileSync(cluster, 'utf8')) as ClusterFile).nodes).toEqual(nodesBefore);
    expect(await getAll(cluster, kvs)).toEqual(kvs);
    expect(await stopProcess(second.proc, 'SIGTERM')).toBe(0);
  }, 150_000);
});

describe('ekv node founding a ring alone, stopped with SIGTERM and run again on the same directory', () => {
  // A founding node appends itself to the cluster file it is given; this test gives it a fresh path (and
  // writes that file itself) so no other ring's file is changed. Alone, `ekv node` runs its own emulated KMS.
  it('comes back with every acknowledged key', async () => {
    const ringDir = tempDir('ekv-scn-');
    // only for its CA and trust policy (the same image: one node, R=1, no recovery member as `ekv node` has none)
    const ringRun = await startEkv(['up', '--nodes', '1', '--replicas', '1', '--no-recovery', '--dir', ringDir]);
    // The node founds a ring of its own (another ring id): keep the CA and PCRs (both run the single-node variant), not the ring pin.
    const { ringId: _otherRing, ...trust } = (JSON.parse(readFileSync(join(ringDir, 'cluster.json'), 'utf8')) as ClusterFile).trust;
    expect(await stopProcess(ringRun.proc, 'SIGTERM')).toBe(0);

    const dir = tempDir('ekv-scm-');
    const cluster = join(dir, 'cluster.json');
    const args = ['node', '--dir', join(dir, 'n'), '--cluster', cluster, '--ca', join(ringDir, 'ca'), '--replicas', '1'];
    const first = await startEkv(args);
    const addr = /^ready: node (127\.0\.0\.1:\d+) \((http:[^)]+)\)/.exec(first.ready);
    expect(addr).not.toBeNull();
    const file: ClusterFile = { version: 1, nodes: [{ addr: addr![1] as string, http: addr![2] as string }], trust, replicas: 1 };
    writeFileSync(cluster, JSON.stringify(file));
    // This file's trust section is not one `ekv up` recorded (no ring pin: the node's ring is another), so
    // the CLI uses it only when told to (docs/client-trust.md); the test wrote it itself.
    const own = ['--trust-cluster-file'];
    const kvs = entries('node', 4);
    await putAll(cluster, kvs, own);
    expect(await stopProcess(first.proc, 'SIGTERM')).toBe(0);

    const second = await startEkv(args);
    expect(second.ready).toContain(`ready: node ${addr![1]}`); // node.json kept its port
    expect(await getAll(cluster, kvs, own)).toEqual(kvs);
    expect(await stopProcess(second.proc, 'SIGTERM')).toBe(0);
  });
});
