/**
 * The ekv side of the benchmark: one emulated node started by `ekv up` in its
 * own process (host proxy and launcher there, the enclave its child), as an
 * operator runs it, so the load generator does not share a thread with the relay.
 */
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { shortTempDir } from '../../helpers/local-ring.ts';
import { stopChild } from './procs.ts';

const ekvBin = fileURLToPath(new URL('../../../bin/ekv.js', import.meta.url));
const readyTimeoutMs = 60_000;

export interface EkvNodeProcess {
  clusterFile: string;
  addr: string;
  /** The host's HTTP base URL (its /metrics carries the enclave's families for a loopback scrape). */
  http: string;
  pids: { host: number; enclave: number | null };
  stop(): Promise<void>;
}

/**
 * `profDir`: profile the node's processes with V8's sampling profiler (`--cpu-prof`), written when they exit:
 * the `ekv up` process (host proxy, blob store, emulated KMS and NSM) into `<profDir>/host`, the enclave
 * into `<profDir>/enclave` (through EKV_ENCLAVE_NODE_ARGS, the launcher's profiling-only flags).
 */
export async function startEkvNode(progress: (line: string) => void, extraArgs: string[] = [], profDir: string | null = null): Promise<EkvNodeProcess> {
  const dir = shortTempDir('ekv-bench-');
  // --cpu-prof is not allowed in NODE_OPTIONS: the host process gets it on its command line.
  const env = profDir === null ? process.env : { ...process.env, EKV_ENCLAVE_NODE_ARGS: `--cpu-prof --cpu-prof-dir=${profDir}/enclave` };
  const nodeArgs = profDir === null ? [] : ['--cpu-prof', `--cpu-prof-dir=${profDir}/host`];
  const child = spawn(process.execPath, [...nodeArgs, ekvBin, 'up', '--nodes', '1', '--dir', dir, '--json', '--log-level', 'warn', ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
  });
  child.stderr.on('data', (d: Buffer) => {
    for (const line of d.toString().split('\n')) if (line.trim()) progress(`[ekv up] ${line.slice(0, 300)}`);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    await stopChild(child, exited);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const ready = await readyLine(child.stdout, exited);
    const node = ready.nodes[0];
    if (!node) throw new Error('ekv up reported no node');
    progress(`ekv node on ${node.addr} (host pid ${child.pid}, enclave pid ${node.pids.enclave})`);
    return { clusterFile: ready.cluster, addr: node.addr, http: node.http, pids: { host: child.pid as number, enclave: node.pids.enclave }, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

interface Ready {
  cluster: string;
  nodes: Array<{ addr: string; http: string; pids: { enclave: number | null } }>;
}

function readyLine(stdout: NodeJS.ReadableStream, exited: Promise<void>): Promise<Ready> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error(`ekv up not ready within ${readyTimeoutMs} ms`)), readyTimeoutMs);
    void exited.then(() => reject(new Error('ekv up exited before it was ready')));
    stdout.on('data', (d: Buffer) => {
      text += d.toString();
      const nl = text.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      try {
        resolve(JSON.parse(text.slice(0, nl)) as Ready);
      } catch {
        reject(new Error(`unexpected ready line: ${text.slice(0, 200)}`));
      }
    });
  });
}
