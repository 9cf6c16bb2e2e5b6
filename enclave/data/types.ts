// The data layer's vocabulary: members, configurations, entries, sessions, and
// the messages between cores and with clients. Plain data only (the driver
// encodes them; the simulator passes them by reference).

/** A node as a member of configurations: its name (address), ring position and incarnation. */
export interface Member {
  readonly name: string;
  readonly ring: bigint;
  /** A node that restarts without its state takes a new incarnation and is a new member. */
  readonly inc: number;
}

export function sameMember(a: Member | undefined | null, b: Member | undefined | null): boolean {
  return !!a && !!b && a.name === b.name && a.inc === b.inc;
}

/** A decided configuration of one range: members[0] owns it. Epochs only increase. */
export interface Config {
  readonly shard: number;
  readonly epoch: number;
  readonly members: readonly Member[];
}

/** Paxos ballot: totally ordered by (round, name, inc). */
export interface Ballot {
  readonly round: number;
  readonly name: string;
  readonly inc: number;
}

export function cmpBallot(a: Ballot, b: Ballot): number {
  if (a.round !== b.round) return a.round - b.round;
  if (a.name !== b.name) return a.name < b.name ? -1 : 1;
  return a.inc - b.inc;
}

/** One key's state: a value or a tombstone (value null); versions grow by one per put or delete. */
export interface Entry {
  readonly value: string | null;
  readonly version: number;
  /** Epoch of the owner that applied it: entries compare by (epoch, version). */
  readonly epoch: number;
  /**
   * Expiry (docs/consistency.md "Expiry"), values only: ticks left, counted from when the record or message that
   * carries the entry was made (a write's own ttl in a Replicate or its log record; what was left when a range
   * was sent or snapshotted). Absent: the entry never expires.
   */
  readonly ttl?: number;
  /**
   * This node's own deadline in its monotonic ticks, set when the entry is applied here (from `ttl`, counted
   * from then and stretched by the drift bound, so never early). Memory only: never sent, never sealed.
   */
  readonly until?: number;
}

/**
 * Whether `e` has expired by this node's clock at `now` (ticks): the helper readers such as scans use to skip
 * an entry the owner is about to collect. A get never answers "absent" from this alone: it waits for the
 * replicated expiry (a tombstone every member holds), so that no later owner can bring the value back.
 */
export function expiredHere(e: Entry | undefined, now: number): boolean {
  return e !== undefined && e.value !== null && e.until !== undefined && now >= e.until;
}

export function newer(a: Entry, b: Entry | undefined): boolean {
  return !b || a.epoch > b.epoch || (a.epoch === b.epoch && a.version > b.version);
}

/** The outcome of a write, remembered per request so that a retry gets the same answer. */
export type WriteResult =
  | { readonly ok: true; readonly version: number; readonly existed: boolean }
  | { readonly ok: false; readonly code: 'CONFLICT' | 'RANGE_FULL'; readonly version: number; readonly t?: number };

/** A remembered result with the digest of the request it answered (a reuse of its seq for another request is refused). */
export interface Done {
  readonly result: WriteResult;
  /** requestDigest(): the request's kind, key, value hash and ifVersion. */
  readonly digest: string;
}

export interface Session {
  /** The principal tag of whoever opened it: only that principal's writes may use it. */
  readonly owner: string;
  /** The client retries nothing below this seq; results below it are dropped. */
  floor: number;
  results: Map<number, Done>;
  /** Owner's use stamp, for least-recently-used eviction. */
  used: number;
}

export interface Sessions {
  /** Next session number to allocate: an unknown session below it has expired. */
  next: number;
  /** The owner's use clock. */
  clock: number;
  table: Map<number, Session>;
}

export type RangeData = Map<string, Entry>;

/** A replicated change of one range: a key's entry and/or a request's result, or a session opened. */
export interface WriteOp {
  readonly key: string | null;
  readonly entry: Entry | null;
  readonly req: { readonly session: number; readonly seq: number; readonly floor: number; readonly result: WriteResult; readonly digest: string; readonly used: number } | null;
  readonly open: { readonly id: number; readonly owner: string; readonly evict: number | null; readonly used: number } | null;
}

/** Records the driver must make durable (sealed log) before it sends the batch's messages. */
export type LogRecord =
  | { readonly t: 'acc'; readonly shard: number; readonly epoch: number; readonly promised: Ballot | null; readonly accepted: { ballot: Ballot; value: Config } | null }
  | { readonly t: 'round'; readonly shard: number; readonly round: number }
  | { readonly t: 'cfg'; readonly shard: number; readonly config: Config }
  | { readonly t: 'snap'; readonly shard: number; readonly instance: number; readonly ballot: Ballot | null; readonly synced: boolean; readonly data: RangeData; readonly sessions: Sessions }
  | { readonly t: 'w'; readonly shard: number; readonly epoch: number; readonly op: WriteOp }
  /**
   * Node-level (shard 0): the node's log position and incarnation. Written first in every snapshot, and when a
   * node found it was rolled back and took a new incarnation: on replay, a mark of a higher incarnation than
   * the state so far discards that state (it was the old incarnation's). With `boot`: that boot started at
   * `pos` (every core writes one when it starts; snapshots repeat the node's recent boots), so a restarted node
   * knows which boots' records its log holds, and up to where.
   */
  | { readonly t: 'mark'; readonly shard: number; readonly pos: number; readonly inc: number; readonly boot?: number }
  /** Node-level (shard 0): the highest log positions seen from peers, per peer name and incarnation (witnesses). */
  | { readonly t: 'wit'; readonly shard: number; readonly w: ReadonlyArray<Witnessed> }
  /**
   * Node-level (shard 0): this node's incarnation `inc` retired for good (docs/consistency.md, "Retirement", B7a).
   * A log holding it is never that member again: a node started from it takes a new incarnation. An image from
   * before retirement refuses the record (UNKNOWN_TYPE) and fails to load, so it cannot bring the member back.
   */
  | { readonly t: 'ret'; readonly shard: number; readonly inc: number };

/**
 * A witness entry: peer name, highest log position seen, its incarnation, the boot of that incarnation this node
 * admits, the boot whose message carried that position (0: none known), and the boots of that incarnation it
 * admitted and then replaced (never admitted again), and (only when set) that this incarnation retired for good: 1 heard
 * from a peer, 2 heard from the retiring boot itself with its witnesses, which were merged into this node's (review-7 F1).
Logs written before boot fencing have three fields, before retirement six (an image from before retirement
refuses a seventh and fails to load). docs/consistency.md, "Boots and clones" and "Retirement".
 */
/**
 * `mine` (only with retired 2): what the retired member had witnessed of the record's own node (incarnation,
 * position, boot of that position), from its retiring heartbeat (B7c', docs/consistency.md).
 */
export type Witnessed = readonly [name: string, pos: number, inc: number, boot: number, posBoot: number, replaced: readonly number[], retired?: 1 | 2, mine?: readonly [inc: number, pos: number, posBoot: number]];

/** Boots of one peer's incarnation remembered as replaced (never admitted again), most recent last. */
export const replacedBootsMax = 8;

/** Boot ids: a random integer in [1, 2^48] drawn by each core at start (0 means "none"). */
export const bootIdMax = 2 ** 48;

// ---- client side ----

/**
 * Writes and opens carry the caller's principal tag, set by the enclave that took the request from the
 * caller's proven identity (never sent by a client): a session is bound to the tag that opened it.
 */
export type ClientOp =
  | { readonly kind: 'get'; readonly key: string }
  /** ttl: expire the value this many ticks after it is applied (docs/consistency.md "Expiry"); absent or null: never. */
  | { readonly kind: 'put'; readonly key: string; readonly value: string; readonly ifVersion: number | null; readonly session: number; readonly seq: number; readonly floor: number; readonly principal: string; readonly ttl?: number | null }
  | { readonly kind: 'del'; readonly key: string; readonly ifVersion: number | null; readonly session: number; readonly seq: number; readonly floor: number; readonly principal: string }
  | { readonly kind: 'open'; readonly shard: number; readonly principal: string };

/**
 * The principal tag of every caller without a key: shared by strangers, who therefore share one bound of sessions
 * per range (and can evict each other's, as they can overwrite and delete each other's keys: review-3 R7b).
 */
export const anonPrincipal = 'anon';

/**
 * Principal tags starting with this are the enclaves' own (the access module's document sessions; no client can
 * produce one): their opens may evict any session, so that a table kept busy by callers cannot block an ACL change.
 */
export const internalPrincipalPrefix = '#';

/** Principal tags: at most this many characters. */
export const principalCharsMax = 80;
/** Session ids: (per-range counter) · 2^sessionNonceBits + a random nonce, so that ids cannot be guessed. */
export const sessionNonceBits = 21;
export const sessionNonceSpan = 2 ** sessionNonceBits;

/** The counter part of a session id (0 for an id that is not one). */
export function sessionCounter(id: number): number {
  return Number.isSafeInteger(id) && id > 0 ? Math.floor(id / sessionNonceSpan) : 0;
}

export type ClientResult =
  | { readonly ok: true; readonly kind: 'get'; readonly found: boolean; readonly value: string | null; readonly version: number }
  | { readonly ok: true; readonly kind: 'write'; readonly version: number; readonly existed: boolean }
  | { readonly ok: true; readonly kind: 'open'; readonly session: number }
  /**
   * `t` (a CONFLICT on a key without a value only): the version of the key's delete (its tombstone's; 0: never
   * written), so that a client whose floor saw a newer version can tell a rolled-back "no value" from a delete.
   */
  | { readonly ok: false; readonly code: 'CONFLICT' | 'RANGE_FULL'; readonly version: number; readonly t?: number }
  | { readonly ok: false; readonly code: 'NOT_OWNER'; readonly hint: string | null }
  | { readonly ok: false; readonly code: 'UNAVAILABLE' | 'SESSION_EXPIRED' | 'STALE_REQUEST' | 'BAD_REQUEST' }
  /**
   * The caller's principal already has its share of the range's queue waiting (node.ts queuedPrincipalShare):
   * this attempt was not queued, so not applied; retryable like UNAVAILABLE.
   */
  | { readonly ok: false; readonly code: 'BUSY' }
  /**
   * Never from the core: the entry node's answer when an earlier attempt of the same write may have reached
   * the owner and a later one is refused SESSION_EXPIRED (the write may have been applied).
   */
  | { readonly ok: false; readonly code: 'OUTCOME_UNKNOWN' };

// ---- peer messages ----

export type RejectReason = 'PROMISED' | 'LEASED' | 'QUIET' | 'NOT_MEMBER';

export type PeerBody =
  /**
   * `configs`: the sender's configurations, all of them or (heartbeatFullEvery) those newer than the receiver
   * reported in its last heartbeat; `epochs` (absent from older images): the sender's epoch per range (0: none),
   * its report to the receiver.
   * `ret` (only when true): the sender's incarnation has retired for good (B7a; sent after its `ret` record).
   * `gone` (only when non-empty): retired members (name, incarnation) that the sender's configurations still
   * name, passed on so that nodes that missed the retirement learn it (B7b). Older images ignore both.
   * `rw` (only with `ret`): the retiring member's witnesses (name, incarnation, position, boot of that position), handed
   * over so that the rollback check (B6) of a co-member that counts it as admitting (B7c) still sees them (review-7 F1).
   */
  | {
    readonly t: 'hb'; readonly leaving: boolean; readonly configs: readonly Config[]; readonly epochs?: readonly number[]; readonly ret?: true;
    readonly gone?: ReadonlyArray<readonly [name: string, inc: number]>;
    readonly rw?: ReadonlyArray<readonly [name: string, inc: number, pos: number, posBoot: number]>;
  }
  | { readonly t: 'prepare'; readonly base: Config; readonly ballot: Ballot }
  | { readonly t: 'promise'; readonly shard: number; readonly instance: number; readonly ballot: Ballot; readonly accepted: { ballot: Ballot; value: Config } | null; readonly data: RangeData; readonly sessions: Sessions }
  | { readonly t: 'reject'; readonly shard: number; readonly instance: number; readonly ballot: Ballot; readonly reason: RejectReason; readonly promised: Ballot | null }
  | { readonly t: 'stale'; readonly config: Config }
  | { readonly t: 'install'; readonly base: Config; readonly ballot: Ballot; readonly value: Config; readonly data: RangeData; readonly sessions: Sessions }
  | { readonly t: 'installAck'; readonly shard: number; readonly instance: number; readonly ballot: Ballot }
  | { readonly t: 'accept'; readonly base: Config; readonly ballot: Ballot; readonly value: Config }
  | { readonly t: 'accepted'; readonly shard: number; readonly instance: number; readonly ballot: Ballot }
  | { readonly t: 'commit'; readonly config: Config }
  | { readonly t: 'sync'; readonly config: Config; readonly data: RangeData; readonly sessions: Sessions }
  | { readonly t: 'syncAck'; readonly shard: number; readonly epoch: number }
  | { readonly t: 'replicate'; readonly shard: number; readonly epoch: number; readonly opId: number; readonly op: WriteOp }
  | { readonly t: 'replicateAck'; readonly shard: number; readonly epoch: number; readonly key: string; readonly opId: number }
  | { readonly t: 'fenced'; readonly shard: number; readonly epoch: number }
  | { readonly t: 'leaseReq'; readonly shard: number; readonly epoch: number; readonly t0: number }
  | { readonly t: 'leaseGrant'; readonly shard: number; readonly epoch: number; readonly t0: number }
  /** A restarting node asks what its peers witnessed of it (its highest log position and incarnation). */
  | { readonly t: 'witQ'; readonly nonce: number }
  /**
   * The answer: the highest position and incarnation witnessed of the asker's name, the boot of it this node
   * admits (the asker's own boot once it is admitted), and whether another admitted boot is still live here.
   */
  /**
   * `held` (only when non-empty): retired members whose witnesses the answerer holds (it heard their retirement from
   * them, with their witnesses): the asker may count only those as admitting it (B7c, review-7 F1).
   */
  | { readonly t: 'witA'; readonly nonce: number; readonly pos: number; readonly inc: number; readonly boot: number; readonly posBoot: number; readonly live: boolean; readonly held?: ReadonlyArray<readonly [name: string, inc: number]> }
  /** Boot lease: a node asks its peers to confirm that they admit its boot (t0: its clock when it asked). */
  | { readonly t: 'bootQ'; readonly t0: number }
  | { readonly t: 'bootA'; readonly t0: number; readonly boot: number }
  /** To a boot this node does not admit (another boot of its name and incarnation is admitted): it must stop for good. */
  | { readonly t: 'superseded'; readonly boot: number };

/**
 * `pos` on peer messages: the sender's sealed-log position (records made so far), durable before the message
 * was sent (persist-then-send); -1 or absent: none given (a node still checking its own state gives none).
 */
export type Inbound =
  /**
   * `boot`: the sender's boot id; `toBoot`: the boot of this node's name the sender admits (0: none), and
   * `toInc` the incarnation it admits it for, so that a vote or grant meant for one boot is not counted by
   * another boot of the same incarnation (docs/consistency.md, "Boots and clones").
   */
  | { readonly kind: 'peer'; readonly from: Member; readonly body: PeerBody; readonly pos?: number; readonly boot?: number; readonly toBoot?: number; readonly toInc?: number }
  | { readonly kind: 'client'; readonly client: string; readonly rid: number; readonly op: ClientOp };

export type Outbound =
  | { readonly kind: 'peer'; readonly to: string; readonly from: Member; readonly body: PeerBody; readonly pos: number; readonly boot: number; readonly toBoot: number; readonly toInc: number }
  | {
    readonly kind: 'reply'; readonly to: string; readonly rid: number; readonly result: ClientResult;
    /**
     * Only on a get's answer (docs/durability.md R1): the log position of the newest record it may depend on (its
     * range's newest record, or a node-level one). It may leave as soon as the log is durable up to there, ahead
     * of the rest of its batch; without `dep` a message waits for its whole batch.
     */
    readonly dep?: number;
  };

export interface Ready {
  /** Make these durable, in order, before sending any of `messages` (except a reply whose `dep` is durable already). */
  readonly persist: LogRecord[];
  readonly messages: Outbound[];
  /** The log position after `persist` (positions only grow within one core). */
  readonly pos: number;
}
