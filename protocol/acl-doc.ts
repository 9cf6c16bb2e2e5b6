/**
 * ACL and group documents: the format shared by the enclave (which validates
 * them) and the client (which builds and shows them). No I/O here.
 *
 * A document is a CBOR body signed by a principal:
 *   SignedDoc = CBOR [ body: bstr, signer: bstr (principal binary form), signature: bstr ]
 *   AclBody   = { "ns": name, "version": uint >= 1, "owner": principal,
 *                 "entries": [ { "subject": principal | { "group": name, "key": principal }, "rights": [right...] } ],
 *                 "prev": null (version 1) | bstr .size 32 (SHA-256 of the previous body) }
 *   GroupBody = { "name": name, "version": uint >= 1, "key": principal (the group's own key),
 *                 "members": [principal...], "prev": null | bstr .size 32 }
 * where right is "read" | "write" | "admin", and name is 1-64 of [A-Za-z0-9._-], not starting with . _ or -.
 * A group entry names the group AND its key (the key that signs every version of it, fixed at
 * creation): the entry gives rights to the members of that group only, never to a group of the same name
 * created later by someone else (issue 10, item 5; docs/access-control.md).
 *
 * The signature covers a fixed label and the body bytes as received, so an ACL
 * signature cannot pass for a group one or for a handshake proof; `prev` and
 * `version` chain the versions so a replayed or forked document is recognised.
 * Bodies are decoded as CBOR maps with exactly the keys above; anything else is
 * MALFORMED, and sizes are checked before decoding.
 */
import { createHash } from 'node:crypto';
import { Encoder } from 'cbor-x';
import { decodeUntrustedCbor } from '../verifier/strict-cbor.ts';
import { valueBytesMax } from './constants.ts';
import {
  Principal,
  principalBytesMax,
  principalFromBytes,
  principalFromText,
  principalSignatureBytes,
  verifyPrincipalSignature,
  type Signer,
} from './principal.ts';

// ---------------------------------------------------------------- limits

export const aclEntriesMax = 4096;
/** Of those, entries naming a group (each carries the group's key, so they are the larger kind). */
export const aclGroupEntriesMax = 256;
export const groupMembersMax = 10_000;
export const docNameBytesMax = 64;
export const docHashBytes = 32;
/** Worst encoded group entry: {"subject": {"group": <64 bytes>, "key": <P-256 principal>}, "rights": ["read","write","admin"]} (test/acl-doc checks it). */
export const aclGroupEntryBytesMax = 147;
/** Worst encoded principal entry: {"subject": <P-256 principal>, "rights": ["read","write","admin"]} (test/acl-doc checks it). */
export const aclPrincipalEntryBytesMax = 70;
const bodyHeaderBytesMax = 512;
export const aclBodyBytesMax =
  aclGroupEntriesMax * aclGroupEntryBytesMax + (aclEntriesMax - aclGroupEntriesMax) * aclPrincipalEntryBytesMax + bodyHeaderBytesMax;
export const groupBodyBytesMax = groupMembersMax * (2 + principalBytesMax) + bodyHeaderBytesMax;
const signedOverheadBytes = 16 + principalBytesMax + principalSignatureBytes;
export const aclDocBytesMax = aclBodyBytesMax + signedOverheadBytes;
export const groupDocBytesMax = groupBodyBytesMax + signedOverheadBytes;

// Documents are stored and carried as ring values, so they must fit in one.
if (aclDocBytesMax > valueBytesMax || groupDocBytesMax > valueBytesMax) throw new Error('document limits exceed valueBytesMax');

// ---------------------------------------------------------------- errors

export type AclErrorCode =
  | 'MALFORMED' // not a well-formed document of the expected kind
  | 'TOO_LARGE' // over a size, entry or member limit
  | 'BAD_SIGNATURE' // the signature does not verify for the stated signer
  | 'FORBIDDEN' // the signer may not make this change
  | 'STALE_VERSION' // version <= the current one: a replay, a rollback, or a lost compare-and-set
  | 'VERSION_GAP' // version > current + 1 (or a creation that is not version 1)
  | 'PREV_MISMATCH' // the next version, but built on a different previous body (a fork)
  | 'WRONG_NAME' // the document is for another namespace or group
  | 'IMMUTABLE' // the update changes the owner (ACL) or the key (group)
  | 'UNKNOWN_GROUP'; // a new group entry names a group that does not exist with that key

export class AclError extends Error {
  readonly code: AclErrorCode;
  constructor(code: AclErrorCode, message: string) {
    super(message);
    this.name = 'AclError';
    this.code = code;
  }
}

// ---------------------------------------------------------------- types

export type Right = 'read' | 'write' | 'admin';
export const allRights: readonly Right[] = ['read', 'write', 'admin'];
export type DocKind = 'acl' | 'group';
/** A group as an ACL entry names it: by name and by the key that signs it. */
export interface GroupSubject {
  readonly group: string;
  readonly key: Principal;
}
export type AclSubject = Principal | GroupSubject;
/** A subject as a caller writes it: a group's key may be left for the client to look up (client/acl.ts). */
export type SubjectRef = Principal | { readonly group: string; readonly key?: Principal | undefined };

export interface AclEntry {
  readonly subject: AclSubject;
  readonly rights: readonly Right[];
}
export interface AclBody {
  readonly ns: string;
  readonly version: number;
  readonly owner: Principal;
  readonly entries: readonly AclEntry[];
  readonly prev: Buffer | null;
}
export interface GroupBody {
  readonly name: string;
  readonly version: number;
  readonly key: Principal;
  readonly members: readonly Principal[];
  readonly prev: Buffer | null;
}
export interface SignedDoc {
  readonly body: Buffer;
  readonly signer: Principal;
  readonly signature: Buffer;
}
export type SignedAcl = SignedDoc;
export type SignedGroup = SignedDoc;

const namePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** A valid namespace or group name (see the module comment). */
export function isDocName(x: unknown): x is string {
  return typeof x === 'string' && x.length <= docNameBytesMax && namePattern.test(x);
}

/**
 * A map key for an ACL subject: a principal's id, or `group:NAME` (no principal id contains ':').
 * An ACL names a group at most once, whatever its key: granting to a group of the same name with
 * another key replaces the entry (grantEdit).
 */
export function subjectId(s: SubjectRef): string {
  return s instanceof Principal ? s.id : `group:${s.group}`;
}

// ---------------------------------------------------------------- CBOR

const encoder = new Encoder({ useRecords: false, mapsAsObjects: false, tagUint8Array: false } as never);

function decodeBounded(bytes: Uint8Array, max: number, what: string): unknown {
  if (!(bytes instanceof Uint8Array)) throw new AclError('MALFORMED', `${what}: expected bytes`);
  if (bytes.length > max) throw new AclError('TOO_LARGE', `${what}: ${bytes.length} bytes, at most ${max}`);
  try {
    return decodeUntrustedCbor(bytes, { maps: 'map', depthMax: 8 });
  } catch (err) {
    throw new AclError('MALFORMED', `${what}: bad CBOR (${(err as Error).message})`);
  }
}

function exactMap(x: unknown, keys: readonly string[], what: string): Map<unknown, unknown> {
  if (!(x instanceof Map) || x.size !== keys.length || !keys.every((k) => x.has(k))) {
    throw new AclError('MALFORMED', `${what}: expected a map with keys ${keys.join(', ')}`);
  }
  return x;
}

function principalField(x: unknown, what: string): Principal {
  if (!(x instanceof Uint8Array)) throw new AclError('MALFORMED', `${what}: expected principal bytes`);
  try {
    return principalFromBytes(x);
  } catch (err) {
    throw new AclError('MALFORMED', `${what}: ${(err as Error).message}`);
  }
}

function nameField(x: unknown, what: string): string {
  if (!isDocName(x)) throw new AclError('MALFORMED', `${what}: not a valid name`);
  return x;
}

function versionField(x: unknown): number {
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 1) throw new AclError('MALFORMED', 'version: expected an integer >= 1');
  return x;
}

function prevField(x: unknown, version: number): Buffer | null {
  if (version === 1 && x === null) return null;
  if (version > 1 && x instanceof Uint8Array && x.length === docHashBytes) return Buffer.from(x);
  throw new AclError('MALFORMED', 'prev: null for version 1, else a 32-byte hash');
}

function arrayField(x: unknown, max: number, what: string): unknown[] {
  if (!Array.isArray(x)) throw new AclError('MALFORMED', `${what}: expected an array`);
  if (x.length > max) throw new AclError('TOO_LARGE', `${what}: ${x.length} items, at most ${max}`);
  return x;
}

function rightsField(x: unknown): Right[] {
  const list = arrayField(x, allRights.length, 'rights');
  if (list.length === 0) throw new AclError('MALFORMED', 'rights: empty (drop the entry instead)');
  const seen = new Set<string>();
  for (const r of list) {
    if (typeof r !== 'string' || !(allRights as readonly string[]).includes(r) || seen.has(r)) {
      throw new AclError('MALFORMED', 'rights: unknown or repeated right');
    }
    seen.add(r);
  }
  return list as Right[];
}

function subjectField(x: unknown): AclSubject {
  if (x instanceof Uint8Array) return principalField(x, 'subject');
  const m = exactMap(x, ['group', 'key'], 'subject');
  return { group: nameField(m.get('group'), 'subject group'), key: principalField(m.get('key'), 'subject group key') };
}

function entriesField(x: unknown): AclEntry[] {
  const seen = new Set<string>();
  let groups = 0;
  return arrayField(x, aclEntriesMax, 'entries').map((e) => {
    const m = exactMap(e, ['subject', 'rights'], 'entry');
    const subject = subjectField(m.get('subject'));
    if (!(subject instanceof Principal) && ++groups > aclGroupEntriesMax) {
      throw new AclError('TOO_LARGE', `entries: more than ${aclGroupEntriesMax} groups`);
    }
    const id = subjectId(subject);
    if (seen.has(id)) throw new AclError('MALFORMED', 'entries: a subject appears twice');
    seen.add(id);
    return { subject, rights: rightsField(m.get('rights')) };
  });
}

export function decodeAclBody(bytes: Uint8Array): AclBody {
  const m = exactMap(decodeBounded(bytes, aclBodyBytesMax, 'ACL body'), ['ns', 'version', 'owner', 'entries', 'prev'], 'ACL body');
  const version = versionField(m.get('version'));
  return {
    ns: nameField(m.get('ns'), 'ns'),
    version,
    owner: principalField(m.get('owner'), 'owner'),
    entries: entriesField(m.get('entries')),
    prev: prevField(m.get('prev'), version),
  };
}

export function decodeGroupBody(bytes: Uint8Array): GroupBody {
  const m = exactMap(decodeBounded(bytes, groupBodyBytesMax, 'group body'), ['name', 'version', 'key', 'members', 'prev'], 'group body');
  const version = versionField(m.get('version'));
  const seen = new Set<string>();
  const members = arrayField(m.get('members'), groupMembersMax, 'members').map((x) => {
    const p = principalField(x, 'member');
    if (seen.has(p.id)) throw new AclError('MALFORMED', 'members: a principal appears twice');
    seen.add(p.id);
    return p;
  });
  return { name: nameField(m.get('name'), 'name'), version, key: principalField(m.get('key'), 'key'), members, prev: prevField(m.get('prev'), version) };
}

function encodeSubject(s: AclSubject): unknown {
  return s instanceof Principal ? s.bytes : new Map<string, unknown>([['group', s.group], ['key', s.key.bytes]]);
}

export function encodeAclBody(b: AclBody): Buffer {
  const entries = b.entries.map((e) => new Map<string, unknown>([['subject', encodeSubject(e.subject)], ['rights', [...e.rights]]]));
  return encoder.encode(
    new Map<string, unknown>([['ns', b.ns], ['version', b.version], ['owner', b.owner.bytes], ['entries', entries], ['prev', b.prev]]),
  );
}

export function encodeGroupBody(b: GroupBody): Buffer {
  const members = b.members.map((p) => p.bytes);
  return encoder.encode(
    new Map<string, unknown>([['name', b.name], ['version', b.version], ['key', b.key.bytes], ['members', members], ['prev', b.prev]]),
  );
}

export function encodeSignedDoc(d: SignedDoc): Buffer {
  return encoder.encode([d.body, d.signer.bytes, d.signature]);
}

/** The stored / transported form back to its parts; the signature is NOT checked here. */
export function decodeSignedDoc(bytes: Uint8Array, kind: DocKind): SignedDoc {
  const max = kind === 'acl' ? aclDocBytesMax : groupDocBytesMax;
  const x = decodeBounded(bytes, max, `signed ${kind}`);
  if (!Array.isArray(x) || x.length !== 3) throw new AclError('MALFORMED', `signed ${kind}: expected [body, signer, signature]`);
  const [body, signer, signature] = x as [unknown, unknown, unknown];
  if (!(body instanceof Uint8Array)) throw new AclError('MALFORMED', `signed ${kind}: body is not bytes`);
  if (!(signature instanceof Uint8Array) || signature.length !== principalSignatureBytes) {
    throw new AclError('MALFORMED', `signed ${kind}: signature is not ${principalSignatureBytes} bytes`);
  }
  return { body: Buffer.from(body), signer: principalField(signer, 'signer'), signature: Buffer.from(signature) };
}

// ---------------------------------------------------------------- signing and hashing

const labels: Record<DocKind, Buffer> = { acl: Buffer.from('ekv/1 acl-doc '), group: Buffer.from('ekv/1 group-doc ') };

export function docSigningBytes(kind: DocKind, body: Uint8Array): Buffer {
  return Buffer.concat([labels[kind], body]);
}

export function docHash(body: Uint8Array): Buffer {
  return createHash('sha256').update(body).digest();
}

export function signDoc(kind: DocKind, body: Buffer, signer: Signer): SignedDoc {
  return { body, signer: signer.principal, signature: signer.sign(docSigningBytes(kind, body)) };
}

export function verifyDocSignature(kind: DocKind, d: SignedDoc): boolean {
  return verifyPrincipalSignature(d.signer, docSigningBytes(kind, d.body), d.signature);
}

// ---------------------------------------------------------------- builders (client side)

/** Builders decode what they built, so a client never signs a document the enclaves would refuse as MALFORMED or TOO_LARGE. */
function signChecked(kind: DocKind, body: Buffer, signer: Signer): SignedDoc {
  if (kind === 'acl') decodeAclBody(body);
  else decodeGroupBody(body);
  return signDoc(kind, body, signer);
}

/** `ekv ns create NS`: version 1, the signer becomes the owner. */
export function buildAclCreate(ns: string, owner: Signer, entries: readonly AclEntry[] = []): SignedAcl {
  if (!isDocName(ns)) throw new AclError('MALFORMED', `not a valid namespace name: ${String(ns)}`);
  return signChecked('acl', encodeAclBody({ ns, version: 1, owner: owner.principal, entries, prev: null }), owner);
}

/** The next version of `current` with entries transformed by `edit`, signed by `signer`. */
export function buildAclUpdate(current: SignedAcl, signer: Signer, edit: (entries: readonly AclEntry[]) => AclEntry[]): SignedAcl {
  const b = decodeAclBody(current.body);
  const body = encodeAclBody({ ns: b.ns, version: b.version + 1, owner: b.owner, entries: edit(b.entries), prev: docHash(current.body) });
  return signChecked('acl', body, signer);
}

/**
 * Adds `right` for `subject` (a no-op change still makes a new version). A group entry of the same name
 * bound to another key is replaced: the rights given to the old group do not pass to the new one.
 */
export function grantEdit(subject: AclSubject, right: Right): (entries: readonly AclEntry[]) => AclEntry[] {
  const id = subjectId(subject);
  return (entries) => {
    const found = entries.find((e) => subjectId(e.subject) === id);
    if (!found) return [...entries, { subject, rights: [right] }];
    if (!sameSubject(found.subject, subject)) return entries.map((e) => (e === found ? { subject, rights: [right] } : e));
    return entries.map((e) => (e !== found || e.rights.includes(right) ? e : { subject: e.subject, rights: sortRights([...e.rights, right]) }));
  };
}

/** The same principal, or the same group name bound to the same key. */
export function sameSubject(a: AclSubject, b: AclSubject): boolean {
  if (a instanceof Principal || b instanceof Principal) return a instanceof Principal && b instanceof Principal && a.equals(b);
  return a.group === b.group && a.key.equals(b.key);
}

/** Removes `right` (or every right when null) from `subject` (a group by name, whatever its key); an entry left with none is dropped. */
export function revokeEdit(subject: SubjectRef, right: Right | null): (entries: readonly AclEntry[]) => AclEntry[] {
  const id = subjectId(subject);
  return (entries) =>
    entries
      .map((e) => (subjectId(e.subject) !== id ? e : { subject: e.subject, rights: right === null ? [] : e.rights.filter((r) => r !== right) }))
      .filter((e) => e.rights.length > 0);
}

function sortRights(rs: Right[]): Right[] {
  return allRights.filter((r) => rs.includes(r));
}

/** `ekv group create NAME`: version 1 signed by the group's own (new) key. */
export function buildGroupCreate(name: string, groupKey: Signer, members: readonly Principal[] = []): SignedGroup {
  if (!isDocName(name)) throw new AclError('MALFORMED', `not a valid group name: ${String(name)}`);
  return signChecked('group', encodeGroupBody({ name, version: 1, key: groupKey.principal, members, prev: null }), groupKey);
}

/** The next version of a group with members transformed by `edit`, signed by the group key. */
export function buildGroupUpdate(current: SignedGroup, groupKey: Signer, edit: (members: readonly Principal[]) => Principal[]): SignedGroup {
  const b = decodeGroupBody(current.body);
  const body = encodeGroupBody({ name: b.name, version: b.version + 1, key: b.key, members: edit(b.members), prev: docHash(current.body) });
  return signChecked('group', body, groupKey);
}

export function addMemberEdit(p: Principal): (members: readonly Principal[]) => Principal[] {
  return (members) => (members.some((m) => m.equals(p)) ? [...members] : [...members, p]);
}

export function removeMemberEdit(p: Principal): (members: readonly Principal[]) => Principal[] {
  return (members) => members.filter((m) => !m.equals(p));
}

// ---------------------------------------------------------------- text forms (CLI)

/**
 * `group:NAME`, `group:NAME@<group key principal>` (the key pinned by the caller), or a principal's text
 * form. Throws AclError MALFORMED or PrincipalError BAD_PRINCIPAL.
 */
export function parseSubject(text: string): SubjectRef {
  if (!text.startsWith('group:')) return principalFromText(text);
  const rest = text.slice('group:'.length);
  const at = rest.indexOf('@');
  if (at < 0) return { group: nameField(rest, 'group') };
  return { group: nameField(rest.slice(0, at), 'group'), key: principalFromText(rest.slice(at + 1)) };
}

/** A principal's text, or `group:NAME@<key>` (parseSubject reads it back). */
export function formatSubject(s: AclSubject): string {
  return s instanceof Principal ? s.text : `group:${s.group}@${s.key.text}`;
}

/** The JSON `ekv acl show --json` prints. */
export function aclBodyToJson(b: AclBody): object {
  return {
    ns: b.ns,
    version: b.version,
    owner: b.owner.text,
    entries: b.entries.map((e) => ({ subject: formatSubject(e.subject), rights: [...e.rights] })),
    prev: b.prev === null ? null : b.prev.toString('hex'),
  };
}

export function groupBodyToJson(b: GroupBody): object {
  return { name: b.name, version: b.version, key: b.key.text, members: b.members.map((m) => m.text), prev: b.prev === null ? null : b.prev.toString('hex') };
}
