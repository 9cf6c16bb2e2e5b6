// Attack (issue 10, item 4): the operator's cluster file widens the caller's trust.
//
// The operator writes the cluster file (its address list is naturally the operator's). Before the fix,
// connect() merged `{ ...file.trust, ...opts.trust }`, so a file adding `roots: [attackerCA]`,
// `allowAnyImage` or `allowDebug` survived a caller who pinned its own PCR0: a node whose document
// chains to the attacker's CA (claiming the genuine PCRs) was accepted. Here the attacker runs such a
// node, hands out a cluster file pointing at it, and the caller (SDK and CLI) pins PCR0 only, as a
// production caller relying on the default AWS root does. It must be refused; the control shows the
// same node IS accepted once the caller opts into the file's trust (so the test would catch the hole).
import { execFile } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, EkvError, resolveConnect, type ClusterFile, type ConnectOptions } from '../../client/index.ts';
import { shortTempDir, startCustomNode, startTestRing, type CustomNode, type TestRing } from '../helpers/local-ring.ts';

const ekvBin = fileURLToPath(new URL('../../bin/ekv.js', import.meta.url));

let genuine: TestRing;
let attacker: CustomNode;
let dir: string;
let pcr0: string;
let attackerFile: string;
let attackerCluster: ClusterFile;

/** 'OK' when a put and a get went through, else the refusal as CODE/REASON. */
async function outcome(opts: ConnectOptions): Promise<string> {
  let kv;
  try {
    kv = await connect({ ...opts, timeoutMs: 20_000 }); // the refusals come at the handshake, not by timing out
    await kv.put('probe', 'secret');
    expect((await kv.get('probe')).toString()).toBe('secret');
    return 'OK';
  } catch (err) {
    if (!(err instanceof EkvError)) throw err;
    return err.reason ? `${err.code}/${err.reason}` : err.code;
  } finally {
    await kv?.close();
  }
}

function ekv(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [ekvBin, ...args], { timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }));
  });
}

beforeAll(async () => {
  // The attacker's node runs the genuine image, but its "NSM" signs under the attacker's own CA and
  // reports the genuine PCRs: what an attacker with a CA of its own can mint.
  // (The genuine ring runs the image variant built for its options, so the claim is its PCR0, not the
  // measurement of whatever image the attacker's node runs.)
  genuine = await startTestRing({ nodes: 1 });
  pcr0 = genuine.cluster.trust.pcrs?.['0'] as string;
  attacker = await startCustomNode({ pcrs: (m) => new Map(m).set(0, Buffer.from(pcr0, 'hex')) });
  dir = shortTempDir('ekv-atk-');
  attackerCluster = {
    version: 1,
    nodes: [{ addr: attacker.addr }],
    trust: { roots: [attacker.ca.rootPem], pcrs: { '0': pcr0 }, allowAnyImage: true, allowDebug: true },
  };
  attackerFile = join(dir, 'cluster.json');
  writeFileSync(attackerFile, JSON.stringify(attackerCluster));
});

afterAll(async () => {
  await Promise.all([genuine?.stop(), attacker?.stop()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("a cluster file cannot widen the caller's trust", () => {
  it("a caller pinning its own PCR0 refuses the attacker's node (UNTRUSTED_ROOT)", async () => {
    expect(await outcome({ cluster: attackerFile, trust: { pcrs: { '0': pcr0 } } })).toBe('UNATTESTED/UNTRUSTED_ROOT');
    // The policy in force is exactly the caller's: nothing of the file's trust section survives.
    const { trust } = resolveConnect({ cluster: attackerCluster, trust: { pcrs: { '0': pcr0 } } });
    expect(trust.policy).toEqual({ pcrs: { '0': pcr0 } });
    expect([trust.from, trust.parts.roots, trust.parts.allowAnyImage, trust.parts.allowDebug]).toEqual(['caller', 'default', 'default', 'default']);
  });

  it("the file's allowAnyImage does not rescue a caller policy without PCR0", async () => {
    // Before the fix the file's allowAnyImage: true let this connect (any image under the caller's root).
    expect(await outcome({ cluster: attackerFile, trust: { roots: [attacker.ca.rootPem] } })).toBe('BAD_REQUEST');
  });

  it('with no trust of its own, the caller uses only the addresses, and refuses (no PCR0 pinned)', async () => {
    expect(await outcome({ cluster: attackerFile })).toBe('BAD_REQUEST');
  });

  it('the CLI: --pcr pins replace the file; no flag refuses; status shows where each part came from', async () => {
    const pinned = await ekv(['get', 'probe', '-c', attackerFile, '--pcr', `0=${pcr0}`]);
    expect([pinned.code, pinned.stdout]).toEqual([1, '']);
    expect(pinned.stderr).toMatch(/^UNATTESTED \(UNTRUSTED_ROOT\)/);
    const bare = await ekv(['get', 'probe', '-c', attackerFile]);
    expect(bare.code).toBe(1);
    expect(bare.stderr).toMatch(/^BAD_REQUEST: the trust policy pins no PCR0/);
    const status = await ekv(['status', '-c', attackerFile, '--pcr', `0=${pcr0}`, '--json']);
    const s = JSON.parse(status.stdout) as { ok: boolean; trust: { from: string; parts: Record<string, { source: string; value: unknown }> }; nodes: Array<{ code?: string }> };
    expect(s.ok).toBe(false);
    expect(s.nodes[0]?.code).toBe('UNATTESTED');
    expect(s.trust.from).toBe('caller');
    expect(s.trust.parts.pcr0).toEqual({ source: 'caller flag', value: [pcr0] });
    expect(s.trust.parts.roots).toEqual({ source: 'default', value: 'AWS Nitro root' });
    expect(s.trust.parts.allowDebug?.source).toBe('default');
  });

  it('control: the same node IS accepted when the caller opts into the file (SDK and CLI)', async () => {
    expect(await outcome({ cluster: attackerFile, trustClusterFile: true })).toBe('OK');
    const optIn = await ekv(['get', 'probe', '-c', attackerFile, '--trust-cluster-file']);
    expect([optIn.code, optIn.stdout]).toEqual([0, 'secret']);
  });

  it("control: the caller's own policy reaches the genuine node through a cluster file's addresses", async () => {
    const file = join(dir, 'genuine-addresses.json');
    writeFileSync(file, JSON.stringify({ ...attackerCluster, nodes: genuine.cluster.nodes }));
    expect(await outcome({ cluster: file, trust: { roots: genuine.cluster.trust.roots as string[], pcrs: { '0': pcr0 } } })).toBe('OK');
    const rootFile = join(dir, 'root.pem');
    writeFileSync(rootFile, (genuine.cluster.trust.roots as string[])[0] as string);
    const cli = await ekv(['get', 'probe', '-c', file, '--root', rootFile, '--pcr', `0=${pcr0}`]);
    expect([cli.code, cli.stdout]).toEqual([0, 'secret']);
  });

  it("the local flow: a file written by the user's own ekv up needs no flag; an edited copy does", async () => {
    const own = await ekv(['get', 'probe', '-c', genuine.clusterFile]);
    expect([own.code, own.stdout]).toEqual([0, 'secret']);
    const edited = join(dir, 'edited.json');
    writeFileSync(edited, JSON.stringify({ ...genuine.cluster, trust: { ...genuine.cluster.trust, roots: [...(genuine.cluster.trust.roots ?? []), attacker.ca.rootPem] } }));
    const r = await ekv(['get', 'probe', '-c', edited]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^BAD_REQUEST/);
  });
});
