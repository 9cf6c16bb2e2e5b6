// `ekv cluster init` (cli/deploy/cluster-file.ts): the client cluster file of an AWS deployment, from the
// stack outputs `cdk deploy --outputs-file` writes (a fixture in the shape the stack's outputs have) and pcrs.json.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ClusterFileError, clusterFromStack } from '../cli/deploy/cluster-file.ts';
import { loadCluster } from '../client/cluster.ts';
import { checkTrustPolicy, resolveTrust } from '../client/trust.ts';
import { AWS_NITRO_ROOT_PEM } from '../verifier/index.ts';

const fixtures = fileURLToPath(new URL('./fixtures/deploy/', import.meta.url));
const ekvBin = fileURLToPath(new URL('../bin/ekv.js', import.meta.url));
const json = (name: string) => JSON.parse(readFileSync(join(fixtures, name), 'utf8')) as Record<string, unknown>;
const outputs = json('stack-outputs.json') as { EnclaveKvRing: Record<string, string> };
const pcrs = json('pcrs.json') as { PCR0: string; PCR1: string; PCR2: string };
const next = json('pcrs-next.json') as { PCR0: string };

describe('ekv cluster init', () => {
  it('lists every node at its client and HTTP ports, trusts the AWS root and the release\'s PCRs', () => {
    const c = clusterFromStack({ outputs, pcrs });
    expect(c.nodes).toEqual([
      { addr: '10.0.0.11:7000', http: 'http://10.0.0.11:8080' },
      { addr: '10.0.1.12:7000', http: 'http://10.0.1.12:8080' },
      { addr: '10.0.0.13:7000', http: 'http://10.0.0.13:8080' },
    ]);
    expect(c.trust).toEqual({ roots: [AWS_NITRO_ROOT_PEM], pcrs: { '0': pcrs.PCR0, '1': pcrs.PCR1, '2': pcrs.PCR2 } });
    expect(c.replicas).toBe(3);
    // A client that accepts the file's trust gets a policy the SDK takes (PCR0 pinned, AWS root).
    const resolved = resolveTrust({ fileTrust: c.trust, trustClusterFile: true });
    expect(() => checkTrustPolicy(resolved.policy)).not.toThrow();
    expect(clusterFromStack({ outputs, pcrs, address: 'public' }).nodes[2]).toEqual({ addr: '203.0.113.13:7000', http: 'http://203.0.113.13:8080' });
  });

  it('during a roll trusts both images (PCR0 of each) and refuses to leave the next one out', () => {
    const rolling = { EnclaveKvRing: { ...outputs.EnclaveKvRing, Pcr0Next: next.PCR0 } };
    expect(clusterFromStack({ outputs: rolling, pcrs, nextPcrs: next }).trust.pcrs).toEqual({ '0': [pcrs.PCR0, next.PCR0] });
    expect(() => clusterFromStack({ outputs: rolling, pcrs })).toThrow(/rolling to PCR0/);
    expect(() => clusterFromStack({ outputs, pcrs, nextPcrs: next })).toThrow(/not rolling/);
  });

  it('refuses a pcrs.json of another release, a key mismatch, and malformed outputs', () => {
    expect(() => clusterFromStack({ outputs, pcrs: next })).toThrow(/runs PCR0/);
    const otherKey = { EnclaveKvRing: { ...outputs.EnclaveKvRing, SealingKeyArn: 'arn:aws:kms:eu-west-1:111122223333:key/99999999-12ab-34cd-56ef-1234567890ab' } };
    expect(() => clusterFromStack({ outputs: otherKey, pcrs })).toThrow(/cannot start/);
    const badIp = { EnclaveKvRing: { ...outputs.EnclaveKvRing, Node1PrivateIp: 'node1.example.com' } };
    expect(() => clusterFromStack({ outputs: badIp, pcrs })).toThrow(ClusterFileError);
    expect(() => clusterFromStack({ outputs: { Other: {} }, pcrs })).toThrow(/0 ring stacks/);
    expect(() => clusterFromStack({ outputs, pcrs, ringId: 'xyz' })).toThrow(/ring id/);
  });

  it('the command writes a file clients load', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ekv-cluster-init-'));
    try {
      const out = join(dir, 'cluster.json');
      const ringId = 'ab'.repeat(32);
      await promisify(execFile)(process.execPath, [ekvBin, 'cluster', 'init', '--outputs', join(fixtures, 'stack-outputs.json'),
        '--pcrs', join(fixtures, 'pcrs.json'), '--ring-id', ringId, '-o', out]);
      const c = loadCluster(out);
      expect(c.nodes).toHaveLength(3);
      expect(c.trust.ringId).toBe(ringId);
      const bad = await promisify(execFile)(process.execPath, [ekvBin, 'cluster', 'init', '--outputs', join(fixtures, 'stack-outputs.json'),
        '--pcrs', join(fixtures, 'pcrs-next.json')]).catch((err: { code: number; stderr: string }) => err);
      expect(bad).toMatchObject({ code: 2, stderr: expect.stringMatching(/^USAGE: the stack runs PCR0/) });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
