// The scan core (docs/scans.md): one page of one range's keys in byte order, from the acknowledged view its
// leased owner serves reads from. Pure and synchronous: no clock, no I/O. The caller (enclave/cluster/scan-ops.ts)
// obtains the view under the range's read lease at the moment it calls (DataNode.scanView), so every entry of a
// page is what a get of that key would have answered at that moment.
//
// Keys are latin1 strings (one char per byte), so `<` on them is byte order.
// A page costs O(n log w) for a range of n keys and a window of w candidates; when the access filter refuses
// whole windows, the window grows eightfold (up to 65,536 keys), so a page never costs more than O(n log n).
import type { Entry } from './types.ts';

/** The acknowledged state of a range: `data` holds applied entries; a key with a write in flight shows `prev`. */
export interface ScanView {
  readonly data: ReadonlyMap<string, Entry>;
  readonly inflight: ReadonlyMap<string, { readonly prev: Entry | undefined }>;
}

/**
 * The access filter's answer for one key: true (the caller may read it), false (skip it, silently), or a promise
 * to wait for (the filter must fetch something, e.g. an ACL lease) before the key can be decided; the scan then
 * stops, and the caller runs it again from `resume` once the promise settled.
 */
export type ScanDecision = boolean | { readonly wait: Promise<unknown> };

export interface ScanQuery {
  /** Only keys starting with this ('' = every key). */
  readonly prefix: string;
  /** Only keys strictly after this one (null: from the first). */
  readonly after: string | null;
  /** At most this many entries (>= 1). */
  readonly limit: number;
  /** Stop before the page's key (and value) bytes pass this; the first entry is always taken (unless `bytesStrict`). */
  readonly bytesMax: number;
  /** Even the first entry must fit `bytesMax` (a caller continuing a page it has already started). */
  readonly bytesStrict?: boolean;
  readonly values: boolean;
  readonly decide: (key: string) => ScanDecision;
  /**
   * Optional: the group a key's decision depends on alone (its namespace prefix, `ns/`), or null. Once a key of a
   * group is refused, the page skips the rest of that group without asking again (a range full of keys the
   * caller may not read costs one pass per refused group, not one decision per key).
   */
  readonly groupOf?: (key: string) => string | null;
  /** Optional: entries that exist but read as absent (e.g. expired), skipped like tombstones. */
  readonly live?: (key: string, e: Entry) => boolean;
}

export interface ScanEntry {
  readonly key: string;
  /** null when values were not asked for. */
  readonly value: string | null;
  readonly version: number;
  /** The entry's expiry deadline on this node's clock (ticks), when it has one (values with a ttl). */
  readonly until?: number;
}

export interface ScanPage {
  readonly entries: ScanEntry[];
  /** The range may hold more matching keys after the last entry (or after `resume`). */
  readonly more: boolean;
  /**
   * Set when the filter asked to wait: the caller awaits it and scans again with `after = resume` (an internal
   * position: it may be a key the caller may not read, so it never leaves the enclave).
   */
  readonly wait: { readonly promise: Promise<unknown>; readonly resume: string | null } | null;
}

/** Per entry on a page beyond its key and value (CBOR heads and the version): counted against bytesMax. */
export const scanEntryOverheadBytes = 16;
/** The first window of candidates (at least the limit); it grows while the filter refuses whole windows. */
const windowMin = 16;
/** How much the window grows after a pass that the filter refused (fewer passes over a range mostly refused). */
const windowGrowth = 8;
export const scanWindowMax = 1 << 16;

/** The entry a read would see: the acknowledged one (a key with a write in flight shows its previous entry). */
function visible(view: ScanView, key: string): Entry | undefined {
  const f = view.inflight.get(key);
  return f ? f.prev : view.data.get(key);
}

/** A bounded max-heap of strings: keeps the `size` smallest pushed. */
class SmallestKeys {
  private readonly h: string[] = [];
  constructor(private readonly size: number) {}

  get full(): boolean {
    return this.h.length >= this.size;
  }

  /** Whether `k` could still enter (is below the largest kept, or there is room). */
  admits(k: string): boolean {
    return this.h.length < this.size || k < (this.h[0] as string);
  }

  push(k: string): void {
    const h = this.h;
    if (h.length < this.size) {
      h.push(k);
      let i = h.length - 1;
      while (i > 0) {
        const p = (i - 1) >> 1;
        const hp = h[p] as string;
        if (hp >= (h[i] as string)) break;
        h[p] = h[i] as string;
        h[i] = hp;
        i = p;
      }
      return;
    }
    if (k >= (h[0] as string)) return;
    h[0] = k;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && (h[l] as string) > (h[m] as string)) m = l;
      if (r < h.length && (h[r] as string) > (h[m] as string)) m = r;
      if (m === i) break;
      const hm = h[m] as string;
      h[m] = h[i] as string;
      h[i] = hm;
      i = m;
    }
  }

  sorted(): string[] {
    return [...this.h].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }
}

/**
 * One page: the smallest keys after `after` with the prefix, whose entry has a value (and is live), that the
 * filter allows, in byte order, until `limit` entries or `bytesMax` bytes. Refused keys are skipped before the
 * limit is applied, so a page says nothing about them, not even how many there were.
 */
export function selectPage(view: ScanView, q: ScanQuery): ScanPage {
  if (!(q.limit >= 1)) throw new RangeError('limit must be at least 1');
  const entries: ScanEntry[] = [];
  let bytes = 0;
  let pos = q.after;
  let window = Math.min(Math.max(windowMin, q.limit), scanWindowMax);
  const refused = new Set<string>();
  const skip = (k: string): boolean => {
    if (refused.size === 0 || !q.groupOf) return false;
    const g = q.groupOf(k);
    return g !== null && refused.has(g);
  };
  for (;;) {
    const cands = new SmallestKeys(window);
    let count = 0;
    const inflight = view.inflight.size > 0;
    for (const [k, applied] of view.data) {
      if (pos !== null && k <= pos) continue;
      if (!k.startsWith(q.prefix)) continue;
      const e = inflight ? visible(view, k) : applied;
      if (!e || e.value === null) continue;
      if (q.live && !q.live(k, e)) continue;
      if (skip(k)) continue;
      count++;
      if (cands.admits(k)) cands.push(k);
    }
    const keys = cands.sorted();
    for (const k of keys) {
      if (skip(k)) {
        pos = k;
        continue;
      }
      const d = q.decide(k);
      if (typeof d === 'object') return { entries, more: true, wait: { promise: d.wait, resume: pos } };
      if (!d) {
        const g = q.groupOf?.(k) ?? null;
        if (g !== null) refused.add(g);
        pos = k;
        continue;
      }
      const e = visible(view, k) as Entry;
      const cost = k.length + (q.values ? (e.value as string).length : 0) + scanEntryOverheadBytes;
      if (entries.length >= q.limit || ((entries.length > 0 || q.bytesStrict) && bytes + cost > q.bytesMax)) return { entries, more: true, wait: null };
      entries.push({ key: k, value: q.values ? e.value : null, version: e.version, ...(e.until !== undefined ? { until: e.until } : {}) });
      bytes += cost;
      pos = k;
    }
    // Fewer candidates than the window: the range holds no more matching keys after the last one walked.
    if (count <= window) return { entries, more: false, wait: null };
    window = Math.min(window * windowGrowth, scanWindowMax);
  }
}
