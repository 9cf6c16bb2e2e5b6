/**
 * A node-wide bound on the memory that answers to client sessions hold (docs/architecture.md "Work before
 * authentication"; Redis's client-output-buffer-limit and maxmemory are the precedent).
 *
 * Invariant: `used` = over every metered session, a reservation (`answerReserveBytes`) for each request being
 * worked on or answered and not yet sealed, plus the bytes of sealed frames not yet taken by the reader (the
 * FramedSocket's outbox and the socket's write buffer); `used` <= `bytesMax` at all times. Only taking a request
 * raises it (`AnswerMeter.tryReserve`, refused past the bound); sealing trades reservations for frames of at most
 * as many bytes, write completions and closes lower it.
 *
 * When a request does not fit, `relieve` closes the session holding the most whose oldest unread answer was queued
 * more than `stallMs` ago (one per `relieveEveryMs` at most), and waiting sessions are woken, as many as the room
 * made lets in, oldest first (review-18 F1, F2).
 * No timers per session: staleness is a timestamp read only under pressure.
 *
 * Held sessions (`hold`/`unhold`): a session whose reading is paused (a request that does not fit waits unread) keeps
 * bytes its client goes on sending in the kernel's buffers and the node's reading state, outside `used`. At most
 * `holdsMax` sessions are held at once, in an insertion-ordered set (a session that resumes leaves it, so the first is
 * the one held longest without progress, and one that takes a request while held moves to its end: review-19 F2); when
 * it is full, the first is closed if it has been held `holdGraceMs`, else the session that would be held waits on
 * probation (at most `holdProbeMax`) and is closed if it takes no request for `holdProbeMs` (review-19 F1)
 * (docs/architecture.md "held client sessions"). O(1) per hold; one pool-wide timer while any hold is on probation.
 *
 * Pure bookkeeping, one instance per server; a meter per client session (FramedSocket, SecureSession and serveRpc
 * each report their part).
 */
import { frameBytesMax } from './constants.ts';
import { EkvError } from './errors.ts';

/** What a request being worked on, or an answer not yet sealed, counts for: a whole frame with its length prefix. */
export const answerReserveBytes = frameBytesMax + 4;

export interface AnswerMemoryOptions {
  /** The node-wide bound (bytes). */
  bytesMax: number;
  /** A session whose oldest unread answer is this old (or, holding only reservations, unanswered this long) may be closed under pressure. */
  stallMs?: number;
  /** At most one session is closed per this many ms of pressure (and the sessions are scanned only then). */
  relieveEveryMs?: number;
  /** Monotonic ms (tests inject). */
  now?: () => number;
  /** Told of each session closed to make room (log, metric). */
  onEvict?: (m: { charged: number; unread: number; stalledMs: number }) => void;
  /** At most this many sessions held at once (no bound: Infinity). */
  holdsMax?: number;
  /** The session held longest is closed for a new hold only if held this long (default stallMs). */
  holdGraceMs?: number;
  /** Told of each session closed by the held-session bound: `stale` the one held longest, else the newcomer. */
  onHoldClose?: (m: { stale: boolean; heldMs: number; holding: number }) => void;
  /**
   * Review-19 F1: a hold that finds the set full of sessions held < holdGraceMs is not refused at once: the session
   * waits on probation (outside the set, at most holdProbeMax such sessions) and is refused only if it took no request
   * for holdProbeMs; one that resumes meanwhile (an honest batch held until its answers are sealed) never counts.
   */
  holdProbeMs?: number;
  holdProbeMax?: number;
}

export const answerStallMs = 2000;
/** Probation (review-19 F1): long enough for a client across a WAN, or on a loaded machine, to drain an answer. */
export const holdProbeMs = 250;
export const relieveEveryMs = 50;
/** Answers queued within this many ms of each other count as queued together (the age of unread bytes, F1). */
const queuedGrainMs = 10;

const monotonic = (): number => performance.now();

export class AnswerMemory {
  readonly bytesMax: number;
  readonly stallMs: number;
  readonly #relieveEveryMs: number;
  readonly #now: () => number;
  readonly #onEvict: AnswerMemoryOptions['onEvict'];
  readonly #onHoldClose: AnswerMemoryOptions['onHoldClose'];
  readonly holdsMax: number;
  readonly holdGraceMs: number;
  /** Held sessions, in the order they became held (the first: held longest without progress). */
  readonly #held = new Set<AnswerMeter>();
  /** Review-19 F1: holds over the bound on probation (insertion order), and the one timer that decides them. */
  readonly #probation = new Set<AnswerMeter>();
  #probeTimer: NodeJS.Timeout | null = null;
  /** Set while hold() closes a stale session for a newcomer: its slot is the newcomer's, not probation's. */
  #replacing = false;
  readonly holdProbeMs: number;
  readonly holdProbeMax: number;
  /** The most sessions held at once (tests, metrics). */
  heldPeak = 0;
  /** Sessions closed by the held bound: the one held longest (stale), or the newcomer (refused). */
  heldEvicted = 0;
  holdsRefused = 0;
  /** Bytes counted over every open meter (the invariant: <= bytesMax). */
  used = 0;
  /** The most `used` has been (tests, metrics). */
  peak = 0;
  evicted = 0;
  readonly #meters = new Set<AnswerMeter>();
  readonly #waiters = new Set<() => void>();
  #wakeScheduled = false;
  #lastRelieveAt = -Infinity;

  constructor(opts: AnswerMemoryOptions) {
    if (!(opts.bytesMax >= answerReserveBytes)) throw new Error('AnswerMemory: bytesMax must hold at least one answer');
    this.bytesMax = opts.bytesMax;
    this.stallMs = opts.stallMs ?? answerStallMs;
    this.#relieveEveryMs = opts.relieveEveryMs ?? relieveEveryMs;
    this.#now = opts.now ?? monotonic;
    this.#onEvict = opts.onEvict;
    this.#onHoldClose = opts.onHoldClose;
    this.holdsMax = opts.holdsMax ?? Infinity;
    if (!(this.holdsMax >= 1)) throw new Error('AnswerMemory: holdsMax must admit at least one held session');
    this.holdGraceMs = opts.holdGraceMs ?? this.stallMs;
    this.holdProbeMs = opts.holdProbeMs ?? holdProbeMs;
    this.holdProbeMax = opts.holdProbeMax ?? Math.max(4, Math.ceil(this.holdsMax / 8));
  }

  /** Sessions whose hold is on probation (review-19 F1). */
  get probation(): number {
    return this.#probation.size;
  }

  /** Sessions held now. */
  get holding(): number {
    return this.#held.size;
  }

  /** @internal AnswerMeter.hold: true if `m` may be held (it is counted), false if it was closed instead. */
  hold(m: AnswerMeter, probe = true): boolean {
    if (this.#held.size >= this.holdsMax) {
      const first = this.#held.values().next().value as AnswerMeter;
      const now = this.#now();
      const heldMs = now - first.heldAt;
      if (heldMs < this.holdGraceMs && probe && this.#probation.size < this.holdProbeMax) {
        // Review-19 F1: decided holdProbeMs after its last progress, not now.
        m.probedAt = now;
        this.#probation.add(m);
        this.#armProbe();
        return true;
      }
      if (heldMs >= this.holdGraceMs) {
        this.heldEvicted++;
        this.#replacing = true;
        try {
          first.evict(new EkvError('UNAVAILABLE', 'too many sessions held by the node and this one has been held longest without reading', { reason: 'SLOW_READER' }));
        } finally {
          this.#replacing = false;
        }
        this.#onHoldClose?.({ stale: true, heldMs: Math.round(heldMs), holding: this.#held.size });
      } else {
        this.holdsRefused++;
        const ms = Math.round(now - m.heldAt);
        m.evict(new EkvError('UNAVAILABLE', 'busy: too many sessions held by the node', { reason: 'BUSY' }));
        this.#onHoldClose?.({ stale: false, heldMs: ms, holding: this.#held.size });
        return false;
      }
    }
    this.#held.add(m);
    if (this.#held.size > this.heldPeak) this.heldPeak = this.#held.size;
    return true;
  }

  /** @internal */
  unhold(m: AnswerMeter): void {
    if (this.#probation.delete(m)) return;
    if (!this.#held.delete(m)) return;
    // A slot freed: the oldest hold on probation takes it.
    const next = this.#probation.values().next().value;
    if (next !== undefined && !this.#replacing && this.#held.size < this.holdsMax) {
      this.#probation.delete(next);
      next.heldAt = this.#now(); // the set stays in heldAt order: its first is the one held longest
      this.#held.add(next);
    }
  }

  /**
   * @internal A held session took a request: progress (review-19 F2). One on probation is not refused for another
   * holdProbeMs; one in the set moves to its end, held from now (a bulk reader whose batch drains over seconds was
   * otherwise the "held longest without progress" while it took requests all along, and closed SLOW_READER).
   */
  progress(m: AnswerMeter): void {
    const now = this.#now();
    if (this.#probation.has(m)) m.probedAt = now;
    else if (this.#held.delete(m)) {
      m.heldAt = now;
      this.#held.add(m);
    }
  }

  #armProbe(): void {
    if (this.#probeTimer !== null || this.#probation.size === 0) return;
    this.#probeTimer = setTimeout(() => {
      this.#probeTimer = null;
      const now = this.#now();
      for (const m of [...this.#probation]) {
        if (!this.#probation.has(m) || now - m.probedAt < this.holdProbeMs) continue;
        this.#probation.delete(m);
        m.heldAt = now;
        this.hold(m, false); // in the set if there is room or a stale one gives way, else refused (closed)
      }
      this.#armProbe();
    }, this.holdProbeMs);
    this.#probeTimer.unref?.();
  }

  get sessions(): number {
    return this.#meters.size;
  }

  /** Sessions registered to be woken when room is made (tests). */
  get waiting(): number {
    return this.#waiters.size;
  }

  /** @internal A closed session's wake-up is dropped with it (review-18 F7). */
  unwait(wake: () => void): void {
    this.#waiters.delete(wake);
  }

  /** A meter for one client session; `close` ends that session (it must end up calling meter.close()). */
  open(close: (err: EkvError) => void): AnswerMeter {
    const m = new AnswerMeter(this, close, this.#now());
    this.#meters.add(m);
    return m;
  }

  /** @internal */
  add(n: number): void {
    this.used += n;
    if (this.used > this.peak) this.peak = this.used;
  }

  /** @internal */
  sub(n: number): void {
    this.used -= n;
    if (this.#waiters.size > 0 && this.used + answerReserveBytes <= this.bytesMax) this.#wake();
  }

  /** @internal */
  closed(m: AnswerMeter): void {
    this.#meters.delete(m);
  }

  /** @internal */
  stamp(): number {
    return this.#now();
  }

  /**
   * A session could not take a request for want of node-wide room: `wake` runs once room is made (or a session
   * closes), and the session holding the most that has not emptied its unread answers for stallMs is closed.
   */
  pressed(wake: () => void, by?: AnswerMeter): void {
    // Review-18 F7: registered with its session's meter, so that a session closed meanwhile leaves no wake-up here (it
    // kept the whole session reachable until room was next made: sessions that asked and hung up while the node
    // stayed full piled up).
    if (by !== undefined && !by.waitWith(wake)) return;
    this.#waiters.add(wake);
    this.relieve();
  }

  /** Close the largest stalled holder, if any and if none was closed in the last relieveEveryMs. */
  relieve(): boolean {
    const now = this.#now();
    if (now - this.#lastRelieveAt < this.#relieveEveryMs) return false;
    this.#lastRelieveAt = now;
    let victim: AnswerMeter | null = null;
    for (const m of this.#meters) {
      // Stalled: its oldest unread answer was queued stallMs ago (it does not read), or, holding only reservations, no answer
      // for stallMs (requests kept waiting). A prompt reader with answers coming is neither.
      if (m.charged === 0 || now - m.stalledSince() < this.stallMs) continue;
      if (victim === null || m.charged > victim.charged || (m.charged === victim.charged && m.stalledSince() < victim.stalledSince())) victim = m;
    }
    if (victim === null) return false;
    this.evicted++;
    const info = { charged: victim.charged, unread: victim.unread, stalledMs: Math.round(now - victim.stalledSince()) };
    victim.evict(new EkvError('UNAVAILABLE', 'the node\'s answer memory is full and this session holds the most unread answers', { reason: 'SLOW_READER' }));
    this.#onEvict?.(info);
    this.#wake();
    return true;
  }

  #wake(): void {
    if (this.#wakeScheduled) return;
    this.#wakeScheduled = true;
    setImmediate(() => {
      this.#wakeScheduled = false;
      // Review-18 F2: only as many as the room lets in, oldest first (each takes what it can synchronously); waking
      // every waiter on each write completion cost thousands of pumps per turn of the event loop under pressure.
      // One woken that takes nothing (closed, or waiting on its own budget) lets the next one try.
      for (const w of this.#waiters) {
        if (this.used + answerReserveBytes > this.bytesMax) break;
        this.#waiters.delete(w);
        w();
      }
    });
  }
}

/** One client session's share of an AnswerMemory. */
export class AnswerMeter {
  /** What this session counts in the pool: reservations + unread bytes. */
  charged = 0;
  /** Of which: sealed bytes written and not yet taken by the reader. */
  unread = 0;
  /** When `unread` was last 0 (monotonic ms). */
  emptiedAt: number;
  /**
   * The unread bytes by when they were queued, oldest first, flat [bytes, at, bytes, at, ...] from #head (review-18
   * F1): a reader is late by the age of the oldest byte it has not taken, not by how long its queue has not been
   * empty (a pipelining reader that takes every answer promptly may never see its queue empty). Entries queued
   * within queuedGrainMs of each other share one.
   */
  readonly #fifo: number[] = [];
  #head = 0;
  /** When this session last had an answer sealed, or became busy (took a request holding nothing). */
  answeredAt: number;
  #open = true;
  #held = false;
  /** When it became held (monotonic ms; meaningful while held). */
  heldAt = 0;
  /** @internal On probation (review-19 F1): when it last took a request. */
  probedAt = 0;
  #wake: (() => void) | null = null;
  readonly #pool: AnswerMemory;
  readonly #close: (err: EkvError) => void;

  constructor(pool: AnswerMemory, close: (err: EkvError) => void, now: number) {
    this.#pool = pool;
    this.#close = close;
    this.emptiedAt = now;
    this.answeredAt = now;
  }

  /** Since when this session has made no progress its reader or its requests could show (relieve). */
  stalledSince(): number {
    if (this.unread > 0) return this.#fifo[this.#head + 1] ?? this.emptiedAt; // since its oldest unread byte was queued
    return Math.max(this.answeredAt, this.emptiedAt);
  }

  get pool(): AnswerMemory {
    return this.#pool;
  }

  /** @internal Its registered wake-up (AnswerMemory.pressed), dropped when it closes. */
  waitWith(wake: () => void): boolean {
    if (!this.#open) return false;
    this.#wake = wake;
    return true;
  }

  /**
   * Its reading is paused from now (serveRpc holds it): counted against the pool's holdsMax. False if the session was
   * closed instead (the pool was full of sessions that made progress within holdGraceMs).
   */
  hold(): boolean {
    if (!this.#open) return false;
    if (this.#held) return true;
    this.heldAt = this.#pool.stamp();
    this.#held = true;
    return this.#pool.hold(this);
  }

  /** @internal It took a request while held (review-19 F1). */
  progress(): void {
    if (this.#held) this.#pool.progress(this);
  }

  /** Its reading resumed (it made progress). */
  unhold(): void {
    if (!this.#held) return;
    this.#held = false;
    this.#pool.unhold(this);
  }

  /** Reserve room for one request's answer: false (nothing counted) if the node-wide bound has no room. */
  tryReserve(): boolean {
    if (!this.#open) return true; // a closed session takes nothing anyway
    const pool = this.#pool;
    if (pool.used + answerReserveBytes > pool.bytesMax) return false;
    if (this.charged === 0) this.answeredAt = pool.stamp(); // busy from now: its first answer is not late yet
    this.charged += answerReserveBytes;
    pool.add(answerReserveBytes);
    return true;
  }

  /** Return `count` reservations (one-way requests settled; answers sealed into frames). */
  unreserve(count: number): void {
    if (!this.#open || count === 0) return;
    const n = count * answerReserveBytes;
    this.charged -= n;
    this.answeredAt = this.#pool.stamp();
    this.#pool.sub(n);
  }

  /** A sealed frame of `n` bytes (prefix included) queued for the reader. */
  queued(n: number): void {
    if (!this.#open) return;
    this.charged += n;
    this.unread += n;
    const at = this.#pool.stamp();
    const f = this.#fifo;
    if (f.length > this.#head && at - (f[f.length - 1] as number) < queuedGrainMs) f[f.length - 2] = (f[f.length - 2] as number) + n;
    else f.push(n, at);
    this.#pool.add(n);
  }

  /** `n` bytes left for the reader (a write completed). */
  written(n: number): void {
    if (!this.#open) return;
    this.charged -= n;
    this.unread -= n;
    // Take n bytes off the oldest entries (writes complete in the order the frames were queued).
    const f = this.#fifo;
    let left = n;
    while (left > 0 && this.#head < f.length) {
      const b = f[this.#head] as number;
      if (b <= left) {
        left -= b;
        this.#head += 2;
      } else {
        f[this.#head] = b - left;
        left = 0;
      }
    }
    if (this.#head >= f.length || this.unread <= 0) {
      f.length = 0;
      this.#head = 0;
    } else if (this.#head >= 1024 && this.#head * 2 >= f.length) {
      f.splice(0, this.#head);
      this.#head = 0;
    }
    if (this.unread === 0) this.emptiedAt = this.#pool.stamp();
    this.#pool.sub(n);
  }

  /** The session ended: everything it held is returned. */
  close(): void {
    if (!this.#open) return;
    this.#open = false;
    const n = this.charged;
    this.charged = 0;
    this.unread = 0;
    this.#fifo.length = 0;
    this.#head = 0;
    if (this.#wake !== null) this.#pool.unwait(this.#wake);
    this.#wake = null;
    this.unhold();
    this.#pool.closed(this);
    this.#pool.sub(n);
  }

  /** @internal Closed by the pool to make room. */
  evict(err: EkvError): void {
    this.close();
    this.#close(err);
  }
}
