/**
 * An emulated EC2 instance metadata service (IMDSv2), just the part a Nitro parent instance's host uses:
 * a session token (PUT /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds), then the instance
 * role's temporary credentials (GET /latest/meta-data/iam/security-credentials/ and .../<role>, with
 * X-aws-ec2-metadata-token). Credentials rotate as EC2's do: a new set every `rotateEveryMs`, each valid
 * `lifetimeMs`. The emulated KMS accepts exactly the credentials issued here (`registry`).
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { CredentialRegistry, IssuedCredential } from './kms-auth.ts';

export interface ImdsInit {
  /** Default 6 h, as EC2. */
  lifetimeMs?: number;
  /** Default 1 h. */
  rotateEveryMs?: number;
  roleName?: string;
  now?: () => number;
}

export interface EmulatedImds {
  url: string;
  registry: CredentialRegistry;
  /** The set IMDS hands out now (issuing a new one when due). */
  current(): IssuedCredential & { secretAccessKey: string };
  /** Expire every credential issued so far and issue a new set (a test's forced rotation). */
  rotate(): void;
  close(): Promise<void>;
}

const tokenTtlMaxS = 21_600;
const issuedMax = 64;

export async function startEmulatedImds(init: ImdsInit = {}): Promise<EmulatedImds> {
  const now = init.now ?? Date.now;
  const lifetimeMs = init.lifetimeMs ?? 6 * 3600_000;
  const rotateEveryMs = init.rotateEveryMs ?? 3600_000;
  const role = init.roleName ?? 'ekv-node-role';
  const issued = new Map<string, IssuedCredential & { secretAccessKey: string; issuedAt: number }>();
  const tokens = new Map<string, number>();
  let latest: (IssuedCredential & { secretAccessKey: string; issuedAt: number }) | null = null;

  const issue = () => {
    const t = now();
    latest = {
      accessKeyId: `ASIA${randomBytes(8).toString('hex').toUpperCase()}`,
      secretAccessKey: randomBytes(30).toString('base64'),
      sessionToken: randomBytes(96).toString('base64'),
      expiresAt: t + lifetimeMs,
      issuedAt: t,
    };
    issued.set(latest.accessKeyId, latest);
    while (issued.size > issuedMax) issued.delete(issued.keys().next().value as string);
    return latest;
  };
  const current = () => (latest === null || now() - latest.issuedAt >= rotateEveryMs ? issue() : latest);

  const server = http.createServer((req, res) => {
    const send = (status: number, body: string, type = 'text/plain') => {
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    req.resume();
    const path = (req.url ?? '').split('?')[0];
    if (req.method === 'PUT' && path === '/latest/api/token') {
      const ttl = Number(req.headers['x-aws-ec2-metadata-token-ttl-seconds']);
      if (!Number.isInteger(ttl) || ttl < 1 || ttl > tokenTtlMaxS) return send(400, 'Bad Request');
      const token = randomBytes(32).toString('base64');
      tokens.set(token, now() + ttl * 1000);
      return send(200, token);
    }
    const token = req.headers['x-aws-ec2-metadata-token'];
    const until = typeof token === 'string' ? tokens.get(token) : undefined;
    if (until === undefined || now() >= until) return send(401, 'Unauthorized');
    const prefix = '/latest/meta-data/iam/security-credentials/';
    if (req.method !== 'GET' || !path?.startsWith(prefix)) return send(404, 'Not Found');
    const rest = path.slice(prefix.length);
    if (rest === '') return send(200, role);
    if (rest !== role) return send(404, 'Not Found');
    const c = current();
    return send(200, JSON.stringify({
      Code: 'Success', LastUpdated: new Date(c.issuedAt).toISOString(), Type: 'AWS-HMAC',
      AccessKeyId: c.accessKeyId, SecretAccessKey: c.secretAccessKey, Token: c.sessionToken,
      Expiration: new Date(c.expiresAt).toISOString(),
    }), 'application/json');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    registry: { lookup: (id) => issued.get(id) },
    current,
    rotate() {
      for (const c of issued.values()) c.expiresAt = Math.min(c.expiresAt, now());
      issue();
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
