/**
 * The client's floor (issue 12, section 3; docs/recovery.md "What a client detects"): per ring identity, the
 * newest state this client has seen, so that an answer older than it is refused (EkvError STALE), never
 * returned. A host that starts nodes from old genuine sealed state (a rollback, or a second history forked
 * from it) can fool a client that never saw the newer state; it cannot fool one that did.
 *
 * Kept per ring id (the id the node's attested key signs in its handshake; 'none' for a ring-less node):
 * - `gen`: the highest ring generation an answer carried (`g`: how many times the ring was reopened by a
 *   recovery; absent from answers of nodes that do not send it);
 * - per key: the highest version this client read or wrote, and a short hash of the value at that version
 *   (null: a delete), so that a second value at the same version (a fork) is refused too.
 *
 * Checks are against the floor as it was when the operation was sent (`snapshot`), so that concurrent calls
 * of one client never make each other stale: a read may return anything at or above what was seen before it
 * began; a write's new version must be above it.
 *
 * Bounded: at most `floorKeysMax` keys (least recently used dropped first) and `floorRingsMax` rings. Keys are
 * kept as a 16-byte hash, so the file does not list key names. Persisted (optional) to a JSON file, written
 * atomically (temporary file, fsync, rename) after merging with what the file holds, so two processes
 * using one file each keep the other's floor (the newer version of a key wins).
 */
import { hash, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { EkvError } from '../protocol/errors.ts';

/** Keys remembered (per client and per file), least recently used dropped first. */
export const floorKeysMax = 8192;
/** Ring identities remembered; beyond it the least recently used ring's generation is dropped. */
export const floorRingsMax = 64;
/** A floor file holds about 140 bytes per key (1.1 MB at floorKeysMax); anything larger is not one. */
export const floorFileBytesMax = 4 * 1024 * 1024;

/** What a STALE error's `reason` says. */
export type StaleReason = 'OLDER_VERSION' | 'FORKED_VALUE' | 'OLDER_GENERATION';

export interface FloorEntry {
  /** The highest version seen. */
  v: number;
  /** 16 hex digits of SHA-256 of the value at that version; null: the key was deleted at it. */
  h: string | null;
}

/** A key's floors across rings, as they were when an operation was sent. */
export type FloorSnapshot = ReadonlyMap<string, FloorEntry>;

export const noRing = 'none';

// One-shot crypto.hash: the same digests as createHash().update().digest(), without a Hash object per call
// (about 7x less CPU for a short key or value; these run on every operation).
function keyHash(key: Uint8Array): string {
  return hash('sha256', key, 'hex').slice(0, 32);
}

export function valueHash(value: Uint8Array): string {
  return hash('sha256', value, 'hex').slice(0, 16);
}

/**
 * A snapshot of one key: its key hash (so the answer's check does not hash the key again) and its entry per
 * ring; a client of one ring (the usual case) needs no Map for it.
 */
class KeySnapshot implements ReadonlyMap<string, FloorEntry> {
  private ring: string | null = null;
  private entry: FloorEntry | undefined = undefined;
  /** The first ring's slot, so that the answer's check need not look the key up again (if it is still kept). */
  slot: Slot | null = null;
  private more: Map<string, FloorEntry> | null = null;
  size = 0;

  constructor(readonly kh: string) {}

  get(ring: string): FloorEntry | undefined {
    if (ring === this.ring) return this.entry;
    return this.more === null ? undefined : this.more.get(ring);
  }

  add(ring: string, e: FloorEntry, slot: Slot): void {
    this.size++;
    if (this.ring === null) {
      this.ring = ring;
      this.entry = e;
      this.slot = slot;
    } else (this.more ??= new Map()).set(ring, e);
  }

  has(ring: string): boolean {
    return this.get(ring) !== undefined;
  }

  // The rest of ReadonlyMap (nothing on the request path iterates a snapshot): through a Map made on demand.
  private asMap(): Map<string, FloorEntry> {
    const m = new Map<string, FloorEntry>();
    if (this.ring !== null) m.set(this.ring, this.entry as FloorEntry);
    if (this.more) for (const [r, e] of this.more) m.set(r, e);
    return m;
  }

  forEach(fn: (value: FloorEntry, key: string, map: ReadonlyMap<string, FloorEntry>) => void, thisArg?: unknown): void {
    for (const [r, e] of this.asMap()) fn.call(thisArg, e, r, this);
  }

  entries(): ReturnType<Map<string, FloorEntry>['entries']> {
    return this.asMap().entries();
  }

  keys(): ReturnType<Map<string, FloorEntry>['keys']> {
    return this.asMap().keys();
  }

  values(): ReturnType<Map<string, FloorEntry>['values']> {
    return this.asMap().values();
  }

  [Symbol.iterator](): ReturnType<Map<string, FloorEntry>['entries']> {
    return this.asMap().entries();
  }
}

function keyHashOf(key: Uint8Array, before: FloorSnapshot): string {
  return before instanceof KeySnapshot ? before.kh : keyHash(key);
}

/** The slot a snapshot found for `ring`, if it is still the one kept for that key (not dropped since). */
function slotHint(before: FloorSnapshot, ring: string): Slot | null {
  if (!(before instanceof KeySnapshot)) return null;
  const s = before.slot;
  return s !== null && !s.gone && s.ring === ring ? s : null;
}

function stale(reason: StaleReason, message: string, version?: number): EkvError {
  return new EkvError('STALE', message, { reason, ...(version === undefined ? {} : { version }) });
}

/**
 * One remembered key of one ring: a node of the least-recently-used list (oldest at `head`). Touching a key moves
 * its node to the tail without touching any Map (a Map delete + set per operation, on string ids of ring and key
 * hash, was most of the floor's cost); its entry is replaced, never changed, so snapshots keep theirs.
 */
interface Slot {
  readonly ring: string;
  readonly kh: string;
  e: FloorEntry;
  prev: Slot | null;
  next: Slot | null;
  /** Dropped from the floor (a snapshot may still hold it; it is then never used again). */
  gone: boolean;
}

export class Floor {
  /** ring -> key hash -> slot. */
  private readonly byRing = new Map<string, Map<string, Slot>>();
  /** The least-recently-used order of every slot of every ring (oldest first). */
  private head: Slot | null = null;
  private tail: Slot | null = null;
  private count = 0;
  private readonly gens = new Map<string, number>();
  /** The ring touched last (the last in `gens`' order). */
  private newestRing: string | null = null;
  /** The ring a client without a pinned ring id met first (review-17 F1; client/node-connection.ts LearntRing). */
  private learnt: string | null = null;
  private dirty = false;

  constructor(private readonly opts: { file?: string; keysMax?: number } = {}) {
    if (opts.file) this.merge(readFloorFile(opts.file));
    this.dirty = false;
  }

  get size(): number {
    return this.count;
  }

  /** The ring learnt by a client that pins none ('none': ring-less), kept in the file for the next process. */
  get learntRing(): string | null {
    return this.learnt;
  }

  learnRing(ring: string): void {
    if (this.learnt !== null || !ringRe.test(ring)) return;
    this.learnt = ring;
    this.dirty = true;
  }

  /**
   * The floors of `key` in every ring this client knows (taken when an operation is sent). `keyHex`: the hex
   * SHA-256 of `key`, when the caller has it already.
   */
  snapshot(key: Uint8Array, keyHex?: string): FloorSnapshot {
    const kh = keyHex === undefined ? keyHash(key) : keyHex.slice(0, 32);
    const out = new KeySnapshot(kh);
    for (const ring of this.gens.keys()) {
      const s = this.byRing.get(ring)?.get(kh);
      if (s) out.add(ring, s.e, s);
    }
    return out;
  }

  /**
   * An answer's ring generation: never lower than the highest seen for its ring id, or for any id its ring had
   * before (`previous`, from the node's signed handshake): a reopened ring names its earlier ids, so once this
   * client has seen generation g of a deployment, a node still answering for an earlier generation (an old copy
   * of the ring started again beside the reopened one) is refused, whichever of the lineage's ids it names.
   */
  checkGeneration(ring: string, g: unknown, previous: readonly string[] = []): void {
    if (typeof g !== 'number' || !Number.isSafeInteger(g) || g < 0) return;
    if (ring === noRing || previous.length === 0) {
      // One id (every answer of a ring never reopened): no list to build.
      const have = this.gens.get(ring) ?? 0;
      if (g < have) throw stale('OLDER_GENERATION', `the node answered for generation ${g} of its ring; this client has seen generation ${have} of that deployment`);
      this.touchRing(ring, g);
      return;
    }
    const ids = [ring, ...previous.filter((p) => ringRe.test(p) && p !== noRing)];
    for (const id of ids) {
      const have = this.gens.get(id) ?? 0;
      if (g < have) throw stale('OLDER_GENERATION', `the node answered for generation ${g} of its ring; this client has seen generation ${have} of that deployment`);
    }
    for (const id of ids) this.touchRing(id, g);
  }

  /**
   * A read's answer: `value` null means NOT_FOUND, with `version` the version of its delete (0: never
   * written), or undefined when the node did not say (then nothing can be checked).
   */
  checkRead(ring: string, key: Uint8Array, before: FloorSnapshot, version: number | undefined, value: Uint8Array | null, weak = false): void {
    if (version === undefined) return;
    const seen = before.get(ring);
    const h = value === null ? null : valueHash(value);
    if (seen) {
      if (version < seen.v) throw stale('OLDER_VERSION', `the node answered version ${version} of this key; this client has seen version ${seen.v}`, seen.v);
      if (version === seen.v && version > 0 && seen.h !== h) {
        throw stale('FORKED_VALUE', `the node answered another value at version ${version} than this client saw there (a second history)`, seen.v);
      }
    }
    this.raiseHashed(ring, keyHashOf(key, before), version, h, slotHint(before, ring), weak);
  }

  /** A write's answer: its new version must be above everything seen before the write was sent. */
  checkWrite(ring: string, key: Uint8Array, before: FloorSnapshot, version: number, value: Uint8Array | null): void {
    const seen = before.get(ring);
    if (seen && version <= seen.v) {
      throw stale('OLDER_VERSION', `the node acknowledged this write at version ${version}; this client has seen version ${seen.v} already`, seen.v);
    }
    this.raiseHashed(ring, keyHashOf(key, before), version, value === null ? null : valueHash(value), slotHint(before, ring));
  }

  /** A CONFLICT's current version (or a delete of an absent key's) is a read of the version only. */
  checkVersion(ring: string, before: FloorSnapshot, version: number): void {
    const seen = before.get(ring);
    if (seen && version < seen.v) throw stale('OLDER_VERSION', `the node reported version ${version} of this key; this client has seen version ${seen.v}`, seen.v);
  }

  /** Write the floor to its file (merged with what the file holds now), atomically. No file: nothing. */
  save(): void {
    const file = this.opts.file;
    if (!file || !this.dirty) return;
    // What the file holds now (another process may have written it) goes first, as older than ours in use.
    const ours: Slot[] = [];
    for (let s = this.head; s !== null; s = s.next) ours.push(s);
    this.clearKeys();
    this.merge(readFloorFile(file));
    for (const o of ours) {
      const have = this.byRing.get(o.ring)?.get(o.kh);
      this.place(o.ring, o.kh, have && have.e.v > o.e.v ? have.e : o.e);
    }
    this.trim();
    writeFloorFile(file, this.toJson());
    this.dirty = false;
  }

  private touchRing(ring: string, g: number): void {
    const have = this.gens.get(ring);
    // Already the most recently used ring at this generation or above (every answer of a one-ring client): as is.
    if (ring === this.newestRing && have !== undefined && have >= g) return;
    this.newestRing = ring;
    this.gens.delete(ring);
    this.gens.set(ring, Math.max(have ?? 0, g));
    if (have === undefined || g > have) this.dirty = true;
    while (this.gens.size > floorRingsMax) {
      const oldest = this.gens.keys().next().value as string;
      this.gens.delete(oldest);
      const slots = this.byRing.get(oldest);
      if (slots) {
        for (const s of slots.values()) this.unlink(s);
        this.byRing.delete(oldest);
      }
    }
  }

  /** `hint`: the key's slot in `ring` as the operation's snapshot found it, still kept (saves a second lookup). */
  /**
   * `weak` (a scan's keys, review-17 F5): a key not yet kept goes in as the least recently used, and a kept one keeps its
   * place, so a scan over more keys than the bound never pushes out the keys this client read or wrote one by one.
   */
  private raiseHashed(ring: string, kh: string, v: number, h: string | null, hint: Slot | null = null, weak = false): void {
    if (!this.gens.has(ring)) this.touchRing(ring, 0); // (may drop a ring, and mark its slots gone)
    let have: Slot | undefined;
    if (hint !== null && !hint.gone) have = hint;
    else {
      let slots = this.byRing.get(ring);
      if (slots === undefined) {
        slots = new Map();
        this.byRing.set(ring, slots);
      }
      have = slots.get(kh);
      if (have === undefined) {
        const s: Slot = { ring, kh, e: { v, h }, prev: null, next: null, gone: false };
        if (weak) this.prepend(slots, s);
        else this.append(slots, s);
        this.dirty = true;
        this.trim();
        return;
      }
    }
    if (have.e.v < v) {
      have.e = { v, h };
      this.dirty = true;
    }
    if (!weak) this.toTail(have);
  }

  private prepend(slots: Map<string, Slot>, s: Slot): void {
    slots.set(s.kh, s);
    s.prev = null;
    s.next = this.head;
    if (this.head === null) this.tail = s;
    else this.head.prev = s;
    this.head = s;
    this.count++;
  }

  /** Set a key's entry as is (no comparison) and make it the most recently used. */
  private place(ring: string, kh: string, e: FloorEntry): void {
    let slots = this.byRing.get(ring);
    if (slots === undefined) {
      slots = new Map();
      this.byRing.set(ring, slots);
    }
    const have = slots.get(kh);
    if (have === undefined) this.append(slots, { ring, kh, e, prev: null, next: null, gone: false });
    else {
      have.e = e;
      this.toTail(have);
    }
  }

  private append(slots: Map<string, Slot>, s: Slot): void {
    slots.set(s.kh, s);
    s.prev = this.tail;
    s.next = null;
    if (this.tail === null) this.head = s;
    else this.tail.next = s;
    this.tail = s;
    this.count++;
  }

  private toTail(s: Slot): void {
    if (s === this.tail) return;
    // Out of its place (it has a next: it is not the tail) ...
    const next = s.next as Slot;
    if (s.prev === null) this.head = next;
    else s.prev.next = next;
    next.prev = s.prev;
    // ... and in at the end.
    s.prev = this.tail;
    s.next = null;
    (this.tail as Slot).next = s;
    this.tail = s;
  }

  /** Take a slot out of the list (its ring's Map is the caller's business). */
  private unlink(s: Slot): void {
    s.gone = true;
    if (s.prev === null) this.head = s.next;
    else s.prev.next = s.next;
    if (s.next === null) this.tail = s.prev;
    else s.next.prev = s.prev;
    s.prev = null;
    s.next = null;
    this.count--;
  }

  private clearKeys(): void {
    for (let s = this.head; s !== null; s = s.next) s.gone = true;
    this.byRing.clear();
    this.head = null;
    this.tail = null;
    this.count = 0;
  }

  private trim(): void {
    const max = this.opts.keysMax ?? floorKeysMax;
    while (this.count > max) {
      const oldest = this.head as Slot;
      const slots = this.byRing.get(oldest.ring);
      slots?.delete(oldest.kh);
      if (slots?.size === 0) this.byRing.delete(oldest.ring);
      this.unlink(oldest);
    }
  }

  private merge(f: FloorJson | null): void {
    if (!f) return;
    if (this.learnt === null && f.ring !== undefined) this.learnt = f.ring;
    else if (this.learnt === null) {
      // Review-18 F3: a file written before the learnt ring was kept (review-17) names no `ring`, but its floors are
      // the client's history with the ring it touched last (`rings` is in the order touched): that ring, not
      // whichever node the host shows first after the upgrade, is the one this client met first.
      const rs = Object.keys(f.rings);
      if (rs.length > 0) this.learnt = rs[rs.length - 1] as string;
    }
    for (const [ring, g] of Object.entries(f.rings)) {
      if (!this.gens.has(ring) || (this.gens.get(ring) as number) < g) this.touchRing(ring, g);
    }
    for (const [ring, kh, v, h] of f.keys) this.raiseHashed(ring, kh, v, h);
  }

  private toJson(): FloorJson {
    const keys: FloorJson['keys'] = [];
    for (let s = this.head; s !== null; s = s.next) keys.push([s.ring, s.kh, s.e.v, s.e.h]);
    return { version: 1, rings: Object.fromEntries(this.gens), keys, ...(this.learnt === null ? {} : { ring: this.learnt }) };
  }
}

interface FloorJson {
  version: 1;
  rings: Record<string, number>;
  /** [ring, key hash, version, value hash | null], least recently used first. */
  keys: Array<[string, string, number, string | null]>;
  /** The ring learnt by a client that pins none (absent: none learnt yet). */
  ring?: string;
}

const ringRe = /^(none|[0-9a-f]{64})$/;
const khRe = /^[0-9a-f]{32}$/;
const vhRe = /^[0-9a-f]{16}$/;

function badFile(file: string, why: string): EkvError {
  return new EkvError('BAD_REQUEST', `floor file ${file}: ${why} (delete it to start a new floor, or run without one)`);
}

/** The file's floor; null when there is no file yet. Anything else than a floor file is refused. */
export function readFloorFile(file: string): FloorJson | null {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw badFile(file, `cannot read it: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (text.length > floorFileBytesMax) throw badFile(file, 'too large');
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw badFile(file, 'not JSON');
  }
  const f = raw as Partial<FloorJson> | null;
  if (!f || f.version !== 1 || typeof f.rings !== 'object' || f.rings === null || !Array.isArray(f.keys)) throw badFile(file, 'not a floor file');
  const rings: Record<string, number> = {};
  for (const [ring, g] of Object.entries(f.rings)) {
    if (!ringRe.test(ring) || typeof g !== 'number' || !Number.isSafeInteger(g) || g < 0) throw badFile(file, 'a malformed ring entry');
    rings[ring] = g;
  }
  const keys: FloorJson['keys'] = [];
  for (const k of f.keys as unknown[]) {
    if (!Array.isArray(k) || k.length !== 4) throw badFile(file, 'a malformed key entry');
    const [ring, kh, v, h] = k as unknown[];
    if (typeof ring !== 'string' || !ringRe.test(ring) || typeof kh !== 'string' || !khRe.test(kh)) throw badFile(file, 'a malformed key entry');
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || !(h === null || (typeof h === 'string' && vhRe.test(h)))) {
      throw badFile(file, 'a malformed key entry');
    }
    keys.push([ring, kh, v, h]);
  }
  const ring = (f as { ring?: unknown }).ring;
  if (ring !== undefined && (typeof ring !== 'string' || !ringRe.test(ring))) throw badFile(file, 'a malformed ring');
  return { version: 1, rings, keys, ...(typeof ring === 'string' ? { ring } : {}) };
}

/** Write `f` to `file` atomically: a temporary file beside it, flushed, then renamed over it. */
function writeFloorFile(file: string, f: FloorJson): void {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, JSON.stringify(f) + '\n');
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  closeSync(fd);
  renameSync(tmp, file);
}
