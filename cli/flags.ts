/**
 * Numeric flags and the default cluster file, checked the same way by every command: a bad value is a usage
 * error (exit 2) naming the flag, never a NaN that surfaces later as "no frame within NaN ms".
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { loadCluster, type ClusterFile } from '../client/cluster.ts';
import { EkvError } from '../protocol/errors.ts';
import { UsageError } from './output.ts';

/** An integer flag in [min, max]; digits only (no 1e3, no 0x10, no "10ms"). */
export function intFlag(value: string, flag: string, min: number, max: number): number {
  const n = /^\d{1,15}$/.test(value.trim()) ? Number(value.trim()) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new UsageError(`${flag} must be a whole number from ${min} to ${max}, not ${JSON.stringify(value.slice(0, 40))}`);
  return n;
}

export const portFlag = (value: string, flag: string): number => intFlag(value, flag, 0, 65535);

const durationUnits: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** A duration with its unit (500ms, 30s, 5m, 1h, 2d) in milliseconds, in [1 ms, maxMs]; anything else exit 2. */
export function durationFlag(value: string, flag: string, maxMs: number): number {
  const m = /^(\d{1,12})(ms|s|m|h|d)$/.exec(value.trim());
  const ms = m ? Number(m[1]) * (durationUnits[m[2] as string] as number) : NaN;
  if (!m) throw new UsageError(`${flag} must be a duration with its unit (500ms, 30s, 5m, 1h, 2d), not ${JSON.stringify(value.slice(0, 40))}`);
  if (!Number.isSafeInteger(ms) || ms < 1 || ms > maxMs) throw new UsageError(`${flag} must be from 1ms to ${maxMs / 86_400_000}d, not ${JSON.stringify(value.slice(0, 40))}`);
  return ms;
}
/** --timeout: milliseconds, 1 ms .. 10 minutes. */
export const timeoutFlag = (value: string): number => intFlag(value, '--timeout', 1, 600_000);

/** Where a command finds the cluster file without --cluster: $EKV_CLUSTER, else .ekv/cluster.json (`npm start`), else ./cluster.json. */
export const defaultClusterCandidates = ['.ekv/cluster.json', './cluster.json'];

export function defaultClusterFile(env: NodeJS.ProcessEnv = process.env): string {
  if (env.EKV_CLUSTER) return env.EKV_CLUSTER;
  return defaultClusterCandidates.find((p) => existsSync(p)) ?? './cluster.json';
}

/** The usage error for a cluster file that is not there, naming every way to give one. */
export function missingClusterHint(path: string, env: NodeJS.ProcessEnv = process.env): string {
  if (existsSync(path)) return '';
  const how = env.EKV_CLUSTER ? `EKV_CLUSTER=${env.EKV_CLUSTER}` : `looked in ${defaultClusterCandidates.join(' and ')}`;
  return ` (${how}; pass --cluster FILE or set EKV_CLUSTER; \`npm start\` / \`ekv up\` write .ekv/cluster.json)`;
}

/** loadCluster, with the hint above when the file is missing. */
export function loadClusterFile(path: string, env: NodeJS.ProcessEnv = process.env): ClusterFile {
  try {
    return loadCluster(path);
  } catch (err) {
    const hint = missingClusterHint(path, env);
    if (hint && err instanceof EkvError) throw new EkvError(err.code, err.message + hint);
    throw err;
  }
}

export const logLevels = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

/** --log-level: one of pino's levels (exit 2 otherwise, not a stack trace from the logger). */
export function logLevelFlag(value: string): string {
  if (!(logLevels as readonly string[]).includes(value)) throw new UsageError(`--log-level must be one of ${logLevels.join(', ')}`);
  return value;
}

/** The local user's recovery member key beside a ring's cluster file (cli/local/ring.ts `recoveryKeyFile`). */
export const localOperatorKeyFile = 'recovery.key';

/**
 * The identity of an operator command (`ekv status`, `ekv dashboard`): --identity, else $EKV_IDENTITY, else
 * the recovery key `ekv up` made beside the cluster file (the local user is that ring's recovery member, so
 * its operator: docs/observability.md "Who sees counts"); null: anonymous (no counts in a closed ring).
 */
export function operatorIdentityPath(explicit: string | undefined, clusterPath: string, env: NodeJS.ProcessEnv = process.env): string | null {
  if (explicit !== undefined && explicit !== '') return explicit;
  if (env.EKV_IDENTITY !== undefined && env.EKV_IDENTITY !== '') return env.EKV_IDENTITY;
  const local = join(dirname(clusterPath), localOperatorKeyFile);
  return existsSync(local) ? local : null;
}
