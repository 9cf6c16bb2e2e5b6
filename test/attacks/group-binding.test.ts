// Attack (issue 10, item 5): a group grant binds to a name only.
//
// Before the fix, `grant(ns, 'group:ops')` recorded just the name "ops": the enclave did not check that
// the group existed, and authorize() gave the entry's rights to the members of whatever group was called
// "ops" at the time. So whoever created "ops" first after the grant (or re-created it after its document
// was lost) got the namespace's rights. Here, on a real 2-node ring: alice grants (or tries to grant) to
// "ops" before it exists, and mallory then creates "ops" with herself as a member and tries to read.
// Now the grant is refused (the group must exist; the entry names its key), and mallory's "ops" gets
// nothing. Controls: a genuine group created first is bound by its key and its member reads; mallory's
// same-name group under her key is refused when an entry names the genuine key.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, EkvError, type EkvClient } from '../../client/index.ts';
import { generateIdentity, identityFromKey, toPrincipalSigner, type ClientIdentity } from '../../client/identity.ts';
import { decodeAclBody } from '../../protocol/acl-doc.ts';
import { principalFromBytes } from '../../protocol/principal.ts';
import { RingFixture } from '../helpers/ring-fixture.ts';

let ring: RingFixture;
const clients: EkvClient[] = [];
const people: Record<'alice' | 'carol' | 'mallory' | 'opsKey', ClientIdentity> = {} as never;
const kv: Record<keyof typeof people, EkvClient> = {} as never;

async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (err) {
    if (!(err instanceof EkvError)) throw err;
    return err.reason ? `${err.code}/${err.reason}` : err.code;
  }
}

beforeAll(async () => {
  ring = await RingFixture.start({ nodes: 2, replicas: 2 });
  await ring.waitSettled(30_000);
  for (const name of ['alice', 'carol', 'mallory', 'opsKey'] as const) {
    people[name] = identityFromKey(generateIdentity('ed25519'));
    const c = await connect({ cluster: ring.ring.clusterFile, trustClusterFile: true, timeoutMs: 15_000, identity: toPrincipalSigner(people[name]) });
    clients.push(c);
    kv[name] = c;
  }
  await kv.alice.acl.createNamespace('team');
  await kv.alice.put('team/secret', 'the plan');
});

afterAll(async () => {
  for (const c of clients) await c.close();
  await ring?.stop();
});

describe('a group grant binds the group by its key', () => {
  it('a grant to a group that does not exist yet is refused, whether by name or with a key pinned', async () => {
    expect(await outcome(kv.alice.acl.grant('team', 'group:ops', 'read'))).toBe('NOT_FOUND');
    // A client that signs the entry itself (the intended key pinned) is refused by the enclave.
    const opsKey = principalFromBytes(toPrincipalSigner(people.opsKey).principal);
    expect(await outcome(kv.alice.acl.grant('team', { group: 'ops', key: opsKey }, 'read'))).toBe('NOT_FOUND/UNKNOWN_GROUP');
    expect(decodeAclBody((await kv.alice.acl.getAcl('team')).doc.body).entries).toEqual([]);
  });

  it('mallory then creates "ops" with herself as a member: she gets nothing', async () => {
    await kv.mallory.acl.createGroup('ops', [principalFromBytes(toPrincipalSigner(people.mallory).principal)]);
    expect(await outcome(kv.mallory.get('team/secret'))).toBe('FORBIDDEN');
    // An entry naming ops with the key alice meant (not mallory's) is still refused: the key differs.
    const opsKey = principalFromBytes(toPrincipalSigner(people.opsKey).principal);
    expect(await outcome(kv.alice.acl.grant('team', `group:ops@${opsKey.text}`, 'read'))).toBe('NOT_FOUND/UNKNOWN_GROUP');
    expect(await outcome(kv.mallory.get('team/secret'))).toBe('FORBIDDEN');
  });

  it('control: a group that exists is bound by its key; its member reads, a same-name stranger does not', async () => {
    const carol = principalFromBytes(toPrincipalSigner(people.carol).principal);
    await kv.opsKey.acl.createGroup('ops-real', [carol]);
    expect(await outcome(kv.carol.get('team/secret'))).toBe('FORBIDDEN');
    const v = await kv.alice.acl.grant('team', 'group:ops-real', 'read');
    const entry = v.body.entries.find((e) => 'group' in e.subject);
    expect(entry && 'group' in entry.subject && entry.subject.key.text).toBe(principalFromBytes(toPrincipalSigner(people.opsKey).principal).text);
    expect(await outcome(kv.carol.get('team/secret'))).toBe('OK');
    expect(await outcome(kv.mallory.get('team/secret'))).toBe('FORBIDDEN');
  });
});
