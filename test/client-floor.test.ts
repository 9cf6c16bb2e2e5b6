// The client's floor (issue 12, section 3; client/floor.ts): an answer older than what the client has seen of
// a key in a ring is refused with STALE, never returned; so is a second value at a version it saw, and an
// older ring generation. In process: the Floor itself, and the SDK's wiring with a scripted node (the
// answering connection's ring id and the answers are the test's), so every check is shown to bite.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EkvClient, EkvError } from '../client/index.ts';
import { Floor, floorKeysMax, noRing } from '../client/floor.ts';

const dir = mkdtempSync(join(tmpdir(), 'ekv-floor-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ringA = 'a'.repeat(64);
const ringB = 'b'.repeat(64);
const k = Buffer.from('k');

function staleOf(f: () => void): string | null {
  try {
    f();
    return null;
  } catch (err) {
    if (err instanceof EkvError && err.code === 'STALE') return err.reason ?? 'STALE';
    throw err;
  }
}

describe('Floor', () => {
  it('refuses an older version, a forked value at a seen version, and accepts newer ones', () => {
    const f = new Floor();
    f.checkWrite(ringA, k, f.snapshot(k), 3, Buffer.from('v3'));
    expect(staleOf(() => f.checkRead(ringA, k, f.snapshot(k), 1, Buffer.from('v1')))).toBe('OLDER_VERSION');
    expect(staleOf(() => f.checkRead(ringA, k, f.snapshot(k), 3, Buffer.from('other')))).toBe('FORKED_VALUE');
    expect(staleOf(() => f.checkRead(ringA, k, f.snapshot(k), 3, null))).toBe('FORKED_VALUE'); // "deleted at 3": another history
    expect(staleOf(() => f.checkRead(ringA, k, f.snapshot(k), 0, null))).toBe('OLDER_VERSION'); // rolled back to "never written"
    expect(staleOf(() => f.checkRead(ringA, k, f.snapshot(k), 3, Buffer.from('v3')))).toBeNull();
    expect(staleOf(() => f.checkRead(ringA, k, f.snapshot(k), 5, null))).toBeNull(); // deleted later by someone: fine
    expect(staleOf(() => f.checkRead(ringA, k, f.snapshot(k), 5, null))).toBeNull();
    // A write must land above everything seen before it was sent.
    expect(staleOf(() => f.checkWrite(ringA, k, f.snapshot(k), 5, Buffer.from('x')))).toBe('OLDER_VERSION');
    expect(staleOf(() => f.checkWrite(ringA, k, f.snapshot(k), 6, Buffer.from('x')))).toBeNull();
    // NOT_FOUND without a version (a node that does not say) cannot be checked, and is not refused.
    expect(staleOf(() => f.checkRead(ringA, k, f.snapshot(k), undefined, null))).toBeNull();
    // Another ring has its own floor.
    expect(staleOf(() => f.checkRead(ringB, k, f.snapshot(k), 1, Buffer.from('v1')))).toBeNull();
  });

  it('checks against the floor when the operation was sent, so concurrent calls never stale each other', () => {
    const f = new Floor();
    f.checkWrite(ringA, k, f.snapshot(k), 2, Buffer.from('v2'));
    const readSent = f.snapshot(k); // a read is sent ...
    f.checkWrite(ringA, k, f.snapshot(k), 3, Buffer.from('v3')); // ... a concurrent write lands at 3 ...
    expect(staleOf(() => f.checkRead(ringA, k, readSent, 2, Buffer.from('v2')))).toBeNull(); // ... the read may still see 2
    expect(f.snapshot(k).get(ringA)?.v).toBe(3);
  });

  it('refuses an older ring generation', () => {
    const f = new Floor();
    f.checkGeneration(ringA, 2);
    expect(staleOf(() => f.checkGeneration(ringA, 1))).toBe('OLDER_GENERATION');
    expect(staleOf(() => f.checkGeneration(ringA, 2))).toBeNull();
    expect(staleOf(() => f.checkGeneration(ringA, undefined))).toBeNull();
  });

  it('refuses a node of an older generation of the same deployment, whichever id of the lineage it names (and after a restart, from the file)', () => {
    const file = join(dir, 'floor-gen');
    const f = new Floor({ file });
    // Generation 1 of the deployment (ring B, reopened from ring A): its handshake names A as a previous id.
    f.checkGeneration(ringB, 1, [ringA]);
    expect(staleOf(() => f.checkGeneration(ringA, 0))).toBe('OLDER_GENERATION'); // an old copy of ring A
    expect(staleOf(() => f.checkGeneration(ringB, 1, [ringA]))).toBeNull();
    f.save();
    const again = new Floor({ file });
    expect(staleOf(() => again.checkGeneration(ringA, 0))).toBe('OLDER_GENERATION');
    // Another deployment is not affected.
    expect(staleOf(() => again.checkGeneration('c'.repeat(64), 0))).toBeNull();
  });

  it('keeps at most keysMax keys, least recently used dropped first', () => {
    const f = new Floor({ keysMax: 3 });
    for (const name of ['a', 'b', 'c']) f.checkWrite(ringA, Buffer.from(name), new Map(), 1, Buffer.from('x'));
    f.checkRead(ringA, Buffer.from('a'), f.snapshot(Buffer.from('a')), 1, Buffer.from('x')); // a is used again
    f.checkWrite(ringA, Buffer.from('d'), new Map(), 1, Buffer.from('x'));
    expect(f.size).toBe(3);
    expect(f.snapshot(Buffer.from('b')).size).toBe(0);
    expect(f.snapshot(Buffer.from('a')).size).toBe(1);
    expect(floorKeysMax).toBe(8192);
  });

  it('persists to a file atomically, merging with what another process wrote; refuses a corrupt file', () => {
    const file = join(dir, 'floor-1');
    const one = new Floor({ file });
    one.checkWrite(ringA, k, one.snapshot(k), 3, Buffer.from('v3'));
    const two = new Floor({ file }); // opened before one saved: it does not know version 3
    two.checkWrite(ringA, Buffer.from('other'), new Map(), 7, Buffer.from('o'));
    one.save();
    two.save(); // merges one's key instead of overwriting it
    const three = new Floor({ file });
    expect(three.snapshot(k).get(ringA)).toEqual({ v: 3, h: expect.stringMatching(/^[0-9a-f]{16}$/) });
    expect(three.snapshot(Buffer.from('other')).get(ringA)?.v).toBe(7);
    expect(readFileSync(file, 'utf8')).not.toContain('other'); // key names are hashed
    writeFileSync(file, '{"version":1,"rings":{},"keys":[["x","y",1,null]]}');
    expect(() => new Floor({ file })).toThrow(/floor file/);
    writeFileSync(file, 'not json');
    expect(() => new Floor({ file })).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }));
  });
});

type Routed = (key: Buffer, op: string, args: Record<string, unknown>, via: { conn?: unknown }) => Promise<Record<string, unknown>>;

/**
 * Replaces the client's routed calls with `fn`. Writes on the data path run in range sessions: the session's
 * `open` (one range) is answered here, as a node would, and is not the scripted node's business.
 */
function script(kv: EkvClient, fn: Routed): void {
  (kv as unknown as { callRouted: Routed }).callRouted = async (key, op, args, via) => {
    if (op === 'open') return { s: 1, sh: 0, S: 1, w: 64 };
    return fn(key, op, args, via ?? {});
  };
}

/** An SDK client whose routed calls are answered by `answer` from a node of ring `ring`. */
function scriptedClient(ring: string | null, answer: (op: string, args: Record<string, unknown>) => Record<string, unknown>, floor?: Floor | null): EkvClient {
  const kv = new EkvClient(['127.0.0.1:1'], { pcrs: { 0: '00'.repeat(48) } }, { timeoutMs: 1000, ...(floor === undefined ? {} : { floor }) });
  const conn = { ringId: ring === null ? null : Buffer.from(ring, 'hex') };
  script(kv, async (_key, op, args, via) => {
    via.conn = conn;
    return answer(op, args);
  });
  return kv;
}

describe('the SDK refuses what its floor says is stale', () => {
  it('write k at v3, then a node answers v1: STALE, not the value; without the floor the old value comes back', async () => {
    let version = 0;
    let rolledBack = false;
    const answer = (op: string, args: Record<string, unknown>) => {
      if (op === 'put') return { n: ++version };
      if (op === 'get') return rolledBack ? { v: Buffer.from('v1'), n: 1 } : { v: args.k, n: version };
      throw new Error(op);
    };
    const kv = scriptedClient(ringA, answer);
    for (const v of ['v1', 'v2', 'v3']) await kv.put('k', v);
    rolledBack = true;
    await expect(kv.getWithVersion('k')).rejects.toMatchObject({ code: 'STALE', reason: 'OLDER_VERSION', version: 3 });
    version = 1; // the rolled-back node acknowledges a put at version 2
    await expect(kv.put('k', 'v4')).rejects.toMatchObject({ code: 'STALE', reason: 'OLDER_VERSION' });
    // Control: the same answers to a client without a floor are returned as data.
    const blind = scriptedClient(ringA, answer, null);
    expect((await blind.getWithVersion('k')).value.toString()).toBe('v1');
  });

  it('a NOT_FOUND carrying an older delete version, and a CONFLICT naming an older version, are STALE', async () => {
    const kv = scriptedClient(ringA, (op) => {
      if (op === 'put') return { n: 4 };
      throw new Error(op);
    });
    await kv.put('k', 'v4');
    script(kv, async (_k, op, _a, via) => {
      via.conn = { ringId: Buffer.from(ringA, 'hex') };
      if (op === 'get') throw new EkvError('NOT_FOUND', 'no such key', { version: 0 });
      throw new EkvError('CONFLICT', 'the key is at 2', { version: 2 });
    });
    await expect(kv.getWithVersion('k')).rejects.toMatchObject({ code: 'STALE' });
    await expect(kv.put('k', 'x', { ifVersion: 4 })).rejects.toMatchObject({ code: 'STALE' });
  });

  it('an answer carrying an older ring generation is STALE; a ring-less node is its own floor', async () => {
    let g = 2;
    const kv = scriptedClient(ringA, () => ({ v: Buffer.from('x'), n: 1, g }));
    await kv.getWithVersion('k');
    g = 1;
    await expect(kv.getWithVersion('k')).rejects.toMatchObject({ code: 'STALE', reason: 'OLDER_GENERATION' });
    const none = scriptedClient(null, () => ({ n: 1 }));
    await none.put('k', 'x');
    expect(none.floor?.snapshot(Buffer.from('k')).get(noRing)?.v).toBe(1);
  });
});

describe('the SDK and the ring generation (docs/recovery.md)', () => {
  it('a node of an older generation of the same deployment is STALE once a newer one was seen (its handshake\'s lineage)', async () => {
    const file = join(dir, 'floor-gen-sdk');
    const mk = (): EkvClient => new EkvClient(['127.0.0.1:1'], { pcrs: { 0: '00'.repeat(48) } }, { timeoutMs: 1000, floor: new Floor({ file }) });
    const reopened = { ringId: Buffer.from(ringB, 'hex'), lineage: { generation: 1, previous: [Buffer.from(ringA, 'hex')] } };
    const old = { ringId: Buffer.from(ringA, 'hex'), lineage: { generation: 0, previous: [] } };
    let conn: unknown = reopened;
    const kv = mk();
    script(kv, async (_key, _op, _args, via) => {
      via.conn = conn;
      return { v: Buffer.from('x'), n: 1, g: conn === reopened ? 1 : 0 };
    });
    await kv.getWithVersion('k');
    conn = old; // the host starts an old copy of generation 0 beside the reopened ring and routes the client to it
    await expect(kv.getWithVersion('k')).rejects.toMatchObject({ code: 'STALE', reason: 'OLDER_GENERATION' });
    await kv.close();
    // Another process with the same floor file refuses it too.
    const kv2 = mk();
    script(kv2, async (_key, _op, _args, via) => {
      via.conn = old;
      return { v: Buffer.from('x'), n: 1, g: 0 };
    });
    await expect(kv2.getWithVersion('k')).rejects.toMatchObject({ code: 'STALE', reason: 'OLDER_GENERATION' });
    await kv2.close();
  });
});

describe('what the floor must not refuse', () => {
  it('a delete of a key without a value (version 0), and a CONFLICT saying "no value" (0), after the client saw versions', async () => {
    let step = 0;
    const kv = scriptedClient(ringA, (op) => {
      step++;
      if (op === 'put') return { n: 3 };
      if (op === 'del' && step === 2) return { n: 4, d: true };
      if (op === 'del') return { n: 0 };
      throw new Error(op);
    });
    await kv.put('k', 'v3');
    expect(await kv.delete('k')).toEqual({ deleted: true, version: 4 });
    expect(await kv.delete('k')).toEqual({ deleted: false, version: 0 });
    script(kv, async (_k, _op, _a, via) => {
      via.conn = { ringId: Buffer.from(ringA, 'hex') };
      throw new EkvError('CONFLICT', 'no value', { version: 0 });
    });
    await expect(kv.put('k', 'x', { ifVersion: 4 })).rejects.toMatchObject({ code: 'CONFLICT' });
  });
});
