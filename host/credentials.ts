/**
 * The host hands its instance role's credentials to the enclave, which has no network and so no IMDS.
 * IMDSv2: PUT /latest/api/token, then GET the role name and the role's credentials with that token. The
 * IMDS JSON is written, as it came, to the blob `aws-credentials.json` in the blob store's directory,
 * where the enclave's KMS client reads it (enclave/seal/credentials.ts). It is fetched again at half
 * the remaining lifetime (at most every 5 minutes, at least every second), so the enclave always finds
 * credentials that are not about to expire.
 *
 * The credentials are the host's own: handing them over adds no trust (the KMS key policy admits only
 * an attested Recipient of the pinned image, whatever credentials sign the request).
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';

export const credentialsBlobName = 'aws-credentials.json';
const tokenTtlS = 21_600;
const responseBytesMax = 8192;
const requestTimeoutMs = 5000;
const refreshMinMs = 1000;
const refreshMaxMs = 5 * 60_000;
const retryMs = 2000;

export interface CredentialRefresher {
  /** Fetch and write now; resolves with the Expiration written. */
  refresh(): Promise<string>;
  close(): void;
}

async function imdsText(url: string, init: RequestInit): Promise<string> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(requestTimeoutMs) });
  const body = await res.text();
  if (body.length > responseBytesMax) throw new Error(`IMDS answer over ${responseBytesMax} bytes`);
  if (!res.ok) throw new Error(`IMDS ${init.method ?? 'GET'} ${new URL(url).pathname}: HTTP ${res.status}`);
  return body;
}

/** The role's credentials as IMDS returns them (IMDSv2). */
export async function fetchRoleCredentials(imdsUrl: string): Promise<{ json: string; expiration: string }> {
  const base = imdsUrl.replace(/\/$/, '');
  const token = await imdsText(`${base}/latest/api/token`, { method: 'PUT', headers: { 'x-aws-ec2-metadata-token-ttl-seconds': String(tokenTtlS) } });
  const headers = { 'x-aws-ec2-metadata-token': token };
  const roles = await imdsText(`${base}/latest/meta-data/iam/security-credentials/`, { headers });
  const role = roles.split('\n')[0]?.trim() ?? '';
  if (!/^[\w+=,.@-]{1,128}$/.test(role)) throw new Error('IMDS lists no instance role');
  const json = await imdsText(`${base}/latest/meta-data/iam/security-credentials/${role}`, { headers });
  const parsed = JSON.parse(json) as { Code?: unknown; Expiration?: unknown; AccessKeyId?: unknown };
  if (parsed.Code !== 'Success' || typeof parsed.AccessKeyId !== 'string' || typeof parsed.Expiration !== 'string') {
    throw new Error(`IMDS credentials for ${role}: not a Success answer`);
  }
  return { json, expiration: parsed.Expiration };
}

/** Keep `dataDir/aws-credentials.json` fresh from IMDS until close(). The first refresh is the caller's to await. */
export function startCredentialRefresher(o: { imdsUrl: string; dataDir: string; logger: Logger; now?: () => number }): CredentialRefresher {
  const now = o.now ?? Date.now;
  mkdirSync(o.dataDir, { recursive: true, mode: 0o700 });
  let timer: NodeJS.Timeout | null = null;
  let closed = false;
  const schedule = (ms: number) => {
    if (closed) return;
    timer = setTimeout(() => void refresh().catch(() => undefined), ms);
    timer.unref();
  };
  const refresh = async (): Promise<string> => {
    if (timer) clearTimeout(timer);
    try {
      const { json, expiration } = await fetchRoleCredentials(o.imdsUrl);
      const path = join(o.dataDir, credentialsBlobName);
      const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
      await writeFile(tmp, json, { mode: 0o600 });
      await rename(tmp, path);
      const left = Date.parse(expiration) - now();
      schedule(Math.min(refreshMaxMs, Math.max(refreshMinMs, left / 2)));
      o.logger.debug({ expiration }, 'instance role credentials refreshed');
      return expiration;
    } catch (err) {
      o.logger.warn({ err: (err as Error).message }, 'cannot fetch the instance role credentials from IMDS; retrying');
      schedule(retryMs);
      throw err;
    }
  };
  return {
    refresh,
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
    },
  };
}
