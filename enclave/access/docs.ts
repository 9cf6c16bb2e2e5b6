/**
 * The two kinds of access documents (namespace ACLs and groups) behind one
 * small interface, so leases, owner state and wire handling are written once.
 * Also: AclError -> EkvError, and the checks on document fields from the wire.
 */
import {
  AclError,
  aclDocBytesMax,
  decodeAclBody,
  decodeGroupBody,
  decodeSignedDoc,
  groupDocBytesMax,
  isDocName,
  verifyDocSignature,
  type AclErrorCode,
  type SignedDoc,
} from '../../protocol/acl-doc.ts';
import { EkvError, type EkvErrorCode } from '../../protocol/errors.ts';
import { Principal } from '../../protocol/principal.ts';
import { aclStorageKey, adoptAcl, adoptGroup, applyAclUpdate, applyGroupUpdate, groupStorageKey } from '../acl/index.ts';
import type { GroupResolver, VerifiedAcl, VerifiedGroup } from '../acl/index.ts';

export type DocKind = 'acl' | 'group';
export type Verified = VerifiedAcl | VerifiedGroup;

/** One document: a namespace's ACL or a group, and the reserved key it lives under. */
export interface DocRef {
  readonly kind: DocKind;
  readonly name: string;
  /** Map key: `acl/<ns>` or `group/<name>`. */
  readonly id: string;
  /** The reserved ring key (0x00...) the document is stored and replicated under. */
  readonly key: Buffer;
}

export function docRef(kind: DocKind, name: string): DocRef {
  if (!isDocName(name)) throw new EkvError('BAD_REQUEST', `not a valid ${kind === 'acl' ? 'namespace' : 'group'} name`);
  return { kind, name, id: `${kind}/${name}`, key: kind === 'acl' ? aclStorageKey(name) : groupStorageKey(name) };
}

export function docBytesMax(kind: DocKind): number {
  return kind === 'acl' ? aclDocBytesMax : groupDocBytesMax;
}

/** A copy from a trusted source (the owner's store, an attested peer): monotonic, see enclave/acl/verified.ts. */
export function adoptDoc(ref: DocRef, current: Verified | null, bytes: Uint8Array): Verified {
  const doc = decodeSignedDoc(bytes, ref.kind);
  if (ref.kind === 'acl') return adoptAcl(ref.name, current as VerifiedAcl | null, doc);
  return adoptGroup(ref.name, current as VerifiedGroup | null, doc);
}

/** A client-submitted creation or update, checked against the current version (compare-and-set). */
export function applyDocUpdate(ref: DocRef, current: Verified | null, update: SignedDoc, groups: GroupResolver): Verified {
  if (current !== null && isCreation(ref, update)) {
    throw new EkvError('CONFLICT', `EXISTS: ${ref.kind === 'acl' ? 'namespace' : 'group'} ${ref.name} already exists`);
  }
  if (ref.kind === 'acl') return applyAclUpdate(ref.name, current as VerifiedAcl | null, update, groups);
  return applyGroupUpdate(ref.name, current as VerifiedGroup | null, update);
}

/**
 * Whether an ACL update's signer may make it at all (review-14 F2): well-formed, its signature verifies, it names
 * this namespace, and it is a creation signed by the owner it names (no current version) or signed by a principal
 * holding admin in the current version (`holdsAdmin`; the current version's groups must be under lease). The
 * checks of applyDocUpdate that come before its group bindings: false means applyDocUpdate refuses the update
 * whatever the groups it names, so they are not fetched for it. A creation over an existing namespace is left to
 * applyDocUpdate (EXISTS), as are its group bindings.
 */
export function mayProposeAcl(ns: string, current: VerifiedAcl | null, update: SignedDoc, holdsAdmin: (acl: VerifiedAcl, p: Principal) => boolean): boolean {
  let body: ReturnType<typeof decodeAclBody>;
  try {
    body = decodeAclBody(update.body);
  } catch {
    return false;
  }
  if (body.ns !== ns || !verifyDocSignature('acl', update)) return false;
  if (current === null) return update.signer.equals(body.owner);
  return body.version !== 1 && holdsAdmin(current, update.signer);
}

/**
 * The groups an ACL update binds anew (a name the current version lacks, or the same name with another key), in
 * the update's order: applyDocUpdate checks each against the group as it is now, so each must be under a lease.
 * A malformed update names none; applyDocUpdate reports it.
 */
export function groupsBoundAnew(current: VerifiedAcl | null, update: SignedDoc): Array<{ group: string; key: Principal }> {
  const out: Array<{ group: string; key: Principal }> = [];
  try {
    for (const e of decodeAclBody(update.body).entries) {
      if (e.subject instanceof Principal) continue;
      if (current?.byGroup.get(e.subject.group)?.keyId === e.subject.key.id) continue;
      out.push(e.subject);
    }
  } catch {
    // reported by applyDocUpdate
  }
  return out;
}

/** A version-1 document (a creation). A structural peek; anything malformed is left to apply*, which reports it. */
function isCreation(ref: DocRef, update: SignedDoc): boolean {
  try {
    return (ref.kind === 'acl' ? decodeAclBody(update.body) : decodeGroupBody(update.body)).version === 1;
  } catch {
    return false;
  }
}

const aclToEkv: Readonly<Record<AclErrorCode, EkvErrorCode>> = {
  MALFORMED: 'BAD_REQUEST',
  TOO_LARGE: 'BAD_REQUEST',
  WRONG_NAME: 'BAD_REQUEST',
  IMMUTABLE: 'BAD_REQUEST',
  BAD_SIGNATURE: 'FORBIDDEN',
  FORBIDDEN: 'FORBIDDEN',
  STALE_VERSION: 'CONFLICT',
  VERSION_GAP: 'CONFLICT',
  PREV_MISMATCH: 'CONFLICT',
  UNKNOWN_GROUP: 'NOT_FOUND',
};

/**
 * The error a client sees for a refused document. The EkvError code is one of
 * the closed set; the AclError code leads the message (`STALE_VERSION: ...`)
 * so the SDK can hand it back as `reason` (the RPC carries code and message only).
 */
export function toEkvError(err: unknown): unknown {
  if (err instanceof AclError) return new EkvError(aclToEkv[err.code], `${err.code}: ${err.message}`, { reason: err.code });
  return err;
}

// ---------------------------------------------------------------- wire fields

export function wireKind(x: unknown): DocKind {
  if (x !== 'acl' && x !== 'group') throw new EkvError('BAD_REQUEST', 'bad document kind');
  return x;
}

export function wireName(x: unknown): string {
  if (!isDocName(x)) throw new EkvError('BAD_REQUEST', 'bad namespace or group name');
  return x;
}

/** Document bytes, bounded before anything is decoded. */
export function wireDocBytes(x: unknown, kind: DocKind): Buffer {
  if (!(x instanceof Uint8Array) || x.length === 0) throw new EkvError('BAD_REQUEST', 'document must be bytes');
  if (x.length > docBytesMax(kind)) throw new EkvError('BAD_REQUEST', `TOO_LARGE: document of ${x.length} bytes`);
  return Buffer.from(x);
}

/** A client-submitted document, decoded (signature not yet checked). */
export function wireSignedDoc(x: unknown, kind: DocKind): SignedDoc {
  try {
    return decodeSignedDoc(wireDocBytes(x, kind), kind);
  } catch (err) {
    throw toEkvError(err);
  }
}
