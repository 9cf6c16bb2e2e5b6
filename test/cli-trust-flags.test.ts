// The CLI's trust flags: --ring pins the deployment's ring id in the caller's own policy (issue 10 item 2:
// a ring that a wiped node founded anew has another ring id, and a caller who pins it refuses that ring).
import { describe, expect, it } from 'vitest';
import { trustChoice } from '../cli/trust-flags.ts';
import { UsageError } from '../cli/output.ts';

const pcr0 = 'ab'.repeat(48);
const ring = 'Cd'.repeat(32);

describe('trust flags', () => {
  it('--ring with --pcr pins the ring id (lowercased) in the caller policy', () => {
    const c = trustChoice({ pcr: [`0=${pcr0}`], ring }, null, {});
    expect(c.trust).toEqual({ pcrs: { '0': [pcr0] }, ringId: ring.toLowerCase() });
  });
  it('--ring alone, or malformed, is a usage error', () => {
    expect(() => trustChoice({ ring }, null, {})).toThrow(UsageError);
    expect(() => trustChoice({ pcr: [`0=${pcr0}`], ring: 'xyz' }, null, {})).toThrow(UsageError);
  });
  it('without --ring the caller policy has no ring id of its own', () => {
    expect(trustChoice({ pcr: [`0=${pcr0}`] }, null, {}).trust?.ringId).toBeUndefined();
  });
});
