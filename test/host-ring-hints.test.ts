// host/ring-hints.ts: the join address a relaunched founder is given, from the members its enclave last named.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { membersFromStatus, nodeConfigForLaunch, RingHints, ringMembersMax } from '../host/ring-hints.ts';

describe('ring hints', () => {
  it('takes successors and predecessor addresses from a status answer, without self, bounded, well-formed only', () => {
    const status = {
      successors: [{ addr: '10.0.0.12:7001' }, { addr: '10.0.0.11:7001' }, { addr: 'not an address' }, null, { addr: 7 }],
      predecessor: { addr: '10.0.0.13:7001' },
    };
    expect(membersFromStatus(status, '10.0.0.11:7001')).toEqual(['10.0.0.12:7001', '10.0.0.13:7001']);
    const many = { successors: Array.from({ length: 40 }, (_, i) => ({ addr: `10.0.1.${i}:7001` })) };
    expect(membersFromStatus(many, 'x:1')).toHaveLength(ringMembersMax);
    expect(membersFromStatus({}, 'x:1')).toEqual([]);
  });

  it('a founder (no join address) relaunches through a remembered member, kept across host restarts', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ekv-hints-'));
    try {
      const cfg = { selfAddr: '10.0.0.11:7001', join: '' };
      const hints = new RingHints(dir);
      expect(nodeConfigForLaunch(cfg, hints)).toEqual(cfg); // first boot: founds
      hints.update(['10.0.0.12:7001', '10.0.0.13:7001']);
      expect(nodeConfigForLaunch(cfg, hints)).toEqual({ selfAddr: cfg.selfAddr, join: '10.0.0.12:7001' });
      // A launch that did not end up serving (that member may be down): the next one tries the next member.
      expect(nodeConfigForLaunch(cfg, hints).join).toBe('10.0.0.13:7001');
      expect(nodeConfigForLaunch(cfg, hints).join).toBe('10.0.0.12:7001');
      hints.update([]); // serving again, alone for a moment: the rotation restarts, nothing is forgotten
      expect(nodeConfigForLaunch(cfg, hints).join).toBe('10.0.0.12:7001');
      expect(nodeConfigForLaunch(cfg, new RingHints(dir)).join).toBe('10.0.0.12:7001');
      // A configured join address is never replaced.
      expect(nodeConfigForLaunch({ ...cfg, join: '10.0.0.99:7001' }, hints).join).toBe('10.0.0.99:7001');
      expect(JSON.parse(readFileSync(join(dir, 'ring-members.json'), 'utf8'))).toEqual(['10.0.0.12:7001', '10.0.0.13:7001']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
