// The enclave-side rules (enclave/acl): forged, rolled-back, replayed and concurrent
// ACL and group updates; authorization; namespaces and reserved keys.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  aclStorageKey,
  adoptAcl,
  applyAclUpdate,
  applyGroupUpdate,
  authorize,
  classifyKey,
  groupStorageKey,
  GroupStore,
  isReservedKey,
  namespaceOf,
  noGroups,
  rightsOf,
  type Op,
  type VerifiedAcl,
} from '../enclave/acl/index.ts';
import {
  addMemberEdit,
  buildAclCreate,
  buildAclUpdate,
  buildGroupCreate,
  buildGroupUpdate,
  decodeAclBody,
  docHash,
  isDocName,
  encodeAclBody,
  encodeGroupBody,
  grantEdit,
  removeMemberEdit,
  revokeEdit,
  signDoc,
  type SignedDoc,
} from '../protocol/acl-doc.ts';
import { Principal, signerFromPrivateKey } from '../protocol/principal.ts';
import { generateIdentity } from '../client/identity.ts';

const alice = signerFromPrivateKey(generateIdentity('ed25519')); // owner
const bob = signerFromPrivateKey(generateIdentity('p256'));
const carol = signerFromPrivateKey(generateIdentity('ed25519'));
const mallory = signerFromPrivateKey(generateIdentity('ed25519'));
const opsKey = signerFromPrivateKey(generateIdentity('ed25519'));
const ops: Op[] = ['read', 'write', 'delete', 'admin'];

function codeOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
}

function allowed(acl: VerifiedAcl | null, groups: GroupStore | typeof noGroups, p: Principal | null): Op[] {
  return ops.filter((op) => authorize(acl, groups, p, op, 'closed'));
}

/** alice creates `team`, grants bob read (v2): the usual starting point. */
function start(groups = new GroupStore()) {
  const d1 = buildAclCreate('team', alice);
  const v1 = applyAclUpdate('team', null, d1, groups);
  const d2 = buildAclUpdate(d1, alice, grantEdit(bob.principal, 'read'));
  const v2 = applyAclUpdate('team', v1, d2, groups);
  return { groups, d1, v1, d2, v2 };
}

describe('creation', () => {
  it('version 1 signed by the owner it names; the owner holds every right', () => {
    const { v1 } = start();
    expect(v1.version).toBe(1);
    expect(v1.owner.equals(alice.principal)).toBe(true);
    expect(allowed(v1, noGroups, alice.principal)).toEqual(ops);
    expect(allowed(v1, noGroups, bob.principal)).toEqual([]);
    expect(allowed(v1, noGroups, null)).toEqual([]);
  });

  it('refuses a creation naming another owner, a creation that is not version 1, one for another namespace', () => {
    const forOther = signDoc('acl', encodeAclBody({ ns: 'team', version: 1, owner: alice.principal, entries: [], prev: null }), mallory);
    expect(codeOf(() => applyAclUpdate('team', null, forOther, noGroups))).toBe('FORBIDDEN');
    const v2 = buildAclUpdate(buildAclCreate('team', mallory), mallory, grantEdit(mallory.principal, 'read'));
    expect(codeOf(() => applyAclUpdate('team', null, v2, noGroups))).toBe('VERSION_GAP');
    expect(codeOf(() => applyAclUpdate('other', null, buildAclCreate('team', alice), noGroups))).toBe('WRONG_NAME');
  });

  it('a second creation over an existing namespace is refused', () => {
    const { v2 } = start();
    expect(codeOf(() => applyAclUpdate('team', v2, buildAclCreate('team', mallory), noGroups))).toBe('FORBIDDEN');
    expect(codeOf(() => applyAclUpdate('team', v2, buildAclCreate('team', alice), noGroups))).toBe('STALE_VERSION');
  });
});

describe('forged updates', () => {
  it('a bad signature is BAD_SIGNATURE and the current ACL stays in force', () => {
    const { v2, d2, groups } = start();
    const good = buildAclUpdate(d2, alice, grantEdit(mallory.principal, 'write'));
    const sig = Buffer.from(good.signature);
    sig[0] = (sig[0] as number) ^ 1;
    const cases: SignedDoc[] = [
      { ...good, signature: sig },
      { ...good, signer: bob.principal }, // claims another signer
      { ...good, body: encodeAclBody({ ...decodeAclBody(good.body), entries: [{ subject: mallory.principal, rights: ['admin'] }] }) }, // body swapped
    ];
    for (const forged of cases) expect(codeOf(() => applyAclUpdate('team', v2, forged, groups))).toBe('BAD_SIGNATURE');
    expect(allowed(v2, groups, mallory.principal)).toEqual([]);
  });

  it('a genuine signature by someone without admin is FORBIDDEN (including granting oneself admin)', () => {
    const { v2, d2, groups } = start();
    const selfGrant = buildAclUpdate(d2, bob, grantEdit(bob.principal, 'admin'));
    expect(codeOf(() => applyAclUpdate('team', v2, selfGrant, groups))).toBe('FORBIDDEN');
    const outsider = buildAclUpdate(d2, mallory, grantEdit(mallory.principal, 'read'));
    expect(codeOf(() => applyAclUpdate('team', v2, outsider, groups))).toBe('FORBIDDEN');
    expect(allowed(v2, groups, bob.principal)).toEqual(['read']);
  });

  it('the owner is immutable: an update naming another owner is IMMUTABLE', () => {
    const { v2, d2, groups } = start();
    const b = decodeAclBody(d2.body);
    const steal = signDoc('acl', encodeAclBody({ ...b, owner: bob.principal, version: 3, prev: docHash(d2.body) }), alice);
    expect(codeOf(() => applyAclUpdate('team', v2, steal, groups))).toBe('IMMUTABLE');
    // Entries cannot take the owner's rights away either.
    const demote = buildAclUpdate(d2, alice, () => [{ subject: alice.principal, rights: ['read'] }]);
    expect(allowed(applyAclUpdate('team', v2, demote, groups), groups, alice.principal)).toEqual(ops);
  });
});

describe('rollback, replay and concurrent editors', () => {
  it('an older genuine version after a newer one is STALE_VERSION; the revoke stays in force', () => {
    const { v2, d1, d2, groups } = start();
    const d3 = buildAclUpdate(d2, alice, revokeEdit(bob.principal, null));
    const v3 = applyAclUpdate('team', v2, d3, groups);
    expect(allowed(v3, groups, bob.principal)).toEqual([]);
    for (const old of [d2, d1]) expect(codeOf(() => applyAclUpdate('team', v3, old, groups))).toBe('STALE_VERSION');
    // A trusted copy path refuses the rollback too.
    expect(codeOf(() => adoptAcl('team', v3, d2))).toBe('STALE_VERSION');
    expect(allowed(v3, groups, bob.principal)).toEqual([]);
  });

  it('a replayed update is refused', () => {
    const { v2, d2, groups } = start();
    const d3 = buildAclUpdate(d2, alice, grantEdit(carol.principal, 'write'));
    const v3 = applyAclUpdate('team', v2, d3, groups);
    expect(codeOf(() => applyAclUpdate('team', v3, d3, groups))).toBe('STALE_VERSION');
    expect(v3.version).toBe(3);
  });

  it('two editors both claiming version n+1: the first wins, the second is refused and changes nothing', () => {
    const { v2, d2, groups } = start();
    const d3 = buildAclUpdate(d2, alice, grantEdit(bob.principal, 'admin'));
    const v3 = applyAclUpdate('team', v2, d3, groups);
    const d3b = buildAclUpdate(d2, alice, grantEdit(carol.principal, 'write'));
    expect(codeOf(() => applyAclUpdate('team', v3, d3b, groups))).toBe('STALE_VERSION');
    expect(allowed(v3, groups, carol.principal)).toEqual([]);
    expect(allowed(v3, groups, bob.principal)).toEqual(['read', 'admin']);
    // Rebuilt on the new current version, the second edit goes through.
    const v4 = applyAclUpdate('team', v3, buildAclUpdate(d3, alice, grantEdit(carol.principal, 'write')), groups);
    expect(allowed(v4, groups, carol.principal)).toEqual(['write', 'delete']);
  });

  it('a skipped version is VERSION_GAP; a fork (right version, other history) is PREV_MISMATCH', () => {
    const { v2, d2, d1, groups } = start();
    const d3 = buildAclUpdate(d2, alice, grantEdit(carol.principal, 'read'));
    const d4 = buildAclUpdate(d3, alice, grantEdit(carol.principal, 'write'));
    expect(codeOf(() => applyAclUpdate('team', v2, d4, groups))).toBe('VERSION_GAP');
    const d2fork = buildAclUpdate(d1, alice, grantEdit(mallory.principal, 'read'));
    const d3fork = buildAclUpdate(d2fork, alice, grantEdit(mallory.principal, 'write'));
    expect(codeOf(() => applyAclUpdate('team', v2, d3fork, groups))).toBe('PREV_MISMATCH');
  });

  it('adoptAcl (trusted copies) may skip versions, is idempotent, and refuses a different body at the same version', () => {
    const { v2, d1, d2, groups } = start();
    const d3 = buildAclUpdate(d2, alice, grantEdit(carol.principal, 'read'));
    const d4 = buildAclUpdate(d3, alice, grantEdit(carol.principal, 'write'));
    const v4 = adoptAcl('team', v2, d4);
    expect(v4.version).toBe(4);
    expect(adoptAcl('team', v4, d4)).toBe(v4);
    expect(adoptAcl('team', null, d4).version).toBe(4);
    const d2fork = buildAclUpdate(d1, alice, grantEdit(mallory.principal, 'read'));
    expect(codeOf(() => adoptAcl('team', v2, d2fork))).toBe('PREV_MISMATCH');
    expect(allowed(v4, groups, carol.principal)).toEqual(['read', 'write', 'delete']);
  });
});

describe('groups', () => {
  function withOps(members: Principal[]) {
    const groups = new GroupStore();
    const g1 = buildGroupCreate('ops', opsKey, members);
    groups.apply('ops', g1);
    return { groups, g1 };
  }

  it('a group entry grants its rights to members, and a member removal takes effect at once', () => {
    const { groups, g1 } = withOps([carol.principal]);
    const { d2, v2 } = start(groups);
    const v3 = applyAclUpdate('team', v2, buildAclUpdate(d2, alice, grantEdit({ group: 'ops', key: opsKey.principal }, 'write')), groups);
    expect(allowed(v3, groups, carol.principal)).toEqual(['write', 'delete']);
    const gen = groups.generation;
    groups.apply('ops', buildGroupUpdate(g1, opsKey, removeMemberEdit(carol.principal)));
    expect(groups.generation).toBeGreaterThan(gen);
    expect(allowed(v3, groups, carol.principal)).toEqual([]);
  });

  it('admin through a group lets a member edit the ACL; after removal the same member is FORBIDDEN', () => {
    const { groups, g1 } = withOps([carol.principal]);
    const { d2, v2 } = start(groups);
    const d3 = buildAclUpdate(d2, alice, grantEdit({ group: 'ops', key: opsKey.principal }, 'admin'));
    const v3 = applyAclUpdate('team', v2, d3, groups);
    const d4 = buildAclUpdate(d3, carol, grantEdit(mallory.principal, 'read'));
    const v4 = applyAclUpdate('team', v3, d4, groups);
    expect(rightsOf(v4, groups, mallory.principal)).toEqual(['read']);
    groups.apply('ops', buildGroupUpdate(g1, opsKey, removeMemberEdit(carol.principal)));
    const d5 = buildAclUpdate(d4, carol, grantEdit(carol.principal, 'write'));
    expect(codeOf(() => applyAclUpdate('team', v4, d5, groups))).toBe('FORBIDDEN');
  });

  // Issue 10, item 5: a grant binds the group by its key, checked at grant time and at use.
  it('a grant to a group that does not exist is refused (UNKNOWN_GROUP); whoever creates it later gets nothing', () => {
    const groups = new GroupStore();
    const { d2, v2 } = start(groups);
    const early = buildAclUpdate(d2, alice, grantEdit({ group: 'ghost', key: opsKey.principal }, 'read'));
    expect(codeOf(() => applyAclUpdate('team', v2, early, groups))).toBe('UNKNOWN_GROUP');
    expect(codeOf(() => applyAclUpdate('team', null, buildAclCreate('team', alice, [{ subject: { group: 'ghost', key: opsKey.principal }, rights: ['read'] }]), groups))).toBe(
      'UNKNOWN_GROUP',
    );
    // mallory creates "ghost" with her own key: an entry bound to ops' key still refuses, and grants her nothing.
    groups.apply('ghost', buildGroupCreate('ghost', mallory, [mallory.principal]));
    expect(codeOf(() => applyAclUpdate('team', v2, early, groups))).toBe('UNKNOWN_GROUP');
    expect(allowed(v2, groups, mallory.principal)).toEqual([]);
  });

  it('a group re-created under another key (its document lost) gets nothing from the old entry', () => {
    const { groups } = withOps([carol.principal]);
    const { d2, v2 } = start(groups);
    const v3 = applyAclUpdate('team', v2, buildAclUpdate(d2, alice, grantEdit({ group: 'ops', key: opsKey.principal }, 'write')), groups);
    expect(allowed(v3, groups, carol.principal)).toEqual(['write', 'delete']);
    // The ring lost ops' document; mallory creates "ops" anew, with carol and herself as members.
    const other = new GroupStore();
    other.apply('ops', buildGroupCreate('ops', mallory, [carol.principal, mallory.principal]));
    expect(allowed(v3, other, mallory.principal)).toEqual([]);
    expect(allowed(v3, other, carol.principal)).toEqual([]);
    // Control: the genuine group (same name, the bound key) still works through the same entry.
    expect(allowed(v3, groups, carol.principal)).toEqual(['write', 'delete']);
  });

  it('an entry bound before stays valid while the group document is missing; a re-grant to a new key replaces it', () => {
    const { groups } = withOps([carol.principal]);
    const { d2, v2 } = start(groups);
    const d3 = buildAclUpdate(d2, alice, grantEdit({ group: 'ops', key: opsKey.principal }, 'write'));
    const v3 = applyAclUpdate('team', v2, d3, groups);
    const d4 = buildAclUpdate(d3, alice, grantEdit(bob.principal, 'write'));
    expect(applyAclUpdate('team', v3, d4, new GroupStore()).version).toBe(4); // unchanged group entry: not re-checked
    const rebound = grantEdit({ group: 'ops', key: mallory.principal }, 'read')(decodeAclBody(d4.body).entries);
    expect(rebound.filter((e) => !(e.subject instanceof Principal))).toEqual([{ subject: { group: 'ops', key: mallory.principal }, rights: ['read'] }]);
  });

  it('only the group key may create or edit a group; the key is immutable', () => {
    const forged = signDoc('group', encodeGroupBody({ name: 'ops', version: 1, key: opsKey.principal, members: [mallory.principal], prev: null }), mallory);
    expect(codeOf(() => applyGroupUpdate('ops', null, forged))).toBe('FORBIDDEN');
    const { groups, g1 } = withOps([carol.principal]);
    const byOwner = buildGroupUpdate(g1, alice, addMemberEdit(mallory.principal));
    expect(codeOf(() => groups.apply('ops', byOwner))).toBe('FORBIDDEN');
    const body = encodeGroupBody({ name: 'ops', version: 2, key: mallory.principal, members: [], prev: docHash(g1.body) });
    expect(codeOf(() => groups.apply('ops', signDoc('group', body, opsKey)))).toBe('IMMUTABLE');
    const sig = Buffer.from(g1.signature);
    sig[10] = (sig[10] as number) ^ 0x80;
    expect(codeOf(() => applyGroupUpdate('ops', null, { ...g1, signature: sig }))).toBe('BAD_SIGNATURE');
    expect(codeOf(() => groups.apply('devs', g1))).toBe('WRONG_NAME');
    expect(groups.get('ops')?.memberIds.has(carol.principal.id)).toBe(true);
    expect(groups.get('ops')?.memberIds.has(mallory.principal.id)).toBe(false);
  });

  it('a rolled-back or replayed group version is STALE_VERSION and membership stays', () => {
    const { groups, g1 } = withOps([carol.principal]);
    const g2 = buildGroupUpdate(g1, opsKey, removeMemberEdit(carol.principal));
    groups.apply('ops', g2);
    expect(codeOf(() => groups.apply('ops', g1))).toBe('STALE_VERSION');
    expect(codeOf(() => groups.apply('ops', g2))).toBe('STALE_VERSION');
    expect(codeOf(() => groups.adopt('ops', g1))).toBe('STALE_VERSION');
    expect(codeOf(() => groups.apply('ops', buildGroupCreate('ops', opsKey, [carol.principal])))).toBe('STALE_VERSION');
    expect(groups.get('ops')?.version).toBe(2);
    expect(groups.get('ops')?.memberIds.has(carol.principal.id)).toBe(false);
  });
});

describe('authorize without an ACL, namespaces and reserved keys', () => {
  it('the ring setting decides keys without an ACL; admin needs an ACL', () => {
    for (const p of [null, alice.principal]) {
      expect(ops.filter((op) => authorize(null, noGroups, p, op, 'open'))).toEqual(['read', 'write', 'delete']);
      expect(ops.filter((op) => authorize(null, noGroups, p, op, 'closed'))).toEqual([]);
    }
  });

  it('classifies keys: namespace prefix, outside, reserved; bytes and strings alike', () => {
    expect(classifyKey('team/x')).toEqual({ kind: 'namespace', ns: 'team' });
    expect(classifyKey(Buffer.from('team/a/b'))).toEqual({ kind: 'namespace', ns: 'team' });
    expect(namespaceOf('plain')).toBeNull();
    expect(namespaceOf('/lead')).toBeNull();
    expect(namespaceOf('bad name/x')).toBeNull();
    expect(namespaceOf(Buffer.from([0xff, 0x2f, 0x41]))).toBeNull();
    expect(namespaceOf(new Uint8Array(0))).toBeNull();
    expect(classifyKey('\x00acl/team')).toEqual({ kind: 'reserved' });
    expect(isReservedKey(aclStorageKey('team'))).toBe(true);
    expect(isReservedKey(groupStorageKey('ops'))).toBe(true);
    expect(aclStorageKey('team').toString('latin1')).toBe('\x00acl/team');
    expect(groupStorageKey('ops').toString('latin1')).toBe('\x00grp/ops');
    expect(isReservedKey('team/\x00')).toBe(false);
    // A subarray view: the namespace is read from the view, not the whole buffer.
    const big = Buffer.from('zzzzteam/k');
    expect(namespaceOf(big.subarray(4))).toBe('team');
    expect(namespaceOf(`${'n'.repeat(64)}/k`)).toBe('n'.repeat(64));
    expect(namespaceOf(Buffer.from(`${'n'.repeat(64)}/k`))).toBe('n'.repeat(64));
    expect(namespaceOf(Buffer.from(`${'n'.repeat(65)}/k`))).toBeNull();
  });

  it('fast-check: the byte scanner agrees with the plain definition', () => {
    const naive = (s: string) => {
      if (s.charCodeAt(0) === 0) return { kind: 'reserved' };
      const cut = s.indexOf('/');
      return cut > 0 && isDocName(s.slice(0, cut)) ? { kind: 'namespace', ns: s.slice(0, cut) } : { kind: 'outside' };
    };
    const char = fc.constantFrom('a', 'Z', '0', '.', '_', '-', '/', ' ', '\x00', '\xe9', 'é');
    const key = fc.oneof(
      fc.array(char, { maxLength: 12 }).map((cs) => cs.join('')),
      fc.tuple(fc.integer({ min: 60, max: 70 }), fc.array(char, { maxLength: 4 })).map(([n, cs]) => 'x'.repeat(n) + cs.join('')),
    );
    fc.assert(
      fc.property(key, (s) => {
        expect(classifyKey(s)).toEqual(naive(s));
        expect(classifyKey(Buffer.from(s, 'utf8'))).toEqual(naive(Buffer.from(s, 'utf8').toString('latin1')));
      }),
      { numRuns: 2000 },
    );
  });
});
