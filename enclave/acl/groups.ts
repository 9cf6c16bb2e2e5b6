/**
 * GroupStore: the enclave's verified copies of groups, as a GroupResolver.
 * In memory only; the caller persists `doc` (encodeSignedDoc) under
 * groupStorageKey(name) and feeds copies from peers and sealed storage back
 * through adopt(). Every change moves `generation`, which invalidates the
 * group-rights caches of authorize().
 */
import { AclError, type SignedGroup } from '../../protocol/acl-doc.ts';
import { groupsMax } from './constants.ts';
import { adoptGroup, applyGroupUpdate, type GroupResolver, type VerifiedGroup } from './verified.ts';

export class GroupStore implements GroupResolver {
  readonly #groups = new Map<string, VerifiedGroup>();
  #generation = 0;

  get generation(): number {
    return this.#generation;
  }

  get(name: string): VerifiedGroup | undefined {
    return this.#groups.get(name);
  }

  get size(): number {
    return this.#groups.size;
  }

  /** A client-submitted creation or update (signed by the group key). Throws AclError. */
  apply(name: string, update: SignedGroup): VerifiedGroup {
    return this.#put(applyGroupUpdate(name, this.#groups.get(name) ?? null, update));
  }

  /** A copy from a trusted source (attested peer, own sealed storage). Throws AclError. */
  adopt(name: string, copy: SignedGroup): VerifiedGroup {
    return this.#put(adoptGroup(name, this.#groups.get(name) ?? null, copy));
  }

  #put(g: VerifiedGroup): VerifiedGroup {
    const old = this.#groups.get(g.name);
    if (old === g) return g;
    if (old === undefined && this.#groups.size >= groupsMax) throw new AclError('TOO_LARGE', `more than ${groupsMax} groups`);
    this.#groups.set(g.name, g);
    this.#generation += 1;
    return g;
  }
}
