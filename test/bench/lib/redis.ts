/**
 * The Redis baseline's server: installed with apt when missing, started on a
 * free loopback port, stopped by the benchmark itself. Persistence as asked:
 * 'none' (no RDB, no AOF: the baseline for ekv --no-seal) or 'aof-always'
 * (`appendonly yes`, `appendfsync always`: every write fsynced to the append-only
 * file before its reply, Redis group-committing the writes of one event-loop
 * turn; the baseline for ekv's sealed, fsynced log).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, stopChild } from './procs.ts';
import { RespClient } from './resp.ts';

const startTimeoutMs = 10_000;

export interface RedisServer {
  host: string;
  port: number;
  version: string;
  pid: number;
  stop(): Promise<void>;
}

function redisVersion(bin: string): string | null {
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

/** Installs redis-server with apt-get when it is not on PATH (needs root, as on the CI image). */
export function ensureRedisInstalled(progress: (line: string) => void): string {
  const found = redisVersion('redis-server');
  if (found) return found;
  if (process.getuid?.() !== 0) throw new Error('redis-server is missing and this is not root: apt-get install redis-server first');
  progress('redis-server not found: apt-get update && apt-get install -y redis-server');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  for (const args of [['update'], ['install', '-y', '--no-install-recommends', 'redis-server']]) {
    const r = spawnSync('apt-get', args, { stdio: ['ignore', 'ignore', 'inherit'], env });
    if (r.status !== 0) throw new Error(`apt-get ${args.join(' ')} failed (exit ${r.status})`);
  }
  const installed = redisVersion('redis-server');
  if (!installed) throw new Error('redis-server still missing after apt-get install');
  return installed;
}

export type RedisPersistence = 'none' | 'aof-always';

export async function startRedis(progress: (line: string) => void, persistence: RedisPersistence = 'none'): Promise<RedisServer> {
  const version = ensureRedisInstalled(progress);
  const port = await freePort();
  const dir = mkdtempSync('/tmp/ekv-redis-');
  const durable = persistence === 'aof-always' ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no'];
  const child: ChildProcess = spawn('redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', ...durable,
    '--daemonize', 'no', '--dir', dir, '--logfile', join(dir, 'redis.log'),
  ], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    await stopChild(child, exited);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitForPong(port);
  } catch (err) {
    await stop();
    throw err;
  }
  progress(`redis-server (${version.split(' ').slice(0, 3).join(' ')}, persistence ${persistence}) on 127.0.0.1:${port}, pid ${child.pid}`);
  return { host: '127.0.0.1', port, version, pid: child.pid as number, stop };
}

async function waitForPong(port: number): Promise<void> {
  const deadline = Date.now() + startTimeoutMs;
  for (;;) {
    try {
      const c = await RespClient.connect('127.0.0.1', port);
      const r = await c.command(['PING']);
      c.close();
      if (r === 'PONG') return;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) throw new Error(`redis-server did not answer PING within ${startTimeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
