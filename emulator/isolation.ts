// What the platform lets the launcher do to fence an enclave process in,
// probed once per process by running the wrappers on `true`:
// - `unshare -n` (root) or `unshare -r -n` (unprivileged user namespaces): a
//   fresh network namespace whose only interface is a down loopback, so the
//   enclave reaches nothing but the unix sockets and descriptors it is given.
// - `setpriv --pdeathsig KILL`: the kernel kills the enclave when the launcher
//   dies, so a crashed launcher leaves no orphan holding the node's sockets.
import { execFile } from 'node:child_process';

export interface Isolation {
  /** Command words to put before `node <image>`. */
  prefix: string[];
  networkIsolated: boolean;
  /** Why the enclave would keep the host's network, when it does. */
  reason: string | null;
}

const probeTimeoutMs = 5000;
let cached: Promise<Isolation> | null = null;

export function probeIsolation(): Promise<Isolation> {
  cached ??= probe();
  return cached;
}

async function probe(): Promise<Isolation> {
  const prefix: string[] = [];
  if (await succeeds('setpriv', ['--pdeathsig', 'KILL', 'true'])) prefix.push('setpriv', '--pdeathsig', 'KILL');
  for (const unshare of [['unshare', '-n'], ['unshare', '-r', '-n']]) {
    if (await succeeds(unshare[0] as string, [...unshare.slice(1), 'true'])) {
      return { prefix: [...prefix, ...unshare], networkIsolated: true, reason: null };
    }
  }
  const reason = process.platform === 'linux'
    ? '`unshare -n` failed: not root and user namespaces are unavailable'
    : `network namespaces do not exist on ${process.platform}`;
  return { prefix, networkIsolated: false, reason };
}

function succeeds(command: string, args: string[]): Promise<boolean> {
  return new Promise((resolve) => {
    execFile(command, args, { timeout: probeTimeoutMs }, (err) => resolve(err === null));
  });
}
