/**
 * The trust store: cluster trust sections this user has accepted, so that a cluster file written by
 * the user's own `ekv up` works without a flag (`npx ekv get k -c .ekv/cluster.json`), while a
 * cluster file from anyone else is used for its addresses only.
 *
 * An entry is a file named by the SHA-256 of the trust section's canonical JSON, in
 * `$EKV_TRUST_DIR` or `${XDG_CONFIG_HOME:-~/.config}/ekv/trusted/` (one file per entry: concurrent
 * writers never lose each other's entries). Only startLocalRing (`ekv up`, which created the emulated
 * CA and measured the image itself) writes here. A cluster file cannot add itself: what it names must
 * already be here, byte for byte. See docs/client-trust.md.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { resolveTrust, type TrustPolicy } from '../client/trust.ts';

export function trustStoreDir(env: NodeJS.ProcessEnv = process.env): string {
  const explicit = env['EKV_TRUST_DIR'];
  if (explicit) return explicit;
  return join(env['XDG_CONFIG_HOME'] || join(homedir(), '.config'), 'ekv', 'trusted');
}

/** Sorted keys at every level, so one policy has one fingerprint. */
function canonical(x: unknown): unknown {
  if (Array.isArray(x)) return x.map(canonical);
  if (x && typeof x === 'object') {
    return Object.fromEntries(Object.keys(x).sort().map((k) => [k, canonical((x as Record<string, unknown>)[k])]));
  }
  return x;
}

/** The fingerprint of a cluster file's trust section, as the client would use it. */
export function trustFingerprint(fileTrust: TrustPolicy): string {
  const { policy } = resolveTrust({ fileTrust, trustClusterFile: true });
  return createHash('sha256').update(JSON.stringify(canonical(policy))).digest('hex');
}

export function isTrusted(fileTrust: TrustPolicy, env: NodeJS.ProcessEnv = process.env): boolean {
  return existsSync(join(trustStoreDir(env), trustFingerprint(fileTrust)));
}

/** Record a trust section this user established (its own emulated CA and image). Returns the entry's path. */
export function rememberTrust(fileTrust: TrustPolicy, label: string, env: NodeJS.ProcessEnv = process.env): string {
  const dir = trustStoreDir(env);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, trustFingerprint(fileTrust));
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify({ label, added: new Date().toISOString() }) + '\n', { mode: 0o600 });
  renameSync(tmp, path);
  return path;
}
