// Review-15 F1b (docs/recovery.md, "Whom a member may count"): a restarting member whose sealed records hold a
// configuration naming it skips recovery mode only on the word of a co-member of such a configuration, by attested
// id. A fresh node N, proven at once and in none of the restarting copies' configurations, used to vouch for them
// (their witness questions to N dropped by the host, they checked their state only against each other). A node
// with no such configuration keeps the old rule. In process: startRecovery with a fake peer pool and sealed log.
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { generateIdentity, identityFromKey } from '../client/identity.ts';
import { recoveryPolicy } from '../protocol/recovery.ts';
import { EkvError } from '../protocol/errors.ts';
import type { RpcResult } from '../protocol/rpc.ts';
import { nodeName } from '../enclave/cluster/data-store.ts';
import type { PeerPool } from '../enclave/cluster/peers.ts';
import type { Config, LogRecord, Member } from '../enclave/data/types.ts';
import type { Persistence } from '../enclave/persist.ts';
import { sealedCoMembers, startRecovery } from '../enclave/recovery/index.ts';
import { nodeIdFromPublicKey } from '../enclave/ring/index.ts';

const logger = pino({ level: 'silent' });
const policy = recoveryPolicy([identityFromKey(generateIdentity()).principal.text], 1);

const selfKey = randomBytes(32);
const selfId = nodeIdFromPublicKey(selfKey);
const idA = nodeIdFromPublicKey(randomBytes(32));
const idB = nodeIdFromPublicKey(randomBytes(32));
const idN = nodeIdFromPublicKey(randomBytes(32)); // a fresh node beside the ring: in no configuration of ours
const member = (ring: bigint, inc = 0): Member => ({ name: nodeName(ring), ring, inc });
const cfg = (shard: number, epoch: number, members: Member[]): LogRecord => ({ t: 'cfg', shard, config: { shard, epoch, members } satisfies Config });
/** A restarting member's sealed log: every range [self, A, B]. */
const memberLog: LogRecord[] = [
  { t: 'mark', shard: 0, pos: 0, inc: 0, boot: 7 },
  cfg(0, 3, [member(selfId), member(idA), member(idB)]),
  cfg(1, 3, [member(idA), member(selfId), member(idB)]),
];

type Peer = { id: bigint; alive: RpcResult };
const serving: RpcResult = { serving: true, recovery: false, gen: 0 };
const recovering: RpcResult = { serving: false, recovery: true, gen: 0 };

/** A peer pool whose addresses (the host's to choose) reach the given attested nodes; `asked` records rcvAlive calls. */
function pool(byAddr: Record<string, Peer>) {
  const asked: string[] = [];
  const peers = {
    async identify(addr: string) {
      const p = byAddr[addr];
      if (!p) throw new EkvError('UNAVAILABLE', 'no one there');
      return p.id;
    },
    async call(addr: string, op: string, _args: Record<string, unknown>, _t: number, expectId?: bigint) {
      const p = byAddr[addr];
      if (!p) throw new EkvError('UNAVAILABLE', 'no one there');
      if (expectId !== undefined && expectId !== p.id) throw new EkvError('UNAVAILABLE', 'not the expected ring member');
      expect(op).toBe('rcvAlive');
      asked.push(addr);
      return p.alive;
    },
  };
  return { peers: peers as unknown as PeerPool, asked };
}

async function boot(records: LogRecord[], byAddr: Record<string, Peer>, join: string, sealedPeers: string[] = []) {
  const { peers, asked } = pool(byAddr);
  const persistence = {
    lastSeq: records.length, pendingRecords: () => records, recordGeneration: async () => undefined, recordPeers: async () => undefined,
  } as unknown as Persistence;
  const gate = await startRecovery({
    policy, ring: { id: randomBytes(32), macKey: randomBytes(32) }, sealed: null, identityKey: selfKey, persistence, keys: () => 0, peers, join,
    self: 'self:1', sealedPeers, neighbours: () => [], founded: false, serving: () => false, logger,
  });
  return { gate, asked };
}

describe('findLiveMember: only a co-member of a sealed configuration vouches (review-15 F1b)', () => {
  it('a proven node in none of the sealed configurations does not count: recovery mode', async () => {
    // The host points the old copy at N (join) and at a co-member still recovering; N answers serving.
    const { gate, asked } = await boot(memberLog, { 'n:1': { id: idN, alive: serving }, 'b:1': { id: idB, alive: recovering } }, 'n:1', ['b:1']);
    expect(gate.inRecovery).toBe(true);
    expect(gate.liveVia).toBeNull();
    expect(asked).toEqual(['b:1']); // N is not even asked
  });

  it('an address the host gives for a co-member counts by the attested id behind it, not by the address', async () => {
    // 'a:1' is where A used to be; the host routes it to N.
    const { gate } = await boot(memberLog, { 'a:1': { id: idN, alive: serving }, 'b:1': { id: idB, alive: recovering } }, 'a:1', ['b:1']);
    expect(gate.inRecovery).toBe(true);
  });

  it('a proven co-member counts: a normal restart skips recovery mode', async () => {
    const { gate } = await boot(memberLog, { 'n:1': { id: idN, alive: serving }, 'a:1': { id: idA, alive: serving } }, 'n:1', ['a:1']);
    expect(gate.inRecovery).toBe(false);
    expect(gate.liveVia).toBe('a:1');
  });

  it('a co-member still checking (not serving) does not count', async () => {
    const { gate } = await boot(memberLog, { 'a:1': { id: idA, alive: recovering }, 'b:1': { id: idB, alive: recovering } }, 'a:1', ['b:1']);
    expect(gate.inRecovery).toBe(true);
  });

  it('a fresh node (no configuration naming it) keeps the old rule: any proven member counts', async () => {
    const { gate } = await boot([], { 'n:1': { id: idN, alive: serving } }, 'n:1');
    expect(gate.inRecovery).toBe(false);
    expect(gate.liveVia).toBe('n:1');
  });

  it('a node alone in its ranges has no co-member: recovery mode whoever answers', async () => {
    const alone: LogRecord[] = [{ t: 'mark', shard: 0, pos: 0, inc: 0, boot: 7 }, cfg(0, 1, [member(selfId)]), cfg(1, 1, [member(selfId)])];
    const { gate } = await boot(alone, { 'a:1': { id: idA, alive: serving }, 'b:1': { id: idB, alive: recovering } }, 'a:1', ['b:1']);
    expect(gate.inRecovery).toBe(true);
  });
});

describe('sealedCoMembers: the configurations as the core replays them', () => {
  it('the last configuration per range; other members by ring id', () => {
    const log: LogRecord[] = [...memberLog, cfg(0, 4, [member(selfId), member(idN)])];
    expect(sealedCoMembers(log, selfId)).toEqual(new Set([idN, idA, idB]));
    // Range 0 moved away from self: only range 1 names it.
    expect(sealedCoMembers([...memberLog, cfg(0, 4, [member(idA), member(idN)])], selfId)).toEqual(new Set([idA, idB]));
  });

  it('none naming it (fresh, or moved out of every range): null', () => {
    expect(sealedCoMembers([], selfId)).toBeNull();
    expect(sealedCoMembers([cfg(0, 2, [member(idA), member(idB)])], selfId)).toBeNull();
  });

  it('a higher incarnation discards the configurations before it; one naming an older incarnation does not name it', () => {
    const log: LogRecord[] = [...memberLog, { t: 'mark', shard: 0, pos: 9, inc: 5 }];
    expect(sealedCoMembers(log, selfId)).toBeNull();
    expect(sealedCoMembers([...log, cfg(0, 5, [member(selfId, 0), member(idA)])], selfId)).toBeNull();
    expect(sealedCoMembers([...log, cfg(0, 5, [member(selfId, 5), member(idN)])], selfId)).toEqual(new Set([idN]));
  });

  it('a retired incarnation names it in nothing (its core never acts again)', () => {
    expect(sealedCoMembers([...memberLog, { t: 'ret', shard: 0, inc: 0 }], selfId)).toBeNull();
  });
});
