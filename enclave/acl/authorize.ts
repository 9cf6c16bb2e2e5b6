/**
 * Authorization: may this principal (or an anonymous session) do this
 * operation under this namespace's verified ACL?
 *
 * Rights: read (get), write (put and delete), admin (change the ACL). They are
 * independent; the owner holds all three. Anonymous sessions hold no right in
 * a namespace with an ACL. With no ACL (a key outside any namespace, or a
 * namespace nobody created) the ring setting decides: `open` allows read,
 * write and delete to everyone, `closed` to nobody; admin is never granted
 * without an ACL (creating one goes through applyAclUpdate).
 *
 * Groups: an entry's rights go to the members of the group it names only while
 * that group is signed by the key the entry names (see verified.ts).
 *
 * Speed: direct entries are one map lookup. Rights through groups are cached
 * per ACL version and principal, and the cache is dropped when the group
 * resolver's generation moves, so a group edit takes effect on the next call.
 */
import type { Principal } from '../../protocol/principal.ts';
import type { Right, SignedAcl } from '../../protocol/acl-doc.ts';
import { groupRightsCacheEntriesMax } from './constants.ts';
import { allRightBits, checkAclUpdate, rightBits, type GroupResolver, type VerifiedAcl } from './verified.ts';

export type Op = 'read' | 'write' | 'delete' | 'admin';
export type RingAccess = 'open' | 'closed';

const opBits: Readonly<Record<Op, number>> = { read: rightBits.read, write: rightBits.write, delete: rightBits.write, admin: rightBits.admin };

interface GroupCache {
  resolver: GroupResolver;
  generation: number;
  bits: Map<string, number>;
}
const groupCaches = new WeakMap<VerifiedAcl, GroupCache>();

function groupDerivedBits(acl: VerifiedAcl, groups: GroupResolver, p: Principal): number {
  let cache = groupCaches.get(acl);
  if (cache === undefined || cache.resolver !== groups || cache.generation !== groups.generation) {
    cache = { resolver: groups, generation: groups.generation, bits: new Map() };
    groupCaches.set(acl, cache);
  }
  const hit = cache.bits.get(p.id);
  if (hit !== undefined) return hit;
  let bits = 0;
  for (const [name, entry] of acl.byGroup) {
    if ((bits | entry.bits) === bits) continue;
    // Only the group the entry was bound to: same name AND same key (another key's "ops" gets nothing).
    const g = groups.get(name);
    if (g !== undefined && g.key.id === entry.keyId && g.memberIds.has(p.id)) bits |= entry.bits;
  }
  if (cache.bits.size >= groupRightsCacheEntriesMax) cache.bits.clear();
  cache.bits.set(p.id, bits);
  return bits;
}

/** The rights bits `p` holds under `acl` (owner: all; else direct | via groups). */
export function rightsBitsOf(acl: VerifiedAcl, groups: GroupResolver, p: Principal): number {
  if (p.id === acl.owner.id) return allRightBits;
  const direct = acl.direct.get(p.id) ?? 0;
  if (acl.byGroup.size === 0 || direct === allRightBits) return direct;
  return direct | groupDerivedBits(acl, groups, p);
}

/** The rights `p` holds under `acl`, as names (for `ekv acl show` and tests). */
export function rightsOf(acl: VerifiedAcl, groups: GroupResolver, p: Principal): Right[] {
  const bits = rightsBitsOf(acl, groups, p);
  return (Object.keys(rightBits) as Right[]).filter((r) => (bits & rightBits[r]) !== 0);
}

/** The per-request check. `acl` is the verified ACL of the key's namespace, or null when it has none. */
export function authorize(acl: VerifiedAcl | null, groups: GroupResolver, principal: Principal | null, op: Op, ring: RingAccess): boolean {
  if (acl === null) return ring === 'open' && op !== 'admin';
  if (principal === null) return false;
  return (rightsBitsOf(acl, groups, principal) & opBits[op]) !== 0;
}

/**
 * A client-submitted ACL creation (current null) or update for namespace `ns`;
 * see verified.ts for the rules. Returns the new current version; throws AclError.
 */
export function applyAclUpdate(ns: string, current: VerifiedAcl | null, update: SignedAcl, groups: GroupResolver): VerifiedAcl {
  return checkAclUpdate(ns, current, update, (acl, p) => (rightsBitsOf(acl, groups, p) & rightBits.admin) !== 0, groups);
}
