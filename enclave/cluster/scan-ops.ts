/**
 * Scans, namespace listing and batches (issue 14; docs/scans.md): the RPC operations, their decoders and the
 * driver of the scan core (enclave/data/scan.ts) at a range's owner.
 *
 *   scan  {sh, p?, a?, l, b?, v?, ns?}  one page of range `sh`: keys with prefix p, strictly after a, at most l
 *                                       entries and about b bytes, with values if v; ns: the namespaces the
 *                                       caller holds a right in (names, no values) instead of keys
 *                                       -> {e: [[key, value | null, version, ttlMs?], ...], m: more?, S: ranges}
 *                                       (ttlMs: what is left of a value's ttl, rounded up)
 *   scanf {same, pk}                    peer only: the same at the range's owner, with the caller's proven
 *                                       principal key (pk, or null) set by the entry node -> {e, m} | {no: hint}
 *   mget  {ks: [key, ...]}              -> {r: [{v, n} | {e: code, m: message, n?, t?}, ...]} in order; the
 *                                       answer may end early (at least one item) to fit a frame: ask again for the rest
 *   mput  {b: [[key, value, [session, seq, floor], ifVersion | null, ttl?], ...]} -> {r: [{n} | {e, m, n?, t?}, ...]}
 *                                       (an item's refusal carries what the RPC refusal would: protocol/rpc.ts)
 *
 * A scan is served only by a range's active owner with a read lease valid at the moment it reads (the
 * condition of a get), and a page is filtered by the caller's read right before its limit is applied, at the
 * owner, so a page reveals nothing about keys the caller may not read, not even their number. A batch item is
 * exactly the single operation (access check, session ids, retries): a batch is not a transaction.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { keyBytesMax, ttlMsMax, valueBytesMax } from '../../protocol/constants.ts';
import { EkvError } from '../../protocol/errors.ts';
import { principalBytesMax, principalFromBytes } from '../../protocol/principal.ts';
import type { RpcResult } from '../../protocol/rpc.ts';
import type { AccessCheck } from '../access/index.ts';
import { classifyKey } from '../acl/index.ts';
import { expiredHere, type ReadMark, type ScanDecision, type ScanView, scanEntryOverheadBytes, selectPage } from '../data/index.ts';
import type { NodeRef } from '../ring/index.ts';
import type { CallerContext } from '../server.ts';
import { clientOpDeadlineMs, type DataStore, retryable } from './data-store.ts';
import { dataTickMs } from './op-wire.ts';
import type { OpSpec } from './ops.ts';

/** Entries one page may hold (per range). */
export const scanPageKeysMax = 1000;
/** Key and value bytes one page may hold (the first entry is always taken; a page fits a frame). */
export const scanPageBytesMax = 256 * 1024;
/** Items of one mget or mput request. */
export const batchItemsMax = 256;
/** Bytes of one mget answer (values, messages, overhead): it ends before the item that would pass it (the SDK asks again). */
export const mgetAnswerBytesMax = valueBytesMax + 2048;
/** Per mget item beyond its value and message: CBOR heads, the version, field names. */
const mgetItemOverheadBytes = 32;
/** Times one page may wait for access documents before it answers with what it has. */
export const scanWaitsMax = 32;
/** The reserved prefix of namespace ACLs (enclave/acl/keys.ts aclStorageKey). */
const aclPrefix = '\x00acl/';
/** Namespace names are at most 64 bytes (protocol/acl-doc.ts). */
const nsNameBytesMax = 64;

/** What a scan needs of access control (the AccessService has both; a plain check gets a fallback). */
export interface ScanAccess {
  readable(key: Buffer, principal: Buffer | null): boolean | Promise<boolean>;
  nsVisible(ns: string, principal: Buffer | null): boolean | Promise<boolean>;
}

function forbidden(err: unknown): boolean {
  return err instanceof EkvError && err.code === 'FORBIDDEN';
}

export function scanAccessOf(a: AccessCheck & Partial<ScanAccess>): ScanAccess {
  if (typeof a.readable === 'function' && typeof a.nsVisible === 'function') return a as ScanAccess;
  return {
    readable(key, principal) {
      try {
        const r = a.check('get', key, principal);
        return r instanceof Promise ? r.then(() => true, (e: unknown) => (forbidden(e) ? false : Promise.reject(e))) : true;
      } catch (e) {
        if (forbidden(e)) return false;
        throw e;
      }
    },
    nsVisible: () => false,
  };
}

export interface ScanRequest {
  readonly shard: number;
  /** latin1 */
  readonly prefix: string;
  readonly after: string | null;
  readonly limit: number;
  readonly bytesMax: number;
  readonly values: boolean;
  readonly ns: boolean;
}

function int(x: unknown, what: string, lo: number, hi: number): number {
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < lo || x > hi) throw new EkvError('BAD_REQUEST', `${what} must be an integer in [${lo}, ${hi}]`);
  return x;
}

function optBytes(x: unknown, what: string, min: number, max: number): Buffer | null {
  if (x === undefined || x === null) return null;
  if (!(x instanceof Uint8Array)) throw new EkvError('BAD_REQUEST', `${what} must be bytes`);
  if (x.length < min || x.length > max) throw new EkvError(max === keyBytesMax && x.length > max ? 'KEY_TOO_LARGE' : 'BAD_REQUEST', `${what} must be ${min}..${max} bytes`);
  return Buffer.from(x.buffer, x.byteOffset, x.length);
}

function optFlag(x: unknown, what: string): boolean {
  if (x === undefined || x === null) return false;
  if (typeof x !== 'boolean') throw new EkvError('BAD_REQUEST', `${what} must be a boolean`);
  return x;
}

/** A scan request as a client (or a forwarding peer) sends it, validated against the limits above. */
export function decodeScan(req: Record<string, unknown>, shards: number): ScanRequest {
  const ns = optFlag(req.ns, 'ns');
  const max = ns ? nsNameBytesMax : keyBytesMax;
  const prefix = optBytes(req.p, 'prefix', 0, max) ?? Buffer.alloc(0);
  // Reserved keys (0x00...) hold the ring's own documents: no client scans them.
  if (!ns && prefix.length > 0 && prefix[0] === 0) throw new EkvError('FORBIDDEN', 'reserved key');
  const after = optBytes(req.a, 'after', 1, max);
  return {
    shard: int(req.sh, 'range', 0, shards - 1),
    prefix: prefix.toString('latin1'),
    after: after === null ? null : after.toString('latin1'),
    limit: int(req.l, 'limit', 1, scanPageKeysMax),
    bytesMax: req.b === undefined ? scanPageBytesMax : int(req.b, 'page bytes', 1, scanPageBytesMax),
    values: !ns && optFlag(req.v, 'values'),
    ns,
  };
}

function encodeScan(q: ScanRequest, principal: Buffer | null): Record<string, unknown> {
  return {
    sh: q.shard, p: Buffer.from(q.prefix, 'latin1'), ...(q.after === null ? {} : { a: Buffer.from(q.after, 'latin1') }), l: q.limit, b: q.bytesMax,
    v: q.values, ns: q.ns, pk: principal,
  };
}

/** A page entry as it leaves the owner: the scan core's, with the ttl left instead of a local deadline. */
export interface PageEntry {
  readonly key: string;
  readonly value: string | null;
  readonly version: number;
  readonly ttlMs?: number;
}

type LocalScan = { ok: true; entries: PageEntry[]; more: boolean } | { ok: false; code: 'UNAVAILABLE' | 'NOT_OWNER'; hint: string | null };

/**
 * One page of one range here, as its owner: each round reads the range's view under the lease valid at that
 * moment (null: not the leased owner now) and runs the scan core; when the access filter must fetch a document,
 * the round stops, waits for it, and the next round resumes after the last key walked (never revealed).
 */
export async function scanHere(store: DataStore, access: ScanAccess, q: ScanRequest, principal: Buffer | null, live?: (key: string, e: import('../data/index.ts').Entry) => boolean): Promise<LocalScan> {
  if (!store.activeOwner(q.shard)) {
    const o = store.ownerRefOfShard(q.shard);
    return { ok: false, code: 'NOT_OWNER', hint: o && o.ref !== store.self ? o.name : null };
  }
  const base = q.ns ? aclPrefix : '';
  const decide = q.ns
    ? (k: string): ScanDecision => {
      const ns = k.slice(aclPrefix.length);
      if (ns.length === 0 || ns.length > nsNameBytesMax) return false;
      const r = access.nsVisible(ns, principal);
      return typeof r === 'boolean' ? r : { wait: r };
    }
    : (k: string): ScanDecision => {
      if (k.charCodeAt(0) === 0) return false; // reserved: never listed, whatever the filter says
      const r = access.readable(Buffer.from(k, 'latin1'), principal);
      if (typeof r !== 'boolean') return { wait: r };
      if (!r) return false;
      // Expiry (docs/consistency.md "Expiry"): a value whose deadline passed here is not listed, and, as a get
      // does, "absent" is said only once its expiry (a replicated tombstone) is acknowledged: the scan waits for
      // it (the get path starts it, or joins the one the collector started), so no later owner can list it again.
      const f = cur.inflight.get(k);
      if (expiredHere(f ? f.prev : cur.data.get(k), curNow)) return { wait: store.local({ kind: 'get', key: k }) };
      return true;
    };
  const entries: PageEntry[] = [];
  let after = q.after === null ? null : base + q.after;
  let bytes = 0;
  let cur: ScanView = { data: new Map(), inflight: new Map() };
  let curNow = 0;
  // Review-12 F1 (R1 for scans): what each round read must be durable before any of it is answered.
  const marks: ReadMark[] = [];
  const answer = async (ok: { ok: true; entries: PageEntry[]; more: boolean }): Promise<typeof ok | { ok: false; code: 'UNAVAILABLE'; hint: null }> => {
    for (const m of marks) if (!(await store.viewDurable(m))) return { ok: false, code: 'UNAVAILABLE', hint: null };
    return ok;
  };
  for (let round = 0; round <= scanWaitsMax; round++) {
    const taken = store.scanView(q.shard);
    if (taken === null) return { ok: false, code: 'UNAVAILABLE', hint: null };
    const view = taken.view;
    marks.push(taken.mark);
    cur = view;
    curNow = store.clockTicks();
    const page = selectPage(view, {
      // A page continued after a wait stays within the caller's bytes: only the page's very first entry may pass them.
      prefix: base + q.prefix, after, limit: q.limit - entries.length, bytesMax: Math.max(0, q.bytesMax - bytes), bytesStrict: entries.length > 0, values: q.values, decide,
      // A data key's read right depends on its namespace alone (docs/access-control.md): a refused namespace is skipped whole.
      ...(q.ns ? {} : { groupOf: namespaceGroup }),
      ...(live ? { live } : {}),
    });
    for (const e of page.entries) {
      // A value with a ttl carries what is left of it (ms, rounded up: never early), for exports to keep.
      const left = e.until === undefined ? {} : { ttlMs: Math.min(ttlMsMax, Math.max(1, (e.until - curNow) * dataTickMs)) };
      entries.push(q.ns ? { key: e.key.slice(aclPrefix.length), value: null, version: e.version } : { key: e.key, value: e.value, version: e.version, ...left });
      bytes += e.key.length + (e.value?.length ?? 0) + scanEntryOverheadBytes;
    }
    if (!page.wait) return answer({ ok: true, entries, more: page.more });
    // The filter's answer for that key arrives with the document; the next round decides it from the lease.
    await page.wait.promise.catch((err: unknown) => {
      if (!forbidden(err)) throw err;
    });
    if (entries.length >= q.limit) return answer({ ok: true, entries, more: true });
    after = page.wait.resume;
  }
  // Too many documents to fetch for one page: answer what was found (resuming after its last entry), or ask again.
  if (entries.length > 0) return answer({ ok: true, entries, more: true });
  return { ok: false, code: 'UNAVAILABLE', hint: null };
}

function namespaceGroup(key: string): string | null {
  const c = classifyKey(key);
  return c.kind === 'namespace' ? `${c.ns}/` : null;
}

function entriesToWire(entries: readonly PageEntry[]): unknown[] {
  return entries.map((e) => [Buffer.from(e.key, 'latin1'), e.value === null ? null : Buffer.from(e.value, 'latin1'), e.version, ...(e.ttlMs === undefined ? [] : [e.ttlMs])]);
}

/** A forwarded page from the owner, checked against the request (an attested peer, but bounded all the same). */
function wireEntries(x: unknown, q: ScanRequest): PageEntry[] {
  if (!Array.isArray(x) || x.length > q.limit) throw new EkvError('PROTOCOL', 'malformed scan page');
  const out: PageEntry[] = [];
  let last = q.after;
  for (const it of x) {
    if (!Array.isArray(it) || it.length < 3 || it.length > 4) throw new EkvError('PROTOCOL', 'malformed scan entry');
    const [k, v, n, t] = it as [unknown, unknown, unknown, unknown];
    if (t !== undefined && (typeof t !== 'number' || !Number.isSafeInteger(t) || t < 1 || t > ttlMsMax)) throw new EkvError('PROTOCOL', 'malformed scan ttl');
    if (!(k instanceof Uint8Array) || k.length < 1 || k.length > keyBytesMax) throw new EkvError('PROTOCOL', 'malformed scan key');
    if (!(v === null || (v instanceof Uint8Array && v.length <= valueBytesMax)) || (v !== null) !== q.values) throw new EkvError('PROTOCOL', 'malformed scan value');
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 1) throw new EkvError('PROTOCOL', 'malformed scan version');
    const key = Buffer.from(k).toString('latin1');
    if (!key.startsWith(q.prefix) || (last !== null && key <= last)) throw new EkvError('PROTOCOL', 'scan page out of order');
    last = key;
    out.push({ key, value: v === null ? null : Buffer.from(v).toString('latin1'), version: n, ...(t === undefined ? {} : { ttlMs: t as number }) });
  }
  return out;
}

/** A page of one range, at its owner: here, or forwarded (following hints), retried while retryable until the deadline. */
export async function runScan(store: DataStore, access: ScanAccess, q: ScanRequest, principal: Buffer | null, deadlineMs = clientOpDeadlineMs): Promise<{ entries: PageEntry[]; more: boolean }> {
  const deadline = Date.now() + deadlineMs;
  for (let attempt = 0; ; attempt++) {
    let hint: string | null = null;
    for (let hop = 0; hop <= 3; hop++) {
      let r: LocalScan;
      const owner: string | null = hint ?? store.ownerRefOfShard(q.shard)?.name ?? null;
      if (owner === null || owner === store.selfMember.name || store.activeOwner(q.shard)) {
        r = await scanHere(store, access, q, principal);
      } else {
        const ref: NodeRef | null = store.refOfName(owner);
        if (ref === null) break;
        try {
          const a = await store.callPeer(ref, 'scanf', encodeScan(q, principal));
          r = a.no !== undefined
            ? { ok: false, code: 'NOT_OWNER', hint: typeof a.no === 'string' && /^[0-9a-f]{64}$/.test(a.no) ? a.no : null }
            : { ok: true, entries: wireEntries(a.e, q), more: a.m === true };
        } catch (err) {
          if (err instanceof EkvError && !retryable(err.code)) throw err;
          break;
        }
      }
      if (r.ok) return r;
      if (r.code !== 'NOT_OWNER' || r.hint === null || r.hint === owner) break;
      hint = r.hint;
    }
    if (Date.now() + 50 >= deadline) throw new EkvError('UNAVAILABLE', 'the range has no serving owner right now');
    await sleep(Math.min(25 * 2 ** attempt, 400, Math.max(0, deadline - Date.now())));
  }
}

export interface ScanOpsInit {
  data: DataStore;
  access: AccessCheck & Partial<ScanAccess>;
  /** A single data operation exactly as its own RPC (access check, decode, run at the owner): batches use it per item. */
  runData: (op: 'get' | 'put', req: Record<string, unknown>, ctx: CallerContext) => Promise<RpcResult>;
}

function itemError(err: unknown): Record<string, unknown> {
  // The same fields as an RPC refusal (protocol/rpc.ts): n a CONFLICT's (or NOT_FOUND's) version, t absentAt.
  if (err instanceof EkvError) return { e: err.code, m: err.message, ...(err.version !== undefined ? { n: err.version } : {}), ...(err.absentAt !== undefined ? { t: err.absentAt } : {}) };
  throw err;
}

function batchList(x: unknown, what: string): unknown[] {
  if (!Array.isArray(x) || x.length < 1) throw new EkvError('BAD_REQUEST', `${what} must be a non-empty list`);
  if (x.length > batchItemsMax) throw new EkvError('BAD_REQUEST', `BATCH_TOO_LARGE: ${x.length} items exceed ${batchItemsMax}`);
  return x;
}

export function scanOps(c: ScanOpsInit): Array<[string, OpSpec]> {
  const access = scanAccessOf(c.access);
  return [
    ['scan', {
      caller: 'client',
      run: async (req, ctx) => {
        const q = decodeScan(req, c.data.cfg.shards);
        const page = await runScan(c.data, access, q, ctx.principal);
        return { e: entriesToWire(page.entries), m: page.more, S: c.data.cfg.shards };
      },
    }],
    ['scanf', {
      caller: 'peer',
      // The entry node (an attested enclave of this ring running this image) names the caller's proven key.
      run: async (req) => {
        const q = decodeScan(req, c.data.cfg.shards);
        const pk = req.pk === null || req.pk === undefined ? null : optBytes(req.pk, 'principal', 1, principalBytesMax);
        if (pk !== null) {
          try {
            principalFromBytes(pk);
          } catch {
            throw new EkvError('BAD_REQUEST', 'bad forwarded principal');
          }
        }
        const r = await scanHere(c.data, access, q, pk);
        if (r.ok) return { e: entriesToWire(r.entries), m: r.more };
        if (r.code === 'NOT_OWNER') return { no: r.hint ?? '' };
        throw new EkvError('UNAVAILABLE', 'no read lease on this range right now');
      },
    }],
    ['mget', {
      caller: 'client',
      run: async (req, ctx) => {
        const ks = batchList(req.ks, 'ks');
        const rs = await Promise.all(ks.map((k) => c.runData('get', { k }, ctx).then((r) => r as Record<string, unknown>, itemError)));
        // The answer fits a frame: it stops before the item that would take it past the budget (the first item is
        // always answered); the client asks again for the items it did not get (BATCH_FULL).
        let bytes = 0;
        let n = 0;
        for (const x of rs) {
          const size = (x.v instanceof Uint8Array ? x.v.length : 0) + (typeof x.m === 'string' ? x.m.length : 0) + mgetItemOverheadBytes;
          if (n > 0 && bytes + size > mgetAnswerBytesMax) break;
          bytes += size;
          n++;
        }
        return { r: rs.slice(0, n) };
      },
    }],
    ['mput', {
      caller: 'client',
      run: async (req, ctx) => {
        const items = batchList(req.b, 'b');
        const r = await Promise.all(items.map((it) => {
          if (!Array.isArray(it) || it.length < 4 || it.length > 5) return Promise.resolve({ e: 'BAD_REQUEST', m: 'an mput item is [key, value, ids, ifVersion, ttl?]' });
          const [k, v, s, iv, t] = it as [unknown, unknown, unknown, unknown, unknown];
          return c.runData('put', { k, v, s, ...(iv === null ? {} : { iv }), ...(t === undefined ? {} : { t }) }, ctx).then((x) => x as Record<string, unknown>, itemError);
        }));
        return { r };
      },
    }],
  ];
}
