// Property test: random sequences of grants, revokes, group edits, replays and forgeries from
// several principals (some allowed, some not), applied through enclave/acl, must agree with a
// reference model of a few plain maps on every (principal, op) pair after every step.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { applyAclUpdate, authorize, GroupStore, type Op, type VerifiedAcl } from '../enclave/acl/index.ts';
import {
  addMemberEdit,
  allRights,
  buildAclCreate,
  buildAclUpdate,
  buildGroupCreate,
  buildGroupUpdate,
  grantEdit,
  removeMemberEdit,
  revokeEdit,
  type AclSubject,
  type Right,
  type SignedDoc,
} from '../protocol/acl-doc.ts';
import { signerFromPrivateKey, type Signer } from '../protocol/principal.ts';
import { generateIdentity } from '../client/identity.ts';

// Signers 0-3 are people (0 owns the namespace), 4-6 are the designated keys of groups g0-g2.
const signers: Signer[] = [
  ...(['ed25519', 'p256', 'ed25519', 'ed25519'] as const).map((a) => signerFromPrivateKey(generateIdentity(a))),
  ...[0, 1, 2].map(() => signerFromPrivateKey(generateIdentity())),
];
const people = [0, 1, 2, 3];
const groupNames = ['g0', 'g1', 'g2'];
const ops: Op[] = ['read', 'write', 'delete', 'admin'];
const opRight: Record<Op, Right> = { read: 'read', write: 'write', delete: 'write', admin: 'admin' };

type Subject = { p: number } | { g: number };
type Action =
  | { t: 'acl'; signer: number; subject: Subject; right: Right; grant: boolean; stale: boolean }
  | { t: 'group'; signer: number; g: number; member: number; add: boolean }
  | { t: 'replay'; pick: number }
  | { t: 'forge'; signer: number; subject: Subject; right: Right };

const subjectArb: fc.Arbitrary<Subject> = fc.oneof(fc.record({ p: fc.constantFrom(...people) }), fc.record({ g: fc.nat(2) }));
const rightArb = fc.constantFrom(...allRights);
const actionArb: fc.Arbitrary<Action> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ t: fc.constant('acl' as const), signer: fc.constantFrom(...people), subject: subjectArb, right: rightArb, grant: fc.boolean(), stale: fc.nat(6).map((x) => x === 0) }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('group' as const), signer: fc.nat(6), g: fc.nat(2), member: fc.constantFrom(...people), add: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('replay' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('forge' as const), signer: fc.constantFrom(...people), subject: subjectArb, right: rightArb }) },
);

/** The reference model: who may do what, in plain maps. */
class Model {
  readonly owner = 0;
  readonly entries = new Map<string, Set<Right>>();
  readonly groups = new Map<number, { key: number; members: Set<number> }>();

  rights(p: number): Set<Right> {
    if (p === this.owner) return new Set(allRights);
    const out = new Set(this.entries.get(`p${p}`) ?? []);
    for (const [g, grp] of this.groups) if (grp.members.has(p)) for (const r of this.entries.get(`g${g}`) ?? []) out.add(r);
    return out;
  }

  edit(s: Subject, right: Right, grant: boolean): void {
    const k = 'p' in s ? `p${s.p}` : `g${s.g}`;
    const set = this.entries.get(k) ?? new Set<Right>();
    if (grant) set.add(right);
    else set.delete(right);
    if (set.size === 0) this.entries.delete(k);
    else this.entries.set(k, set);
  }
}

function toSubject(s: Subject, model: Model): AclSubject {
  if ('p' in s) return (signers[s.p] as Signer).principal;
  // As the client does: the group's key now; a group that does not exist yet gets its designated key.
  const key = model.groups.get(s.g)?.key ?? 4 + s.g;
  return { group: groupNames[s.g] as string, key: (signers[key] as Signer).principal };
}

function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    return (err as { code?: string }).code ?? 'THREW';
  }
  return 'OK';
}

/** The system under test, as the enclave would hold it. */
interface World {
  model: Model;
  groups: GroupStore;
  acl: VerifiedAcl;
  docs: SignedDoc[]; // accepted ACL versions, oldest first
  groupDocs: Map<number, SignedDoc[]>;
  accepted: Array<{ kind: 'acl' | 'group'; g: number; doc: SignedDoc }>;
}

function stepAcl(w: World, a: Extract<Action, { t: 'acl' }>): void {
  const signer = signers[a.signer] as Signer;
  const base = a.stale && w.docs.length >= 2 ? (w.docs[w.docs.length - 2] as SignedDoc) : (w.docs[w.docs.length - 1] as SignedDoc);
  const edit = a.grant ? grantEdit(toSubject(a.subject, w.model), a.right) : revokeEdit(toSubject(a.subject, w.model), a.right);
  const doc = buildAclUpdate(base, signer, edit);
  const mayAdmin = w.model.rights(a.signer).has('admin');
  // A grant to a group binds it by its key, so the group must exist (issue 10, item 5).
  const unknownGroup = a.grant && 'g' in a.subject && !w.model.groups.has(a.subject.g);
  const expected = !mayAdmin ? 'FORBIDDEN' : base !== w.docs[w.docs.length - 1] ? 'STALE_VERSION' : unknownGroup ? 'UNKNOWN_GROUP' : 'OK';
  let next: VerifiedAcl | undefined;
  expect(codeOf(() => (next = applyAclUpdate('ns', w.acl, doc, w.groups)))).toBe(expected);
  if (next === undefined) return;
  w.acl = next;
  w.docs.push(doc);
  w.accepted.push({ kind: 'acl', g: -1, doc });
  w.model.edit(a.subject, a.right, a.grant);
}

function stepGroup(w: World, a: Extract<Action, { t: 'group' }>): void {
  const signer = signers[a.signer] as Signer;
  const name = groupNames[a.g] as string;
  const history = w.groupDocs.get(a.g) ?? [];
  const member = (signers[a.member] as Signer).principal;
  const current = w.model.groups.get(a.g);
  // A creation binds the name to whichever key signs it first; afterwards only that key may edit.
  const doc =
    history.length === 0
      ? buildGroupCreate(name, signer, a.add ? [member] : [])
      : buildGroupUpdate(history[history.length - 1] as SignedDoc, signer, a.add ? addMemberEdit(member) : removeMemberEdit(member));
  const expected = current === undefined || current.key === a.signer ? 'OK' : 'FORBIDDEN';
  expect(codeOf(() => w.groups.apply(name, doc))).toBe(expected);
  if (expected !== 'OK') return;
  history.push(doc);
  w.groupDocs.set(a.g, history);
  w.accepted.push({ kind: 'group', g: a.g, doc });
  const grp = current ?? { key: a.signer, members: new Set<number>() };
  if (a.add) grp.members.add(a.member);
  else grp.members.delete(a.member);
  w.model.groups.set(a.g, grp);
}

function stepReplay(w: World, a: Extract<Action, { t: 'replay' }>): void {
  if (w.accepted.length === 0) return;
  const old = w.accepted[a.pick % w.accepted.length] as (typeof w.accepted)[number];
  if (old.kind === 'group') {
    expect(codeOf(() => w.groups.apply(groupNames[old.g] as string, old.doc))).toBe('STALE_VERSION');
  } else {
    // Refused either way; which code depends on whether its signer still holds admin.
    expect(['STALE_VERSION', 'FORBIDDEN']).toContain(codeOf(() => applyAclUpdate('ns', w.acl, old.doc, w.groups)));
  }
}

function stepForge(w: World, a: Extract<Action, { t: 'forge' }>): void {
  const doc = buildAclUpdate(w.docs[w.docs.length - 1] as SignedDoc, signers[a.signer] as Signer, grantEdit(toSubject(a.subject, w.model), a.right));
  const signature = Buffer.from(doc.signature);
  signature[signature.length - 1] = (signature[signature.length - 1] as number) ^ 0x01;
  expect(codeOf(() => applyAclUpdate('ns', w.acl, { ...doc, signature }, w.groups))).toBe('BAD_SIGNATURE');
}

function checkAgreement(w: World): void {
  for (const p of people) {
    const rights = w.model.rights(p);
    for (const op of ops) expect(authorize(w.acl, w.groups, (signers[p] as Signer).principal, op, 'closed'), `P${p} ${op}`).toBe(rights.has(opRight[op]));
  }
  for (const op of ops) expect(authorize(w.acl, w.groups, null, op, 'open')).toBe(false);
}

describe('ACL enforcement against a reference model', () => {
  it('agrees on every (principal, op) after every step', () => {
    fc.assert(
      fc.property(fc.array(actionArb, { minLength: 1, maxLength: 40 }), (actions) => {
        const groups = new GroupStore();
        const d1 = buildAclCreate('ns', signers[0] as Signer);
        const w: World = { model: new Model(), groups, acl: applyAclUpdate('ns', null, d1, groups), docs: [d1], groupDocs: new Map(), accepted: [] };
        for (const a of actions) {
          if (a.t === 'acl') stepAcl(w, a);
          else if (a.t === 'group') stepGroup(w, a);
          else if (a.t === 'replay') stepReplay(w, a);
          else stepForge(w, a);
          checkAgreement(w);
        }
      }),
      { numRuns: 150 },
    );
  });
});
