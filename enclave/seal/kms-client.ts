/**
 * The enclave's KMS client: the real @aws-sdk/client-kms, whose every
 * connection is a socket the caller provides (the host's outbound relay; the
 * enclave has no network interface). For an https endpoint the TLS session runs
 * inside the enclave over that socket, so the relay only sees ciphertext.
 *
 * The client is bound to one key, the image's pinned key ARN: every request names it, and an answer
 * whose KeyId is not exactly that ARN is refused (KMS_WRONG_KEY). Without this, Decrypt of a blob the
 * host planted (made under a key of the host's) would hand the enclave a data key the host knows.
 *
 * Data keys are requested with a Recipient: a fresh RSA-2048 key pair per call,
 * an attestation document carrying its public key, and the key coming back only
 * as CiphertextForRecipient, opened here (cms.ts). The plaintext data key never
 * crosses the relay; the CiphertextBlob is what the host may store.
 */
import { m } from '../metrics.ts';
import { generateKeyPair, type KeyObject } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import tls from 'node:tls';
import { DecryptCommand, GenerateDataKeyCommand, KMSClient, type KMSClientConfig } from '@aws-sdk/client-kms';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { openRecipientCms } from './cms.ts';
import { KmsError, type KmsErrorCode } from './errors.ts';

/** Given our ephemeral RSA public key (SPKI DER), returns an NSM attestation document whose public_key is it. */
export type AttestFn = (rsaPublicKeyDer: Uint8Array) => Promise<Uint8Array>;

export interface EnclaveKmsInit {
  /** e.g. https://kms.us-east-1.amazonaws.com, or http://kms.local for the emulator through the relay. */
  endpoint: string;
  region: string;
  /** A socket connected (or connecting) to the KMS endpoint, e.g. through the host's outbound relay. */
  connect: () => net.Socket;
  /** The key ARN every call names and every answer must name. */
  keyArn: string;
  /** For https: the roots the KMS certificate must chain to; absent: Node's public roots (production). */
  tlsRoots?: string[];
  /** Static credentials or a provider the SDK calls again before they expire (host-config credentials). */
  credentials?: KMSClientConfig['credentials'];
  /**
   * Test-only: Decrypt without naming the key and without checking the KeyId of answers, as before
   * issue 10, so the planted-datakey attack test can show it would catch the hole. Set only by an image
   * built with the test seam (image-config testUnsafeSkipKeyIdCheck), which a Nitro enclave refuses to run.
   */
  unsafeSkipKeyIdCheck?: boolean;
  /** Per request (default 15 s). */
  requestTimeoutMs?: number;
}

export interface GeneratedDataKey {
  /** 32 bytes; stays in the enclave. Wipe it (fill(0)) when no longer needed. */
  plaintextKey: Buffer;
  /** Opaque KMS blob for the host to store; Decrypt turns it back into the key. */
  ciphertextBlob: Uint8Array;
  /** The key ARN KMS reports. */
  keyId: string;
}

export interface DataKeyOptions {
  /** Bound into the CiphertextBlob by KMS; Decrypt needs the same context. */
  encryptionContext?: Record<string, string>;
}

export interface EnclaveKms {
  /** The pinned key ARN. */
  readonly keyArn: string;
  generateDataKey(attest: AttestFn, opts?: DataKeyOptions): Promise<GeneratedDataKey>;
  decryptDataKey(ciphertextBlob: Uint8Array, attest: AttestFn, opts?: DataKeyOptions): Promise<Buffer>;
  destroy(): void;
}

export const dataKeyBytes = 32;
const ciphertextBlobBytesMax = 6144;

class RelayHttpAgent extends http.Agent {
  constructor(private readonly connectFn: () => net.Socket) {
    super({ keepAlive: true, maxSockets: 4 });
  }
  override createConnection(): net.Socket {
    return this.connectFn();
  }
}

class RelayHttpsAgent extends https.Agent {
  constructor(private readonly connectFn: () => net.Socket, private readonly servername: string, private readonly roots: string[] | undefined) {
    super({ keepAlive: true, maxSockets: 4 });
  }
  override createConnection(): tls.TLSSocket {
    // The certificate must chain to `roots` (or the public roots) and name `servername`: the relay, and a
    // host running a KMS of its own, cannot stand in for KMS.
    return tls.connect({ socket: this.connectFn(), servername: this.servername, ...(this.roots ? { ca: this.roots } : {}), rejectUnauthorized: true });
  }
}

export function createEnclaveKms(init: EnclaveKmsInit): EnclaveKms {
  const url = new URL(init.endpoint);
  const httpAgent = new RelayHttpAgent(init.connect);
  const httpsAgent = new RelayHttpsAgent(init.connect, url.hostname, init.tlsRoots);
  const keyArn = init.keyArn;
  const expect = init.unsafeSkipKeyIdCheck === true ? () => undefined : (op: string, got: unknown) => expectKey(op, keyArn, got);
  const client = new KMSClient({
    endpoint: init.endpoint,
    region: init.region,
    ...(init.credentials === undefined ? {} : { credentials: init.credentials }),
    maxAttempts: 2,
    requestHandler: new NodeHttpHandler({ httpAgent, httpsAgent, requestTimeout: init.requestTimeoutMs ?? 15_000 }),
  });
  return {
    keyArn,
    generateDataKey: async (attest, opts = {}) => {
      const out = await counted('GenerateDataKey', generate(client, keyArn, attest, opts));
      try {
        expect('GenerateDataKey', out.keyId);
      } catch (err) {
        out.plaintextKey.fill(0);
        throw err;
      }
      return out;
    },
    decryptDataKey: async (blob, attest, opts = {}) => {
      const out = await counted('Decrypt', decryptKey(client, init.unsafeSkipKeyIdCheck === true ? null : keyArn, blob, attest, opts));
      try {
        expect('Decrypt', out.keyId);
      } catch (err) {
        out.key.fill(0);
        throw err;
      }
      return out.key;
    },
    destroy: () => {
      client.destroy();
      httpAgent.destroy();
      httpsAgent.destroy();
    },
  };
}

/** Counts and times one KMS call by operation and result (the error's code, never its message). */
async function counted<T>(op: string, p: Promise<T>): Promise<T> {
  const started = process.hrtime.bigint();
  try {
    const out = await p;
    m.kmsCalls.inc({ op, result: 'ok' });
    return out;
  } catch (err) {
    m.kmsCalls.inc({ op, result: err instanceof KmsError ? err.code : 'error' });
    throw err;
  } finally {
    m.kmsSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9, { op });
  }
}

interface Recipient {
  privateKey: KeyObject;
  document: Uint8Array;
}

async function recipient(attest: AttestFn): Promise<Recipient> {
  const { publicKey, privateKey } = await new Promise<{ publicKey: KeyObject; privateKey: KeyObject }>((resolve, reject) =>
    generateKeyPair('rsa', { modulusLength: 2048 }, (err, pub, priv) => (err ? reject(err) : resolve({ publicKey: pub, privateKey: priv }))),
  );
  let document: Uint8Array;
  try {
    document = await attest(publicKey.export({ format: 'der', type: 'spki' }));
  } catch (cause) {
    throw new KmsError('KMS_ATTESTATION', 'no attestation document for the KMS recipient key', { cause });
  }
  return { privateKey, document };
}

async function generate(client: KMSClient, keyId: string, attest: AttestFn, opts: DataKeyOptions): Promise<GeneratedDataKey> {
  const r = await recipient(attest);
  const out = await send(() =>
    client.send(
      new GenerateDataKeyCommand({
        KeyId: keyId,
        KeySpec: 'AES_256',
        ...(opts.encryptionContext ? { EncryptionContext: opts.encryptionContext } : {}),
        Recipient: { KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256', AttestationDocument: r.document },
      }),
    ),
  );
  const blob = out.CiphertextBlob;
  if (!(blob instanceof Uint8Array) || blob.length === 0 || blob.length > ciphertextBlobBytesMax) {
    throw new KmsError('KMS_BAD_RESPONSE', 'GenerateDataKey returned no usable CiphertextBlob');
  }
  const plaintextKey = openDataKey(out, r.privateKey);
  return { plaintextKey, ciphertextBlob: blob, keyId: typeof out.KeyId === 'string' ? out.KeyId : '' };
}

/** KMS names the key it used by its ARN; anything else (another key, an alias, nothing) is refused. */
function expectKey(op: string, keyArn: string, got: unknown): void {
  if (got !== keyArn) {
    throw new KmsError('KMS_WRONG_KEY', `${op} answered for key ${typeof got === 'string' ? got.slice(0, 128) : 'none'}, not the pinned ${keyArn}`);
  }
}

async function decryptKey(client: KMSClient, keyArn: string | null, blob: Uint8Array, attest: AttestFn, opts: DataKeyOptions): Promise<{ key: Buffer; keyId: unknown }> {
  if (blob.length === 0 || blob.length > ciphertextBlobBytesMax) throw new KmsError('KMS_INVALID_CIPHERTEXT', 'stored CiphertextBlob has a bad size');
  const r = await recipient(attest);
  const out = await send(() =>
    client.send(
      new DecryptCommand({
        CiphertextBlob: blob,
        // Named, so that KMS itself refuses a blob made under any other key (IncorrectKeyException).
        ...(keyArn === null ? {} : { KeyId: keyArn }),
        ...(opts.encryptionContext ? { EncryptionContext: opts.encryptionContext } : {}),
        Recipient: { KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256', AttestationDocument: r.document },
      }),
    ),
  );
  return { key: openDataKey(out, r.privateKey), keyId: out.KeyId };
}

/** A key sent in clear would have crossed the relay: refuse it even if the rest looks fine. */
function openDataKey(out: { Plaintext?: Uint8Array; CiphertextForRecipient?: Uint8Array }, privateKey: KeyObject): Buffer {
  if (out.Plaintext !== undefined && out.Plaintext.length > 0) throw new KmsError('KMS_BAD_RESPONSE', 'KMS returned a plaintext key to a Recipient request');
  if (!(out.CiphertextForRecipient instanceof Uint8Array)) throw new KmsError('KMS_BAD_RESPONSE', 'no CiphertextForRecipient');
  const key = openRecipientCms(out.CiphertextForRecipient, privateKey);
  if (key.length !== dataKeyBytes) {
    key.fill(0);
    throw new KmsError('KMS_BAD_RESPONSE', `data key of ${key.length} bytes`);
  }
  return key;
}

const sdkErrorCodes: Record<string, KmsErrorCode> = {
  AccessDeniedException: 'KMS_DENIED',
  InvalidCiphertextException: 'KMS_INVALID_CIPHERTEXT',
  IncorrectKeyException: 'KMS_WRONG_KEY',
  NotFoundException: 'KMS_NOT_FOUND',
  UnrecognizedClientException: 'KMS_CREDENTIALS',
  ExpiredTokenException: 'KMS_CREDENTIALS',
  MissingAuthenticationTokenException: 'KMS_CREDENTIALS',
  InvalidSignatureException: 'KMS_CREDENTIALS',
  CredentialsProviderError: 'KMS_CREDENTIALS',
};

async function send<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (err instanceof KmsError) throw err; // e.g. KMS_CREDENTIALS from the credentials provider
    const name = (err as { name?: unknown }).name;
    const code = (typeof name === 'string' && Object.hasOwn(sdkErrorCodes, name) ? sdkErrorCodes[name] : undefined) ?? 'KMS_UNAVAILABLE';
    throw new KmsError(code, `KMS: ${typeof name === 'string' ? name : 'error'}: ${String((err as Error).message).slice(0, 200)}`, { cause: err });
  }
}
