/**
 * The enclave's access-control core (issue 7): pure functions and in-memory
 * state, no I/O. The server calls classifyKey + authorize on every get, put
 * and delete, applyAclUpdate / GroupStore.apply on ACL and group changes, and
 * adoptAcl / GroupStore.adopt for copies from peers and sealed storage.
 */
export { aclStorageKey, classifyKey, groupStorageKey, isReservedKey, namespaceOf, reservedKeyByte, type KeyClass } from './keys.ts';
export { adoptAcl, adoptGroup, applyGroupUpdate, noGroups, VerifiedAcl, VerifiedGroup, type GroupResolver } from './verified.ts';
export { applyAclUpdate, authorize, rightsBitsOf, rightsOf, type Op, type RingAccess } from './authorize.ts';
export { GroupStore } from './groups.ts';
export { AclError, type AclErrorCode } from '../../protocol/acl-doc.ts';
