/**
 * Rejoining after a restart (docs/membership.md, "Restarts"). A member restarted with no join address from its
 * host, or one whose join address is down (the first node of a whole-ring restart, the ring's founder restarted
 * after the others), comes up as a Chord ring of one, and nobody else's ring names it: its data core then hears
 * from no peer, and with boot fencing every range it is in waits for it (docs/consistency.md, B5). So while the
 * node finds itself alone on the ring for a while, it asks the neighbours it sealed (the last addresses its ring
 * view named), one after the other, and joins through the first that answers. A node stuck joining for longer
 * (its join address is down, or is itself joining: two relaunched nodes each given the other's address, and a
 * joining node answers no lookup) does the same.
 *
 * Merging (review-5 J2): two groups that each formed a ring (the host partitioned a whole-ring restart, or nodes
 * came up in an order that paired them off) would never merge, since nobody is alone. So a node in a ring checks,
 * every few seconds, one of those neighbours at a time: it looks the neighbour's id up in its own ring, and when
 * the answer is another node twice in a row and the neighbour is active in a ring of its own (it names another
 * node), it rejoins through it. Its former ring-mates still point at it, so Chord's stabilize pulls the two rings
 * into one (each node adopts the closer successor it learns of: the interleaving a join seeds).
 *
 * The addresses are hints, never trust: a peer counts only after the attested, ring-secret handshake
 * (PeerPool.identify), and data authority stays with the data core's decided configurations. The host can hide
 * every peer (liveness), not invent one.
 */
import type { Logger } from 'pino';
import type { PeerPool } from './peers.ts';
import type { RingDriver } from './ring-driver.ts';

export interface RejoinInit {
  ring: RingDriver;
  peers: Pick<PeerPool, 'identify' | 'call'>;
  /** Addresses to try, in order (the sealed neighbours; this node's own address is skipped). */
  candidates: () => readonly string[];
  logger: Logger;
  /** How often to look (default 1000 ms). */
  everyMs?: number;
  /** How long the node must have been alone before it asks (default 2500 ms: a join in progress finishes first). */
  aloneMs?: number;
  /** How long a join may go on before another neighbour is tried (default 6000 ms). */
  joiningMs?: number;
  /** How often (on average) a node in a ring checks one sealed neighbour is in the same ring (default 5000 ms). */
  mergeEveryMs?: number;
}

/** Whether the ring view names no node but this one (no successor or predecessor other than itself). */
export function aloneOnRing(ring: RingDriver): boolean {
  const core = ring.core;
  const self = ring.self.id;
  if (core.status !== 'active') return false;
  return core.successors.every((s) => s.id === self) && (core.predecessor === null || core.predecessor.id === self);
}

const statusTimeoutMs = 3000;

/** A status answer of a node in recovery mode (docs/recovery.md): its ring has not started. */
function inRecoveryMode(st: Record<string, unknown>): boolean {
  const rec = st.recovery;
  return rec !== null && typeof rec === 'object' && (rec as { mode?: unknown }).mode === 'recovery';
}

function refId(v: unknown): bigint | null {
  return v instanceof Uint8Array && v.length === 32 ? BigInt('0x' + Buffer.from(v).toString('hex')) : null;
}

export function rejoinWhenAlone(o: RejoinInit): { stop(): void } {
  const every = o.everyMs ?? 1000;
  const aloneMs = o.aloneMs ?? 2500;
  const joiningMs = o.joiningMs ?? 6000;
  let aloneSince: number | null = null;
  let busy = false;
  let next = 0;
  const stuck = (): boolean => aloneOnRing(o.ring) || o.ring.core.status === 'joining';
  // Only through a node that answers lookups (active: a joining node drops them, and two nodes joining through
  // each other wait forever). Two nodes both alone: the one with the higher id joins the other, never both.
  // `joining`: the candidate answered that it is joining itself.
  const joinable = async (addr: string, id: bigint): Promise<{ join: boolean; joining: boolean }> => {
    const st = await o.peers.call(addr, 'status', {}, statusTimeoutMs);
    // Review-16 F2: a node in recovery mode has not started its ring (its status shows a ring of one, 'active') and
    // answers no ring operation: as good as down here (no join through it, and it is not one of the joining).
    if (inRecoveryMode(st)) return { join: false, joining: false };
    if (st.ring !== 'active') return { join: false, joining: st.ring === 'joining' };
    const succ = Array.isArray(st.successors) ? st.successors : [];
    // Its successors other than itself and us (one that names us is about to notify us: Chord's stabilize).
    const others = succ.filter((x) => {
      const sid = x !== null && typeof x === 'object' ? refId((x as { id?: unknown }).id) : null;
      return sid !== null && sid !== id && sid !== o.ring.self.id;
    });
    return { join: others.length > 0 || o.ring.core.status === 'joining' || id < o.ring.self.id, joining: false };
  };
  // ---- merging two rings (above) ----
  const mergeEvery = o.mergeEveryMs ?? 5000;
  const jitter = (): number => mergeEvery * (0.5 + Math.random());
  let mergeAt = Date.now() + jitter();
  let mergeNext = 0;
  const apart = new Map<string, number>(); // candidate -> checks in a row that found it outside our ring
  const othersIn = (st: Record<string, unknown>, id: bigint): number => {
    const succ = Array.isArray(st.successors) ? st.successors : [];
    return succ.filter((x) => {
      const sid = x !== null && typeof x === 'object' ? refId((x as { id?: unknown }).id) : null;
      return sid !== null && sid !== id && sid !== o.ring.self.id;
    }).length;
  };
  const mergeCheck = async (): Promise<void> => {
    const list = o.candidates().filter((a) => a !== o.ring.self.addr);
    if (list.length === 0) return;
    const addr = list[mergeNext++ % list.length] as string;
    let id: bigint;
    try {
      id = await o.peers.identify(addr);
    } catch {
      apart.delete(addr);
      return; // down or refused
    }
    if (id === o.ring.self.id) return;
    const core = o.ring.core;
    if (core.successors.some((x) => x.id === id) || core.predecessor?.id === id) {
      apart.delete(addr);
      return;
    }
    const found = await Promise.race([
      o.ring.lookup(id).then((r) => r.owner.id, () => null),
      new Promise<null>((r) => setTimeout(() => r(null), statusTimeoutMs).unref()),
    ]);
    if (found === null || found === id) {
      if (found === id) apart.delete(addr);
      return;
    }
    const n = (apart.get(addr) ?? 0) + 1;
    apart.set(addr, n);
    if (n < 2) return; // once may be a ring still stabilizing
    const st = await o.peers.call(addr, 'status', {}, statusTimeoutMs);
    // Only into a ring: a lone node (or one in recovery mode, whose ring has not started) finds its own way.
    if (st.ring !== 'active' || inRecoveryMode(st) || othersIn(st, id) === 0) return;
    if (stuck() || o.ring.core.status !== 'active') return;
    apart.delete(addr);
    o.logger.warn({ via: addr }, 'a neighbour is on another ring of this ring\'s nodes: rejoining through it to merge the two');
    o.ring.rejoin({ id, addr });
  };

  const timer = setInterval(() => {
    if (busy) return;
    if (!stuck()) {
      aloneSince = null;
      if (Date.now() < mergeAt) return;
      mergeAt = Date.now() + jitter();
      busy = true;
      void mergeCheck().catch(() => undefined).finally(() => (busy = false));
      return;
    }
    const now = Date.now();
    aloneSince ??= now;
    if (now - aloneSince < (o.ring.core.status === 'joining' ? joiningMs : aloneMs)) return;
    const list = o.candidates().filter((a) => a !== o.ring.self.addr);
    if (list.length === 0) return;
    busy = true;
    void (async () => {
      // Every candidate that answered it is joining too, and whether one of them has a lower id than ours.
      let joiningPeers = 0;
      let lowerJoining = false;
      // Round-robin over the candidates, one per attempt: a dead address costs one attempt, not every time.
      for (let i = 0; i < list.length; i++) {
        const addr = list[(next + i) % list.length] as string;
        try {
          const id = await o.peers.identify(addr);
          if (id === o.ring.self.id || !stuck()) continue;
          const j = await joinable(addr, id);
          if (j.joining) {
            joiningPeers++;
            if (id < o.ring.self.id) lowerJoining = true;
          }
          if (!j.join) continue;
          // Checked again after the status call (its answer's timing is the host's): a node brought in meanwhile
          // (another node joined it, or its own join went through) must not throw its ring view away (review-5 J1).
          if (!stuck()) return;
          next = (next + i + 1) % list.length;
          o.logger.info({ via: addr, joining: o.ring.core.status === 'joining' }, 'alone on the ring (or stuck joining) after a restart: rejoining through a sealed neighbour');
          o.ring.rejoin({ id, addr });
          return;
        } catch {
          // down or refused: the next one
        }
      }
      // Stuck joining, and no candidate can take the join: every one is down or joining too (its bootstrap died
      // while it joined, and the nodes relaunched after it were given its address). A joining node answers no
      // lookup, so if nobody gives up its join, nobody ever becomes active again: the whole ring stays joining, and
      // the data cores, whose directory is the ring's view, hear from no peer (e2e-jepsen row 3: the two survivors
      // killed right after the first two were relaunched). So the node with the lowest id among those joining
      // stands alone (a ring of one, as a node started without a join address is); the others join through it on
      // their next attempt. The addresses are hints as ever (authority stays with the data core's configurations),
      // and two rings this may make (each side of a partition electing its own) merge as any two rings do.
      if (!stuck() || o.ring.core.status !== 'joining' || lowerJoining) return;
      o.logger.warn({ joiningPeers }, 'stuck joining, and every sealed neighbour that answers is joining too: standing alone for them to join');
      o.ring.standAlone();
    })().finally(() => {
      busy = false;
      aloneSince = null; // give the join (or the next try) a full wait
    });
  }, every);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
