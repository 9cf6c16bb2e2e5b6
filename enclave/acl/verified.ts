/**
 * Verified ACLs and groups: the only way to obtain one is through the checks
 * below, so holding a VerifiedAcl means "this enclave checked the chain up to
 * here". Rights are precomputed into maps when a version is accepted, so that
 * authorize() does one or two map lookups per request.
 *
 * Rules (the README's summary of issue 7):
 * - Creation: version 1, prev null, signed by the owner it names. Which
 *   creation wins ring-wide is the ring's job (the namespace's owner node orders
 *   them); here a second creation over an existing one is refused (FORBIDDEN,
 *   or STALE_VERSION when its signer holds admin).
 * - Update (applyAclUpdate): signed by the owner or a principal holding admin
 *   in the CURRENT version, directly or through a group; version = current + 1;
 *   prev = SHA-256 of the current body. The owner is immutable: it keeps every
 *   right whatever the entries say, and no update may name another owner (to
 *   hand a namespace over, create a new one).
 * - Groups: every version is signed by the group's own key, which is fixed at
 *   creation; same version and prev rules.
 * - Group entries name the group and its key. A group entry that is new in
 *   this version (a name not in the current version, or bound to another key)
 *   must name a group that exists now with exactly that key (UNKNOWN_GROUP);
 *   authorize() gives its rights only to members of a group with that key. So a
 *   grant to a group that does not exist yet is refused, and a group created
 *   (or re-created after its document was lost) by another key gets nothing.
 * Checks run in this order: structure, signature, name, authority, version,
 * prev, immutability, groups. Authority comes before version so that someone
 * without admin learns nothing about the ACL's state from the error.
 */
import {
  AclError,
  decodeAclBody,
  decodeGroupBody,
  docHash,
  verifyDocSignature,
  type AclBody,
  type AclEntry,
  type GroupBody,
  type Right,
  type SignedAcl,
  type SignedGroup,
} from '../../protocol/acl-doc.ts';
import { Principal } from '../../protocol/principal.ts';

export const rightBits: Readonly<Record<Right, number>> = { read: 1, write: 2, admin: 4 };
export const allRightBits = 7;

const token: unique symbol = Symbol('verified');

export class VerifiedAcl {
  readonly ns: string;
  readonly version: number;
  readonly owner: Principal;
  readonly entries: readonly AclEntry[];
  /** SHA-256 of the body: the next version's prev. */
  readonly hash: Buffer;
  /** The signed document as received: what the enclave stores and replicates. */
  readonly doc: SignedAcl;
  /** Principal id -> rights bits from entries naming the principal. */
  readonly direct: ReadonlyMap<string, number>;
  /** Group name -> the group key's principal id and the rights bits, for entries naming a group. */
  readonly byGroup: ReadonlyMap<string, { readonly keyId: string; readonly bits: number }>;

  constructor(t: typeof token, doc: SignedAcl, body: AclBody) {
    if (t !== token) throw new TypeError('VerifiedAcl comes from applyAclUpdate or adoptAcl');
    this.ns = body.ns;
    this.version = body.version;
    this.owner = body.owner;
    this.entries = body.entries;
    this.hash = docHash(doc.body);
    this.doc = doc;
    const direct = new Map<string, number>();
    const byGroup = new Map<string, { keyId: string; bits: number }>();
    for (const e of body.entries) {
      const bits = e.rights.reduce((acc, r) => acc | rightBits[r], 0);
      if (e.subject instanceof Principal) direct.set(e.subject.id, bits);
      else byGroup.set(e.subject.group, { keyId: e.subject.key.id, bits });
    }
    this.direct = direct;
    this.byGroup = byGroup;
  }
}

export class VerifiedGroup {
  readonly name: string;
  readonly version: number;
  readonly key: Principal;
  readonly members: readonly Principal[];
  /** Member principal ids. */
  readonly memberIds: ReadonlySet<string>;
  readonly hash: Buffer;
  readonly doc: SignedGroup;

  constructor(t: typeof token, doc: SignedGroup, body: GroupBody) {
    if (t !== token) throw new TypeError('VerifiedGroup comes from applyGroupUpdate or adoptGroup');
    this.name = body.name;
    this.version = body.version;
    this.key = body.key;
    this.members = body.members;
    this.memberIds = new Set(body.members.map((m) => m.id));
    this.hash = docHash(doc.body);
    this.doc = doc;
  }
}

/** Looks up the enclave's current verified copy of a group. */
export interface GroupResolver {
  get(name: string): VerifiedGroup | undefined;
  /** Must change whenever any group this resolver returns changes, appears or disappears (authorize caches on it). */
  readonly generation: number;
}

export const noGroups: GroupResolver = { get: () => undefined, generation: 0 };

// ---------------------------------------------------------------- shared checks

function checked<B>(kind: 'acl' | 'group', doc: SignedAcl, decode: (b: Buffer) => B, name: (b: B) => string, expected: string): B {
  const body = decode(doc.body);
  if (!verifyDocSignature(kind, doc)) throw new AclError('BAD_SIGNATURE', `${kind} signature does not verify`);
  if (name(body) !== expected) throw new AclError('WRONG_NAME', `${kind} document is for ${name(body)}, not ${expected}`);
  return body;
}

function checkCreation(body: { version: number }, signer: Principal, creator: Principal, what: string): void {
  if (!signer.equals(creator)) throw new AclError('FORBIDDEN', `${what} creation must be signed by the key it names`);
  if (body.version !== 1) throw new AclError('VERSION_GAP', `${what} creation must be version 1, got ${body.version}`);
}

/** Compare-and-set: exactly the next version, built on exactly the current body. */
function checkNext(body: { version: number; prev: Buffer | null }, current: { version: number; hash: Buffer }, what: string): void {
  if (body.version <= current.version) throw new AclError('STALE_VERSION', `${what} version ${body.version} is not after ${current.version}`);
  if (body.version !== current.version + 1) throw new AclError('VERSION_GAP', `${what} version ${body.version} skips after ${current.version}`);
  if (body.prev === null || !body.prev.equals(current.hash)) throw new AclError('PREV_MISMATCH', `${what} update is not built on the current version`);
}

/** Any newer version (a trusted copy may skip versions); the same version only if it is the same body. */
function checkNewer(body: { version: number }, hash: Buffer, current: { version: number; hash: Buffer }, what: string): 'same' | 'newer' {
  if (body.version < current.version) throw new AclError('STALE_VERSION', `${what} version ${body.version} is older than ${current.version}`);
  if (body.version > current.version) return 'newer';
  if (hash.equals(current.hash)) return 'same';
  throw new AclError('PREV_MISMATCH', `two different ${what} documents claim version ${body.version}`);
}

// ---------------------------------------------------------------- ACLs

/**
 * A client-submitted ACL creation (current null) or update for namespace `ns`.
 * `holdsAdmin` decides authority in the current version (authorize.ts passes it),
 * so group membership counts. Returns the new current version; throws AclError.
 */
export function checkAclUpdate(
  ns: string,
  current: VerifiedAcl | null,
  update: SignedAcl,
  holdsAdmin: (acl: VerifiedAcl, p: Principal) => boolean,
  groups: GroupResolver,
): VerifiedAcl {
  const body = checked('acl', update, decodeAclBody, (b) => b.ns, ns);
  if (current === null) {
    checkCreation(body, update.signer, body.owner, 'ACL');
  } else {
    if (!holdsAdmin(current, update.signer)) throw new AclError('FORBIDDEN', 'the signer does not hold admin in the current ACL');
    checkNext(body, current, 'ACL');
    if (!body.owner.equals(current.owner)) throw new AclError('IMMUTABLE', 'an ACL update may not change the owner');
  }
  checkNewGroupBindings(body, current, groups);
  return new VerifiedAcl(token, update, body);
}

/** Every group entry new in `body` names a group that exists now, signed by the key the entry names. */
function checkNewGroupBindings(body: AclBody, current: VerifiedAcl | null, groups: GroupResolver): void {
  for (const e of body.entries) {
    if (e.subject instanceof Principal) continue;
    const { group, key } = e.subject;
    if (current?.byGroup.get(group)?.keyId === key.id) continue; // bound before; checked then
    const g = groups.get(group);
    if (g === undefined) throw new AclError('UNKNOWN_GROUP', `no group ${group}: create it before granting to it`);
    if (!g.key.equals(key)) throw new AclError('UNKNOWN_GROUP', `group ${group} is signed by another key than the entry names`);
  }
}

/**
 * An ACL copy from a TRUSTED source only: an attested peer enclave over the
 * secure channel, or this enclave's own sealed storage. The source checked the
 * signer's authority when it accepted the update, so only the signature, name,
 * owner and monotonicity are checked here; versions may be skipped. Returns
 * `current` itself when the copy is the version already held.
 */
export function adoptAcl(ns: string, current: VerifiedAcl | null, copy: SignedAcl): VerifiedAcl {
  const body = checked('acl', copy, decodeAclBody, (b) => b.ns, ns);
  if (body.version === 1) checkCreation(body, copy.signer, body.owner, 'ACL');
  if (current === null) return new VerifiedAcl(token, copy, body);
  if (checkNewer(body, docHash(copy.body), current, 'ACL') === 'same') return current;
  if (!body.owner.equals(current.owner)) throw new AclError('IMMUTABLE', 'an ACL copy names another owner');
  return new VerifiedAcl(token, copy, body);
}

// ---------------------------------------------------------------- groups

/** A group creation (current null) or update for group `name`, signed by the group key. Throws AclError. */
export function applyGroupUpdate(name: string, current: VerifiedGroup | null, update: SignedGroup): VerifiedGroup {
  const body = checked('group', update, decodeGroupBody, (b) => b.name, name);
  if (current === null) {
    checkCreation(body, update.signer, body.key, 'group');
    return new VerifiedGroup(token, update, body);
  }
  if (!update.signer.equals(current.key)) throw new AclError('FORBIDDEN', 'a group update must be signed by the group key');
  checkNext(body, current, 'group');
  if (!body.key.equals(current.key)) throw new AclError('IMMUTABLE', 'a group update may not change the group key');
  return new VerifiedGroup(token, update, body);
}

/** A group copy from a trusted source (see adoptAcl). */
export function adoptGroup(name: string, current: VerifiedGroup | null, copy: SignedGroup): VerifiedGroup {
  const body = checked('group', copy, decodeGroupBody, (b) => b.name, name);
  if (!copy.signer.equals(body.key)) throw new AclError('FORBIDDEN', 'a group document must be signed by the group key');
  if (body.version === 1) checkCreation(body, copy.signer, body.key, 'group');
  if (current === null) return new VerifiedGroup(token, copy, body);
  if (checkNewer(body, docHash(copy.body), current, 'group') === 'same') return current;
  if (!body.key.equals(current.key)) throw new AclError('IMMUTABLE', 'a group copy names another key');
  return new VerifiedGroup(token, copy, body);
}
