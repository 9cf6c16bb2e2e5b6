// The emulated TEE's CA, NSM and measurement: documents verify with the
// production verifier under the emulator's root, and are shaped field by
// field like the genuine Nitro documents in test/fixtures/nitro.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { Decoder } from 'cbor-x';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EmulatorCa } from '../emulator/ca.ts';
import { measureImage, pcrMap } from '../emulator/measure.ts';
import { EmulatedNsm, EmulatedNsmError } from '../emulator/nsm.ts';
import { AttestationError, verifyAttestation } from '../verifier/index.ts';

const decoder = new Decoder({ mapsAsObjects: false, useRecords: false });
const hour = 3600_000;

function fixtureDir(): string {
  const local = new URL('./fixtures/nitro/', import.meta.url).pathname;
  if (existsSync(local)) return local;
  return new URL('../../shared/fixtures/nitro/', import.meta.url).pathname;
}

interface Cose { raw: Uint8Array; parts: unknown[]; payload: Map<string, unknown> }

function openCose(raw: Uint8Array): Cose {
  const parts = decoder.decode(raw) as unknown[];
  return { raw, parts, payload: decoder.decode(parts[2] as Uint8Array) as Map<string, unknown> };
}

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

// The certificate features that make a chain look like AWS's.
function certShape(der: Uint8Array) {
  const cert = new x509.X509Certificate(der);
  const bc = cert.getExtension(x509.BasicConstraintsExtension);
  const ku = cert.getExtension(x509.KeyUsagesExtension);
  return {
    ca: bc?.ca ?? null,
    pathLength: bc?.pathLength ?? null,
    bcCritical: bc?.critical ?? null,
    usages: ku?.usages ?? null,
    curve: (cert.publicKey.algorithm as { namedCurve?: string }).namedCurve,
    signature: (cert.signatureAlgorithm as { hash?: { name: string } }).hash?.name,
    lifetimeMs: cert.notAfter.getTime() - cert.notBefore.getTime(),
  };
}

describe('emulator measurement', () => {
  it('extends each PCR from 48 zero bytes with SHA-384(previous || SHA-384(part))', () => {
    const image = Buffer.from('export const answer = 42;\n');
    const runtime = Buffer.from('runtime descriptor');
    const sha = (...parts: Uint8Array[]) => parts.reduce((h, p) => h.update(p), createHash('sha384')).digest();
    const zero = Buffer.alloc(48);
    const m = measureImage(image, runtime);
    expect(hex(m.pcr1)).toBe(hex(sha(zero, sha(runtime))));
    expect(hex(m.pcr2)).toBe(hex(sha(zero, sha(image))));
    expect(hex(m.pcr0)).toBe(hex(sha(sha(zero, sha(runtime)), sha(image))));
  });

  it('changes PCR0 and PCR2, not PCR1, when one byte of the image changes', () => {
    const image = randomBytes(4096);
    const before = measureImage(image);
    for (const at of [0, 1234, 4095]) {
      const changed = Buffer.from(image);
      changed[at] = (changed[at] as number) ^ 0x01;
      const after = measureImage(changed);
      expect(hex(after.pcr0)).not.toBe(hex(before.pcr0));
      expect(hex(after.pcr2)).not.toBe(hex(before.pcr2));
      expect(hex(after.pcr1)).toBe(hex(before.pcr1));
    }
  });

  it('builds 16 registers, zero beyond PCR2 unless given', () => {
    const m = measureImage(Buffer.from('x'));
    const pcr4 = randomBytes(48);
    const pcrs = pcrMap(m, new Map([[4, pcr4]]));
    expect([...pcrs.keys()]).toEqual([...Array(16).keys()]);
    expect(hex(pcrs.get(0) as Uint8Array)).toBe(hex(m.pcr0));
    expect(hex(pcrs.get(4) as Uint8Array)).toBe(hex(pcr4));
    expect(hex(pcrs.get(15) as Uint8Array)).toBe('00'.repeat(48));
  });
});

describe('emulator CA', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ekv-ca-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('persists its root (0600) and reloads the same one', async () => {
    const first = await EmulatorCa.loadOrCreate(join(dir, 'ca'));
    const again = await EmulatorCa.loadOrCreate(join(dir, 'ca'));
    expect(again.rootPem).toBe(first.rootPem);
    expect(hex(again.rootDer)).toBe(hex(first.rootDer));
    for (const name of readdirSync(join(dir, 'ca'))) {
      expect(((await stat(join(dir, 'ca', name))).mode & 0o777).toString(8)).toBe('600');
    }
    // The reloaded key still signs chains under the saved root.
    const leaf = await again.issueLeaf(again.newModuleId());
    expect(hex(leaf.cabundle[0] as Uint8Array)).toBe(hex(first.rootDer));
  });

  it('issues a chain with the shapes and lifetimes of AWS\'s', async () => {
    const ca = await EmulatorCa.createEphemeral();
    const moduleId = ca.newModuleId();
    expect(moduleId).toMatch(/^i-[0-9a-f]{17}-enc[0-9a-f]{16}$/);
    const leaf = await ca.issueLeaf(moduleId);
    const shapes = leaf.cabundle.map(certShape);
    expect(shapes.map((s) => [s.ca, s.pathLength])).toEqual([[true, null], [true, 2], [true, 1], [true, 0]]);
    const day = 24 * hour;
    expect(shapes.map((s) => Math.round(s.lifetimeMs / day))).toEqual([30 * 365, 20, 6, 1]);
    const leafShape = certShape(leaf.certificate);
    expect(leafShape).toMatchObject({ ca: false, bcCritical: true, curve: 'P-384', signature: 'SHA-384' });
    expect(leafShape.lifetimeMs).toBe(3 * hour + 3000);
    expect(Math.abs(leaf.notAfter - leaf.notBefore - (3 * hour + 3000))).toBeLessThanOrEqual(1000);
  });

  it('re-issues intermediates before they could not cover a child', async () => {
    let now = Date.now();
    const ca = await EmulatorCa.createEphemeral({ now: () => now });
    const a = await ca.cabundle();
    now += 2 * hour;
    expect((await ca.cabundle()).map(hex)).toEqual(a.map(hex));
    now += 22 * hour; // the instance CA (1 day) can no longer cover a 3 h leaf
    const b = await ca.cabundle();
    expect(hex(b[0] as Uint8Array)).toBe(hex(a[0] as Uint8Array));
    expect(hex(b[2] as Uint8Array)).toBe(hex(a[2] as Uint8Array));
    expect(hex(b[3] as Uint8Array)).not.toBe(hex(a[3] as Uint8Array));
    now += 6 * 24 * hour; // the zonal CA too, and so its child
    const c = await ca.cabundle();
    expect(hex(c[2] as Uint8Array)).not.toBe(hex(b[2] as Uint8Array));
    expect(hex(c[3] as Uint8Array)).not.toBe(hex(b[3] as Uint8Array));
  });
});

describe('emulated NSM', () => {
  let ca: EmulatorCa;
  const image = Buffer.from('console.log("enclave")\n');
  const measured = measureImage(image);
  const expectedPcrs = { 0: hex(measured.pcr0), 1: hex(measured.pcr1), 2: hex(measured.pcr2) };
  beforeAll(async () => {
    ca = await EmulatorCa.createEphemeral();
  });

  it('signs documents the verifier accepts under the emulator root, with the measured PCRs', async () => {
    const nsm = new EmulatedNsm({ ca, pcrs: pcrMap(measured), moduleId: ca.newModuleId() });
    const nonce = randomBytes(32);
    const publicKey = randomBytes(32);
    const doc = await nsm.attest({ nonce, publicKey, userData: new Uint8Array(0) });
    const verified = await verifyAttestation(doc, { roots: [ca.rootPem], pcrs: expectedPcrs, nonce, cache: false });
    expect(verified.moduleId).toBe(nsm.moduleId);
    expect(hex(verified.publicKey as Uint8Array)).toBe(hex(publicKey));
    expect(verified.userData?.length).toBe(0);
    expect(verified.leafNotAfter - Date.now()).toBeGreaterThan(2 * hour);
  });

  it('is refused under the default (AWS) root, with other PCRs, or another nonce', async () => {
    const nsm = new EmulatedNsm({ ca, pcrs: pcrMap(measured), moduleId: ca.newModuleId() });
    const nonce = randomBytes(32);
    const doc = await nsm.attest({ nonce });
    const code = (p: Promise<unknown>) => p.then(() => 'accepted', (e: unknown) => (e as AttestationError).code);
    expect(await code(verifyAttestation(doc, { nonce, cache: false }))).toBe('UNTRUSTED_ROOT');
    const other = measureImage(Buffer.from('console.log("other")\n'));
    expect(await code(verifyAttestation(doc, { roots: [ca.rootPem], nonce, pcrs: { 0: hex(other.pcr0) }, cache: false })))
      .toBe('PCR_MISMATCH');
    expect(await code(verifyAttestation(doc, { roots: [ca.rootPem], nonce: randomBytes(32), cache: false })))
      .toBe('NONCE_MISMATCH');
  });

  it('reuses a leaf for a while and replaces it while it still has 2 h to live', async () => {
    let now = Date.now();
    const clock = () => now;
    const timeCa = await EmulatorCa.createEphemeral({ now: clock });
    const nsm = new EmulatedNsm({ ca: timeCa, pcrs: pcrMap(measured), moduleId: timeCa.newModuleId(), now: clock });
    const leafOf = async () => hex(openCose(await nsm.attest({})).payload.get('certificate') as Uint8Array);
    const first = await leafOf();
    now += 30 * 60_000;
    expect(await leafOf()).toBe(first);
    now += 31 * 60_000;
    expect(await leafOf()).not.toBe(first);
    // Documents made later verify at their own time, under the same root.
    now += 25 * hour;
    const verified = await verifyAttestation(await nsm.attest({}), { roots: [timeCa.rootDer], now, cache: false });
    expect(verified.timestamp).toBe(now);
    expect(Math.abs(verified.leafNotAfter - now - 3 * hour)).toBeLessThan(1000);
  });

  it('refuses fields over 1024 bytes with InputTooLarge and accepts exactly 1024', async () => {
    const nsm = new EmulatedNsm({ ca, pcrs: pcrMap(measured), moduleId: ca.newModuleId() });
    for (const field of ['userData', 'nonce', 'publicKey'] as const) {
      const err = await nsm.attest({ [field]: new Uint8Array(1025) }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(EmulatedNsmError);
      expect((err as EmulatedNsmError).code).toBe('InputTooLarge');
    }
    const doc = openCose(await nsm.attest({ userData: new Uint8Array(1024), nonce: new Uint8Array(1024), publicKey: new Uint8Array(1024) }));
    expect((doc.payload.get('nonce') as Uint8Array).length).toBe(1024);
  });
});

describe('emulated documents match genuine ones field by field', () => {
  const dir = fixtureDir();
  const files = readdirSync(dir).filter((f) => f.endsWith('.cbor')).sort();
  let ca: EmulatorCa;
  beforeAll(async () => {
    ca = await EmulatorCa.createEphemeral();
  });

  it('has genuine documents to compare with', () => {
    expect(files.length).toBeGreaterThanOrEqual(10);
  });

  for (const file of files) {
    it(`matches ${file}`, async () => {
      const real = openCose(readFileSync(join(dir, file)));
      // Ask the emulator for a document with the same optional fields, present or null, of the same sizes.
      const sized = (key: string) => {
        const v = real.payload.get(key);
        return v === null ? undefined : randomBytes((v as Uint8Array).length);
      };
      const nsm = new EmulatedNsm({ ca, pcrs: pcrMap(measureImage(randomBytes(64))), moduleId: ca.newModuleId() });
      const ours = openCose(await nsm.attest({ userData: sized('user_data'), nonce: sized('nonce'), publicKey: sized('public_key') }));

      // COSE_Sign1: untagged array of 4, same protected header bytes, empty unprotected map, raw r||s.
      expect(ours.raw[0]).toBe(real.raw[0]);
      expect(ours.parts.length).toBe(real.parts.length);
      expect(hex(ours.parts[0] as Uint8Array)).toBe(hex(real.parts[0] as Uint8Array));
      expect((ours.parts[1] as Map<unknown, unknown>).size).toBe((real.parts[1] as Map<unknown, unknown>).size);
      expect((ours.parts[3] as Uint8Array).length).toBe((real.parts[3] as Uint8Array).length);
      // Payload: a CBOR map (major type 5) with the same keys in the same order.
      expect((ours.parts[2] as Uint8Array)[0]! >> 5).toBe((real.parts[2] as Uint8Array)[0]! >> 5);
      expect([...ours.payload.keys()]).toEqual([...real.payload.keys()]);

      for (const [key, realValue] of real.payload) {
        const value = ours.payload.get(key);
        expect(typeOf(value), key).toBe(typeOf(realValue));
        if (key === 'module_id') expect((value as string).length).toBe((realValue as string).length);
        if (key === 'digest') expect(value).toBe(realValue);
        if (['public_key', 'user_data', 'nonce'].includes(key) && realValue !== null) {
          expect((value as Uint8Array).length, key).toBe((realValue as Uint8Array).length);
        }
      }
      const pcrs = ours.payload.get('pcrs') as Map<unknown, Uint8Array>;
      const realPcrs = real.payload.get('pcrs') as Map<unknown, Uint8Array>;
      expect([...pcrs.keys()]).toEqual([...realPcrs.keys()]);
      expect([...pcrs.values()].map((v) => v.length)).toEqual([...realPcrs.values()].map((v) => v.length));

      // Certificates: same count, same CA shapes and curve, sizes within a third of the real ones.
      const bundle = ours.payload.get('cabundle') as Uint8Array[];
      const realBundle = real.payload.get('cabundle') as Uint8Array[];
      expect(bundle.length).toBe(realBundle.length);
      const pairs: Array<[Uint8Array, Uint8Array]> = [
        ...bundle.map((c, i) => [c, realBundle[i] as Uint8Array] as [Uint8Array, Uint8Array]),
        [ours.payload.get('certificate') as Uint8Array, real.payload.get('certificate') as Uint8Array],
      ];
      for (const [mine, theirs] of pairs) {
        const a = certShape(mine);
        const b = certShape(theirs);
        expect([a.ca, a.pathLength, a.bcCritical, a.curve, a.signature]).toEqual([b.ca, b.pathLength, b.bcCritical, b.curve, b.signature]);
        expect(mine.length / theirs.length).toBeGreaterThan(0.66);
        expect(mine.length / theirs.length).toBeLessThan(1.33);
      }
    });
  }
});

// The CBOR-level type as cbor-x reports it (an 8-byte uint decodes as bigint).
function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (v instanceof Uint8Array) return 'bytes';
  if (v instanceof Map) return 'map';
  if (Array.isArray(v)) return `array<${v.map(typeOf).join(',')}>`.replace(/(bytes,)+bytes/, 'bytes*');
  return typeof v;
}
