/**
 * Namespaces and reserved keys.
 *
 * A key's namespace is its bytes before the first `/`, when those bytes are a
 * valid name (1-64 of [A-Za-z0-9._-], not starting with . _ or -): `alice/notes`
 * is in namespace `alice`. A key with no `/`, or whose prefix is not a valid
 * name, is outside any namespace; so is a key in a namespace nobody created.
 * Such keys follow the ring setting (`open`: anyone, anonymous included, may
 * read and write; `closed`: nobody may).
 *
 * Keys starting with the byte 0x00 are reserved for the ring's own documents:
 *   `\x00acl/<ns>`   the namespace's current SignedAcl (encodeSignedDoc)
 *   `\x00grp/<name>` the group's current SignedGroup
 * Clients can never get, put or delete a reserved key; ACL and group changes
 * arrive as their own requests and are validated by applyAclUpdate /
 * applyGroupUpdate before the enclave stores them there.
 */
import { docNameBytesMax, isDocName } from '../../protocol/acl-doc.ts';

export const reservedKeyByte = 0x00;
const slash = 0x2f;

export type KeyClass =
  | { readonly kind: 'reserved' }
  | { readonly kind: 'namespace'; readonly ns: string }
  | { readonly kind: 'outside' };

const reserved: KeyClass = { kind: 'reserved' };
const outside: KeyClass = { kind: 'outside' };

export function isReservedKey(key: Uint8Array | string): boolean {
  return typeof key === 'string' ? key.charCodeAt(0) === reservedKeyByte : key[0] === reservedKeyByte;
}

/** Bytes allowed in a name (isDocName): [A-Za-z0-9._-]. */
const nameByte = new Uint8Array(256);
const nameStartByte = new Uint8Array(256);
for (const c of 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789') nameStartByte[c.charCodeAt(0)] = nameByte[c.charCodeAt(0)] = 1;
for (const c of '._-') nameByte[c.charCodeAt(0)] = 1;

/** Which rule governs a client-supplied key. On every request, so bytes are scanned without copies. */
export function classifyKey(key: Uint8Array | string): KeyClass {
  if (isReservedKey(key)) return reserved;
  if (typeof key === 'string') {
    const cut = key.indexOf('/');
    const prefix = key.slice(0, Math.max(cut, 0));
    return cut > 0 && isDocName(prefix) ? { kind: 'namespace', ns: prefix } : outside;
  }
  // One pass: check each byte against the name alphabet and build the prefix (short ASCII: cheaper than a Buffer decode).
  const end = Math.min(key.length, docNameBytesMax + 1);
  let ns = '';
  for (let i = 0; i < end; i++) {
    const b = key[i] as number;
    if (b === slash) return i > 0 && nameStartByte[key[0] as number] === 1 ? { kind: 'namespace', ns } : outside;
    if (nameByte[b] === 0) return outside;
    ns += String.fromCharCode(b);
  }
  return outside;
}

/** The namespace of a key, or null when it is outside any (reserved keys included). */
export function namespaceOf(key: Uint8Array | string): string | null {
  const c = classifyKey(key);
  return c.kind === 'namespace' ? c.ns : null;
}

export function aclStorageKey(ns: string): Buffer {
  if (!isDocName(ns)) throw new TypeError(`not a namespace name: ${ns}`);
  return Buffer.from(`\x00acl/${ns}`, 'latin1');
}

export function groupStorageKey(name: string): Buffer {
  if (!isDocName(name)) throw new TypeError(`not a group name: ${name}`);
  return Buffer.from(`\x00grp/${name}`, 'latin1');
}
