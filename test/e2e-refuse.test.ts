// The client refuses nodes it must not trust: a modified enclave image
// (another PCR0), a document under a root it does not trust, a debug-mode
// enclave (zero PCRs). Each refusal is UNATTESTED with the verifier's reason,
// and a positive control shows the same node is otherwise reachable.
import { execFile } from 'node:child_process';
import { appendFileSync, copyFileSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, EkvError, type TrustPolicy } from '../client/index.ts';
import { measureImage } from '../emulator/measure.ts';
import { debugModePcrs, imageFor, shortTempDir, startCustomNode, startTestRing, type CustomNode, type TestRing } from './helpers/local-ring.ts';

const ekvBin = fileURLToPath(new URL('../bin/ekv.js', import.meta.url));

async function refusal(addr: string, trust: TrustPolicy): Promise<EkvError> {
  const kv = await connect({ nodes: [addr], trust, timeoutMs: 5000 });
  try {
    await kv.put('k', 'v');
  } catch (err) {
    expect(err).toBeInstanceOf(EkvError);
    return err as EkvError;
  } finally {
    await kv.close();
  }
  throw new Error('the node was not refused');
}

async function works(addr: string, trust: TrustPolicy): Promise<void> {
  const kv = await connect({ nodes: [addr], trust, timeoutMs: 5000 });
  try {
    await kv.put('control', 'yes');
    expect((await kv.get('control')).toString()).toBe('yes');
  } finally {
    await kv.close();
  }
}

// The image a one-node test ring runs (startTestRing's options), and a copy with one more line.
async function originalPcrs(): Promise<Record<string, string>> {
  const m = measureImage(await readFile(await imageFor({ nodes: 1, replicas: 1 })));
  return { '0': m.pcr0.toString('hex'), '1': m.pcr1.toString('hex'), '2': m.pcr2.toString('hex') };
}

describe('a node started from a modified image', () => {
  let dir: string;
  let t: TestRing;
  let pcrs: Record<string, string>;

  beforeAll(async () => {
    dir = shortTempDir('ekv-img-');
    const image = join(dir, 'enclave.mjs');
    copyFileSync(await imageFor({ nodes: 1, replicas: 1 }), image);
    appendFileSync(image, '\n// one more line: a different image\n');
    pcrs = await originalPcrs();
    t = await startTestRing({ nodes: 1, imagePath: image });
  });

  afterAll(async () => {
    await t?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reports another PCR0 (and PCR2), the same PCR1', () => {
    const modified = t.cluster.trust.pcrs as Record<string, string>;
    expect(modified['0']).not.toBe(pcrs['0']);
    expect(modified['2']).not.toBe(pcrs['2']);
    expect(modified['1']).toBe(pcrs['1']);
  });

  it('is refused with PCR_MISMATCH by a client expecting the original PCRs', async () => {
    const err = await refusal(t.node().addr, { roots: t.cluster.trust.roots as string[], pcrs });
    expect([err.code, err.reason]).toEqual(['UNATTESTED', 'PCR_MISMATCH']);
    // Pinning PCR0 alone is enough.
    const only0 = await refusal(t.node().addr, { roots: t.cluster.trust.roots as string[], pcrs: { '0': pcrs['0'] as string } });
    expect(only0.reason).toBe('PCR_MISMATCH');
  });

  it('is accepted when the client expects its own PCRs (control)', async () => {
    await works(t.node().addr, t.cluster.trust);
  });

  it('makes the CLI exit 1 with UNATTESTED (PCR_MISMATCH) on stderr and nothing on stdout', async () => {
    const cluster = { ...t.cluster, trust: { ...t.cluster.trust, pcrs } };
    const file = join(dir, 'original-pcrs.json');
    writeFileSync(file, JSON.stringify(cluster));
    const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [ekvBin, 'get', 'k', '-c', file, '--trust-cluster-file'], { timeout: 30_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }));
    });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^UNATTESTED \(PCR_MISMATCH\)/);
  });
});

describe('trust roots and debug mode', () => {
  let node: CustomNode;
  let t: TestRing;

  beforeAll(async () => {
    [node, t] = await Promise.all([startCustomNode({ pcrs: debugModePcrs }), startTestRing({ nodes: 1 })]);
  });

  afterAll(async () => {
    await Promise.all([node?.stop(), t?.stop()]);
  });

  it('refuses a genuine node when the client trusts only the AWS root (the default)', async () => {
    const { pcrs } = t.cluster.trust;
    const err = await refusal(t.node().addr, { ...(pcrs ? { pcrs } : {}) });
    expect([err.code, err.reason]).toEqual(['UNATTESTED', 'UNTRUSTED_ROOT']);
  });

  it("refuses a node under another emulator's root", async () => {
    // Same image, same PCRs, but a root the client never heard of.
    const err = await refusal(t.node().addr, { roots: [node.ca.rootPem], pcrs: t.cluster.trust.pcrs ?? {} });
    expect([err.code, err.reason]).toEqual(['UNATTESTED', 'UNTRUSTED_ROOT']);
  });

  it('refuses a debug-mode document (PCR0/1/2 zero) with DEBUG_MODE', async () => {
    const err = await refusal(node.addr, { roots: [node.ca.rootPem], allowAnyImage: true });
    expect([err.code, err.reason]).toEqual(['UNATTESTED', 'DEBUG_MODE']);
    // Also when the client pins the zero PCRs it is shown: debug mode is refused before any PCR check.
    const pinned = await refusal(node.addr, { roots: [node.ca.rootPem], pcrs: { '0': '00'.repeat(48) } });
    expect(pinned.reason).toBe('DEBUG_MODE');
  });

  it('accepts the debug node only with allowDebug (control: the node itself works)', async () => {
    // A zero PCR0 with allowDebug admits every debug enclave of every image: it must be said openly (review-17 F4).
    await works(node.addr, { roots: [node.ca.rootPem], allowDebug: true, allowAnyImage: true, pcrs: { '0': '00'.repeat(48) } });
    await expect(connect({ nodes: [node.addr], trust: { roots: [node.ca.rootPem], allowDebug: true, pcrs: { '0': '00'.repeat(48) } } }))
      .rejects.toMatchObject({ code: 'BAD_REQUEST' });
  });

  it('refuses to connect with a trust policy that pins no PCR0 (any image would pass)', async () => {
    await expect(connect({ nodes: [node.addr], trust: { roots: [node.ca.rootPem] } })).rejects.toMatchObject({ code: 'BAD_REQUEST' });
  });
});
