// Ring arithmetic, routing helpers, placement and config against naive models.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { defaultRingConfig, validateConfig } from '../enclave/ring/config.ts';
import { RingError } from '../enclave/ring/errors.ts';
import {
  betweenOpen, betweenRightIncl, distance, fingerStart, floorLog2, idFromBytes, idMask, idSpace, idToBytes, keyId,
  nodeIdFromPublicKey,
} from '../enclave/ring/id.ts';
import type { NodeRef } from '../enclave/ring/messages.ts';
import { inRange, replicaSet, responsibleRange } from '../enclave/ring/placement.ts';
import { closestPreceding, orderSuccessors } from '../enclave/ring/routing.ts';
import { bootstrapFromSortedIds } from './sim/bootstrap.ts';

// Ids biased towards the edges of the ring and towards each other, so wrap-around and equality happen often.
const edge = fc.constantFrom(0n, 1n, 2n, idMask, idMask - 1n, idSpace / 2n, idSpace / 2n - 1n);
const anyId = fc.oneof(edge, fc.bigInt({ min: 0n, max: idMask }), fc.bigInt({ min: 0n, max: 7n }));

// The naive model: rotate the circle so that a sits at 0 (modular arithmetic, no case analysis).
const rot = (x: bigint, a: bigint): bigint => (((x - a) % idSpace) + idSpace) % idSpace;
const naiveOpen = (x: bigint, a: bigint, b: bigint): boolean => (a === b ? x !== a : rot(x, a) > 0n && rot(x, a) < rot(b, a));
const naiveRightIncl = (x: bigint, a: bigint, b: bigint): boolean => (a === b ? true : rot(x, a) > 0n && rot(x, a) <= rot(b, a));

describe('ring arithmetic', () => {
  it('betweenOpen and betweenRightIncl match the rotated model', () => {
    fc.assert(fc.property(anyId, anyId, anyId, (x, a, b) => {
      expect(betweenOpen(x, a, b)).toBe(naiveOpen(x, a, b));
      expect(betweenRightIncl(x, a, b)).toBe(naiveRightIncl(x, a, b));
    }), { numRuns: 5000 });
  });

  it('(a, b] splits the circle: every x is in exactly one of (a, b] and (b, a] when a != b', () => {
    fc.assert(fc.property(anyId, anyId, anyId, (x, a, b) => {
      fc.pre(a !== b);
      expect(Number(betweenRightIncl(x, a, b)) + Number(betweenRightIncl(x, b, a))).toBe(1);
    }));
  });

  it('distance, fingerStart and floorLog2 agree with plain bigint arithmetic', () => {
    fc.assert(fc.property(anyId, anyId, fc.integer({ min: 0, max: 255 }), (a, b, i) => {
      expect(distance(a, b)).toBe(rot(b, a));
      expect(fingerStart(a, i)).toBe((a + 2n ** BigInt(i)) % idSpace);
      if (b > 0n) expect(floorLog2(b)).toBe(b.toString(2).length - 1);
    }));
    expect(() => floorLog2(0n)).toThrow(RangeError);
  });

  it('ids round-trip through 32 big-endian bytes; wrong sizes are BAD_ID', () => {
    fc.assert(fc.property(anyId, (x) => {
      const b = idToBytes(x);
      expect(b.length).toBe(32);
      expect(idFromBytes(b)).toBe(x);
    }));
    expect(() => idFromBytes(new Uint8Array(31))).toThrow(expect.objectContaining({ code: 'BAD_ID' }));
    expect(() => idToBytes(idSpace)).toThrow(RingError);
  });

  it('node and key ids are SHA-256 of the bytes', () => {
    // SHA-256("abc"), FIPS 180-2 test vector.
    const abc = 0xba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015adn;
    expect(keyId(new TextEncoder().encode('abc'))).toBe(abc);
    expect(nodeIdFromPublicKey(new TextEncoder().encode('abc'))).toBe(abc);
    expect(() => nodeIdFromPublicKey(new Uint8Array(0))).toThrow(RingError);
  });
});

const ref = (id: bigint): NodeRef => ({ id, addr: `a${id.toString(16).slice(0, 6)}` });

describe('routing helpers', () => {
  it('orderSuccessors = the unique candidates other than self, clockwise, truncated', () => {
    fc.assert(fc.property(anyId, fc.array(anyId, { maxLength: 20 }), fc.integer({ min: 1, max: 10 }), (self, ids, max) => {
      const got = orderSuccessors(self, ids.map(ref), max).map((n) => n.id);
      const want = [...new Set(ids)].filter((x) => x !== self).sort((x, y) => (rot(x, self) < rot(y, self) ? -1 : 1)).slice(0, max);
      expect(got).toEqual(want);
    }));
  });

  it('closestPreceding on exact finger tables = the naive best node in (self, key)', () => {
    fc.assert(fc.property(fc.uniqueArray(fc.bigInt({ min: 0n, max: idMask }), { minLength: 2, maxLength: 40 }), anyId, fc.nat(), (ids, key, pick) => {
      const sorted = ids.slice().sort((a, b) => (a < b ? -1 : 1)).map(ref);
      const states = bootstrapFromSortedIds(sorted, 3, 256);
      const k = pick % sorted.length;
      const st = states[k]!;
      const self = sorted[k]!;
      // A key equal to a node's own id is that node's (route() answers 'owner' before asking for a hop),
      // so closest_preceding is never asked about it; its interval (self, self) would be degenerate.
      fc.pre(key !== self.id);
      const got = closestPreceding({ self, predecessor: st.predecessor, successors: st.successors, fingers: st.fingers }, key, null);
      const known = [...st.successors, ...st.fingers.filter((f): f is NodeRef => f !== null)];
      let best: NodeRef | null = null;
      for (const n of known) if (naiveOpen(n.id, self.id, key) && (best === null || rot(n.id, self.id) > rot(best.id, self.id))) best = n;
      expect(got?.id ?? null).toBe(best?.id ?? null);
    }), { numRuns: 300 });
  });
});

describe('placement', () => {
  it('responsibleRange partitions the ring: each key is owned by exactly one node', () => {
    fc.assert(fc.property(fc.uniqueArray(fc.bigInt({ min: 0n, max: idMask }), { minLength: 1, maxLength: 12 }), anyId, (ids, key) => {
      const sorted = ids.slice().sort((a, b) => (a < b ? -1 : 1)).map(ref);
      const owners = sorted.filter((n, i) => inRange(key, responsibleRange(sorted.length > 1 ? sorted[(i - 1 + sorted.length) % sorted.length]! : null, n)));
      expect(owners.length).toBe(1);
      const want = sorted.find((n) => n.id >= key) ?? sorted[0]!;
      expect(owners[0]!.id).toBe(want.id);
    }));
  });

  it('replicaSet is the owner and its next R-1 distinct successors', () => {
    const [a, b, c, d] = [1n, 2n, 3n, 4n].map(ref) as [NodeRef, NodeRef, NodeRef, NodeRef];
    expect(replicaSet(a, [b, c, d], 3).map((n) => n.id)).toEqual([1n, 2n, 3n]);
    expect(replicaSet(a, [b, a, b], 3).map((n) => n.id)).toEqual([1n, 2n]);
    expect(replicaSet(a, [], 1).map((n) => n.id)).toEqual([1n]);
  });
});

describe('config', () => {
  it('validateConfig accepts the defaults and refuses bad values with BAD_CONFIG', () => {
    expect(validateConfig({ ...defaultRingConfig }).successorsMax).toBe(defaultRingConfig.successorsMax);
    for (const bad of [{ successorsMax: 0 }, { successorsMax: 1000 }, { fingerBits: 257 }, { stabilizeTicks: 1.5 },
      { rpcTimeoutTicks: 10, lookupTimeoutTicks: 5 }, { joinRetryTicks: -1 }]) {
      expect(() => validateConfig({ ...defaultRingConfig, ...bad })).toThrow(expect.objectContaining({ code: 'BAD_CONFIG' }));
    }
  });
});
