/**
 * The trust flags of the commands that talk to nodes (put, get, del, status, attest, acl, ...):
 *   --pcr I=HEX (repeatable), --root PEM (repeatable), --allow-debug   the caller's own policy
 *   --ring HEX                                                         with --pcr: the deployment's ring id (a
 *                                                                      ring founded anew by a wiped node is refused)
 *   --trust-cluster-file                                               use the cluster file's trust section
 * With none of them, the cluster file's trust section is used only if this user's `ekv up` recorded it
 * in the trust store (cli/trust-store.ts); otherwise only the file's addresses are used, and a policy
 * with no PCR0 is refused. Never a merge of the caller's and the file's policies.
 */
import { readFileSync } from 'node:fs';
import { Option, type Command } from 'commander';
import type { ClusterFile } from '../client/cluster.ts';
import type { TrustPolicy } from '../client/trust.ts';
import { verifierLimits } from '../verifier/index.ts';
import { UsageError } from './output.ts';
import { isTrusted, trustStoreDir } from './trust-store.ts';

export interface TrustFlags {
  pcr?: string[];
  root?: string[];
  allowDebug?: boolean;
  ring?: string;
  trustClusterFile?: boolean;
}

/** How the policy was chosen, for `ekv status`: 'flags', 'cluster file (--trust-cluster-file)', ... */
export interface TrustFlagChoice {
  trust?: TrustPolicy;
  trustClusterFile?: boolean;
  /** Why the cluster file's section is (or is not) in force. */
  how: string;
}

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

export function trustOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--pcr <index=hex>', 'pin PCR <index> to <hex> (repeatable; repeat an index to allow several values); replaces the cluster file\'s trust').argParser(collect))
    .addOption(new Option('--root <pem>', 'trust this PEM root certificate file instead of the AWS Nitro root (repeatable); replaces the cluster file\'s trust').argParser(collect))
    .option('--allow-debug', 'with --pcr/--root: accept debug-mode enclaves (PCR0 all zeros)')
    .option('--ring <hex>', "with --pcr: pin the deployment's ring id (64 hex digits, shown by ekv status); a node of another ring is refused (WRONG_RING)")
    .option('--trust-cluster-file', "use the cluster file's trust section (roots, PCRs, allowDebug, allowAnyImage): whoever wrote the file chooses which enclaves you trust");
}

export function trustChoice(o: TrustFlags, cluster: ClusterFile | null, env: NodeJS.ProcessEnv = process.env): TrustFlagChoice {
  const callerGave = o.pcr !== undefined || o.root !== undefined || o.allowDebug === true;
  if (o.ring !== undefined) {
    if (!callerGave) throw new UsageError('--ring goes with --pcr (a cluster file\'s ring id is already kept under any trust policy)');
    if (!/^[0-9a-fA-F]{64}$/.test(o.ring)) throw new UsageError('--ring must be 64 hex digits');
  }
  if (callerGave && o.trustClusterFile) throw new UsageError('--trust-cluster-file cannot be combined with --pcr, --root or --allow-debug (policies are never merged)');
  if (callerGave) {
    const trust: TrustPolicy = o.allowDebug === true ? { allowDebug: true } : {};
    if (o.pcr) trust.pcrs = parsePcrs(o.pcr);
    if (o.root) trust.roots = o.root.map(readRoot);
    if (o.ring !== undefined) trust.ringId = o.ring.toLowerCase();
    return { trust, how: 'command-line flags (--pcr/--root)' };
  }
  if (o.trustClusterFile) return { trustClusterFile: true, how: 'cluster file (--trust-cluster-file)' };
  if (cluster !== null && isTrusted(cluster.trust, env)) {
    return { trustClusterFile: true, how: `cluster file (its trust section was recorded by your own ekv up in ${trustStoreDir(env)})` };
  }
  return { how: "default (the cluster file's trust section is not used: pass --pcr 0=HEX [--root PEM], or --trust-cluster-file)" };
}

export function parsePcrs(specs: string[]): Record<string, string[]> {
  const pcrs: Record<string, string[]> = {};
  for (const spec of specs) {
    const m = /^(\d{1,2})=((?:[0-9a-fA-F]{2})+)$/.exec(spec);
    const index = Number(m?.[1]);
    if (!m || index > verifierLimits.pcrIndexMax) throw new UsageError(`--pcr ${spec.slice(0, 80)} must be <index 0-31>=<hex>`);
    const hex = (m[2] as string).toLowerCase();
    if (!verifierLimits.pcrValueLengths.includes(hex.length / 2)) throw new UsageError(`--pcr ${index} must be 32, 48 or 64 bytes of hex`);
    (pcrs[String(index)] ??= []).push(hex);
  }
  return pcrs;
}

function readRoot(path: string): string {
  let pem: string;
  try {
    pem = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read --root ${path}: ${(err as Error).message}`);
  }
  if (!/-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----/.test(pem)) throw new UsageError(`--root ${path} holds no PEM certificate`);
  return pem;
}
