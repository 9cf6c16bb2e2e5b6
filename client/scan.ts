/**
 * Scans and namespace listing (issue 14; docs/scans.md). Keys are spread over the ring's ranges by hash, so a
 * scan asks every range's owner (each over an attested session, routed like a key of that range) for its next
 * keys in byte order and merges them: a k-way merge with a buffer per range, refilled only when its last
 * buffered key is the smallest left, so a page costs about (ranges x the per-range batch) keys, and memory stays
 * bounded by (ranges x one range page) whatever the keyspace holds.
 *
 * The cursor is opaque to callers: `c1.` + base64url(8 bytes of SHA-256 of the prefix || the last key returned).
 * It is bounded (`cursorCharsMax`), refused when malformed or used with another prefix (BAD_REQUEST, reason
 * BAD_CURSOR), and names only a key the caller was given.
 */
import { createHash } from 'node:crypto';
import { keyBytesMax, ttlMsMax, valueBytesMax } from '../protocol/constants.ts';
import { EkvError } from '../protocol/errors.ts';
import type { ClientPort } from './batch.ts';
import type { Bytes } from './index.ts';

/** Entries one scan() page may return. */
export const scanLimitMax = 1000;
export const scanLimitDefault = 100;
/** Per-range page sizes asked for (keys; bytes when values are asked for). */
const rangePageKeysMax = 1000;
const rangePageKeysMin = 16;
const rangePageBytes = 64 * 1024;
/** Ranges asked at once. */
const concurrency = 8;
const cursorTag = 'c1.';
const prefixHashBytes = 8;
/** The longest cursor: the tag and base64url of the prefix hash and a longest key. */
export const cursorCharsMax = cursorTag.length + Math.ceil(((prefixHashBytes + keyBytesMax) * 4) / 3);
/** Namespace names listed by one listNamespaces() call at most. */
export const namespacesMax = 100_000;

export interface ScanOptions {
  /** Only keys starting with this (bytes, or a string as UTF-8). Default: every key. */
  prefix?: Bytes;
  /** Entries per page (scan only): 1..scanLimitMax, default 100. */
  limit?: number;
  /** Continue after the page this cursor came from (same prefix). */
  cursor?: string;
  /** Also return values (default false: keys and versions). */
  values?: boolean;
}

export interface ScanItem {
  key: Buffer;
  /** With `values: true` only. */
  value?: Buffer;
  version: number;
  /** For a value with a ttl: what was left of it when the owner read it (ms, rounded up). */
  ttlMs?: number;
}

export interface ScanPage {
  items: ScanItem[];
  /** Continue with this (null: nothing after this page). */
  cursor: string | null;
}

function toBuffer(x: Bytes): Buffer {
  return typeof x === 'string' ? Buffer.from(x, 'utf8') : Buffer.from(x.buffer, x.byteOffset, x.length);
}

function prefixHash(prefix: Buffer): Buffer {
  return createHash('sha256').update(prefix).digest().subarray(0, prefixHashBytes);
}

function badCursor(why: string): EkvError {
  return new EkvError('BAD_REQUEST', `BAD_CURSOR: ${why}`, { reason: 'BAD_CURSOR' });
}

export function encodeCursor(prefix: Buffer, lastKey: Buffer): string {
  return cursorTag + Buffer.concat([prefixHash(prefix), lastKey]).toString('base64url');
}

/** The last key a cursor names, checked against the prefix it must come with. Throws BAD_REQUEST (BAD_CURSOR). */
export function decodeCursor(cursor: unknown, prefix: Buffer): Buffer {
  if (typeof cursor !== 'string') throw badCursor('not a string');
  if (cursor.length > cursorCharsMax) throw badCursor('too long');
  if (!cursor.startsWith(cursorTag)) throw badCursor('not a cursor of this version');
  const body = cursor.slice(cursorTag.length);
  if (!/^[A-Za-z0-9_-]+$/.test(body) || body.length % 4 === 1) throw badCursor('not base64url');
  const raw = Buffer.from(body, 'base64url');
  if (raw.toString('base64url') !== body) throw badCursor('not canonical base64url');
  if (raw.length < prefixHashBytes + 1 || raw.length > prefixHashBytes + keyBytesMax) throw badCursor('wrong length');
  if (!raw.subarray(0, prefixHashBytes).equals(prefixHash(prefix))) throw badCursor('made for another prefix');
  const key = Buffer.from(raw.subarray(prefixHashBytes));
  if (!key.subarray(0, prefix.length).equals(prefix)) throw badCursor('its key is outside the prefix');
  return key;
}

function checkedPrefix(p: Bytes | undefined, max: number): Buffer {
  const prefix = p === undefined ? Buffer.alloc(0) : toBuffer(p);
  if (prefix.length > max) throw new EkvError('KEY_TOO_LARGE', `prefix of ${prefix.length} bytes exceeds ${max}`);
  if (prefix.length > 0 && prefix[0] === 0) throw new EkvError('FORBIDDEN', 'reserved key');
  return prefix;
}

interface Stream {
  readonly shard: number;
  buf: ScanItem[];
  at: number;
  /** Resume after this key (the last one received). */
  after: Buffer | null;
  more: boolean;
}

/**
 * The k-way merge over every range. `next()` yields the smallest key not yet yielded, or null at the end. Before
 * it yields, every range whose buffer is empty and that may hold more is asked for its next page (in parallel),
 * so a key is yielded only when no range can still hold a smaller one.
 */
class Merger {
  private streams: Stream[] | null = null;

  constructor(
    private readonly port: ClientPort,
    private readonly q: { prefix: Buffer; after: Buffer | null; values: boolean; ns: boolean; pageKeys: number },
  ) {}

  private async fetch(s: Stream): Promise<void> {
    const args: Record<string, unknown> = { sh: s.shard, p: this.q.prefix, l: this.q.pageKeys, ...(s.after ? { a: s.after } : {}) };
    if (this.q.values) Object.assign(args, { v: true, b: rangePageBytes });
    if (this.q.ns) args.ns = true;
    const { r, ring } = await this.port.callRange(s.shard, 'scan', args);
    const S = r.S;
    if (typeof S !== 'number' || !Number.isSafeInteger(S) || S < 1 || S > 1 << 16) throw new EkvError('PROTOCOL', 'malformed scan answer');
    this.port.learnShards(S);
    if (!Array.isArray(r.e) || r.e.length > this.q.pageKeys || typeof r.m !== 'boolean') throw new EkvError('PROTOCOL', 'malformed scan answer');
    const items: ScanItem[] = [];
    let last = s.after;
    for (const it of r.e as unknown[]) {
      if (!Array.isArray(it) || it.length < 3 || it.length > 4) throw new EkvError('PROTOCOL', 'malformed scan entry');
      const [k, v, n, t] = it as [unknown, unknown, unknown, unknown];
      if (t !== undefined && (typeof t !== 'number' || !Number.isSafeInteger(t) || t < 1 || t > ttlMsMax)) throw new EkvError('PROTOCOL', 'malformed scan ttl');
      if (!(k instanceof Uint8Array) || k.length < 1 || k.length > keyBytesMax) throw new EkvError('PROTOCOL', 'malformed scan key');
      if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 1) throw new EkvError('PROTOCOL', 'malformed scan version');
      if (this.q.values ? !(v instanceof Uint8Array && v.length <= valueBytesMax) : v !== null) throw new EkvError('PROTOCOL', 'malformed scan value');
      const key = Buffer.from(k);
      // In order, after the resume point, inside the prefix: anything else is a node misbehaving.
      if (!key.subarray(0, this.q.prefix.length).equals(this.q.prefix) || (last !== null && Buffer.compare(key, last) <= 0)) {
        throw new EkvError('PROTOCOL', 'scan page out of order');
      }
      last = key;
      const value = v instanceof Uint8Array ? Buffer.from(v) : undefined;
      // Rollback and fork detection, as for a get (client/floor.ts): never below what this client has seen.
      const f = this.port.floor;
      if (f && !this.q.ns) {
        // weak: a scan's keys never push the ones this client used one by one out of the floor (review-17 F5).
        if (value !== undefined) f.checkRead(ring, key, f.snapshot(key), n, value, true);
        else f.checkVersion(ring, f.snapshot(key), n);
      }
      items.push({ key, ...(value !== undefined ? { value } : {}), version: n, ...(typeof t === 'number' ? { ttlMs: t } : {}) });
    }
    s.buf = items;
    s.at = 0;
    s.more = r.m;
    if (last !== null) s.after = last;
    else if (r.m) throw new EkvError('PROTOCOL', 'an empty scan page that says there is more');
  }

  private async fill(list: Stream[]): Promise<void> {
    let i = 0;
    const worker = async (): Promise<void> => {
      while (i < list.length) await this.fetch(list[i++] as Stream);
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, list.length) }, worker));
  }

  private async init(): Promise<Stream[]> {
    const mk = (shard: number): Stream => ({ shard, buf: [], at: 0, after: this.q.after, more: true });
    // The range count comes with the first answer when this client has not learnt it yet.
    let S = this.port.shards();
    const first = S === null ? mk(0) : null;
    if (first) {
      await this.fetch(first);
      S = this.port.shards() as number;
    }
    const streams = Array.from({ length: S as number }, (_, sh) => (sh === 0 && first ? first : mk(sh)));
    await this.fill(streams.filter((s) => s !== first));
    return streams;
  }

  async next(): Promise<ScanItem | null> {
    this.streams ??= await this.init();
    const empty = this.streams.filter((s) => s.at >= s.buf.length && s.more);
    if (empty.length > 0) await this.fill(empty);
    let best: Stream | null = null;
    for (const s of this.streams) {
      if (s.at >= s.buf.length) continue;
      if (!best || Buffer.compare((s.buf[s.at] as ScanItem).key, (best.buf[best.at] as ScanItem).key) < 0) best = s;
    }
    if (!best) return null;
    const item = best.buf[best.at++] as ScanItem;
    if (best.at >= best.buf.length) best.buf = [];
    if (best.buf.length === 0) best.at = 0;
    return item;
  }

  /** Whether anything may follow what was yielded. */
  get exhausted(): boolean {
    return this.streams !== null && this.streams.every((s) => s.at >= s.buf.length && !s.more);
  }
}

function checkedLimit(x: number | undefined): number {
  if (x === undefined) return scanLimitDefault;
  if (!Number.isSafeInteger(x) || x < 1 || x > scanLimitMax) throw new EkvError('BAD_REQUEST', `limit must be an integer in [1, ${scanLimitMax}]`);
  return x;
}

/** One page of at most `limit` entries, in byte order, and the cursor after it. */
export async function scanPage(port: ClientPort, opts: ScanOptions): Promise<ScanPage> {
  const prefix = checkedPrefix(opts.prefix, keyBytesMax);
  const limit = checkedLimit(opts.limit);
  const after = opts.cursor === undefined ? null : decodeCursor(opts.cursor, prefix);
  // Enough per range that a page usually needs one round: twice its share of the page, at least a few keys.
  const S = port.shards() ?? 64;
  const pageKeys = Math.min(rangePageKeysMax, limit, Math.max(rangePageKeysMin, Math.ceil((2 * limit) / S)));
  const m = new Merger(port, { prefix, after, values: opts.values === true, ns: false, pageKeys });
  const items: ScanItem[] = [];
  while (items.length < limit) {
    const it = await m.next();
    if (!it) break;
    items.push(it);
  }
  const last = items[items.length - 1];
  // A full page may be followed by more; a short one ended every range.
  const cursor = last !== undefined && items.length === limit && !m.exhausted ? encodeCursor(prefix, last.key) : null;
  return { items, cursor };
}

/** Every matching entry in byte order (from after `cursor` if given), with bounded memory. */
export async function* scanIterate(port: ClientPort, opts: Omit<ScanOptions, 'limit'>): AsyncGenerator<ScanItem> {
  const prefix = checkedPrefix(opts.prefix, keyBytesMax);
  const after = opts.cursor === undefined ? null : decodeCursor(opts.cursor, prefix);
  const m = new Merger(port, { prefix, after, values: opts.values === true, ns: false, pageKeys: opts.values ? 64 : 256 });
  for (;;) {
    const it = await m.next();
    if (!it) return;
    yield it;
  }
}

/** The namespaces this client's principal holds a right in, sorted (at most namespacesMax). */
export async function listNamespaces(port: ClientPort, opts: { prefix?: string }): Promise<string[]> {
  const prefix = Buffer.from(opts.prefix ?? '', 'utf8');
  if (prefix.length > 64) throw new EkvError('BAD_REQUEST', 'a namespace prefix is at most 64 bytes');
  const m = new Merger(port, { prefix, after: null, values: false, ns: true, pageKeys: 256 });
  const out: string[] = [];
  for (;;) {
    const it = await m.next();
    if (!it) return out;
    if (out.length >= namespacesMax) throw new EkvError('UNAVAILABLE', `more than ${namespacesMax} namespaces: list them by prefix`);
    out.push(it.key.toString('latin1'));
  }
}
