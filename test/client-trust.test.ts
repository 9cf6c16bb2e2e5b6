// Where the client's trust policy comes from (client/trust.ts resolveTrust, cli/trust-store.ts):
// never a merge of the caller's and the cluster file's. The attack against a real node is
// test/attacks/cluster-file-trust.test.ts.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { resolveTrust, type TrustPolicy } from '../client/trust.ts';
import { isTrusted, rememberTrust, trustFingerprint } from '../cli/trust-store.ts';

const fileTrust: TrustPolicy = { roots: ['-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----'], pcrs: { '0': 'aa'.repeat(48) }, allowAnyImage: true, allowDebug: true };

describe('resolveTrust', () => {
  it("the caller's policy is the whole policy; the file's is used only on opt-in; never both", () => {
    expect(resolveTrust({ trust: { pcrs: { '0': 'bb'.repeat(48) } }, fileTrust }).policy).toEqual({ pcrs: { '0': 'bb'.repeat(48) } });
    expect(resolveTrust({ fileTrust }).policy).toEqual({});
    expect(resolveTrust({ fileTrust, trustClusterFile: true }).policy).toEqual(fileTrust);
    expect(() => resolveTrust({ trust: {}, fileTrust, trustClusterFile: true })).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }));
    expect(() => resolveTrust({ trustClusterFile: true })).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }));
  });

  it('reports where each part came from', () => {
    const r = resolveTrust({ fileTrust, trustClusterFile: true });
    expect([r.from, r.parts.roots, r.parts.pcr0, r.parts.maxAgeMs]).toEqual(['cluster-file', 'cluster-file', 'cluster-file', 'default']);
    expect(resolveTrust({ fileTrust }).parts).toMatchObject({ roots: 'default', pcr0: 'default', allowAnyImage: 'default' });
  });

  it("keeps the file's ring id, which only narrows trust, unless the caller names its own", () => {
    const ringId = '1f'.repeat(32);
    const mine = 'e0'.repeat(32);
    const file = { ...fileTrust, ringId };
    const caller = { pcrs: { '0': 'bb'.repeat(48) } };
    // The caller's policy replaces everything else of the file's, but not its ring pin.
    const r = resolveTrust({ trust: caller, fileTrust: file });
    expect(r.policy).toEqual({ ...caller, ringId });
    expect([r.from, r.parts.ringId, r.parts.roots, r.parts.allowAnyImage]).toEqual(['caller', 'cluster-file', 'default', 'default']);
    expect(resolveTrust({ trust: { ...caller, ringId: mine }, fileTrust: file }).policy.ringId).toBe(mine);
    expect(resolveTrust({ trust: { ...caller, ringId: mine }, fileTrust: file }).parts.ringId).toBe('caller');
    expect(resolveTrust({ fileTrust: file, trustClusterFile: true }).policy.ringId).toBe(ringId);
    expect(resolveTrust({ fileTrust: file }).policy).toEqual({ ringId });
    expect(resolveTrust({ trust: caller, fileTrust }).parts.ringId).toBe('default');
  });

  it('copies only policy fields from a file (no clock, nothing else)', () => {
    const hostile = { ...fileTrust, now: () => 0, extra: 1 } as unknown as TrustPolicy;
    expect(Object.keys(resolveTrust({ fileTrust: hostile, trustClusterFile: true }).policy).sort()).toEqual(['allowAnyImage', 'allowDebug', 'pcrs', 'roots']);
  });
});

describe('the trust store', () => {
  it('holds exactly the trust sections recorded; key order does not matter, any other change does', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ekv-store-'));
    const env = { EKV_TRUST_DIR: dir };
    try {
      expect(isTrusted(fileTrust, env)).toBe(false);
      rememberTrust(fileTrust, 'test', env);
      expect(isTrusted(fileTrust, env)).toBe(true);
      const reordered: TrustPolicy = { allowDebug: true, allowAnyImage: true, pcrs: { '0': 'aa'.repeat(48) }, roots: fileTrust.roots as string[] };
      expect(trustFingerprint(reordered)).toBe(trustFingerprint(fileTrust));
      expect(isTrusted({ ...fileTrust, roots: [...(fileTrust.roots as string[]), 'another root'] }, env)).toBe(false);
      expect(isTrusted({ ...fileTrust, pcrs: { '0': 'cc'.repeat(48) } }, env)).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
