// The ACL and group document format (protocol/acl-doc.ts): encoding, bounds, strict decoding, builders.
import { Encoder } from 'cbor-x';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  AclError,
  aclBodyBytesMax,
  aclBodyToJson,
  aclDocBytesMax,
  aclEntriesMax,
  aclGroupEntriesMax,
  aclGroupEntryBytesMax,
  aclPrincipalEntryBytesMax,
  addMemberEdit,
  buildAclCreate,
  buildAclUpdate,
  buildGroupCreate,
  buildGroupUpdate,
  decodeAclBody,
  decodeGroupBody,
  decodeSignedDoc,
  docHash,
  encodeAclBody,
  encodeSignedDoc,
  grantEdit,
  groupBodyBytesMax,
  groupMembersMax,
  parseSubject,
  removeMemberEdit,
  revokeEdit,
  verifyDocSignature,
  type AclEntry,
} from '../protocol/acl-doc.ts';
import { valueBytesMax } from '../protocol/constants.ts';
import { principalFromBytes, principalTag, signerFromPrivateKey, type Principal } from '../protocol/principal.ts';
import { generateIdentity } from '../client/identity.ts';

const alice = signerFromPrivateKey(generateIdentity('ed25519'));
const bob = signerFromPrivateKey(generateIdentity('p256'));
const groupKey = signerFromPrivateKey(generateIdentity());
const raw = new Encoder({ useRecords: false, mapsAsObjects: false, tagUint8Array: false } as never);

function codeOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
}

/** A distinct fake P-256-shaped principal per index (structure only: never used to verify). */
function fakePrincipal(i: number): Principal {
  const b = Buffer.alloc(34);
  b[0] = principalTag.p256;
  b[1] = 0x02;
  b.writeUInt32BE(i, 30);
  return principalFromBytes(b);
}

function entry(subject: unknown, rights?: unknown): Map<string, unknown> {
  const m = new Map<string, unknown>([['subject', subject]]);
  if (rights !== undefined) m.set('rights', rights);
  return m;
}

function body(overrides: Record<string, unknown>): Buffer {
  const m = new Map<string, unknown>([['ns', 'team'], ['version', 1], ['owner', alice.principal.bytes], ['entries', []], ['prev', null]]);
  for (const [k, v] of Object.entries(overrides)) {
    if (v === undefined) m.delete(k);
    else m.set(k, v);
  }
  return raw.encode(m);
}

describe('ACL documents', () => {
  it('round-trip: create, grant, revoke; signatures verify; prev chains', () => {
    const v1 = buildAclCreate('team', alice);
    const v2 = buildAclUpdate(v1, alice, grantEdit(bob.principal, 'read'));
    const v3 = buildAclUpdate(v2, alice, grantEdit({ group: 'ops', key: groupKey.principal }, 'write'));
    const v4 = buildAclUpdate(v3, alice, grantEdit(bob.principal, 'admin'));
    const again = decodeSignedDoc(encodeSignedDoc(v4), 'acl');
    expect(verifyDocSignature('acl', again)).toBe(true);
    const b = decodeAclBody(again.body);
    expect(b.version).toBe(4);
    expect(b.owner.equals(alice.principal)).toBe(true);
    expect(b.prev?.equals(docHash(v3.body))).toBe(true);
    expect(aclBodyToJson(b)).toEqual({
      ns: 'team',
      version: 4,
      owner: alice.principal.text,
      entries: [
        { subject: bob.principal.text, rights: ['read', 'admin'] },
        { subject: `group:ops@${groupKey.principal.text}`, rights: ['write'] },
      ],
      prev: docHash(v3.body).toString('hex'),
    });
    const v5 = buildAclUpdate(v4, bob, revokeEdit(bob.principal, 'read'));
    expect(decodeAclBody(v5.body).entries.map((e) => e.rights)).toEqual([['admin'], ['write']]);
    const v6 = buildAclUpdate(v5, bob, revokeEdit(bob.principal, null));
    expect(decodeAclBody(v6.body).entries.length).toBe(1);
  });

  it('an ACL signature is not a group signature over the same bytes (domain separation)', () => {
    const d = buildAclCreate('team', alice);
    expect(verifyDocSignature('acl', d)).toBe(true);
    expect(verifyDocSignature('group', d)).toBe(false);
  });

  it('the worst-case entries fit their bounds, and a full ACL fits aclBodyBytesMax and a ring value', () => {
    const rights: AclEntry['rights'] = ['read', 'write', 'admin'];
    const worstGroup: AclEntry = { subject: { group: 'g'.repeat(64), key: bob.principal }, rights };
    const worstPrincipal: AclEntry = { subject: bob.principal, rights };
    const size = (entries: AclEntry[]) => encodeAclBody({ ns: 'n', version: 1, owner: alice.principal, entries, prev: null }).length;
    expect(size([worstGroup]) - size([])).toBeLessThanOrEqual(aclGroupEntryBytesMax);
    expect(size([worstPrincipal]) - size([])).toBeLessThanOrEqual(aclPrincipalEntryBytesMax);
    const entries: AclEntry[] = [];
    for (let i = 0; i < aclGroupEntriesMax; i++) entries.push({ subject: { group: `${String(i).padStart(8, '0')}${'g'.repeat(56)}`, key: bob.principal }, rights });
    for (let i = aclGroupEntriesMax; i < aclEntriesMax; i++) entries.push({ subject: fakePrincipal(i), rights });
    const full = buildAclCreate('n'.repeat(64), alice, entries);
    expect(full.body.length).toBeLessThanOrEqual(aclBodyBytesMax);
    expect(encodeSignedDoc(full).length).toBeLessThanOrEqual(aclDocBytesMax);
    expect(aclDocBytesMax).toBeLessThanOrEqual(valueBytesMax);
    expect(decodeAclBody(full.body).entries.length).toBe(aclEntriesMax);
  });

  it('refuses more than aclGroupEntriesMax group entries (TOO_LARGE)', () => {
    const groups = Array.from({ length: aclGroupEntriesMax + 1 }, (_, i) => entry(new Map<string, unknown>([['group', `g${i}`], ['key', bob.principal.bytes]]), ['read']));
    expect(codeOf(() => decodeAclBody(body({ entries: groups })))).toBe('TOO_LARGE');
    expect(decodeAclBody(body({ entries: groups.slice(1) })).entries.length).toBe(aclGroupEntriesMax);
  });

  it('refuses more than aclEntriesMax entries (TOO_LARGE), and oversized bytes before decoding', () => {
    const entries = Array.from({ length: aclEntriesMax + 1 }, (_, i) => entry(fakePrincipal(i).bytes, ['read']));
    expect(codeOf(() => decodeAclBody(body({ entries })))).toBe('TOO_LARGE');
    // Garbage over the limit is refused on its length, not parsed.
    expect(codeOf(() => decodeAclBody(Buffer.alloc(aclBodyBytesMax + 1, 0xff)))).toBe('TOO_LARGE');
    expect(codeOf(() => decodeSignedDoc(Buffer.alloc(aclDocBytesMax + 1), 'acl'))).toBe('TOO_LARGE');
    expect(codeOf(() => buildAclCreate('team', alice, Array.from({ length: aclEntriesMax + 1 }, (_, i) => ({ subject: fakePrincipal(i), rights: ['read'] }))))).toBe(
      'TOO_LARGE',
    );
  });

  it('refuses malformed bodies with MALFORMED', () => {
    const p = bob.principal.bytes;
    const cases: Buffer[] = [
      body({ extra: 1 }),
      body({ ns: undefined }),
      body({ ns: 'has/slash' }),
      body({ ns: '' }),
      body({ ns: '.hidden' }),
      body({ ns: 'x'.repeat(65) }),
      body({ version: 0 }),
      body({ version: 1.5 }),
      body({ version: 2 ** 60 }),
      body({ version: '1' }),
      body({ prev: Buffer.alloc(32) }),
      body({ version: 2 }),
      body({ version: 2, prev: Buffer.alloc(31) }),
      body({ owner: Buffer.alloc(33) }),
      body({ entries: 'none' }),
      body({ entries: [entry(p, [])] }),
      body({ entries: [entry(p, ['root'])] }),
      body({ entries: [entry(p, ['read', 'read'])] }),
      body({ entries: [entry(p, ['read']), entry(p, ['write'])] }),
      body({ entries: [entry(new Map<string, unknown>([['group', 'a/b'], ['key', p]]), ['read'])] }),
      body({ entries: [entry(new Map([['group', 'ops']]), ['read'])] }), // a group entry without its key
      body({ entries: [entry(new Map<string, unknown>([['group', 'ops'], ['key', Buffer.alloc(33)]]), ['read'])] }),
      body({ entries: [entry(new Map([['grp', 'ab']]), ['read'])] }),
      body({ entries: [entry(p)] }),
      raw.encode([1, 2, 3]),
      Buffer.from([0xa1]),
    ];
    for (const c of cases) expect(codeOf(() => decodeAclBody(c))).toBe('MALFORMED');
  });

  it('refuses malformed signed wrappers', () => {
    const d = buildAclCreate('team', alice);
    const cases = [
      raw.encode([d.body, d.signer.bytes]),
      raw.encode([d.body, d.signer.bytes, d.signature.subarray(1)]),
      raw.encode([d.body, Buffer.alloc(3), d.signature]),
      raw.encode(['body', d.signer.bytes, d.signature]),
      raw.encode(new Map([['body', d.body]])),
    ];
    for (const c of cases) expect(codeOf(() => decodeSignedDoc(c, 'acl'))).toBe('MALFORMED');
  });

  it('fast-check: random and mutated input never throws anything but AclError', () => {
    const good = encodeSignedDoc(buildAclUpdate(buildAclCreate('team', alice), alice, grantEdit(bob.principal, 'read')));
    const mutated = fc.tuple(fc.nat(good.length - 1), fc.integer({ min: 1, max: 255 })).map(([i, x]) => {
      const b = Buffer.from(good);
      b[i] = (b[i] as number) ^ x;
      return b;
    });
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 300 }), mutated), (bytes) => {
        try {
          const d = decodeSignedDoc(bytes, 'acl');
          decodeAclBody(d.body);
        } catch (err) {
          expect(err).toBeInstanceOf(AclError);
        }
        try {
          decodeGroupBody(bytes);
        } catch (err) {
          expect(err).toBeInstanceOf(AclError);
        }
      }),
      { numRuns: 1000 },
    );
  });
});

describe('group documents', () => {
  it('round-trip: create, add, remove', () => {
    const v1 = buildGroupCreate('ops', groupKey, [alice.principal]);
    const v2 = buildGroupUpdate(v1, groupKey, addMemberEdit(bob.principal));
    const v3 = buildGroupUpdate(v2, groupKey, addMemberEdit(bob.principal));
    const v4 = buildGroupUpdate(v3, groupKey, removeMemberEdit(alice.principal));
    const b = decodeGroupBody(decodeSignedDoc(encodeSignedDoc(v4), 'group').body);
    expect(b.version).toBe(4);
    expect(b.key.equals(groupKey.principal)).toBe(true);
    expect(b.members.map((m) => m.text)).toEqual([bob.principal.text]);
    expect(decodeGroupBody(v3.body).members.length).toBe(2);
    expect(verifyDocSignature('group', v4)).toBe(true);
    expect(verifyDocSignature('acl', v4)).toBe(false);
  });

  it('a full group fits its bound; one member more is TOO_LARGE; duplicates are MALFORMED', () => {
    const members = Array.from({ length: groupMembersMax }, (_, i) => fakePrincipal(i));
    const full = buildGroupCreate('big', groupKey, members);
    expect(full.body.length).toBeLessThanOrEqual(groupBodyBytesMax);
    expect(decodeGroupBody(full.body).members.length).toBe(groupMembersMax);
    expect(codeOf(() => buildGroupCreate('big', groupKey, [...members, fakePrincipal(groupMembersMax)]))).toBe('TOO_LARGE');
    const dup = raw.encode(
      new Map<string, unknown>([['name', 'g'], ['version', 1], ['key', groupKey.principal.bytes], ['members', [alice.principal.bytes, alice.principal.bytes]], ['prev', null]]),
    );
    expect(codeOf(() => decodeGroupBody(dup))).toBe('MALFORMED');
  });
});

describe('subjects as text', () => {
  it('parses group:NAME and principal text forms', () => {
    expect(parseSubject('group:ops')).toEqual({ group: 'ops' });
    const pinned = parseSubject(`group:ops@${groupKey.principal.text}`) as { group: string; key: Principal };
    expect([pinned.group, pinned.key.equals(groupKey.principal)]).toEqual(['ops', true]);
    expect(codeOf(() => parseSubject('group:ops@nokey'))).toBe('BAD_PRINCIPAL');
    expect((parseSubject(bob.principal.text) as Principal).equals(bob.principal)).toBe(true);
    expect(codeOf(() => parseSubject('group:'))).toBe('MALFORMED');
    expect(codeOf(() => parseSubject('bob'))).toBe('BAD_PRINCIPAL');
  });
});
