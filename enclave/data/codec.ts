// Validation of the data core's messages as they arrive decoded (CBOR) from an attested peer or a client:
// every field typed, every length bounded before it is used, anything else a DataError with a stable code.
// Keys and values travel as latin1 strings (one char per byte), so a string's length is its byte count.
import { keyBytesMax, valueBytesMax } from '../../protocol/constants.ts';
import { ttlTicksMax } from './config.ts';
import { DataError } from './errors.ts';
import { type Ballot, bootIdMax, replacedBootsMax, type ClientOp, type Config, type Done, type Entry, type LogRecord, type Member, type PeerBody, principalCharsMax, type RangeData, type Session, type Sessions, type WriteOp, type WriteResult } from './types.ts';

/** A request digest (requestDigest in node.ts): 32 lowercase hex digits. */
function digest(x: unknown, what: string): string {
  if (typeof x !== 'string' || !/^[0-9a-f]{32}$/.test(x)) fail(`${what} must be 32 hex digits`);
  return x;
}

function principal(x: unknown, what: string): string {
  return str(x, what, principalCharsMax, 1);
}

/** Members of one configuration (R is at most 7 by validateDataConfig). */
export const membersMax = 7;
export const nameCharsMax = 256;
/** Keys in one range's transfer (promise, install, sync): past this the range must move in pieces. */
export const rangeEntriesMax = 1_000_000;
/** Sessions and results per session in one transfer (the table's own bounds are lower). */
export const sessionsWireMax = 1 << 20;
export const resultsWireMax = 1 << 16;
/** Retired members passed on in one heartbeat (B7b: those its configurations name, at most ranges x R). */
export const goneMax = 4096;
/** Peers in one witness record. */
export const witnessesMax = 1 << 16;
/** Configurations in one heartbeat (one per range). */
export const configsMax = 1 << 16;

type Obj = Record<string, unknown>;

function fail(msg: string): never {
  throw new DataError('MALFORMED', msg);
}

function obj(x: unknown, what: string): Obj {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) fail(`${what} must be an object`);
  return x as Obj;
}

function int(x: unknown, what: string, lo = 0, hi = Number.MAX_SAFE_INTEGER): number {
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < lo || x > hi) fail(`${what} must be an integer in [${lo}, ${hi}]`);
  return x;
}

function str(x: unknown, what: string, max: number, min = 0): string {
  if (typeof x !== 'string') fail(`${what} must be a string`);
  if (x.length > max) throw new DataError('TOO_LONG', `${what} longer than ${max}`);
  if (x.length < min) fail(`${what} shorter than ${min}`);
  return x;
}

function bool(x: unknown, what: string): boolean {
  if (typeof x !== 'boolean') fail(`${what} must be a boolean`);
  return x;
}

function arr(x: unknown, what: string, max: number): unknown[] {
  if (!Array.isArray(x)) fail(`${what} must be an array`);
  if (x.length > max) throw new DataError('TOO_LONG', `${what} has more than ${max} items`);
  return x;
}

function member(x: unknown): Member {
  const o = obj(x, 'member');
  if (typeof o.ring !== 'bigint' || o.ring < 0n || o.ring >= 1n << 256n) fail('member.ring must be a 256-bit integer');
  return { name: str(o.name, 'member.name', nameCharsMax, 1), ring: o.ring, inc: int(o.inc, 'member.inc') };
}

function config(x: unknown): Config {
  const o = obj(x, 'config');
  const members = arr(o.members, 'config.members', membersMax).map(member);
  if (members.length === 0) fail('config.members is empty');
  if (new Set(members.map((m) => m.name)).size !== members.length) fail('config.members repeats a node');
  return { shard: int(o.shard, 'config.shard'), epoch: int(o.epoch, 'config.epoch', 1), members };
}

function ballot(x: unknown): Ballot {
  const o = obj(x, 'ballot');
  return { round: int(o.round, 'ballot.round'), name: str(o.name, 'ballot.name', nameCharsMax, 1), inc: int(o.inc, 'ballot.inc') };
}

function nullable<T>(x: unknown, f: (y: unknown) => T): T | null {
  return x === null ? null : f(x);
}

/**
 * Keys and values cross the wire and the log as CBOR byte strings (a latin1 string with chars >= 0x80 would
 * take two bytes each as CBOR text, and a full range would not fit its transfer): bytes in, latin1 string out.
 */
function latin1(x: unknown, what: string, max: number, min = 0): string {
  if (!(x instanceof Uint8Array)) fail(`${what} must be bytes`);
  if (x.length > max) throw new DataError('TOO_LONG', `${what} longer than ${max}`);
  if (x.length < min) fail(`${what} shorter than ${min}`);
  return Buffer.from(x.buffer, x.byteOffset, x.length).toString('latin1');
}

function bytesOf(s: string): Buffer {
  return Buffer.from(s, 'latin1');
}

/** An entry: its ttl (ticks left, docs/consistency.md "Expiry") only on a value; a node's own deadline never travels. */
function entry(x: unknown): Entry {
  const o = obj(x, 'entry');
  const e = { value: nullable(o.value, (v) => latin1(v, 'entry.value', valueBytesMax)), version: int(o.version, 'entry.version', 1), epoch: int(o.epoch, 'entry.epoch') };
  if (o.ttl === undefined) return e;
  if (e.value === null) fail('entry.ttl on a tombstone');
  return { ...e, ttl: int(o.ttl, 'entry.ttl', 0, ttlTicksMax) };
}

function entryToWire(e: Entry): Record<string, unknown> {
  const w: Record<string, unknown> = { value: e.value === null ? null : bytesOf(e.value), version: e.version, epoch: e.epoch };
  if (e.ttl !== undefined) w.ttl = e.ttl;
  return w;
}

function opToWire(op: WriteOp): Record<string, unknown> {
  return { ...op, key: op.key === null ? null : bytesOf(op.key), entry: op.entry === null ? null : entryToWire(op.entry) };
}

function result(x: unknown): WriteResult {
  const o = obj(x, 'result');
  if (o.ok === true) return { ok: true, version: int(o.version, 'result.version'), existed: bool(o.existed, 'result.existed') };
  if (o.ok === false && (o.code === 'CONFLICT' || o.code === 'RANGE_FULL')) {
    const version = int(o.version, 'result.version');
    return o.t === undefined ? { ok: false, code: o.code, version } : { ok: false, code: o.code, version, t: int(o.t, 'result.t') };
  }
  return fail('result must be ok, CONFLICT or RANGE_FULL');
}

function key(x: unknown, what: string): string {
  return str(x, what, keyBytesMax, 1);
}

/** Range data travels as [key, entry] pairs. */
function rangeData(x: unknown): RangeData {
  const m = new Map<string, Entry>();
  for (const p of arr(x, 'data', rangeEntriesMax)) {
    const [k, e] = arr(p, 'data item', 2);
    m.set(latin1(k, 'data key', keyBytesMax, 1), entry(e));
  }
  return m;
}

/** Sessions travel as { next, clock, table: [id, owner, floor, used, [[seq, result, digest]...]][] }. */
function sessions(x: unknown): Sessions {
  const o = obj(x, 'sessions');
  const table = new Map<number, Session>();
  for (const t of arr(o.table, 'sessions.table', sessionsWireMax)) {
    const [id, owner, floor, used, rs] = arr(t, 'session', 5);
    const results = new Map<number, Done>();
    for (const r of arr(rs, 'session results', resultsWireMax)) {
      const [seq, res, d] = arr(r, 'session result', 3);
      results.set(int(seq, 'seq'), { result: result(res), digest: digest(d, 'result digest') });
    }
    table.set(int(id, 'session id', 1), { owner: principal(owner, 'session owner'), floor: int(floor, 'floor'), used: int(used, 'used'), results });
  }
  return { next: int(o.next, 'sessions.next', 1), clock: int(o.clock, 'sessions.clock'), table };
}

function writeOp(x: unknown): WriteOp {
  const o = obj(x, 'op');
  const req = nullable(o.req, (r) => {
    const q = obj(r, 'op.req');
    return { session: int(q.session, 'req.session', 1), seq: int(q.seq, 'req.seq'), floor: int(q.floor, 'req.floor'), result: result(q.result), digest: digest(q.digest, 'req.digest'), used: int(q.used, 'req.used') };
  });
  const open = nullable(o.open, (r) => {
    const q = obj(r, 'op.open');
    return { id: int(q.id, 'open.id', 1), owner: principal(q.owner, 'open.owner'), evict: nullable(q.evict, (e) => int(e, 'open.evict', 1)), used: int(q.used, 'open.used') };
  });
  return { key: nullable(o.key, (k) => latin1(k, 'op.key', keyBytesMax, 1)), entry: nullable(o.entry, entry), req, open };
}

/** A peer message body, validated. `shards` is the image's range count. */
/** (name, incarnation) pairs: retired members passed on (B7b) or held (review-7 F1). */
function nameIncs(x: unknown, what: string): Array<readonly [string, number]> {
  return arr(x, what, goneMax).map((g) => {
    const [name, inc] = arr(g, `${what} entry`, 2);
    return [str(name, `${what} name`, nameCharsMax, 1), int(inc, `${what} inc`)] as const;
  });
}

export function validatePeerBody(x: unknown, shards: number): PeerBody {
  const o = obj(x, 'message');
  const shard = (v: unknown): number => int(v, 'shard', 0, shards - 1);
  const inRange = (c: Config): Config => (c.shard < shards ? c : fail('config.shard out of range'));
  switch (o.t) {
    case 'hb': {
      const hb = {
        t: 'hb' as const, leaving: bool(o.leaving, 'leaving'), configs: arr(o.configs, 'configs', configsMax).map(config).map(inRange),
        ...(o.epochs === undefined ? {} : { epochs: arr(o.epochs, 'epochs', configsMax).map((e) => int(e, 'epoch')) }),
        ...(o.ret === undefined ? {} : { ret: o.ret === true ? (true as const) : fail('hb.ret must be true') }),
        ...(o.gone === undefined ? {} : { gone: nameIncs(o.gone, 'gone') }),
        ...(o.rw === undefined ? {} : {
          rw: o.ret !== true ? fail('hb.rw only with ret') : arr(o.rw, 'rw', witnessesMax).map((g) => {
            const [name, inc, pos, posBoot] = arr(g, 'rw entry', 4);
            return [str(name, 'rw name', nameCharsMax, 1), int(inc, 'rw inc'), int(pos, 'rw pos'), int(posBoot, 'rw posBoot', 0, bootIdMax)] as const;
          }),
        }),
      };
      return hb;
    }
    case 'prepare': return { t: 'prepare', base: inRange(config(o.base)), ballot: ballot(o.ballot) };
    case 'promise': return { t: 'promise', shard: shard(o.shard), instance: int(o.instance, 'instance', 1), ballot: ballot(o.ballot), accepted: nullable(o.accepted, (a) => ({ ballot: ballot(obj(a, 'accepted').ballot), value: inRange(config(obj(a, 'accepted').value)) })), data: rangeData(o.data), sessions: sessions(o.sessions) };
    case 'reject': {
      const reason = o.reason;
      if (reason !== 'PROMISED' && reason !== 'LEASED' && reason !== 'QUIET' && reason !== 'NOT_MEMBER') fail('reject.reason unknown');
      return { t: 'reject', shard: shard(o.shard), instance: int(o.instance, 'instance', 1), ballot: ballot(o.ballot), reason, promised: nullable(o.promised, ballot) };
    }
    case 'stale': return { t: 'stale', config: inRange(config(o.config)) };
    case 'install': {
      const base = inRange(config(o.base));
      const value = config(o.value);
      if (value.shard !== base.shard || value.epoch !== base.epoch + 1) fail('install.value must follow install.base');
      return { t: 'install', base, ballot: ballot(o.ballot), value, data: rangeData(o.data), sessions: sessions(o.sessions) };
    }
    case 'installAck': return { t: 'installAck', shard: shard(o.shard), instance: int(o.instance, 'instance', 1), ballot: ballot(o.ballot) };
    case 'accept': {
      const base = inRange(config(o.base));
      const value = config(o.value);
      if (value.shard !== base.shard || value.epoch !== base.epoch + 1) fail('accept.value must follow accept.base');
      return { t: 'accept', base, ballot: ballot(o.ballot), value };
    }
    case 'accepted': return { t: 'accepted', shard: shard(o.shard), instance: int(o.instance, 'instance', 1), ballot: ballot(o.ballot) };
    case 'commit': return { t: 'commit', config: inRange(config(o.config)) };
    case 'sync': return { t: 'sync', config: inRange(config(o.config)), data: rangeData(o.data), sessions: sessions(o.sessions) };
    case 'syncAck': return { t: 'syncAck', shard: shard(o.shard), epoch: int(o.epoch, 'epoch', 1) };
    case 'replicate': return { t: 'replicate', shard: shard(o.shard), epoch: int(o.epoch, 'epoch', 1), opId: int(o.opId, 'opId'), op: writeOp(o.op) };
    case 'replicateAck': return { t: 'replicateAck', shard: shard(o.shard), epoch: int(o.epoch, 'epoch', 1), key: str(o.key, 'key', keyBytesMax), opId: int(o.opId, 'opId') };
    case 'fenced': return { t: 'fenced', shard: shard(o.shard), epoch: int(o.epoch, 'epoch') };
    case 'leaseReq': return { t: 'leaseReq', shard: shard(o.shard), epoch: int(o.epoch, 'epoch', 1), t0: int(o.t0, 't0', Number.MIN_SAFE_INTEGER) };
    case 'leaseGrant': return { t: 'leaseGrant', shard: shard(o.shard), epoch: int(o.epoch, 'epoch', 1), t0: int(o.t0, 't0', Number.MIN_SAFE_INTEGER) };
    case 'witQ': return { t: 'witQ', nonce: int(o.nonce, 'nonce') };
    case 'witA': {
      const a = { t: 'witA' as const, nonce: int(o.nonce, 'nonce'), pos: int(o.pos, 'pos'), inc: int(o.inc, 'inc'), boot: int(o.boot, 'boot', 0, bootIdMax), posBoot: int(o.posBoot, 'posBoot', 0, bootIdMax), live: bool(o.live, 'live') };
      return o.held === undefined ? a : { ...a, held: nameIncs(o.held, 'held') };
    }
    case 'bootQ': return { t: 'bootQ', t0: int(o.t0, 't0', Number.MIN_SAFE_INTEGER) };
    case 'bootA': return { t: 'bootA', t0: int(o.t0, 't0', Number.MIN_SAFE_INTEGER), boot: int(o.boot, 'boot', 1, bootIdMax) };
    case 'superseded': return { t: 'superseded', boot: int(o.boot, 'boot', 1, bootIdMax) };
    default: throw new DataError('UNKNOWN_TYPE', `unknown message type ${String(o.t).slice(0, 32)}`);
  }
}

/** A client's request, validated (the access check is the caller's). */
export function validateClientOp(x: unknown, shards: number): ClientOp {
  const o = obj(x, 'request');
  const ifv = (): number | null => nullable(o.ifVersion, (v) => int(v, 'ifVersion'));
  const ids = (): { session: number; seq: number; floor: number; principal: string } => {
    const seq = int(o.seq, 'seq');
    const floor = int(o.floor, 'floor', 0, seq);
    return { session: int(o.session, 'session', 1), seq, floor, principal: principal(o.principal, 'principal') };
  };
  switch (o.kind) {
    case 'get': return { kind: 'get', key: key(o.key, 'key') };
    case 'put': {
      const ttl = o.ttl === undefined || o.ttl === null ? {} : { ttl: int(o.ttl, 'ttl', 1, ttlTicksMax) };
      return { kind: 'put', key: key(o.key, 'key'), value: str(o.value, 'value', valueBytesMax), ifVersion: ifv(), ...ids(), ...ttl };
    }
    case 'del': return { kind: 'del', key: key(o.key, 'key'), ifVersion: ifv(), ...ids() };
    case 'open': return { kind: 'open', shard: int(o.shard, 'shard', 0, shards - 1), principal: principal(o.principal, 'principal') };
    default: throw new DataError('UNKNOWN_TYPE', `unknown request kind ${String(o.kind).slice(0, 32)}`);
  }
}

/** The wire shape of range data and sessions (maps become arrays), for the encoder. */
export function rangeDataToWire(d: RangeData): Array<[Buffer, Record<string, unknown>]> {
  return [...d].map(([k, e]) => [bytesOf(k), entryToWire(e)]);
}

export function sessionsToWire(s: Sessions): { next: number; clock: number; table: Array<[number, string, number, number, Array<[number, WriteResult, string]>]> } {
  return { next: s.next, clock: s.clock, table: [...s.table].map(([id, x]) => [id, x.owner, x.floor, x.used, [...x.results].map(([seq, d]): [number, WriteResult, string] => [seq, d.result, d.digest])]) };
}

/** A peer body in its wire shape (what the driver hands to CBOR). */
export function peerBodyToWire(b: PeerBody): Record<string, unknown> {
  switch (b.t) {
    case 'promise': return { ...b, data: rangeDataToWire(b.data), sessions: sessionsToWire(b.sessions) };
    case 'install': return { ...b, data: rangeDataToWire(b.data), sessions: sessionsToWire(b.sessions) };
    case 'sync': return { ...b, data: rangeDataToWire(b.data), sessions: sessionsToWire(b.sessions) };
    case 'replicate': return { ...b, op: opToWire(b.op) };
    default: return { ...b };
  }
}

/** A log record in its wire shape (maps become arrays), for the sealed log's encoder. */
export function logRecordToWire(r: LogRecord): Record<string, unknown> {
  if (r.t === 'snap') return { ...r, data: rangeDataToWire(r.data), sessions: sessionsToWire(r.sessions) };
  if (r.t === 'w') return { ...r, op: opToWire(r.op) };
  return { ...r };
}

/**
 * A log record read back from the node's own sealed log. The log is authenticated (only this enclave could have
 * sealed it), but it is decoded as strictly as a message: a record that does not validate fails the load.
 */
export function validateLogRecord(x: unknown, shards: number): LogRecord {
  const o = obj(x, 'record');
  const shard = int(o.shard, 'shard', 0, shards - 1);
  switch (o.t) {
    case 'acc': return {
      t: 'acc', shard, epoch: int(o.epoch, 'epoch', 1), promised: nullable(o.promised, ballot),
      accepted: nullable(o.accepted, (a) => ({ ballot: ballot(obj(a, 'accepted').ballot), value: config(obj(a, 'accepted').value) })),
    };
    case 'round': return { t: 'round', shard, round: int(o.round, 'round') };
    case 'cfg': return { t: 'cfg', shard, config: config(o.config) };
    case 'snap': return {
      t: 'snap', shard, instance: int(o.instance, 'instance'), ballot: nullable(o.ballot, ballot), synced: bool(o.synced, 'synced'),
      data: rangeData(o.data), sessions: sessions(o.sessions),
    };
    case 'w': return { t: 'w', shard, epoch: int(o.epoch, 'epoch'), op: writeOp(o.op) };
    case 'mark': return { t: 'mark', shard, pos: int(o.pos, 'pos'), inc: int(o.inc, 'inc'), ...(o.boot === undefined ? {} : { boot: int(o.boot, 'mark boot', 1, bootIdMax) }) };
    case 'wit': return {
      t: 'wit', shard,
      w: arr(o.w, 'witnesses', witnessesMax).map((x) => {
        // Three fields in logs written before boot fencing (no boot admitted: 0), four since.
        const [name, pos, inc, boot, posBoot, replaced, retired, mine] = arr(x, 'witness', 8);
        const b = (v: unknown): number => (v === undefined ? 0 : int(v, 'witness boot', 0, bootIdMax));
        const r = replaced === undefined ? [] : arr(replaced, 'witness replaced', replacedBootsMax).map((v) => int(v, 'witness replaced', 1, bootIdMax));
        const base = [str(name, 'witness name', nameCharsMax, 1), int(pos, 'witness pos'), int(inc, 'witness inc'), b(boot), b(posBoot), r] as const;
        if (retired === undefined) return base;
        if (retired !== 1 && retired !== 2) fail('witness retired must be 1 or 2');
        if (mine === undefined) return [...base, retired] as const;
        // B7c': the retired member's witness of this node, kept only with its witnesses (retired 2).
        if (retired !== 2) fail('witness mine only with retired 2');
        const ms = arr(mine, 'witness mine', 3);
        if (ms.length !== 3) fail('witness mine must be [inc, pos, posBoot]');
        const [mi, mp, mb] = ms;
        return [...base, retired, [int(mi, 'witness mine inc'), int(mp, 'witness mine pos'), b(mb)]] as const;
      }),
    };
    case 'ret': return { t: 'ret', shard, inc: int(o.inc, 'inc') };
    default: throw new DataError('UNKNOWN_TYPE', `unknown record type ${String(o.t).slice(0, 32)}`);
  }
}
