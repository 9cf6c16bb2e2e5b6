/**
 * Sealed persistence of one node: its identity key and partition, as a
 * write-ahead log and snapshots sealed under a KMS data key (enclave/seal).
 *
 * Records (CBOR): ['id', pkcs8] the node's identity key; ['e', key, value|null, version, requestId?] an
 * entry, with the request id of the write that made it ([session, seq], when the client gave one);
 * ['ring', ringId] the ring this node belongs to; ['served'] this node has served in it (docs/membership.md).
 * A snapshot is ['snap', pkcs8, [[key, value|null, version], ...], requests, ringId, served] where requests is
 * [[[session, seq, keyTag, version, deleted], ...], [[session, watermark], ...]] (the request table,
 * enclave/cluster/requests.ts); the table is rebuilt from the snapshot and the records after it.
 *
 * Durability: a write is applied (and answered) only after `record` resolved. When the host's blob
 * store fails, `record` rejects and the log stays unhealthy until `recover` manages to seal the whole
 * state as a snapshot again (SealedStore.resync): the node fails closed meanwhile and heals itself.
 *
 * The KMS key is the image's (enclave/image-config.ts), in both worlds: a host that chose it could
 * name a key it can decrypt itself. KMS is reached over TLS verified inside the enclave (the relay
 * sees ciphertext): against the public roots on Nitro, and locally against the root the enclave's own
 * NSM document chains to (the emulated KMS has a certificate from the emulator's CA), so a host that
 * runs a KMS of its own cannot stand in for KMS in either world.
 */
import net from 'node:net';
import type { Logger } from 'pino';
import { decodeCbor, encodeCbor } from '../protocol/cbor.ts';
import { generateIdentity, importIdentity, type Identity } from '../protocol/keys.ts';
import type { RingCredential } from '../protocol/ring.ts';
import type { Partition } from './kv/partition.ts';
import { encodeRequestTable, restoreRequestTable, RequestTable, requestIdToWire, wireRequestId, type RequestId } from './cluster/requests.ts';
import { keyId as ringKeyId } from './ring/index.ts';
import type { Nsm } from './nsm.ts';
import { createBlobClient, type BlobClient } from './seal/blob-client.ts';
import { hostCredentialsProvider } from './seal/credentials.ts';
import { loadOrCreateDataKey } from './seal/data-key.ts';
import { SealError } from './seal/errors.ts';
import { createEnclaveKms } from './seal/kms-client.ts';
import { SealedStore } from './seal/log.ts';
import { imageConfig, kmsKeyArnRegion, localKmsKeyArn, testUnsafeSkipKeyIdCheck } from './image-config.ts';
import { createRingSecret, openRingSecret, readRingSecretBlob, RingError, type RingSecretInit } from './seal/ring-secret.ts';
import { decodeGeneration, encodeGeneration, type Generation } from './recovery/generation.ts';

export const snapshotAfterRecords = 20_000;
/** Last known ring neighbours kept sealed (docs/recovery.md: where a restarting node looks for a live member). */
export const peersSealedMax = 8;

export interface SealConfig {
  /** The image's pinned key ARN. */
  keyArn: string;
  region: string;
  /** https://kms.<region>.amazonaws.com: the name the KMS certificate must carry. */
  endpoint: string;
  /** PEM roots the KMS certificate must chain to; null: the public roots (Nitro). */
  tlsRoots: string[] | null;
  /** Unix socket straight to KMS (Nitro: bridged to the parent's vsock-proxy); else the outbound relay. */
  kmsSocket: string | null;
  /** host:port the outbound relay connects to when there is no kmsSocket. */
  kmsAddr: string;
}

export class PersistError extends Error {
  readonly code = 'BAD_CONFIG';
}

const addrRe = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]{1,253}):\d{1,5}$/;

/**
 * Where the data key comes from: the image's pinned key ARN, through kms.<its region>.amazonaws.com over
 * TLS. The host chooses only the transport (EKV_KMS_SOCKET, a vsock-proxy bridge; or EKV_KMS_ADDR, where
 * the outbound relay connects), which the TLS check makes harmless. `trust` is what our own NSM document
 * says: on Nitro (production) the public roots verify KMS, locally the emulator's root does.
 */
export function sealConfigFrom(env: NodeJS.ProcessEnv, trust: { production: boolean; rootPem: string }): SealConfig | null {
  const keyArn = imageConfig.kmsKeyArn;
  if (trust.production) {
    if (testUnsafeSkipKeyIdCheck) throw new PersistError('this image was built with a test seam (skip the KMS KeyId check): refusing to run on Nitro');
    if (keyArn === '' || keyArn === localKmsKeyArn) {
      throw new PersistError('this image pins no KMS key ARN (build it with EKV_PINNED_KMS_KEY): refusing to run on Nitro without sealing under a known key');
    }
  }
  if (keyArn === '') return null;
  const region = kmsKeyArnRegion(keyArn);
  if (region === null) throw new PersistError(`the image's KMS key is not a key ARN: ${keyArn.slice(0, 200)}`);
  const host = `kms.${region}.amazonaws.com`;
  const kmsAddr = env.EKV_KMS_ADDR ?? `${host}:443`;
  if (!addrRe.test(kmsAddr)) throw new PersistError('EKV_KMS_ADDR must be host:port');
  return {
    keyArn, region, endpoint: `https://${host}`,
    tlsRoots: trust.production ? null : [trust.rootPem],
    kmsSocket: env.EKV_KMS_SOCKET ?? null,
    kmsAddr,
  };
}

/** One entry as the log records it. */
export interface LogEntry {
  key: Buffer;
  value: Buffer | null;
  version: number;
  /** The request id of the client write that made it (null: a copy pushed by sync, a pull, ...). */
  rid: RequestId | null;
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
  /** RECOVERY HOOK: the ring's generation as sealed (null: never reopened, generation 0; docs/recovery.md). */
  generation: Generation | null;
  /** RECOVERY HOOK: the addresses of this node's last known ring neighbours (where to look for a live member). */
  peers: string[];
}

export class Persistence {
  private constructor(
    private readonly store: SealedStore,
    private readonly blobs: BlobClient,
    private readonly identity: Identity,
    private readonly ringId: Buffer,
    private served: boolean,
    /** RECOVERY HOOK: the newest ['gen', ...] record, carried into every snapshot (docs/recovery.md). */
    private generation: Generation | null,
    private readonly partition: Partition,
    private readonly requests: RequestTable,
    private readonly logger: Logger,
  ) {}

  /** Record (once, durably) that this node serves in its ring. */
  async markServed(): Promise<void> {
    if (this.served) return;
    this.served = true;
    await this.store.append(encodeCbor(['served']));
  }

  /** RECOVERY HOOK: seal a reopened ring's generation (before the node serves in it). */
  async recordGeneration(g: Generation): Promise<void> {
    await this.store.append(encodeCbor(['gen', ...encodeGeneration(g)]));
    this.generation = g;
  }

  private peers: string[] = [];

  /** RECOVERY HOOK: seal this node's current ring neighbours' addresses (at most 8, from the ring's view). */
  async recordPeers(addrs: string[]): Promise<void> {
    const list = addrs.slice(0, peersSealedMax);
    await this.store.append(encodeCbor(['peers', list]));
    this.peers = list;
  }

  /** The last sequence number of the sealed log (the recovery digest's and `status`'s). */
  get lastSeq(): number {
    return this.store.stats().lastSeq;
  }

  /** Open (or create) the sealed state; rebuild `partition`; return the node's identity. */
  static async open(c: {
    config: SealConfig;
    nsm: Nsm;
    blobsSocket: string;
    outboundSocket: string;
    partition: Partition;
    /** Filled with the request ids found in the sealed state. */
    requests: RequestTable;
    logger: Logger;
    /** No join address: a node on its first boot may found a ring (and only then). */
    mayFound: boolean;
  }): Promise<{ persistence: Persistence; recovered: Recovered }> {
    const blobs = createBlobClient({ connect: () => net.connect(c.blobsSocket) });
    const kms = createEnclaveKms({
      endpoint: c.config.endpoint,
      region: c.config.region,
      keyArn: c.config.keyArn,
      ...(c.config.tlsRoots ? { tlsRoots: c.config.tlsRoots } : {}),
      credentials: hostCredentialsProvider(blobs),
      ...(testUnsafeSkipKeyIdCheck ? { unsafeSkipKeyIdCheck: true } : {}),
      connect: () => {
        if (c.config.kmsSocket) return net.connect(c.config.kmsSocket);
        const s = net.connect(c.outboundSocket);
        s.write(`EKV-CONNECT ${c.config.kmsAddr}\n`);
        return s;
      },
    });
    const attest = (publicKey: Uint8Array) => c.nsm.attest({ publicKey });
    const { dataKey, nodeId, created } = await loadOrCreateDataKey({ blobs, kms, attest }).catch((err: unknown) => {
      kms.destroy();
      throw err;
    });
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
    let generation: Generation | null = null;
    let peers: string[] = [];
    const peerList = (x: unknown): string[] | null =>
      Array.isArray(x) && x.length <= peersSealedMax && x.every((a) => typeof a === 'string' && a.length <= 300) ? (x as string[]) : null;
    let entries = 0;
    const apply = (rec: unknown) => {
      if (!Array.isArray(rec)) return;
      if (rec[0] === 'id' && rec[1] instanceof Uint8Array) identity = importIdentity(rec[1]);
      else if (rec[0] === 'ring' && rec[1] instanceof Uint8Array) sealedRing = Buffer.from(rec[1]);
      else if (rec[0] === 'served') served = true;
      else if (rec[0] === 'gen') generation = decodeGeneration(rec.slice(1)) ?? generation;
      else if (rec[0] === 'peers') peers = peerList(rec[1]) ?? peers;
      else if (rec[0] === 'e') {
        const [, k, v, n, r] = rec as [string, Uint8Array, Uint8Array | null, number, unknown];
        const key = Buffer.from(k);
        if (c.partition.apply(key, { value: v === null ? null : Buffer.from(v), version: n })) entries++;
        const rid = wireRequestId(r);
        if (rid) c.requests.add(rid, ringKeyId(key), { version: n, deleted: v === null });
      } else if (rec[0] === 'snap') {
        identity = importIdentity(rec[1] as Uint8Array);
        for (const e of rec[2] as unknown[]) apply(['e', ...(e as unknown[]).slice(0, 3)]);
        restoreRequestTable(c.requests, rec[3]);
        if (rec[4] instanceof Uint8Array) sealedRing = Buffer.from(rec[4]);
        if (rec[5] === true) served = true;
        if (Array.isArray(rec[6])) generation = decodeGeneration(rec[6]) ?? generation;
        peers = peerList(rec[7]) ?? peers;
      }
    };
    // Our own sealed state (authenticated, but still decoded strictly): a snapshot holds every entry,
    // so its item bound is its size, which the scan enforces anyway (an item is at least one byte).
    if (recovered.snapshot) apply(decodeCbor(recovered.snapshot, recovered.snapshot.length));
    for (const r of recovered.records) apply(decodeCbor(r));
    // A member has sealed records (its identity at least) or discarded tampered ones. A data key alone is
    // not membership: a founding boot that failed after creating it (KMS unavailable, say) may found again,
    // and a host that deletes the log but keeps the data key gains only what deleting everything gives it.
    const member = reset !== null || recovered.lastSeq > 0;
    let ring: { credential: RingCredential; founded: boolean };
    try {
      ring = await joinOrFoundRing({ blobs, kms, attest }, { member, mayFound: c.mayFound, sealedRing });
    } finally {
      kms.destroy();
    }
    const persistence = new Persistence(store, blobs, identity ?? generateIdentity(), ring.credential.id, served, generation, c.partition, c.requests, c.logger);
    persistence.peers = peers;
    if (identity === null) await store.append(encodeCbor(['id', persistence.identity.exportPrivate()]));
    if (sealedRing === null) await store.append(encodeCbor(['ring', ring.credential.id]));
    c.logger.info({ created, entries, lastSeq: recovered.lastSeq, reset, member, served, founded: ring.founded, ring: ring.credential.id.toString('hex').slice(0, 16) }, 'sealed state recovered');
    return {
      persistence,
      recovered: { identity: persistence.identity, entries, lastSeq: recovered.lastSeq, created, reset, ring: ring.credential, founded: ring.founded, member, served, generation, peers },
    };
  }

  /** False while the host's blob store fails: `record` rejects until `recover` succeeds. */
  get healthy(): boolean {
    return this.store.healthy;
  }

  /** Durable when resolved: the caller applies and acknowledges a write only after this. */
  async record(entries: LogEntry[]): Promise<void> {
    await Promise.all(entries.map((e) => this.store.append(encodeCbor(['e', e.key, e.value, e.version, e.rid ? requestIdToWire(e.rid) : null]))));
    if (this.store.stats().recordsSinceSnapshot > snapshotAfterRecords) void this.snapshot();
  }

  /**
   * After a failed write: make the log durable again, holding the partition (everything applied, all
   * of it durable before) plus `extra` (the writes whose outcome was unknown when the log failed: the
   * caller applies them once this resolves). Throws while the host still fails.
   */
  async recover(extra: LogEntry[]): Promise<void> {
    if (this.store.healthy) return this.record(extra);
    const byKey = new Map<string, unknown[]>();
    for (const e of this.partition.entries()) byKey.set(e.key.toString('latin1'), [e.key, e.value, e.version]);
    for (const e of extra) {
      const k = e.key.toString('latin1');
      const have = byKey.get(k);
      if (!have || (have[2] as number) < e.version) byKey.set(k, [e.key, e.value, e.version]);
    }
    await this.store.resync(encodeCbor(['snap', this.identity.exportPrivate(), [...byKey.values()], encodeRequestTable(this.requests), this.ringId, this.served, this.genField(), this.peers]));
  }

  private genField(): unknown[] | null {
    return this.generation ? encodeGeneration(this.generation) : null;
  }

  private snapshotting = false;

  async snapshot(): Promise<void> {
    if (this.snapshotting) return;
    this.snapshotting = true;
    try {
      const entries = [...this.partition.entries()].map((e) => [e.key, e.value, e.version]);
      await this.store.writeSnapshot(encodeCbor(['snap', this.identity.exportPrivate(), entries, encodeRequestTable(this.requests), this.ringId, this.served, this.genField(), this.peers]));
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
