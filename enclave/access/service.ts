/**
 * The access-control service of one enclave (issue 7): the store's access
 * check on every get/put/del this node serves, and the namespace, ACL and
 * group operations.
 *
 * Client operations (any node; it finds the document's owner and forwards):
 *   aclGet {ns}     -> {d: signed ACL, n: version}  for a principal holding any right in ns
 *   aclPut {ns, d}  -> {n}   create (version 1, first one wins ring-wide) or compare-and-set update
 *   grpGet {g}      -> {d, n}  for the group key and members
 *   grpKey {g}      -> {key, n}  the group's key (a public key; groups' existence is not secret), for
 *                    a client binding an ACL entry to the group (issue 10, item 5)
 *   grpPut {g, d}   -> {n}
 * Peer operations (attested enclaves only):
 *   accOwn {fo, k, n, d?, p?}  an operation above (fo: get, put, key), forwarded to the document's owner
 *   accLease {k, n, a}         a lease: the committed document (or null), the caller recorded as holder
 *   accPush {k, n, d}          the owner tells a holder of a committed change
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { EkvError } from '../../protocol/errors.ts';
import { principalBytesMax, principalFromBytes, type Principal } from '../../protocol/principal.ts';
import type { RpcResult } from '../../protocol/rpc.ts';
import { authorize, classifyKey, rightsBitsOf, type Op, type RingAccess, type VerifiedAcl, type VerifiedGroup } from '../acl/index.ts';
import { rightBits } from '../acl/verified.ts';
import type { SignedDoc } from '../../protocol/acl-doc.ts';
import type { PeerPool } from '../cluster/peers.ts';
import { nodeIdFromPublicKey, type NodeRef } from '../ring/index.ts';
import { leaseRequestTimeoutMs, ownerOpDeadlineMs, principalCacheMax } from './constants.ts';
import { applyDocUpdate, groupsBoundAnew, mayProposeAcl, toEkvError, wireDocBytes, wireKind, wireName, wireSignedDoc, docRef, type DocRef, type Verified } from './docs.ts';
import { LeaseHolder } from './holder.ts';
import { DocOwner, encodedDoc } from './owner.ts';
import { DocTable, type DocState, type HolderRecord } from './table.ts';

export const accessClientOps: ReadonlySet<string> = new Set(['aclGet', 'aclPut', 'grpGet', 'grpKey', 'grpPut']);
export const accessPeerOps: ReadonlySet<string> = new Set(['accOwn', 'accLease', 'accPush']);

/**
 * Access control, checked by the node that takes a client's request before it runs it (at the key's owner
 * or forwarded there), so a refusal reveals nothing about the key. `principal` is the client's proven key
 * (null: anonymous).
 */
export interface AccessCheck {
  check(op: 'get' | 'put' | 'del', key: Buffer, principal: Buffer | null): Promise<void> | void;
}

/** Where the access documents live: reserved keys of the data store, at their range's owner. */
export interface DocStore {
  /** This node is the active owner of the key's range. */
  owns(key: Buffer): boolean;
  readonly serving: boolean;
  /** The key's acknowledged value at its owner (this node); throws UNAVAILABLE elsewhere. */
  readOwned(key: Buffer): Buffer | null;
  /** Stores the value here as the key's owner (never forwarded). */
  putOwned(key: Buffer, bytes: Buffer): Promise<void>;
  /** The owner this node's configuration names for the key's range, with where to reach it. */
  ownerOf(key: Buffer): NodeRef | null;
  /** Called when this node starts owning a range. */
  onOwnershipGained(fn: () => void): void;
}

export interface AccessComponents {
  docs: DocStore;
  peers: PeerPool;
  self: NodeRef;
  logger: Logger;
}

export interface AccessInit {
  /** What applies to keys outside any created namespace. */
  mode: RingAccess;
  /** Monotonic milliseconds; default performance.now. */
  now?: () => number;
}

export interface AccessCaller {
  peer: { key: Buffer } | null;
  principal: Buffer | null;
}

type OwnerOp = 'get' | 'put' | 'key';
const storeOps: Readonly<Record<'get' | 'put' | 'del', Op>> = { get: 'read', put: 'write', del: 'delete' };
const observeServingMs = 200;

export class AccessService implements AccessCheck {
  readonly mode: RingAccess;
  readonly stats = { leaseFetches: 0, leasesGranted: 0, pushesSent: 0, updates: 0, refused: 0 };
  private readonly table: DocTable;
  private readonly holder: LeaseHolder;
  private readonly owner: DocOwner;
  private readonly now: () => number;
  private readonly principals = new Map<string, Principal>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly c: AccessComponents,
    init: AccessInit,
  ) {
    this.mode = init.mode;
    this.now = init.now ?? (() => performance.now());
    this.table = new DocTable(this.now);
    this.holder = new LeaseHolder({ table: this.table, now: this.now, fetchLease: (ref) => this.fetchLease(ref), logger: c.logger });
    this.owner = new DocOwner({
      table: this.table,
      store: {
        owns: (key) => c.docs.owns(key),
        get serving() {
          return c.docs.serving;
        },
        read: (key) => c.docs.readOwned(key),
        // Stored here as the owner, or refused (never forwarded past our compare-and-set).
        persist: (key, bytes) => c.docs.putOwned(key, bytes),
      },
      now: this.now,
      push: (h, st, bytes) => this.push(h, st, bytes),
      logger: c.logger,
    });
    c.docs.onOwnershipGained(() => this.owner.ownershipChanged());
    this.timer = setInterval(() => this.owner.observeServing(), observeServingMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  handles(op: string): boolean {
    return accessClientOps.has(op) || accessPeerOps.has(op);
  }

  // ------------------------------------------------------------ the per-request check

  /** Called by the store at the key's owner before it looks the key up, so a refusal reveals nothing about it. */
  check(op: 'get' | 'put' | 'del', key: Buffer, principal: Buffer | null): Promise<void> | void {
    const k = classifyKey(key);
    if (k.kind === 'reserved') throw this.forbidden();
    if (k.kind === 'outside') return this.decide(null, principal, storeOps[op]);
    const cached = this.holder.cached(k.ns);
    if (cached !== undefined) return this.decide(cached, principal, storeOps[op]);
    return this.holder.acl(k.ns).then(
      (acl) => this.decide(acl, principal, storeOps[op]),
      (err: unknown) => {
        throw err instanceof EkvError ? err : new EkvError('UNAVAILABLE', `cannot obtain the ACL: ${(err as Error).message}`);
      },
    );
  }

  /**
   * Scans (enclave/cluster/scan-ops.ts): may `principal` read `key`? The same rule as check('get'), without
   * counting a refusal (a scan skips what it may not read). Synchronous when the key's documents are leased.
   */
  readable(key: Buffer, principal: Buffer | null): boolean | Promise<boolean> {
    const k = classifyKey(key);
    if (k.kind === 'reserved') return false;
    const p = principal === null ? null : this.principal(principal);
    if (k.kind === 'outside') return authorize(null, this.table, p, 'read', this.mode);
    const cached = this.holder.cached(k.ns);
    if (cached !== undefined) return authorize(cached, this.table, p, 'read', this.mode);
    return this.holder.acl(k.ns).then((acl) => authorize(acl, this.table, p, 'read', this.mode), (err: unknown) => {
      throw err instanceof EkvError ? err : new EkvError('UNAVAILABLE', `cannot obtain the ACL: ${(err as Error).message}`);
    });
  }

  /**
   * `ekv ns list`: does `principal` hold some right in namespace `ns` (created: it has an ACL)? Those who may
   * read its ACL (docs/access-control.md) may see it listed; anonymous sessions see none.
   */
  nsVisible(ns: string, principal: Buffer | null): boolean | Promise<boolean> {
    if (principal === null) return false;
    const p = this.principal(principal);
    const visible = (acl: VerifiedAcl | null): boolean => acl !== null && rightsBitsOf(acl, this.table, p) !== 0;
    const cached = this.holder.cached(ns);
    if (cached !== undefined) return visible(cached);
    return this.holder.acl(ns).then(visible, (err: unknown) => {
      throw err instanceof EkvError ? err : new EkvError('UNAVAILABLE', `cannot obtain the ACL: ${(err as Error).message}`);
    });
  }

  private decide(acl: VerifiedAcl | null, principal: Buffer | null, op: Op): void {
    if (!authorize(acl, this.table, principal === null ? null : this.principal(principal), op, this.mode)) throw this.forbidden();
  }

  private forbidden(): EkvError {
    this.stats.refused++;
    return new EkvError('FORBIDDEN', 'access denied');
  }

  private principal(bytes: Buffer): Principal {
    const id = bytes.toString('latin1');
    let p = this.principals.get(id);
    if (p === undefined) {
      p = principalFromBytes(bytes);
      if (this.principals.size >= principalCacheMax) this.principals.clear();
      this.principals.set(id, p);
    }
    return p;
  }

  // ------------------------------------------------------------ operations

  async handle(op: string, req: Record<string, unknown>, caller: AccessCaller): Promise<RpcResult> {
    switch (op) {
      case 'aclGet':
        return this.viaOwner(docRef('acl', wireName(req.ns)), 'get', null, caller.principal);
      case 'aclPut':
        return this.viaOwner(docRef('acl', wireName(req.ns)), 'put', wireDocBytes(req.d, 'acl'), caller.principal);
      case 'grpGet':
        return this.viaOwner(docRef('group', wireName(req.g)), 'get', null, caller.principal);
      case 'grpKey':
        return this.viaOwner(docRef('group', wireName(req.g)), 'key', null, caller.principal);
      case 'grpPut':
        return this.viaOwner(docRef('group', wireName(req.g)), 'put', wireDocBytes(req.d, 'group'), caller.principal);
    }
    if (!caller.peer) throw new EkvError('FORBIDDEN', 'ring operations are for attested peer enclaves only');
    return this.peerOp(op, req, caller.peer.key);
  }

  private async peerOp(op: string, req: Record<string, unknown>, peerKey: Buffer): Promise<RpcResult> {
    const kind = wireKind(req.k);
    const st = this.table.state(kind, wireName(req.n));
    switch (op) {
      case 'accOwn': {
        if (req.fo !== 'get' && req.fo !== 'put' && req.fo !== 'key') throw new EkvError('BAD_REQUEST', 'bad forwarded access operation');
        const p = req.p instanceof Uint8Array && req.p.length <= principalBytesMax ? Buffer.from(req.p) : null;
        return this.ownerOp(st, req.fo, req.fo === 'put' ? wireDocBytes(req.d, kind) : null, p);
      }
      case 'accLease': {
        if (typeof req.a !== 'string' || req.a.length > 300) throw new EkvError('BAD_REQUEST', 'a lease needs the holder address');
        const nodeId = nodeIdFromPublicKey(peerKey);
        const holder: Omit<HolderRecord, 'until'> = { key: nodeId.toString(16), nodeId, addr: req.a };
        this.stats.leasesGranted++;
        return { d: this.owner.grant(st, holder) };
      }
      case 'accPush':
        this.holder.pushed(st, wireDocBytes(req.d, kind));
        return {};
      default:
        throw new EkvError('BAD_REQUEST', `unknown access operation ${op.slice(0, 32)}`);
    }
  }

  /** Run at the document's owner: here when this node owns it, else forwarded (retrying while the ring settles). */
  private async viaOwner(ref: DocRef, fo: OwnerOp, doc: Buffer | null, principal: Buffer | null): Promise<RpcResult> {
    const deadline = this.now() + ownerOpDeadlineMs;
    let last = new EkvError('UNAVAILABLE', 'no owner reachable');
    for (let attempt = 0; this.now() < deadline; attempt++) {
      try {
        const st = this.table.state(ref.kind, ref.name);
        if (this.c.docs.owns(ref.key)) return await this.ownerOp(st, fo, doc, principal);
        const owner = this.c.docs.ownerOf(ref.key);
        if (!owner) throw new EkvError('UNAVAILABLE', 'no owner known for this document yet');
        if (owner.id === this.c.self.id) return await this.ownerOp(st, fo, doc, principal);
        const args = { fo, k: ref.kind, n: ref.name, d: doc, p: principal };
        return await this.c.peers.call(owner.addr, 'accOwn', args, ownerOpDeadlineMs, owner.id);
      } catch (err) {
        // Only UNAVAILABLE is retried: it is raised before anything changed (not the owner, no route, no connection).
        if (!(err instanceof EkvError) || err.code !== 'UNAVAILABLE') throw err;
        last = err;
        await sleep(Math.min(50 * 2 ** attempt, 500));
      }
    }
    throw last;
  }

  private async ownerOp(st: DocState, fo: OwnerOp, bytes: Buffer | null, principal: Buffer | null): Promise<RpcResult> {
    if (fo === 'get') return this.read(st, principal);
    if (fo === 'key') return this.groupKey(st);
    const update = wireSignedDoc(bytes, st.ref.kind);
    try {
      const v = await this.owner.update(st, async (current) => {
        if (st.ref.kind === 'acl') await this.groupsForAclUpdate(st.ref.name, current as VerifiedAcl | null, update);
        return applyDocUpdate(st.ref, current, update, this.table);
      });
      this.stats.updates++;
      return { n: v.version };
    } catch (err) {
      throw toEkvError(err);
    }
  }

  /**
   * The groups an ACL update needs under lease before applyDocUpdate checks it (review-14 F2). The current
   * version's first: the signer's admin right may come through one. Those the update binds anew only for an
   * update whose signer may make it, one at a time, stopping at the first that does not exist with the key the
   * entry names (applyDocUpdate refuses it there: UNKNOWN_GROUP). So a caller without the right fetches nothing,
   * and one with it at most one group that is not there, not aclGroupEntriesMax of them.
   */
  private async groupsForAclUpdate(ns: string, current: VerifiedAcl | null, update: SignedDoc): Promise<void> {
    // Review-16 F5: of the current version's groups, only those whose entry grants admin can give the signer the
    // right to make the update (none needed when the owner or a direct entry already gives it): keys are free, so
    // a stranger's well-signed update must not lease every group of someone else's ACL.
    const direct = current === null || update.signer.id === current.owner.id || ((current.direct.get(update.signer.id) ?? 0) & rightBits.admin) !== 0;
    if (current !== null && !direct) {
      await this.holder.groupsNamed([...current.byGroup].filter(([, g]) => (g.bits & rightBits.admin) !== 0).map(([name]) => name));
    }
    if (!mayProposeAcl(ns, current, update, (acl, p) => (rightsBitsOf(acl, this.table, p) & rightBits.admin) !== 0)) return;
    for (const { group, key } of groupsBoundAnew(current, update)) {
      await this.holder.groupsNamed([group]);
      if (!(this.table.get(group)?.key.equals(key) ?? false)) return;
    }
  }

  /** A group's key and version, for anyone: what an ACL entry binds the group to. */
  private groupKey(st: DocState): RpcResult {
    if (st.ref.kind !== 'group') throw new EkvError('BAD_REQUEST', 'only groups have a key');
    const v = this.owner.committed(st) as VerifiedGroup | null;
    if (v === null) throw new EkvError('NOT_FOUND', 'no such group');
    return { key: v.key.bytes, n: v.version };
  }

  /** A document for someone entitled to see it: any right in the namespace; the group key or a member. */
  private async read(st: DocState, principalBytes: Buffer | null): Promise<RpcResult> {
    const v = this.owner.committed(st);
    if (v === null) throw new EkvError('NOT_FOUND', `no such ${st.ref.kind === 'acl' ? 'namespace' : 'group'}`);
    const p = principalBytes === null ? null : this.principal(principalBytes);
    if (p === null || !(await this.mayRead(v, p))) throw this.forbidden();
    return { d: encodedDoc(v), n: v.version };
  }

  private async mayRead(v: Verified, p: Principal): Promise<boolean> {
    if ('ns' in v) {
      await this.holder.groupsOf(v);
      return rightsBitsOf(v, this.table, p) !== 0;
    }
    const g = v as VerifiedGroup;
    return g.key.equals(p) || g.memberIds.has(p.id);
  }

  // ------------------------------------------------------------ leases over the peer channel

  private async fetchLease(ref: DocRef): Promise<Uint8Array | null> {
    this.stats.leaseFetches++;
    const self: Omit<HolderRecord, 'until'> = { key: 'self', nodeId: null, addr: this.c.self.addr };
    if (this.c.docs.owns(ref.key)) return this.owner.grant(this.table.state(ref.kind, ref.name), self);
    const owner = this.c.docs.ownerOf(ref.key);
    if (!owner) throw new EkvError('UNAVAILABLE', 'no owner known for this document yet');
    if (owner.id === this.c.self.id) return this.owner.grant(this.table.state(ref.kind, ref.name), self);
    const r = await this.c.peers.call(owner.addr, 'accLease', { k: ref.kind, n: ref.name, a: this.c.self.addr }, leaseRequestTimeoutMs, owner.id);
    return r.d === null || r.d === undefined ? null : wireDocBytes(r.d, ref.kind);
  }

  private async push(h: HolderRecord, st: DocState, bytes: Buffer): Promise<void> {
    if (h.nodeId === null) return; // this node: `known` was raised at commit
    this.stats.pushesSent++;
    await this.c.peers.call(h.addr, 'accPush', { k: st.ref.kind, n: st.ref.name, d: bytes }, leaseRequestTimeoutMs, h.nodeId);
  }
}

/** EKV_ACCESS_MODE: `open` (default, the local quick start) or `closed`. Anything else is a start-up error. */
export function accessModeFromEnv(value: string | undefined): RingAccess {
  if (value === undefined || value === '' || value === 'open') return 'open';
  if (value === 'closed') return 'closed';
  throw new Error(`EKV_ACCESS_MODE must be open or closed, not ${value.slice(0, 32)}`);
}

