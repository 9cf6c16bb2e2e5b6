// The checks of the real-process fault runs (test/helpers/jepsen.ts) on hand-made histories in their own
// format: the SDK's answers mapped to ok / fail / info (unknown outcome), the final reads, and each anomaly
// of issue 11's table reported under its own name. The runs themselves are test/e2e-jepsen.test.ts.
import { describe, expect, it } from 'vitest';
import { EkvError, type EkvClient } from '../client/index.ts';
import { check, recorded, Recorder, type Rec } from './helpers/jepsen.ts';
import type { ClientHistOp as HistOp } from './helpers/linearizability.ts';

const put = (value: string, ifVersion: number | null = null): HistOp => ({ kind: 'put', value, ifVersion });
const del = (ifVersion: number | null = null): HistOp => ({ kind: 'del', ifVersion });
const get: HistOp = { kind: 'get' };

/** A tiny scripted history: each step is one op, invoked and completed at once unless left open. */
class Script {
  readonly rec = new Recorder();
  putOk(client: string, key: string, value: string, version: number): Rec {
    const r = this.rec.invoke(client, key, put(value));
    this.rec.ok(r, { kind: 'write', version });
    return r;
  }
  read(client: string, key: string, value: string | null, version: number): Rec {
    const r = this.rec.invoke(client, key, get);
    this.rec.ok(r, value === null ? { kind: 'get', found: false, value: null, version: 0 } : { kind: 'get', found: true, value, version });
    return r;
  }
  final(key: string, value: string | null, version: number): Rec {
    return this.read('final', key, value, version);
  }
}

const clean = { nonLinearizableKeys: 0, lostWrites: 0, versionConflicts: 0, failedButApplied: 0, finalUnavailable: 0, undecided: 0 };

describe('jepsen history checks', () => {
  it('accepts a clean history with unknown outcomes, CAS, deletes and SDK puts that do not say whether the key existed', () => {
    const s = new Script();
    s.putOk('c0', 'k', 'a', 1);
    const unknown = s.rec.invoke('c1', 'k', put('x')); // never answered: TIMEOUT
    s.rec.info(unknown, 'TIMEOUT');
    s.putOk('c2', 'k', 'b', 2); // x has not taken effect yet
    s.read('c0', 'k', 'x', 3); // ... now it has
    const cas = s.rec.invoke('c0', 'k', put('c', 1));
    s.rec.ok(cas, { kind: 'conflict', version: 3 });
    const d = s.rec.invoke('c1', 'k', del());
    s.rec.ok(d, { kind: 'write', version: 4, existed: true });
    const lost = s.rec.invoke('c2', 'j', put('never')); // unknown, never takes effect
    s.rec.info(lost, 'UNAVAILABLE');
    s.final('k', null, 0);
    s.final('j', null, 0);
    const v = check(s.rec, []);
    expect(v.problems).toEqual([]);
    expect(v.anomalies).toEqual(clean);
    expect(v.counts).toMatchObject({ ops: 9, info: 2, fail: 0 });
  });

  it('reports a stale read (a paused owner serving its old value) as not linearizable', () => {
    const s = new Script();
    s.putOk('c0', 'k', 'a', 1);
    s.putOk('c1', 'k', 'b', 2);
    s.read('c2', 'k', 'a', 1);
    s.final('k', 'b', 2);
    const v = check(s.rec, []);
    expect(v.anomalies.nonLinearizableKeys).toBe(1);
    expect(v.ok).toBe(false);
    expect(v.problems[0]).toMatch(/key k: not linearizable/);
  });

  it('reports acknowledged writes lost (the final read is older) by count, and as not linearizable', () => {
    const s = new Script();
    s.putOk('c0', 'k', 'a', 1);
    s.putOk('c1', 'k', 'b', 2);
    s.putOk('c1', 'k', 'c', 3);
    s.final('k', 'a', 1);
    const v = check(s.rec, []);
    expect(v.anomalies.lostWrites).toBe(2);
    expect(v.anomalies.nonLinearizableKeys).toBe(1);
    expect(v.problems.join('\n')).toMatch(/lost acknowledged write: k c v3/);
  });

  it('reports a key that reads absent at the end after an acknowledged put (a lost write without a version)', () => {
    const s = new Script();
    s.putOk('c0', 'k', 'a', 1);
    s.final('k', null, 0);
    expect(check(s.rec, []).anomalies.nonLinearizableKeys).toBe(1);
  });

  it('reports two values acknowledged at one version, and a write reported failed that took effect', () => {
    const s = new Script();
    s.putOk('c0', 'k', 'a', 1);
    s.putOk('c1', 'k', 'b', 1);
    const f = s.rec.invoke('c2', 'j', put('z'));
    s.rec.fail(f, 'INTERNAL');
    s.read('c0', 'j', 'z', 1);
    s.final('k', 'b', 1);
    s.final('j', 'z', 1);
    const v = check(s.rec, []);
    expect(v.anomalies.versionConflicts).toBe(1);
    expect(v.anomalies.failedButApplied).toBe(2);
    expect(v.anomalies.nonLinearizableKeys).toBe(2);
  });

  it('reports a write applied twice (a retry landing after a newer acknowledged write)', () => {
    const s = new Script();
    s.putOk('c0', 'k', 'a', 1);
    s.putOk('c1', 'k', 'b', 2);
    s.final('k', 'a', 3);
    expect(check(s.rec, []).anomalies.nonLinearizableKeys).toBe(1);
  });

  it('reports keys that took no write after healing, and fails on them when availability is strict', () => {
    const s = new Script();
    s.putOk('c0', 'k', 'a', 1);
    s.final('k', 'a', 1);
    const v = check(s.rec, [], ['k (INTERNAL)']);
    expect(v.availability.unwritableAfterHeal).toBe(1);
    expect(v.ok).toBe(true);
    expect(check(s.rec, [], ['k (INTERNAL)'], { strict: true }).ok).toBe(false);
  });

  it('fails on a key no final read answered; one some node did not answer is availability', () => {
    const s = new Script();
    s.putOk('c0', 'k', 'a', 1);
    s.putOk('c0', 'j', 'b', 1);
    s.final('j', 'b', 1); // through one node; not through the other
    const v = check(s.rec, ['k via 127.0.0.1:1 (UNAVAILABLE)', 'k via 127.0.0.1:2 (TIMEOUT)', 'j via 127.0.0.1:2 (TIMEOUT)']);
    expect(v.anomalies.finalUnavailable).toBe(1);
    expect(v.availability.finalPartial).toBe(1);
    expect(v.ok).toBe(false);
  });
});

describe('recording the SDK\'s answers', () => {
  /** A client whose every call answers or throws what the test says. */
  const stub = (answer: () => unknown): EkvClient => {
    const call = async () => answer();
    return { getWithVersion: call, put: call, delete: call, node: () => ({ call }) } as unknown as EkvClient;
  };
  const throwing = (code: ConstructorParameters<typeof EkvError>[0], version?: number) => stub(() => {
    throw new EkvError(code, 'x', version === undefined ? {} : { version });
  });

  it('maps refusals to fail, unknown outcomes to info, and a compare-and-set CONFLICT to its answer', async () => {
    const rec = new Recorder();
    expect((await recorded(rec, 'c', throwing('INTERNAL'), 'k', put('a'))).status).toBe('fail');
    expect((await recorded(rec, 'c', throwing('FORBIDDEN'), 'k', del())).status).toBe('fail');
    for (const code of ['TIMEOUT', 'UNAVAILABLE', 'CLOSED', 'EXPIRED'] as const) {
      expect((await recorded(rec, 'c', throwing(code), 'k', put('a'))).status).toBe('info');
    }
    // A replica's CONFLICT (no version) on a plain put is not a compare-and-set answer: unknown.
    expect((await recorded(rec, 'c', throwing('CONFLICT'), 'k', put('a'))).status).toBe('info');
    const cas = await recorded(rec, 'c', throwing('CONFLICT', 4), 'k', put('a', 3));
    expect(cas).toMatchObject({ status: 'ok', out: { kind: 'conflict', version: 4 } });
    const notFound = await recorded(rec, 'c', throwing('NOT_FOUND'), 'k', get);
    expect(notFound).toMatchObject({ status: 'ok', out: { kind: 'get', found: false } });
    expect((await recorded(rec, 'c', throwing('TIMEOUT'), 'k', get)).status).toBe('info');
  });

  it('records a delete of an absent key as a read of "absent", and a put without whether the key existed', async () => {
    const rec = new Recorder();
    const d = await recorded(rec, 'c', stub(() => ({ deleted: false, version: 0 })), 'k', del());
    expect(d).toMatchObject({ status: 'ok', op: { kind: 'get' }, out: { kind: 'get', found: false } });
    const p = await recorded(rec, 'c', stub(() => 7), 'k', put('a'));
    expect(p.out).toEqual({ kind: 'write', version: 7 });
    const p0 = await recorded(rec, 'c', stub(() => 1), 'k', put('b', 0));
    expect(p0.out).toEqual({ kind: 'write', version: 1, existed: false });
  });
});
