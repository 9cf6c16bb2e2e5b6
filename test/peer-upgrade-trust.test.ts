// enclave/trust.ts peerVerifier: a peer runs our image (PCR0..2 ours) or an allowlisted one (by PCR0, which
// measures the whole image). An image built with the previous release's PCR0 in its allowlist (docs/deploy.md,
// section 6) must accept that release's enclaves, whose PCR2 differs from its own by construction.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EmulatorCa } from '../emulator/ca.ts';
import { EmulatedNsm } from '../emulator/nsm.ts';
import { peerVerifier, type SelfTrust } from '../enclave/trust.ts';
import { EkvError } from '../protocol/errors.ts';

const reg = (label: string) => createHash('sha384').update(label).digest();

let dir: string;
let ca: EmulatorCa;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ekv-peer-trust-'));
  ca = await EmulatorCa.loadOrCreate(dir);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function image(pcr0: string, pcr1: string, pcr2: string) {
  const m = new Map<number, Uint8Array>();
  for (let i = 0; i < 16; i++) m.set(i, new Uint8Array(48));
  m.set(0, reg(pcr0));
  m.set(1, reg(pcr1));
  m.set(2, reg(pcr2));
  return m;
}

async function docOf(pcrs: Map<number, Uint8Array>, nonce: Buffer) {
  const nsm = new EmulatedNsm({ ca, pcrs, moduleId: ca.newModuleId() });
  return nsm.attest({ nonce, publicKey: randomBytes(32) });
}

async function verdict(self: SelfTrust, allowlist: string[], peer: Map<number, Uint8Array>, ringPeers = false): Promise<string> {
  const nonce = randomBytes(32);
  try {
    await peerVerifier(self, Date.now, allowlist, { ringPeers })(await docOf(peer, nonce), nonce);
    return 'accepted';
  } catch (err) {
    expect(err).toBeInstanceOf(EkvError);
    return (err as EkvError).reason ?? (err as EkvError).code;
  }
}

describe('peer trust across an image upgrade', () => {
  const a = image('A', 'kernel', 'app-a');
  const b = image('B', 'kernel', 'app-b');
  const hexOf = (m: Map<number, Uint8Array>) => Buffer.from(m.get(0) as Uint8Array).toString('hex');
  const selfOf = (pcrs: Map<number, Uint8Array>): SelfTrust => ({ root: Buffer.from(ca.rootDer), pcrs, moduleId: 'self', production: false });

  it('a new image accepts the previous one it allowlists, though its PCR2 differs', async () => {
    expect(await verdict(selfOf(b), [hexOf(a)], a)).toBe('accepted');
  });

  it('an image accepts its own, refuses one it does not allowlist, and refuses our PCR0 with other PCR1/PCR2', async () => {
    expect(await verdict(selfOf(a), [], a)).toBe('accepted');
    expect(await verdict(selfOf(a), [], b)).toBe('PCR_MISMATCH');
    expect(await verdict(selfOf(b), [hexOf(a)], image('C', 'kernel', 'app-c'))).toBe('PCR_MISMATCH');
    const forged = new Map(a);
    forged.set(2, reg('app-x'));
    expect(await verdict(selfOf(a), [], forged)).toBe('PCR_MISMATCH');
  });

  it('ringPeers (an image setting, used only with a ring): another image passes the document check, left to the ring MAC', async () => {
    // The old image A accepts the new image B only this way: nothing measured into A names B. The handshake then
    // demands B prove the ring secret, which only images the KMS key policy admits can open.
    expect(await verdict(selfOf(a), [], b, true)).toBe('accepted');
    // Still refused: our PCR0 with other PCR1/PCR2, and debug-mode documents (all-zero PCRs).
    const forged = new Map(a);
    forged.set(1, reg('other-kernel'));
    expect(await verdict(selfOf(a), [], forged, true)).toBe('PCR_MISMATCH');
    const debug = image('x', 'y', 'z');
    for (const i of [0, 1, 2]) debug.set(i, new Uint8Array(48));
    expect(await verdict(selfOf(a), [], debug, true)).toBe('DEBUG_MODE');
  });
});
