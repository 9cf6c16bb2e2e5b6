/**
 * The emulated AWS KMS: an HTTP server on loopback that the unmodified
 * @aws-sdk/client-kms talks to with an endpoint override. It speaks the JSON 1.1
 * protocol (`POST /`, `X-Amz-Target: TrentService.<Op>`, content type
 * `application/x-amz-json-1.1`) and answers errors as KMS does (`__type`, HTTP
 * 400/500), so the SDK raises its usual exceptions. With `credentials`, a
 * request must carry current credentials that issuer handed out (kms-auth.ts);
 * SigV4 signatures themselves are not recomputed: access is decided by the key
 * policy and the attestation document. With `tls`, it serves HTTPS (a
 * certificate from the emulator's CA for kms.<region>.amazonaws.com), so an
 * emulated enclave verifies KMS as a Nitro enclave verifies the real one.
 *
 *   const kms = await startEmulatedKms({ keyPolicy: enclaveKeyPolicy({ pcr0 }), verifyRecipient, dir })
 *   new KMSClient({ endpoint: kms.url, region: 'us-east-1', credentials })
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { checkCredentials, type CredentialRegistry } from './kms-auth.ts';
import { KmsFault } from './kms-errors.ts';
import { KmsKeyRing } from './kms-keys.ts';
import { createKey, decrypt, encrypt, generateDataKey, generateRandom, type KmsOpsContext } from './kms-ops.ts';
import type { KmsKeyPolicy, RecipientDocument } from './kms-policy.ts';
import { kmsBodyBytesMax } from './kms-request.ts';

export { enclaveKeyPolicy, type KmsKeyPolicy, type KmsOperation, type RecipientDocument } from './kms-policy.ts';

export interface KmsLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface StartKmsInit {
  host?: '127.0.0.1';
  /** 0 (default) picks a free port. */
  port?: number;
  region?: string;
  /** The policy of the default key (applied at every start, as an operator applies the deployed policy) and of keys created later. */
  keyPolicy: KmsKeyPolicy;
  /** Verifies a Recipient attestation document; throws when it is not genuine (verifyAttestation bound to the emulator's root). */
  verifyRecipient: (doc: Uint8Array) => Promise<RecipientDocument>;
  /** Persist master keys here (kms-keys.json, mode 0600); in memory when absent. */
  dir?: string;
  /** The alias of the default key (default 'alias/ekv-seal'). */
  defaultAlias?: string;
  /** The key id (a UUID) of the default key, e.g. that of the local image's pinned ARN; random when absent. */
  defaultKeyId?: string;
  /** Serve HTTPS with this certificate (PEM) instead of HTTP. */
  tls?: { certPem: string; keyPem: string };
  /** Refuse requests without current credentials from this issuer (an emulated IMDS); unchecked when absent. */
  credentials?: CredentialRegistry;
  now?: () => number;
  logger?: KmsLogger;
}

export interface EmulatedKms {
  url: string;
  port: number;
  /** ARN of the default key. */
  defaultKeyId: string;
  defaultAlias: string;
  createKey(init?: { alias?: string; policy?: KmsKeyPolicy; description?: string }): { keyId: string; arn: string };
  close(): Promise<void>;
}

type Handler = (ctx: KmsOpsContext, body: Record<string, unknown>) => Promise<Record<string, unknown>>;
const handlers: Record<string, Handler> = {
  GenerateDataKey: generateDataKey,
  Decrypt: decrypt,
  Encrypt: encrypt,
  GenerateRandom: generateRandom,
  CreateKey: createKey,
};

export async function startEmulatedKms(init: StartKmsInit): Promise<EmulatedKms> {
  const region = init.region ?? 'us-east-1';
  const ring = new KmsKeyRing(region, init.dir ?? null);
  const defaultAlias = init.defaultAlias ?? 'alias/ekv-seal';
  const defaultKey = init.defaultKeyId !== undefined
    ? ring.get(init.defaultKeyId) ?? ring.create({ keyId: init.defaultKeyId, ...(ring.findAlias(defaultAlias) ? {} : { alias: defaultAlias }), policy: init.keyPolicy, description: 'ekv sealing' })
    : ring.findAlias(defaultAlias) ?? ring.create({ alias: defaultAlias, policy: init.keyPolicy, description: 'ekv sealing' });
  defaultKey.policy = init.keyPolicy;
  const ctx: KmsOpsContext = {
    ring,
    accountPolicy: init.keyPolicy,
    verifyRecipient: init.verifyRecipient,
    onDenied: (op, reason) => init.logger?.warn({ op, reason }, 'kms: access denied'),
  };
  const now = init.now ?? Date.now;
  const listener = (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (init.credentials) {
      try {
        checkCredentials(req, init.credentials, now());
      } catch (err) {
        req.resume();
        const fault = err as KmsFault;
        reply(res, fault.status, { __type: fault.type, message: fault.message });
        return;
      }
    }
    void serve(ctx, req, res);
  };
  const server = init.tls ? https.createServer({ cert: init.tls.certPem, key: init.tls.keyPem }, listener) : http.createServer(listener);
  server.requestTimeout = 15_000;
  server.headersTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(init.port ?? 0, init.host ?? '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  init.logger?.info({ port, defaultKeyId: defaultKey.arn }, 'emulated kms listening');
  return {
    url: `${init.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    port,
    defaultKeyId: defaultKey.arn,
    defaultAlias,
    createKey: (opts = {}) => {
      const key = ring.create({ policy: opts.policy ?? init.keyPolicy, ...(opts.alias ? { alias: opts.alias } : {}), description: opts.description ?? '' });
      return { keyId: key.keyId, arn: key.arn };
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function serve(ctx: KmsOpsContext, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  try {
    const op = operationOf(req);
    const body = await readJson(req);
    const handler = Object.hasOwn(handlers, op) ? handlers[op] : undefined;
    if (handler === undefined) throw new KmsFault('UnknownOperationException', `Operation ${op.slice(0, 64)} is not supported`);
    reply(res, 200, await handler(ctx, body));
  } catch (err) {
    const fault = err instanceof KmsFault ? err : new KmsFault('KMSInternalException', 'internal error');
    reply(res, fault.status, { __type: fault.type, message: fault.message });
  }
}

function operationOf(req: http.IncomingMessage): string {
  const target = req.headers['x-amz-target'];
  if (req.method !== 'POST' || typeof target !== 'string' || !target.startsWith('TrentService.')) {
    throw new KmsFault('UnknownOperationException', 'Expected POST with X-Amz-Target: TrentService.<Operation>');
  }
  if (!String(req.headers['content-type'] ?? '').startsWith('application/x-amz-json-1.1')) {
    throw new KmsFault('SerializationException', 'Content-Type must be application/x-amz-json-1.1');
  }
  return target.slice('TrentService.'.length);
}

/** Reads at most kmsBodyBytesMax bytes (checked against Content-Length first, then as they arrive). */
async function readJson(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > kmsBodyBytesMax) throw new KmsFault('ValidationException', 'request body too large');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > kmsBodyBytesMax) {
      req.destroy();
      throw new KmsFault('ValidationException', 'request body too large');
    }
    chunks.push(chunk);
  }
  let body: unknown;
  try {
    body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
  } catch {
    throw new KmsFault('SerializationException', 'request body is not JSON');
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new KmsFault('SerializationException', 'request body is not an object');
  return body as Record<string, unknown>;
}

function reply(res: http.ServerResponse, status: number, body: Record<string, unknown>): void {
  if (res.headersSent || res.destroyed) return;
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/x-amz-json-1.1',
    'content-length': Buffer.byteLength(text),
    'x-amzn-requestid': randomUUID(),
  });
  res.end(text);
}

