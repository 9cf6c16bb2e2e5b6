/**
 * Sealed persistence of one node: its identity key and partition, as a
 * write-ahead log and snapshots sealed under a KMS data key (enclave/seal).
 *
 * Records (CBOR): ['id', pkcs8] the node's identity key; ['e', key, value|null, version] an entry;
 * ['ring', ringId] the ring this node belongs to; ['served'] this node has served in it (docs/membership.md).
 * A snapshot is ['snap', pkcs8, [[key, value|null, version], ...], ringId, served].
 *
 * On Nitro the KMS key and endpoint are the image's own (enclave/image-config.ts): a host that chose
 * them could name a key it can decrypt itself, or a fake KMS that hands the enclave a data key of the
 * host's choosing.
 */
import net from 'node:net';
import type { Logger } from 'pino';
import { decodeCbor, encodeCbor } from '../protocol/cbor.ts';
import { generateIdentity, importIdentity, type Identity } from '../protocol/keys.ts';
import type { RingCredential } from '../protocol/ring.ts';
import type { Partition } from './kv/partition.ts';
import type { Nsm } from './nsm.ts';
import { createBlobClient, type BlobClient } from './seal/blob-client.ts';
import { loadOrCreateDataKey } from './seal/data-key.ts';
import { SealError } from './seal/errors.ts';
import { createEnclaveKms } from './seal/kms-client.ts';
import { SealedStore } from './seal/log.ts';
import { createRingSecret, openRingSecret, readRingSecretBlob, RingError, type RingSecretInit } from './seal/ring-secret.ts';
import { imageConfig, kmsArnRegion } from './image-config.ts';

export const snapshotAfterRecords = 20_000;

export interface SealConfig {
  endpoint: string;
  region: string;
  keyId: string;
  /** Unix socket straight to KMS (Nitro: bridged to the parent's vsock-proxy); else the outbound relay. */
  kmsSocket: string | null;
}

export class PersistError extends Error {
  readonly code = 'BAD_CONFIG';
}

/**
 * Where the data key comes from. In production (the enclave's own document chains to the AWS Nitro root)
 * only the image's pinned key ARN counts, through the regional endpoint over verified TLS; the host may
 * only choose the transport socket (vsock-proxy), which TLS makes harmless. Under the emulator the
 * environment is honoured.
 */
export function sealConfigFrom(env: NodeJS.ProcessEnv, production: boolean): SealConfig | null {
  if (production) {
    const keyId = imageConfig.kmsKey;
    const region = kmsArnRegion(keyId);
    if (region === null) {
      throw new PersistError('this image has no pinned KMS key ARN (build it with EKV_PINNED_KMS_KEY): refusing to run on Nitro without sealing under a known key');
    }
    return { endpoint: `https://kms.${region}.amazonaws.com`, region, keyId, kmsSocket: env.EKV_KMS_SOCKET ?? null };
  }
  const keyId = env.EKV_KMS_KEY_ID ?? '';
  if (keyId === '') return null;
  const endpoint = env.EKV_KMS_ENDPOINT ?? `https://kms.${env.AWS_REGION ?? 'us-east-1'}.amazonaws.com`;
  if (!/^https?:\/\/[A-Za-z0-9.-]+(:\d{1,5})?\/?$/.test(endpoint)) throw new PersistError('EKV_KMS_ENDPOINT must be http(s)://host[:port]');
  return { endpoint, region: env.AWS_REGION ?? env.EKV_KMS_REGION ?? 'us-east-1', keyId, kmsSocket: env.EKV_KMS_SOCKET ?? null };
}

export interface Recovered {
  identity: Identity;
  /** Entries recovered from the sealed state (0 on first boot). */
  entries: number;
  lastSeq: number;
  created: boolean;
  /** Set when the sealed log failed verification and was discarded: the SealError code. */
  reset: string | null;
  /** The ring this node belongs to (its secret opened by KMS). */
  ring: RingCredential;
  /** True on the founding boot of a ring: this node created the ring secret just now. */
  founded: boolean;
  /** This node has been a ring member before (it has sealed records, or it discarded tampered ones). */
  member: boolean;
  /** This node has served in its ring (the sealed state that survived says so). */
  served: boolean;
}

export class Persistence {
  private constructor(
    private readonly store: SealedStore,
    private readonly blobs: BlobClient,
    private readonly identity: Identity,
    private readonly ringId: Buffer,
    private served: boolean,
    private readonly partition: Partition,
    private readonly logger: Logger,
  ) {}

  /** Record (once, durably) that this node serves in its ring. */
  async markServed(): Promise<void> {
    if (this.served) return;
    this.served = true;
    await this.store.append(encodeCbor(['served']));
  }

  /** Open (or create) the sealed state; rebuild `partition`; return the node's identity. */
  static async open(c: {
    config: SealConfig;
    nsm: Nsm;
    blobsSocket: string;
    outboundSocket: string;
    partition: Partition;
    logger: Logger;
    /** No join address: a node on its first boot may found a ring (and only then). */
    mayFound: boolean;
  }): Promise<{ persistence: Persistence; recovered: Recovered }> {
    const blobs = createBlobClient({ connect: () => net.connect(c.blobsSocket) });
    const url = new URL(c.config.endpoint);
    const port = url.port !== '' ? url.port : url.protocol === 'https:' ? '443' : '80';
    const kms = createEnclaveKms({
      endpoint: c.config.endpoint,
      region: c.config.region,
      connect: () => {
        if (c.config.kmsSocket) return net.connect(c.config.kmsSocket);
        const s = net.connect(c.outboundSocket);
        s.write(`EKV-CONNECT ${url.hostname}:${port}\n`);
        return s;
      },
    });
    const attest = (publicKey: Uint8Array) => c.nsm.attest({ publicKey });
    const { dataKey, nodeId, created } = await loadOrCreateDataKey({ blobs, kms, keyId: c.config.keyId, attest });
    let opened: Awaited<ReturnType<typeof SealedStore.open>>;
    let reset: string | null = null;
    try {
      opened = await SealedStore.open({ blobs, dataKey, nodeId });
    } catch (err) {
      if (!(err instanceof SealError) || err.code === 'SEAL_IO') throw err;
      // The host changed our sealed log. Nothing in it can be believed, so none of it is served:
      // start from an empty store (a new identity, so the ring treats us as a new node) and let
      // the ring hand us our keys from the replicas.
      reset = err.code;
      c.logger.error({ code: err.code, msg: err.message }, 'SEALED STATE REJECTED: starting empty; the ring restores this node from replicas');
      for (const name of await blobs.list('')) if (name.startsWith('wal-') || name.startsWith('snap-')) await blobs.delete(name);
      opened = await SealedStore.open({ blobs, dataKey, nodeId });
    }
    const { store, recovered } = opened;
    dataKey.fill(0);
    let identity: Identity | null = null;
    let sealedRing: Buffer | null = null;
    let served = false;
    let entries = 0;
    const apply = (rec: unknown) => {
      if (!Array.isArray(rec)) return;
      if (rec[0] === 'id' && rec[1] instanceof Uint8Array) identity = importIdentity(rec[1]);
      else if (rec[0] === 'ring' && rec[1] instanceof Uint8Array) sealedRing = Buffer.from(rec[1]);
      else if (rec[0] === 'served') served = true;
      else if (rec[0] === 'e') {
        const [, k, v, n] = rec as [string, Uint8Array, Uint8Array | null, number];
        if (c.partition.apply(Buffer.from(k), { value: v === null ? null : Buffer.from(v), version: n })) entries++;
      } else if (rec[0] === 'snap') {
        identity = importIdentity(rec[1] as Uint8Array);
        for (const e of rec[2] as unknown[]) apply(['e', ...(e as unknown[])]);
        if (rec[3] instanceof Uint8Array) sealedRing = Buffer.from(rec[3]);
        if (rec[4] === true) served = true;
      }
    };
    if (recovered.snapshot) apply(decodeCbor(recovered.snapshot));
    for (const r of recovered.records) apply(decodeCbor(r));
    // A member has sealed records (its identity at least) or discarded tampered ones. A data key alone is
    // not membership: a founding boot that failed after creating it (KMS unavailable, say) may found again,
    // and a host that deletes the log but keeps the data key gains only what deleting everything gives it.
    const member = reset !== null || recovered.lastSeq > 0;
    let ring: { credential: RingCredential; founded: boolean };
    try {
      ring = await joinOrFoundRing({ blobs, kms, keyId: c.config.keyId, attest }, { member, mayFound: c.mayFound, sealedRing });
    } finally {
      kms.destroy();
    }
    const persistence = new Persistence(store, blobs, identity ?? generateIdentity(), ring.credential.id, served, c.partition, c.logger);
    if (identity === null) await store.append(encodeCbor(['id', persistence.identity.exportPrivate()]));
    if (sealedRing === null) await store.append(encodeCbor(['ring', ring.credential.id]));
    c.logger.info({ created, entries, lastSeq: recovered.lastSeq, reset, member, served, founded: ring.founded, ring: ring.credential.id.toString('hex').slice(0, 16) }, 'sealed state recovered');
    return {
      persistence,
      recovered: { identity: persistence.identity, entries, lastSeq: recovered.lastSeq, created, reset, ring: ring.credential, founded: ring.founded, member, served },
    };
  }

  /** Durable when resolved: the caller acknowledges a write only after this. */
  async record(key: Buffer, value: Buffer | null, version: number): Promise<void> {
    await this.store.append(encodeCbor(['e', key, value, version]));
    if (this.store.stats().recordsSinceSnapshot > snapshotAfterRecords) void this.snapshot();
  }

  private snapshotting = false;

  async snapshot(): Promise<void> {
    if (this.snapshotting) return;
    this.snapshotting = true;
    try {
      const entries = [...this.partition.entries()].map((e) => [e.key, e.value, e.version]);
      await this.store.writeSnapshot(encodeCbor(['snap', this.identity.exportPrivate(), entries, this.ringId, this.served]));
    } catch (err) {
      this.logger.error({ err: (err as Error).message }, 'snapshot failed');
    } finally {
      this.snapshotting = false;
    }
  }

  async close(): Promise<void> {
    await this.store.flush().catch(() => undefined);
    await this.store.close();
    this.blobs.close();
  }
}

/**
 * Which ring this node is in (docs/membership.md). The ring's ciphertext from the host is opened by KMS;
 * without one, only a node on its very first boot (no data key, nothing discarded) with no join address
 * founds a new ring. A member never founds: a host that deleted the blob gets a node that refuses to start.
 * A blob that opens to another ring than the sealed state names is refused too (the host swapped it).
 */
async function joinOrFoundRing(
  init: RingSecretInit, s: { member: boolean; mayFound: boolean; sealedRing: Buffer | null },
): Promise<{ credential: RingCredential; founded: boolean }> {
  const blob = await readRingSecretBlob(init.blobs);
  let credential: RingCredential;
  let founded = false;
  if (blob !== null) credential = await openRingSecret(init, blob);
  else if (!s.member && s.mayFound && s.sealedRing === null) {
    credential = await createRingSecret(init);
    founded = true;
  } else if (s.member) {
    throw new RingError('NO_RING_SECRET', 'this node has been a ring member and has no ring-secret from its host: a member never founds a ring');
  } else {
    throw new RingError('NO_RING_SECRET', "joining a ring needs the ring's ring-secret blob from the host");
  }
  if (s.sealedRing !== null && !s.sealedRing.equals(credential.id)) {
    throw new RingError('WRONG_RING', 'the ring-secret from the host opens to another ring than this node belongs to');
  }
  return { credential, founded };
}
