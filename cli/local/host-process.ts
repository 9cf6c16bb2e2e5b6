/**
 * A local node's host proxy as its own process (`ekv host`), as on a Nitro parent instance where it is
 * a separate service from the enclave: a fault test can kill -9 it under a running enclave and start it
 * again on the same ports (docs/fault-testing.md). The default local ring runs its hosts in-process.
 *
 * The child is spawned under `setpriv --pdeathsig KILL` where that exists (the kernel kills it if this
 * process dies), and a normal exit of this process SIGKILLs every host child it started.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { probeIsolation } from '../../emulator/isolation.ts';
import { forwardLines } from '../../emulator/log-lines.ts';
import { hostSocketPaths, type RunningHost } from '../../host/host.ts';
import { decommissionEnclave } from '../../host/enclave-metrics.ts';

const ekvBin = fileURLToPath(new URL('../../bin/ekv.js', import.meta.url));
export const hostReadyMs = 30_000;
const stopGraceMs = 5000;

export interface HostProcessOptions {
  vsockDir: string;
  dataDir: string;
  listenPort: number;
  httpPort: number;
  /** The emulated IMDS whose role credentials the host hands its enclave. */
  imdsUrl?: string;
  logger: Logger;
}

export interface HostProcess extends RunningHost {
  pid: number;
  /** Resolves when the process has exited (for any reason). */
  exited: Promise<void>;
  /** SIGKILL, no clean-up of any kind; resolves once it has exited. */
  kill9(): Promise<void>;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

export async function spawnHostProcess(o: HostProcessOptions): Promise<HostProcess> {
  const deathSig = (await probeIsolation()).prefix.slice(0, 3);
  const args = [
    ekvBin, 'host', '--vsock-dir', o.vsockDir, '--data-dir', o.dataDir, '--bind', '127.0.0.1',
    '--listen', String(o.listenPort), '--http', String(o.httpPort), '--allow-outbound', '127.0.0.1',
    '--imds', o.imdsUrl ?? '', '--log-level', process.env.EKV_HOST_LOG_LEVEL ?? 'warn', '--json',
  ];
  const command = deathSig[0] === 'setpriv' ? [...deathSig, process.execPath, ...args] : [process.execPath, ...args];
  const child = spawn(command[0] as string, command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const c of live) c.kill('SIGKILL');
    });
  }
  const exited = new Promise<void>((resolve) => child.once('close', () => {
    live.delete(child);
    resolve();
  }));
  forwardLines(child.stderr as NonNullable<typeof child.stderr>, o.logger, 'stderr');
  const ready = await new Promise<{ port: number; httpPort: number; pid: number }>((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the host proxy did not start within ${hostReadyMs} ms`));
    }, hostReadyMs);
    const onData = (chunk: Buffer) => {
      buf += chunk.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl === -1) {
        if (buf.length > 4096) buf = buf.slice(-4096);
        return;
      }
      clearTimeout(timer);
      (child.stdout as NonNullable<typeof child.stdout>).off('data', onData);
      try {
        const j = JSON.parse(buf.slice(0, nl)) as { ok?: boolean; port?: number; httpPort?: number; pid?: number };
        if (j.ok !== true || typeof j.port !== 'number' || typeof j.httpPort !== 'number') throw new Error(`unexpected ready line ${buf.slice(0, 200)}`);
        resolve({ port: j.port, httpPort: j.httpPort, pid: j.pid ?? (child.pid as number) });
      } catch (err) {
        child.kill('SIGKILL');
        reject(err as Error);
      }
    };
    (child.stdout as NonNullable<typeof child.stdout>).on('data', onData);
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`the host proxy exited during start-up (exit ${child.exitCode ?? child.signalCode})`));
    });
  });
  const pid = ready.pid;
  const done = () => child.exitCode !== null || child.signalCode !== null;
  return {
    pid,
    port: ready.port,
    httpPort: ready.httpPort,
    enclaveSocket: hostSocketPaths(o.vsockDir).enclave,
    // The local ring launches its enclaves itself: the host process is started without --enclave-cmd.
    watchdog: null,
    decommission: () => decommissionEnclave(hostSocketPaths(o.vsockDir).enclaveMetrics),
    exited,
    async kill9() {
      if (!done()) process.kill(pid, 'SIGKILL');
      await exited;
    },
    async close() {
      if (done()) return exited;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), stopGraceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}
