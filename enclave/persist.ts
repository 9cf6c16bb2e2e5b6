/**
 * Sealed persistence of one node: its identity key, its ring, and the data core's log (enclave/data/:
 * configurations, acceptor state, range data, sessions), as a write-ahead log and snapshots sealed under a
 * KMS data key (enclave/seal).
 *
 * Records (CBOR): ['id', pkcs8] the node's identity key; ['ring', ringId] the ring this node belongs to;
 * ['served'] (older states; kept for status); ['d', record] one of the core's LogRecords
 * (enclave/cluster/data-wire.ts); ['dc', n, i, part] part i of n of one LogRecord too large for one sealed
 * record (consecutive; an incomplete last one is a torn tail and dropped). The bytes of a 'd' are one LogRecord
 * (a CBOR map) or a group of consecutive ones appended together (a CBOR array of their encodings,
 * data-wire.ts encodeLogGroup: one AEAD and one hash-chain step for all of them); an image from before grouping
 * refuses a group and fails to load, never skips it. A snapshot is
 * ['snap2', pkcs8, ringId, served, [record, ...]]: the core's whole durable state as LogRecords
 * (DataNode.durableRecords), taken at the position of the last record appended (log compaction).
 * Sealed state written by the earlier data path (['e', ...] entries, ['snap', ...]) keeps its identity and
 * ring; its entries are not migrated.
 *
 * Durability: `append` resolves when the records are on the host's disk (SealedStore group commit: append-only
 * segments, one request per turn, docs/durability.md T1-T6). When
 * the host's blob store fails, appends reject and the store stays broken until `recover` manages to seal
 * the core's whole state as a snapshot again (SealedStore.resync): the data driver fails closed meanwhile and
 * heals itself (enclave/data/driver.ts).
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
import { decodeLogRecord, decodeLogRecords, encodeLogGroup, encodeLogRecord } from './cluster/data-wire.ts';
import type { DataLog, LogRecord } from './data/index.ts';
import type { Nsm } from './nsm.ts';
import { createBlobClient, type BlobClient } from './seal/blob-client.ts';
import { hostCredentialsProvider } from './seal/credentials.ts';
import { loadOrCreateDataKey } from './seal/data-key.ts';
import { SealError } from './seal/errors.ts';
import { createEnclaveKms } from './seal/kms-client.ts';
import { nextTurn, SealedStore } from './seal/log.ts';
import { snapshotSliceBytes } from './seal/snapshot.ts';
import { imageConfig, kmsKeyArnRegion, localKmsKeyArn, testUnsafeSkipKeyIdCheck } from './image-config.ts';
import { createRingSecret, openRingSecret, readRingSecretBlob, RingError, type RingSecretInit } from './seal/ring-secret.ts';
import { decodeGeneration, encodeGeneration, type Generation } from './recovery/generation.ts';

export const snapshotAfterRecords = 20_000;
/** Log bytes appended since the last snapshot past which the next append also snapshots. */
export const snapshotAfterBytes = 64 * 1024 * 1024;
/** A LogRecord larger than this is sealed as consecutive parts (recordBytesMax is 1 MiB). */
export const recordPartBytes = 768 * 1024;
/** Log records sealed together in one grouped ['d'] record at most (each decode of a sealed record is item-bounded). */
export const groupRecordsMax = 1024;
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

export interface Recovered {
  identity: Identity;
  /** The data core's durable records (empty on first boot, or when the state was discarded). */
  records: LogRecord[];
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

/** What a snapshot carries besides the core's records, as of its position (S1). */
interface SnapshotFields {
  head: unknown[];
  tail: unknown[];
}

export class Persistence implements DataLog {
  private recovered: LogRecord[];
  private bytesSinceSnapshot = 0;
  /** LogRecords appended since the last snapshot (a grouped seal record holds many: count them, not seals). */
  private recordsSinceSnapshot = 0;
  private partId = 0;
  readonly stats = { appended: 0, snapshots: 0, snapshotFailures: 0, recoveries: 0 };

  private constructor(
    private readonly store: SealedStore,
    private readonly blobs: BlobClient,
    private readonly identity: Identity,
    private readonly ringId: Buffer,
    private readonly served: boolean,
    /** RECOVERY HOOK: the newest ['gen', ...] record, carried into every snapshot (docs/recovery.md). */
    private generation: Generation | null,
    records: LogRecord[],
    private readonly logger: Logger,
  ) {
    this.recovered = records;
  }

  /** RECOVERY HOOK: seal a reopened ring's generation (before the node serves in it). */
  async recordGeneration(g: Generation): Promise<void> {
    const sealed = this.store.append(encodeCbor(['gen', ...encodeGeneration(g)]));
    // Review-10 F2: the field a snapshot carries is the log's as of its position, so it changes when the record
    // is sealed (in log order), not when it is durable: a snapshot taken in between covers the record's position.
    const before = this.generation;
    this.generation = g;
    await sealed.catch((err: unknown) => {
      // Nothing newer sealed meanwhile: the failed record never counted (the store is broken anyway).
      if (this.generation === g) this.generation = before;
      throw err;
    });
  }

  /** The neighbours as of the newest sealed ['peers'] record (what a snapshot carries: review-10 F2). */
  private peers: string[] = [];
  /** The neighbours as of the newest durable ['peers'] record. */
  private durablePeers: string[] = [];

  /** RECOVERY HOOK: seal this node's current ring neighbours' addresses (at most 8, from the ring's view). */
  async recordPeers(addrs: string[]): Promise<void> {
    const list = addrs.slice(0, peersSealedMax);
    const sealed = this.store.append(encodeCbor(['peers', list]));
    this.peers = list;
    await sealed;
    this.durablePeers = list;
  }

  /** The neighbours' addresses sealed last (this boot's, or the recovered ones). */
  get sealedPeers(): readonly string[] {
    return this.durablePeers;
  }

  /** The last sequence number of the sealed log (the recovery digest's and `status`'s). */
  get lastSeq(): number {
    return this.store.stats().lastSeq;
  }

  /** The data core's records recovered at open and not yet loaded (the recovery digest reads them). */
  pendingRecords(): readonly LogRecord[] {
    return this.recovered;
  }

  /** Open (or create) the sealed state; return the node's identity, ring and the data core's records. */
  static async open(c: {
    config: SealConfig;
    nsm: Nsm;
    blobsSocket: string;
    outboundSocket: string;
    /** The image's range count (records naming another are refused). */
    shards: number;
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
    let records: LogRecord[] = [];
    let parts: { n: number; got: Buffer[] } | null = null;
    let generation: Generation | null = null;
    let peers: string[] = [];
    const peerList = (x: unknown): string[] | null =>
      Array.isArray(x) && x.length <= peersSealedMax && x.every((a) => typeof a === 'string' && a.length <= 300) ? (x as string[]) : null;
    const apply = (rec: unknown) => {
      if (!Array.isArray(rec)) return;
      if (rec[0] !== 'dc') parts = null; // parts are consecutive: a broken sequence is dropped
      if (rec[0] === 'id' && rec[1] instanceof Uint8Array) identity = importIdentity(rec[1]);
      else if (rec[0] === 'ring' && rec[1] instanceof Uint8Array) sealedRing = Buffer.from(rec[1]);
      else if (rec[0] === 'served') served = true;
      else if (rec[0] === 'gen') generation = decodeGeneration(rec.slice(1)) ?? generation; // RECOVERY HOOK
      else if (rec[0] === 'peers') peers = peerList(rec[1]) ?? peers;
      else if (rec[0] === 'd' && rec[1] instanceof Uint8Array) records.push(...decodeLogRecords(rec[1], c.shards));
      else if (rec[0] === 'dc') {
        const [, n, i, part] = rec as [string, unknown, unknown, unknown];
        if (typeof n !== 'number' || typeof i !== 'number' || !(part instanceof Uint8Array)) return;
        if (i === 0) parts = { n, got: [] };
        const p = parts as { n: number; got: Buffer[] } | null;
        if (p === null || p.n !== n || p.got.length !== i) {
          parts = null;
          return;
        }
        p.got.push(Buffer.from(part));
        if (p.got.length === n) {
          records.push(decodeLogRecord(Buffer.concat(p.got), c.shards));
          parts = null;
        }
      } else if (rec[0] === 'snap2') {
        identity = importIdentity(rec[1] as Uint8Array);
        if (rec[2] instanceof Uint8Array) sealedRing = Buffer.from(rec[2]);
        if (rec[3] === true) served = true;
        records = (rec[4] as unknown[]).map((r) => decodeLogRecord(r as Uint8Array, c.shards));
        if (Array.isArray(rec[5])) generation = decodeGeneration(rec[5]) ?? generation; // RECOVERY HOOK
        peers = peerList(rec[6]) ?? peers;
      } else if (rec[0] === 'snap') {
        // The earlier data path's snapshot: identity and ring only.
        identity = importIdentity(rec[1] as Uint8Array);
        if (rec[4] instanceof Uint8Array) sealedRing = Buffer.from(rec[4]);
        if (rec[5] === true) served = true;
      }
    };
    // Our own sealed state (authenticated, but still decoded strictly): a snapshot holds every entry,
    // so its item bound is its size, which the scan enforces anyway (an item is at least one byte).
    if (recovered.snapshot) apply(decodeCbor(recovered.snapshot, recovered.snapshot.length));
    for (const r of recovered.records) apply(decodeCbor(r, Math.max(r.length, 16)));
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
    const persistence = new Persistence(store, blobs, identity ?? generateIdentity(), ring.credential.id, served, generation, records, c.logger);
    persistence.peers = peers;
    persistence.durablePeers = peers;
    if (identity === null) await store.append(encodeCbor(['id', persistence.identity.exportPrivate()]));
    if (sealedRing === null) await store.append(encodeCbor(['ring', ring.credential.id]));
    // tornBytes: a torn tail cut off the newest segment (an append a crash interrupted: docs/durability.md T3).
    c.logger.info({ created, records: records.length, lastSeq: recovered.lastSeq, reset, member, served, founded: ring.founded, ring: ring.credential.id.toString('hex').slice(0, 16), tornBytes: store.stats().tornBytes }, 'sealed state recovered');
    return {
      persistence,
      recovered: { identity: persistence.identity, records, lastSeq: recovered.lastSeq, created, reset, ring: ring.credential, founded: ring.founded, member, served, generation, peers },
    };
  }

  // ---- the data core's log (DataLog, enclave/data/driver.ts) ----

  /** Seals each record now (in order); resolves once all are on the host's disk. */
  append(records: readonly LogRecord[]): Promise<void> {
    const done: Array<Promise<number>> = [];
    // Consecutive small records travel as one sealed record (['d', group]: one seal, one hash-chain step), at most
    // recordPartBytes and groupRecordsMax of them; a lone one as ['d', bytes]; a large one in parts (['dc', ...]).
    let group: Buffer[] = [];
    let groupBytes = 0;
    const flush = () => {
      if (group.length === 1) done.push(this.store.append(encodeCbor(['d', group[0]])));
      else if (group.length > 1) done.push(this.store.append(encodeCbor(['d', encodeLogGroup(group)])));
      group = [];
      groupBytes = 0;
    };
    for (const r of records) {
      const bytes = encodeLogRecord(r);
      this.bytesSinceSnapshot += bytes.length;
      this.recordsSinceSnapshot++;
      this.stats.appended++;
      if (bytes.length <= recordPartBytes) {
        if (groupBytes + bytes.length > recordPartBytes || group.length >= groupRecordsMax) flush();
        group.push(bytes);
        groupBytes += bytes.length + 8;
        continue;
      }
      flush();
      const n = Math.ceil(bytes.length / recordPartBytes);
      for (let i = 0; i < n; i++) done.push(this.store.append(encodeCbor(['dc', n, i, bytes.subarray(i * recordPartBytes, (i + 1) * recordPartBytes)])));
    }
    flush();
    if (done.length === 1) return (done[0] as Promise<number>).then(() => undefined);
    return Promise.all(done).then(() => undefined);
  }

  /** The records recovered at open (handed over once: the driver keeps its state from then on). */
  async load(): Promise<LogRecord[]> {
    const r = this.recovered;
    this.recovered = [];
    return r;
  }

  private genField(): unknown[] | null {
    return this.generation ? encodeGeneration(this.generation) : null;
  }

  private snapshotting = false;

  wantsSnapshot(): boolean {
    if (this.snapshotting || !this.store.healthy) return false;
    return this.recordsSinceSnapshot > snapshotAfterRecords || this.store.stats().recordsSinceSnapshot > snapshotAfterRecords || this.bytesSinceSnapshot > snapshotAfterBytes;
  }

  /**
   * A snapshot's bytes: `fields` taken when its position was (snapshotFields), the core's records encoded.
   * RECOVERY HOOK: the generation and the last known neighbours ride in every snapshot (fields 5 and 6).
   */
  private static snapshotOf(fields: SnapshotFields, encoded: Buffer[]): Buffer {
    return encodeCbor(['snap2', ...fields.head, encoded, ...fields.tail]);
  }

  private snapshotFields(): SnapshotFields {
    return { head: [this.identity.exportPrivate(), this.ringId, this.served], tail: [this.genField(), this.peers] };
  }

  private snapshotBytes(records: LogRecord[]): Buffer {
    return Persistence.snapshotOf(this.snapshotFields(), records.map(encodeLogRecord));
  }

  /** The running snapshot (encode, seal, store), awaited by close(). */
  private snapshotJob: Promise<void> = Promise.resolve();
  private closing = false;

  /**
   * Compaction: `records` is the core's state right after the last append, so the snapshot sits at that
   * position. Off the request path (docs/durability.md "Snapshots off the request path"): the position and
   * every field are taken now (S1; `records` is the core's copy, which it never changes afterwards), the
   * encoding and the sealing run a slice at a time between other event-loop turns, and the store keeps the
   * snapshot only if nothing newer was stored meanwhile (S2).
   */
  snapshot(records: LogRecord[]): void {
    this.snapshotting = true;
    this.bytesSinceSnapshot = 0;
    this.recordsSinceSnapshot = 0;
    const at = this.store.snapshotPoint();
    const fields = this.snapshotFields();
    const job = (async () => {
      const encoded: Buffer[] = [];
      let slice = 0;
      for (const r of records) {
        const bytes = encodeLogRecord(r);
        encoded.push(bytes);
        slice += bytes.length;
        if (slice >= snapshotSliceBytes) {
          slice = 0;
          await nextTurn();
          if (this.closing) return;
        }
      }
      await this.store.writeSnapshotAt(at, Persistence.snapshotOf(fields, encoded));
      this.stats.snapshots++;
    })();
    this.snapshotJob = job.then(
      () => undefined,
      (err: unknown) => {
        this.stats.snapshotFailures++;
        this.logger.error({ err: (err as Error).message }, 'snapshot failed');
      },
    ).finally(() => {
      this.snapshotting = false;
    });
  }

  /**
   * After a failed append: seal `records` (the failed core's whole state) as the log's content. A broken store
   * is resynced (SealedStore.resync: the failed records' positions are covered); a healthy one (the append
   * failed before it reached the store) gets a snapshot at its current position. Throws while the host fails.
   */
  async recover(records: LogRecord[]): Promise<void> {
    const bytes = this.snapshotBytes(records);
    if (this.store.healthy) await this.store.writeSnapshot(bytes);
    else await this.store.resync(bytes);
    if (!this.store.healthy) throw new Error('the sealed log is still failing');
    this.bytesSinceSnapshot = 0;
    this.recordsSinceSnapshot = 0;
    this.stats.recoveries++;
  }

  /** False while the host's blob store fails. */
  get healthy(): boolean {
    return this.store.healthy;
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.snapshotJob;
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
