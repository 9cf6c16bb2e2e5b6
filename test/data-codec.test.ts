// The data core's message validation (enclave/data/codec.ts): every message of simulated runs survives the
// wire shape and validation unchanged, and malformed input is a DataError with a stable code.
import { describe, expect, it } from 'vitest';
import { DataError, peerBodyToWire, validateClientOp, validatePeerBody } from '../enclave/data/index.ts';
import { checkRun } from './sim-faults/check.ts';
import { defaultSimOptions, FaultSim } from './sim-faults/sim.ts';

const m = (name: string, inc = 1): { name: string; ring: bigint; inc: number } => ({ name, ring: 5n, inc });
const cfg = { shard: 0, epoch: 3, members: [m('a'), m('b'), m('c')] };
const code = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    if (e instanceof DataError) return e.code;
    throw e;
  }
  return 'accepted';
};

describe('data codec', () => {
  it('carries every message of simulated runs through the wire shape unchanged', () => {
    for (const seed of [1, 2]) {
      const r = new FaultSim({ ...defaultSimOptions, seed, wire: true }).run();
      expect(checkRun(r).ok).toBe(true);
    }
  }, 60_000);

  it('round-trips data, sessions and nulls', () => {
    const body = {
      t: 'sync' as const, config: cfg,
      data: new Map([['k', { value: null, version: 2, epoch: 3 }], ['j', { value: 'x', version: 1, epoch: 2 }]]),
      sessions: { next: 3, clock: 9, table: new Map([[1, { owner: 'kabc', floor: 2, used: 9, results: new Map([[2, { result: { ok: false as const, code: 'CONFLICT' as const, version: 1 }, digest: '0123456789abcdef0123456789abcdef' }]]) }]]) },
    };
    expect(validatePeerBody(structuredClone(peerBodyToWire(body)), 4)).toEqual(body);
  });

  it('refuses malformed peer messages with stable codes', () => {
    expect(code(() => validatePeerBody(null, 4))).toBe('MALFORMED');
    expect(code(() => validatePeerBody({ t: 'nope' }, 4))).toBe('UNKNOWN_TYPE');
    expect(code(() => validatePeerBody({ t: 'fenced', shard: 4, epoch: 1 }, 4))).toBe('MALFORMED'); // range out of the image's
    expect(code(() => validatePeerBody({ t: 'commit', config: { ...cfg, members: [m('a'), m('a')] } }, 4))).toBe('MALFORMED');
    expect(code(() => validatePeerBody({ t: 'commit', config: { ...cfg, members: Array.from({ length: 8 }, (_, i) => m(`n${i}`)) } }, 4))).toBe('TOO_LONG');
    expect(code(() => validatePeerBody({ t: 'commit', config: { ...cfg, members: [{ name: 'a', ring: -1n, inc: 1 }] } }, 4))).toBe('MALFORMED');
    expect(code(() => validatePeerBody({ t: 'accept', base: cfg, ballot: { round: 1, name: 'a', inc: 1 }, value: { ...cfg, epoch: 9 } }, 4))).toBe('MALFORMED');
    expect(code(() => validatePeerBody({ t: 'replicateAck', shard: 0, epoch: 1, key: 'k'.repeat(1025), opId: 1 }, 4))).toBe('TOO_LONG');
    expect(code(() => validatePeerBody({ t: 'replicate', shard: 0, epoch: 1, opId: 1, op: { key: 'k', entry: { value: 'v', version: 0, epoch: 1 }, req: null, open: null } }, 4))).toBe('MALFORMED');
    expect(code(() => validatePeerBody({ t: 'leaseReq', shard: 0, epoch: 1, t0: 1.5 }, 4))).toBe('MALFORMED');
  });

  it('refuses malformed client requests with stable codes', () => {
    expect(code(() => validateClientOp({ kind: 'get', key: '' }, 4))).toBe('MALFORMED');
    expect(code(() => validateClientOp({ kind: 'get', key: 'k'.repeat(1025) }, 4))).toBe('TOO_LONG');
    expect(code(() => validateClientOp({ kind: 'put', key: 'k', value: 'v', ifVersion: -1, session: 1, seq: 1, floor: 1 }, 4))).toBe('MALFORMED');
    expect(code(() => validateClientOp({ kind: 'put', key: 'k', value: 'v', ifVersion: null, session: 1, seq: 1, floor: 2 }, 4))).toBe('MALFORMED');
    expect(code(() => validateClientOp({ kind: 'del', key: 'k', ifVersion: null, session: 0, seq: 1, floor: 1 }, 4))).toBe('MALFORMED');
    expect(code(() => validateClientOp({ kind: 'open', shard: 4 }, 4))).toBe('MALFORMED');
    expect(code(() => validateClientOp({ kind: 'cas' }, 4))).toBe('UNKNOWN_TYPE');
    expect(validateClientOp({ kind: 'del', key: 'k', ifVersion: 0, session: 1, seq: 3, floor: 2, principal: 'p' }, 4)).toEqual({ kind: 'del', key: 'k', ifVersion: 0, session: 1, seq: 3, floor: 2, principal: 'p' });
  });
});
