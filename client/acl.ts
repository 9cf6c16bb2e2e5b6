/**
 * Access control in the SDK (issue 7): namespaces, their ACLs, and groups.
 *
 *   const kv = await connect({ cluster, trust, identity: toPrincipalSigner(loadIdentity('me.key')) });
 *   await kv.acl.createNamespace('team');
 *   await kv.acl.grant('team', 'ekv1...', 'read');        // or 'group:ops' / 'group:ops@ekv1<group key>'
 *   await kv.acl.createGroup('ops', [bob]);  await kv.acl.addMember('ops', carol);
 *
 * Every change is a document this client signs with its identity and the
 * enclaves check (signature, authority in the current version, next
 * version). grant/revoke/addMember/removeMember read the current version,
 * apply their edit and submit it; when another editor got there first
 * (CONFLICT) they re-read and apply the same edit again, so no change is lost.
 * Refusals are EkvError: FORBIDDEN, CONFLICT, BAD_REQUEST, NOT_FOUND; the
 * document check that failed (STALE_VERSION, BAD_SIGNATURE, ...) is `reason`.
 */
import {
  addMemberEdit,
  buildAclCreate,
  buildAclUpdate,
  buildGroupCreate,
  buildGroupUpdate,
  decodeAclBody,
  decodeGroupBody,
  decodeSignedDoc,
  encodeSignedDoc,
  grantEdit,
  parseSubject,
  removeMemberEdit,
  revokeEdit,
  verifyDocSignature,
  type AclBody,
  type AclEntry,
  type AclSubject,
  type DocKind,
  type GroupBody,
  type Right,
  type SubjectRef,
  type SignedDoc,
} from '../protocol/acl-doc.ts';
import { EkvError } from '../protocol/errors.ts';
import type { PrincipalSigner } from '../protocol/handshake.ts';
import { Principal, principalFromBytes, principalFromText, type Signer } from '../protocol/principal.ts';
import type { RpcResult } from '../protocol/rpc.ts';
import type { Floor } from './floor.ts';

/**
 * Sends one operation to a node (EkvClient routes by `key`); `answered`, when given, gets the ring id of the node
 * that answered (the floor's key), after its generation was checked.
 */
export type AclTransport = (key: Buffer, op: string, args: Record<string, unknown>, answered?: { ring?: string }) => Promise<RpcResult>;

export interface AclView {
  body: AclBody;
  doc: SignedDoc;
}
export interface GroupView {
  body: GroupBody;
  doc: SignedDoc;
}

/** Retries of a read-edit-submit cycle that lost a compare-and-set to another editor. */
export const editAttemptsMax = 5;

export class AccessApi {
  readonly #send: AclTransport;
  readonly #signer: Signer | null;
  /**
   * The client's floor (client/floor.ts), or null: every document read or written is checked against it under its
   * reserved key, its body's version and the hash of its body (review-17 F3: a rolled-back node's older ACL was
   * returned as current, and edits were built and signed on top of it).
   */
  readonly #floor: Floor | null;

  constructor(send: AclTransport, identity: PrincipalSigner | null, floor: Floor | null = null) {
    this.#send = send;
    this.#floor = floor;
    this.#signer = identity === null ? null : { principal: principalFromBytes(identity.principal), sign: (m) => Buffer.from(identity.sign(m)) };
  }

  /** The principal this client signs as, or null when anonymous. */
  get principal(): Principal | null {
    return this.#signer?.principal ?? null;
  }

  /** Create namespace `ns` owned by this client's identity (first creation wins; CONFLICT when taken). */
  async createNamespace(ns: string, entries: readonly AclEntry[] = []): Promise<AclView> {
    const doc = buildAclCreate(ns, this.signer(), entries);
    await this.putAcl(ns, doc);
    return { body: decodeAclBody(doc.body), doc };
  }

  async getAcl(ns: string): Promise<AclView> {
    const doc = await this.fetch('acl', 'aclGet', { ns }, ns);
    return { body: decodeAclBody(doc.body), doc };
  }

  /**
   * Give `right` to a principal or a group. A group is bound by its key: `group:NAME@<key>` (or
   * `{ group, key }`) pins the key you expect; `group:NAME` takes the key the ring reports for the group
   * now (see the returned entry, or `ekv acl show`). The enclave refuses a group that does not exist
   * with that key (NOT_FOUND / UNKNOWN_GROUP), and a group of the same name made later by another key
   * gets nothing from this entry.
   */
  async grant(ns: string, subject: SubjectRef | string, right: Right): Promise<AclView> {
    return this.editAcl(ns, grantEdit(await this.bound(toSubject(subject)), right));
  }

  /** Remove `right`, or every right when null (a group by name, whatever its key). */
  async revoke(ns: string, subject: SubjectRef | string, right: Right | null = null): Promise<AclView> {
    return this.editAcl(ns, revokeEdit(toSubject(subject), right));
  }

  /** The key that signs group `name` now, as the ring reports it (NOT_FOUND when there is no such group). */
  async groupKey(name: string): Promise<Principal> {
    const r = await this.call(groupKey(name), 'grpKey', { g: name });
    try {
      if (r.key instanceof Uint8Array) return principalFromBytes(r.key);
    } catch {
      // reported below
    }
    throw new EkvError('PROTOCOL', 'malformed grpKey answer');
  }

  private async bound(s: SubjectRef): Promise<AclSubject> {
    if (s instanceof Principal || s.key !== undefined) return s as AclSubject;
    return { group: s.group, key: await this.groupKey(s.group) };
  }

  /** Create group `name`; this client's identity becomes the group key that signs every version. */
  async createGroup(name: string, members: ReadonlyArray<Principal | string> = []): Promise<GroupView> {
    const doc = buildGroupCreate(name, this.signer(), members.map(toPrincipal));
    await this.putGroup(name, doc);
    return { body: decodeGroupBody(doc.body), doc };
  }

  async getGroup(name: string): Promise<GroupView> {
    const doc = await this.fetch('group', 'grpGet', { g: name }, name);
    return { body: decodeGroupBody(doc.body), doc };
  }

  async addMember(name: string, member: Principal | string): Promise<GroupView> {
    return this.editGroup(name, addMemberEdit(toPrincipal(member)));
  }

  async removeMember(name: string, member: Principal | string): Promise<GroupView> {
    return this.editGroup(name, removeMemberEdit(toPrincipal(member)));
  }

  /** Submit a signed ACL document as is (creation or next version); resolves with its version. */
  async putAcl(ns: string, doc: SignedDoc): Promise<number> {
    return this.submit(aclKey(ns), 'aclPut', { ns, d: encodeSignedDoc(doc) }, doc.body);
  }

  async putGroup(name: string, doc: SignedDoc): Promise<number> {
    return this.submit(groupKey(name), 'grpPut', { g: name, d: encodeSignedDoc(doc) }, doc.body);
  }

  private async editAcl(ns: string, edit: (e: readonly AclEntry[]) => AclEntry[]): Promise<AclView> {
    return this.retrying(async () => {
      const current = await this.getAcl(ns);
      const doc = buildAclUpdate(current.doc, this.signer(), edit);
      await this.putAcl(ns, doc);
      return { body: decodeAclBody(doc.body), doc };
    });
  }

  private async editGroup(name: string, edit: (m: readonly Principal[]) => Principal[]): Promise<GroupView> {
    return this.retrying(async () => {
      const current = await this.getGroup(name);
      const doc = buildGroupUpdate(current.doc, this.signer(), edit);
      await this.putGroup(name, doc);
      return { body: decodeGroupBody(doc.body), doc };
    });
  }

  private async retrying<T>(cycle: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await cycle();
      } catch (err) {
        const lostRace = err instanceof EkvError && err.code === 'CONFLICT' && err.reason !== 'EXISTS';
        if (!lostRace || attempt >= editAttemptsMax) throw err;
      }
    }
  }

  private async submit(key: Buffer, op: string, args: Record<string, unknown>, body: Buffer): Promise<number> {
    const before = this.#floor?.snapshot(key);
    const answered: { ring?: string } = {};
    const r = await this.call(key, op, args, answered);
    if (typeof r.n !== 'number' || !Number.isSafeInteger(r.n) || r.n < 1) throw new EkvError('PROTOCOL', `malformed ${op} answer`);
    if (this.#floor && before && answered.ring !== undefined) this.#floor.checkWrite(answered.ring, key, before, r.n, body);
    return r.n;
  }

  /** A document from the ring. The channel is attested; the signature is checked anyway before we sign on top of it. */
  private async fetch(kind: DocKind, op: string, args: Record<string, unknown>, name: string): Promise<SignedDoc> {
    const key = kind === 'acl' ? aclKey(name) : groupKey(name);
    const before = this.#floor?.snapshot(key);
    const answered: { ring?: string } = {};
    let r: RpcResult;
    try {
      r = await this.call(key, op, args, answered);
    } catch (err) {
      // "No such namespace/group" from a node, after this client saw a version of it: a rolled-back node, STALE.
      if (this.#floor && before && answered.ring !== undefined && err instanceof EkvError && err.code === 'NOT_FOUND') {
        this.#floor.checkRead(answered.ring, key, before, 0, null);
      }
      throw err;
    }
    if (!(r.d instanceof Uint8Array)) throw new EkvError('PROTOCOL', `malformed ${op} answer`);
    let doc: SignedDoc | null = null;
    let version = 0;
    try {
      const d = decodeSignedDoc(r.d, kind);
      if (verifyDocSignature(kind, d)) {
        doc = d;
        version = kind === 'acl' ? decodeAclBody(d.body).version : decodeGroupBody(d.body).version;
      }
    } catch {
      doc = null;
    }
    if (doc === null) throw new EkvError('PROTOCOL', `the node sent an invalid ${kind} document`);
    // Never older than a version this client saw of the document, nor another document at it (review-17 F3).
    if (this.#floor && before && answered.ring !== undefined) this.#floor.checkRead(answered.ring, key, before, version, doc.body);
    return doc;
  }

  private async call(key: Buffer, op: string, args: Record<string, unknown>, answered?: { ring?: string }): Promise<RpcResult> {
    try {
      return await this.#send(key, op, args, answered);
    } catch (err) {
      throw withReason(err);
    }
  }

  private signer(): Signer {
    if (this.#signer === null) throw new EkvError('FORBIDDEN', 'no identity: connect({ identity }) to sign access documents');
    return this.#signer;
  }
}

/** The enclave puts the document check's code first in the message (`STALE_VERSION: ...`); hand it back as `reason`. */
function withReason(err: unknown): unknown {
  if (!(err instanceof EkvError) || err.reason !== undefined) return err;
  const m = /^([A-Z_]{3,20}): /.exec(err.message);
  return m ? new EkvError(err.code, err.message, { reason: m[1] as string }) : err;
}

function toSubject(s: SubjectRef | string): SubjectRef {
  return typeof s === 'string' ? parseSubject(s) : s;
}

function toPrincipal(p: Principal | string): Principal {
  return p instanceof Principal ? p : principalFromText(p);
}

/** Routing keys only (any node forwards to the document's owner); the enclave derives the reserved key itself. */
function aclKey(ns: string): Buffer {
  return Buffer.from(`\x00acl/${ns}`, 'latin1');
}

function groupKey(name: string): Buffer {
  return Buffer.from(`\x00grp/${name}`, 'latin1');
}
