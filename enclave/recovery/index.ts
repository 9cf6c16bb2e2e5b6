/**
 * Wiring of recovery mode into a node's boot (docs/recovery.md), kept out of enclave.ts but for two hooks:
 * `startRecovery` after the sealed state and the peer pool exist, and the handler's refusal while in recovery.
 *
 * A node on an image with recovery members, booting from sealed state that makes it a member (not the
 * founding boot), looks for a live member: an attested peer of its ring (same ring id, proven ring secret)
 * that answers `rcvAlive` as serving at the same generation. It asks the join address its host gave, for at
 * most recoveryProbeMs. None: recovery mode. The host can hide live members (then the node serves nothing),
 * not invent one (a live member needs the ring secret, an admitted image, and an open ring). When its sealed
 * records hold a configuration naming it, only a co-member of one counts (by attested id: review-15 F1b), one
 * its core's witness check must hear from.
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { recoveryPolicy, stateHash, type RecoveryPolicy, type StateDigest } from '../../protocol/recovery.ts';
import type { RingCredential } from '../../protocol/ring.ts';
import type { PeerPool } from '../cluster/peers.ts';
import type { Config, LogRecord } from '../data/types.ts';
import { nodeIdFromPublicKey } from '../ring/index.ts';
import type { Persistence } from '../persist.ts';
import { applyGeneration, RecoveryGate } from './gate.ts';
import type { Generation } from './generation.ts';

export { RecoveryGate, recoveryOps } from './gate.ts';

/** How long a restarting member looks for a live member before it comes up in recovery mode. */
export const recoveryProbeMs = 5000;
const probeIntervalMs = 250;
const probeCallMs = 1500;

/** The image's recovery policy, or null when it names no recovery members (no recovery mode). */
export function imageRecoveryPolicy(members: readonly string[] | undefined, threshold: number | undefined): RecoveryPolicy | null {
  if (!members || members.length === 0) return null;
  return recoveryPolicy(members, threshold ?? 1);
}

export interface StartRecoveryInit {
  policy: RecoveryPolicy;
  ring: RingCredential;
  sealed: Generation | null;
  identityKey: Buffer;
  persistence: Persistence;
  /** The number of keys with a value this node holds now (the open node's figures; cheap). */
  keys: () => number;
  peers: PeerPool;
  join: string | null;
  /** This node's own address (never probed) and its sealed last known neighbours (probed after `join`). */
  self: string;
  sealedPeers: string[];
  /** The ring's current neighbours (addresses), sealed when they change so a later boot knows whom to ask. */
  neighbours: () => string[];
  /** This boot founded the ring (nothing to recover). */
  founded: boolean;
  serving: () => boolean;
  /** On open: close the peer sessions set up at the old ring id (RecoveryGateInit.closePeerSessions). */
  closePeerSessions?: () => void;
  logger: Logger;
}

/** Apply the sealed generation, then decide: open at once, or recovery mode (the gate's `opened` waits). */
export async function startRecovery(c: StartRecoveryInit): Promise<RecoveryGate> {
  applyGeneration(c.ring, c.sealed);
  const generation = c.sealed?.generation ?? 0;
  const candidates = [...new Set([c.join ?? '', ...c.sealedPeers])].filter((a) => a !== '' && a !== c.self);
  // Review-15 F1b: with a sealed configuration naming this node, only a co-member of one (attested id) may vouch.
  const coMembers = sealedCoMembers(c.persistence.pendingRecords(), nodeIdFromPublicKey(c.identityKey));
  const via = c.founded ? null : await findLiveMember(c.peers, candidates, generation, coMembers, c.logger);
  const live = c.founded || via !== null;
  watchNeighbours(c);
  // The recovered state is the data core's sealed records, not yet replayed (in recovery mode the core does not start).
  const digest = (): StateDigest => ({ lastSeq: c.persistence.lastSeq, ...recordsDigest(c.persistence.pendingRecords()) });
  const gate = new RecoveryGate(
    {
      policy: c.policy, ring: c.ring, sealed: c.sealed, node: createHash('sha256').update(c.identityKey).digest(), digest,
      figures: () => ({ lastSeq: c.persistence.lastSeq, entries: c.keys() }),
      seal: (g) => c.persistence.recordGeneration(g), serving: c.serving, logger: c.logger,
      ...(c.closePeerSessions ? { closePeerSessions: c.closePeerSessions } : {}),
    },
    !live,
  );
  gate.liveVia = via;
  if (!live) {
    const s = gate.status();
    c.logger.warn(
      { generation, ring: c.ring.id.toString('hex').slice(0, 16), lastSeq: s.lastSeq, entries: s.entries, k: c.policy.threshold },
      'RECOVERY MODE: no live member of this ring; serving nothing until the recovery members open it',
    );
  }
  return gate;
}

/**
 * Review-15 F1b (docs/recovery.md, "Whom a member may count"): the attested ids of the other members of the
 * configurations naming this node in its sealed records, folded as the core's replay folds them (a higher
 * incarnation's mark discards the state before it; a range's last `cfg` is its configuration; named by ring id
 * and current incarnation). Null when none names it (a fresh node, a new incarnation not yet in a range) or its
 * incarnation retired: then any proven member may vouch. Empty when they name it alone: nobody may.
 */
export function sealedCoMembers(records: readonly LogRecord[], self: bigint): Set<bigint> | null {
  let inc = 0;
  let retiredInc = -1;
  const configs = new Map<number, Config>();
  for (const r of records) {
    if (r.t === 'mark' && r.inc > inc) {
      configs.clear();
      inc = r.inc;
    } else if (r.t === 'ret' && r.inc === inc) retiredInc = r.inc;
    else if (r.t === 'cfg') configs.set(r.shard, r.config);
  }
  if (retiredInc === inc) return null;
  let named = false;
  const out = new Set<bigint>();
  for (const c of configs.values()) {
    if (!c.members.some((m) => m.ring === self && m.inc === inc)) continue;
    named = true;
    for (const m of c.members) if (m.ring !== self) out.add(m.ring);
  }
  return named ? out : null;
}

/**
 * The address of one of `candidates` (the host's join address, then the last known neighbours) is an attested
 * member of our ring serving at our generation; with `coMembers` (not null), one whose attested id is in it, asked
 * pinned to that id. Ends early when those that answer are all recovering (or, with `coMembers`, not co-members).
 */
export async function findLiveMember(
  peers: Pick<PeerPool, 'call' | 'identify'>, candidates: string[], generation: number, coMembers: ReadonlySet<bigint> | null, logger: Logger,
): Promise<string | null> {
  if (candidates.length === 0 || coMembers?.size === 0) return null; // named alone: nobody can vouch
  const deadline = Date.now() + recoveryProbeMs;
  for (;;) {
    let recovering = 0;
    let unreachable = 0;
    let others = 0;
    for (const addr of candidates) {
      try {
        // The attested identity decides, never the address: a candidate in none of our configurations cannot vouch.
        const id = coMembers === null ? undefined : await peers.identify(addr);
        if (id !== undefined && !coMembers?.has(id)) {
          others++;
          continue;
        }
        const r = await peers.call(addr, 'rcvAlive', {}, probeCallMs, id);
        if (r.serving === true && r.gen === generation) return addr;
        if (r.recovery === true) recovering++; // it is recovering too: nobody there can vouch
      } catch (err) {
        unreachable++;
        logger.info({ addr, err: (err as Error).message }, 'recovery probe: no live member there yet');
      }
    }
    // Every candidate recovering, unreachable or no co-member, and some recovering: the ring is restarting as a whole.
    if ((recovering > 0 && recovering + unreachable + others === candidates.length) || Date.now() >= deadline) {
      if (others > 0) logger.info({ others }, 'recovery probe: candidates in none of this node\'s sealed configurations do not count');
      return null;
    }
    await new Promise((r) => setTimeout(r, probeIntervalMs));
  }
}

const neighboursCheckMs = 5000;

/** Seal the ring's neighbours whenever they change (checked every few seconds; bounded by peersSealedMax). */
export function watchNeighbours(c: Pick<StartRecoveryInit, 'sealedPeers' | 'neighbours' | 'self' | 'persistence' | 'logger'>): void {
  let last = [...c.sealedPeers].sort().join(',');
  let busy = false;
  const timer = setInterval(() => {
    const now = [...new Set(c.neighbours())].filter((a) => a !== c.self).sort();
    if (busy || now.length === 0 || now.join(',') === last) return;
    busy = true;
    c.persistence.recordPeers(now).then(
      () => (last = now.join(',')),
      (err: unknown) => c.logger.info({ err: (err as Error).message }, 'could not seal the ring neighbours'),
    ).finally(() => (busy = false));
  }, neighboursCheckMs);
  timer.unref();
}

/**
 * The digest of a node's recovered data (docs/recovery.md): the data core's sealed records folded per range as
 * its replay does (a range snapshot replaces the range, a write sets its key), then the keys with a value
 * hashed with their versions and values (order-independent). Tombstones count as entries of the hash, not as keys.
 */
export function recordsDigest(records: readonly LogRecord[]): { entries: number; stateHash: Buffer } {
  const ranges = new Map<number, Map<string, { value: string | null; version: number }>>();
  const range = (s: number) => {
    let m = ranges.get(s);
    if (!m) ranges.set(s, (m = new Map()));
    return m;
  };
  for (const r of records) {
    if (r.t === 'snap') ranges.set(r.shard, new Map([...r.data].map(([k, e]) => [k, { value: e.value, version: e.version }])));
    else if (r.t === 'w' && r.op.key !== null && r.op.entry !== null) range(r.shard).set(r.op.key, { value: r.op.entry.value, version: r.op.entry.version });
  }
  const rows: Array<{ key: Uint8Array; version: number; value: Uint8Array | null }> = [];
  let entries = 0;
  for (const m of ranges.values()) {
    for (const [k, e] of m) {
      if (e.value !== null) entries++;
      rows.push({ key: Buffer.from(k, 'latin1'), version: e.version, value: e.value === null ? null : Buffer.from(e.value, 'latin1') });
    }
  }
  return { entries, stateHash: stateHash(rows) };
}
