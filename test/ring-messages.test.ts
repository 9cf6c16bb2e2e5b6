// validateRingMessage: ids as bigint or 32 bytes, bounded lists, typed errors only.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { defaultRingConfig } from '../enclave/ring/config.ts';
import { RingError } from '../enclave/ring/errors.ts';
import { idToBytes } from '../enclave/ring/id.ts';
import { type RingMessage, validateRingMessage } from '../enclave/ring/messages.ts';
import { RingNode } from '../enclave/ring/node.ts';

const a = { id: 5n, addr: 'node-a' };
const b = { id: 2n ** 255n + 7n, addr: 'node-b' };
const samples: RingMessage[] = [
  { type: 'find_successor', from: a, origin: b, rid: 3, hopId: 9, key: 42n, final: false, path: [b.id, a.id] },
  { type: 'find_successor_ack', from: a, hopId: 9 },
  { type: 'found', from: a, rid: 3, key: 42n, path: [b.id, a.id], predecessor: null, successors: [b] },
  { type: 'closest_preceding', from: a, rid: 1, key: 42n, final: true, exclude: [7n] },
  { type: 'closest_preceding_reply', from: a, rid: 1, key: 42n, result: 'next', next: b, predecessor: b, successors: [] },
  { type: 'get_predecessor', from: a, rid: 1 },
  { type: 'predecessor_reply', from: a, rid: 1, predecessor: b, successors: [b] },
  { type: 'notify', from: a },
  { type: 'ping', from: a, rid: 2 },
  { type: 'pong', from: a, rid: 2 },
  { type: 'leave', from: a, predecessor: null, successors: [b] },
];

/** What the lead's CBOR codec will hand us: every bigint id as a 32-byte string. */
function asBytes(x: unknown): unknown {
  if (typeof x === 'bigint') return idToBytes(x);
  if (Array.isArray(x)) return x.map(asBytes);
  if (x !== null && typeof x === 'object') return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, asBytes(v)]));
  return x;
}

describe('validateRingMessage', () => {
  it('accepts every message type, with ids as bigint or as 32-byte strings, and normalizes to bigint', () => {
    for (const m of samples) {
      expect(validateRingMessage(m)).toEqual(m);
      expect(validateRingMessage(asBytes(m))).toEqual(m);
    }
  });

  it('refuses wrong types, bad ids and oversized lists with stable codes', () => {
    const cases: Array<[unknown, string]> = [
      [null, 'MALFORMED'],
      [[1, 2], 'MALFORMED'],
      [{ type: 'nope', from: a }, 'UNKNOWN_TYPE'],
      [{ type: 'toString', from: a }, 'UNKNOWN_TYPE'],
      [{ type: 'notify' }, 'MALFORMED'],
      [{ type: 'notify', from: { id: 'x', addr: 'a' } }, 'BAD_ID'],
      [{ type: 'notify', from: { id: -1n, addr: 'a' } }, 'BAD_ID'],
      [{ type: 'notify', from: { id: 2n ** 256n, addr: 'a' } }, 'BAD_ID'],
      [{ type: 'notify', from: { id: new Uint8Array(33), addr: 'a' } }, 'BAD_ID'],
      [{ type: 'notify', from: { id: 1n, addr: 'x'.repeat(10_000) } }, 'TOO_LONG'],
      [{ type: 'ping', from: a, rid: -1 }, 'MALFORMED'],
      [{ type: 'ping', from: a, rid: 1.5 }, 'MALFORMED'],
      [{ type: 'predecessor_reply', from: a, rid: 1, predecessor: null, successors: new Array(100_000).fill(a) }, 'TOO_LONG'],
      [{ type: 'predecessor_reply', from: a, rid: 1, predecessor: null, successors: 'x' }, 'MALFORMED'],
      [{ ...samples[0], final: 'yes' }, 'MALFORMED'],
      [{ ...samples[0], path: new Array(1000).fill(1n) }, 'TOO_LONG'],
      [{ ...samples[4], result: 'owner?' }, 'MALFORMED'],
      [{ ...samples[4], next: null }, 'MALFORMED'],
    ];
    for (const [x, code] of cases) {
      expect(() => validateRingMessage(x), JSON.stringify(x, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v))?.slice(0, 80))
        .toThrow(expect.objectContaining({ code }));
    }
  });

  it('random junk and mutated messages only ever raise RingError', () => {
    const junk = fc.anything({ withBigInt: true, withTypedArray: true, withMap: true, maxDepth: 3 });
    const mutated = fc.tuple(fc.constantFrom(...samples), fc.string(), junk).map(([m, k, v]) => {
      const keys = Object.keys(m);
      return { ...m, [keys[k.length % keys.length] as string]: v };
    });
    fc.assert(fc.property(fc.oneof(junk, mutated), (x) => {
      try {
        validateRingMessage(x);
      } catch (e) {
        expect(e).toBeInstanceOf(RingError);
      }
    }), { numRuns: 3000 });
  });

  it('RingNode.step drops malformed input and counts it, without throwing', () => {
    const node = new RingNode({ self: { id: 1n, addr: 'self' }, config: { ...defaultRingConfig }, rand: () => 0.5 });
    const junk = fc.anything({ withBigInt: true, withTypedArray: true, maxDepth: 3 });
    let count = 0;
    fc.assert(fc.property(junk, (x) => {
      node.step(x);
      count++;
    }), { numRuns: 500 });
    node.step({ type: 'notify', from: { id: 1n, addr: 'me?' } });
    const st = node.stats().dropped;
    expect(st.malformed).toBeGreaterThan(0);
    expect(st.malformed).toBeLessThanOrEqual(count);
    expect(st.from_self).toBe(1);
    node.checkInvariants();
  });
});
