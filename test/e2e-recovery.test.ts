// A whole-ring restart is a recovery (issue 12, section 2; docs/recovery.md), the manual path with 2 of 3
// recovery members. A 2-node sealed ring (R = 2) whose image names alice, bob and carol, k = 2. Write a key;
// stop every node; start them again: nothing alive vouches for their sealed state, so both come up in
// recovery mode and serve nothing. `ekv recovery status` shows it; mallory (not a member) cannot open it;
// alice's signature alone does not open it (and a second one of hers does not count); bob's opens it under a
// new ring id (generation 1), and it serves the key again. A client pinned to the old ring id is told
// RING_RECOVERED; `ekv recovery status` and `ekv status` show who signed.
import { execFile } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, EkvError } from '../client/index.ts';
import { generateIdentity, saveIdentity } from '../client/identity.ts';
import type { TrustPolicy } from '../client/trust.ts';
import { startLocalRing, type LocalRing } from '../cli/local/ring.ts';
import { waitForRing } from '../cli/local/ready.ts';
import { shortTempDir, testLogger } from './helpers/local-ring.ts';

const ekvBin = fileURLToPath(new URL('../bin/ekv.js', import.meta.url));
let dir: string;
let ring: LocalRing;
let oldRing: string;
let members: string[];
const keyFile = (name: string) => join(dir, `${name}.key`);

function start(): Promise<LocalRing> {
  return startLocalRing({
    dir, nodes: 2, replicas: 2, logger: testLogger(), rememberTrust: false, autoOpen: false,
    imageSettings: { recoveryMembers: members, recoveryThreshold: 2 },
  });
}

function ekv(args: string[], cluster = join(dir, 'cluster.json')): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [ekvBin, ...args, '-c', cluster, '--trust-cluster-file'], { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

async function getWith(trust: TrustPolicy, key: string): Promise<string> {
  const kv = await connect({ cluster: ring.cluster, trust, timeoutMs: 5000, floor: false });
  try {
    return (await kv.get(key)).toString();
  } catch (err) {
    if (err instanceof EkvError) return `${err.code}${err.message.startsWith('RECOVERY_MODE') ? ' RECOVERY_MODE' : ''}`;
    throw err;
  } finally {
    await kv.close();
  }
}

beforeAll(async () => {
  dir = shortTempDir('ekv-rc-');
  saveIdentity(keyFile('mallory'), generateIdentity());
  members = ['alice', 'bob', 'carol'].map((n) => saveIdentity(keyFile(n), generateIdentity(n === 'bob' ? 'p256' : 'ed25519')).text);
  ring = await start();
  oldRing = ring.cluster.trust.ringId as string;
  const kv = await connect({ cluster: ring.cluster, trust: ring.cluster.trust, floor: false });
  await kv.put('recovered-key', 'before the stop');
  await kv.close();
  await ring.stop();
  ring = await start(); // the whole ring again: recovery mode
}, 120_000);

afterAll(async () => {
  await ring?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('a stopped ring reopens only when 2 of its 3 recovery members sign', () => {
  it('both nodes come up in recovery mode and serve nothing', async () => {
    expect(ring.recovery).toMatchObject({ waiting: true, reopened: false });
    const st = await ekv(['recovery', 'status']);
    expect(st.code).toBe(0);
    expect(st.stdout.match(/RECOVERY MODE/g)).toHaveLength(2);
    expect(st.stdout).toContain('recovery members (2 of 3 must sign)');
    expect(st.stdout).toContain('signed by nobody (0 of 2 needed)');
    expect(await getWith(ring.cluster.trust, 'recovered-key')).toBe('UNAVAILABLE RECOVERY_MODE');
  });

  it('a non-member cannot open it; one member is not enough, nor the same member twice', async () => {
    const m = await ekv(['recovery', 'open', '--identity', keyFile('mallory')]);
    expect(m.code).toBe(1);
    expect(m.stdout + m.stderr).toContain('NOT_MEMBER');
    const a = await ekv(['recovery', 'open', '--identity', keyFile('alice')]);
    expect(a.code).toBe(0);
    expect(a.stdout.match(/signed; 1 more signature\(s\) needed/g)).toHaveLength(2);
    expect(await getWith(ring.cluster.trust, 'recovered-key')).toBe('UNAVAILABLE RECOVERY_MODE');
    const again = await ekv(['recovery', 'open', '--identity', keyFile('alice')]);
    expect(again.code).toBe(1);
    expect(again.stdout + again.stderr).toContain('DUPLICATE_SIGNER');
    expect((await ekv(['recovery', 'status'])).stdout).toContain('(1 of 2 needed); pending new identity');
  });

  it("bob's signature opens it under a new ring id; it serves again; a client pinned to the old id gets RING_RECOVERED", async () => {
    const b = await ekv(['recovery', 'open', '--identity', keyFile('bob')]);
    expect(b.code).toBe(0);
    const newRing = /the ring is open: pin its new ring id ([0-9a-f]{64})/.exec(b.stdout)?.[1];
    expect(newRing).toBeDefined();
    expect(newRing).not.toBe(oldRing);
    const trust = { ...ring.cluster.trust, ringId: newRing as string };
    await waitForRing({ ...ring.cluster, trust }, 60_000);
    expect(await getWith(trust, 'recovered-key')).toBe('before the stop');
    expect(await getWith({ ...ring.cluster.trust, ringId: oldRing }, 'recovered-key')).toBe('RING_RECOVERED');
    const st = await ekv(['recovery', 'status']);
    expect(st.stdout.match(/ open {2}ring .* generation 1 /g)).toHaveLength(2);
    expect(st.stdout).toContain(`reopened from ring ${oldRing.slice(0, 16)}, signed by ekv1`);
    writeFileSync(join(dir, 'reopened.json'), JSON.stringify({ ...ring.cluster, trust }));
    const status = await ekv(['status'], join(dir, 'reopened.json'));
    expect(status.stdout).toMatch(/ring generation 1, reopened by ekv1\w+, ekv1\w+/);
  });
});
