// The chain check has a fast path (node:crypto's X509Certificate) that may only accept chains the full
// pkijs check accepts too, with the same facts (window, leaf expiry, leaf key); everything else it leaves
// to the full check, which decides the verdict. Checked here on the real chains (all fast), the emulator's
// and on validly signed chains of shapes around the profile's edges (CA flags, key usage, unknown and
// critical extensions, other curves, dates that never overlap), compared verdict by verdict.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { chainPathCounts, fastValidateChain, fullValidateChain } from '../verifier/chain.ts';
import { decodeAttestationDocument } from '../verifier/index.ts';
import { EmulatorCa } from '../emulator/ca.ts';
import { loadFixtures } from './helpers/nitro-fixtures.ts';

type X509Crypto = NonNullable<Parameters<typeof x509.X509CertificateGenerator.create>[1]>;
const crypto = webcrypto as unknown as X509Crypto;
const p384 = { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' };
const p256 = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
const hour = 3_600_000;
const start = Date.UTC(2025, 0, 1);

type Verdict = { ok: true; notBefore: number; notAfter: number; leafNotAfter: number; key: string } | { ok: false };

async function full(chain: Uint8Array[]): Promise<Verdict> {
  try {
    const v = await fullValidateChain(chain);
    return { ok: true, notBefore: v.notBefore, notAfter: v.notAfter, leafNotAfter: v.leafNotAfter, key: v.leafKey.export({ format: 'der', type: 'spki' }).toString('hex') };
  } catch {
    return { ok: false };
  }
}

function fast(chain: Uint8Array[]): Verdict | null {
  const v = fastValidateChain(chain);
  return v === null ? null : { ok: true, notBefore: v.notBefore, notAfter: v.notAfter, leafNotAfter: v.leafNotAfter, key: v.leafKey.export({ format: 'der', type: 'spki' }).toString('hex') };
}

/** The fast path agrees with the full check or stays out; returns whether it took the chain. */
async function agree(chain: Uint8Array[]): Promise<boolean> {
  const f = fast(chain);
  const expected = await full(chain);
  if (f !== null) expect(f).toEqual(expected);
  return f !== null;
}

interface Cert {
  der: Uint8Array;
  keys: webcrypto.CryptoKeyPair;
  name: string;
}

interface Shape {
  alg?: typeof p384 | typeof p256;
  extensions?: x509.Extension[];
  notBefore?: number;
  notAfter?: number;
  issuerName?: string;
}

async function cert(name: string, issuer: Cert | null, shape: Shape): Promise<Cert> {
  const keys = (await webcrypto.subtle.generateKey(shape.alg ?? p384, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const signer = issuer ?? { keys, name };
  const c = await x509.X509CertificateGenerator.create(
    {
      subject: name,
      issuer: shape.issuerName ?? signer.name,
      notBefore: new Date(shape.notBefore ?? start - hour),
      notAfter: new Date(shape.notAfter ?? start + 24 * hour),
      publicKey: keys.publicKey,
      signingKey: signer.keys.privateKey,
      signingAlgorithm: p384,
      extensions: shape.extensions ?? [],
    },
    crypto,
  );
  return { der: new Uint8Array(c.rawData), keys, name };
}

const ku = x509.KeyUsageFlags;
const caExt = (): x509.Extension[] => [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(ku.keyCertSign | ku.cRLSign, true)];
const leafExt = (): x509.Extension[] => [new x509.BasicConstraintsExtension(false, undefined, true), new x509.KeyUsagesExtension(ku.digitalSignature, true)];

async function chainOf(mid: Shape, leaf: Shape = {}): Promise<Uint8Array[]> {
  const root = await cert('CN=root', null, { extensions: caExt() });
  const inter = await cert('CN=intermediate', root, { extensions: caExt(), ...mid });
  const end = await cert('CN=leaf', inter, { extensions: leafExt(), ...leaf });
  return [root.der, inter.der, end.der];
}

describe('the fast chain check', () => {
  it('takes every real Nitro chain and agrees with pkijs on it', async () => {
    for (const f of loadFixtures()) {
      const d = decodeAttestationDocument(f.bytes);
      expect(await agree([...d.cabundle, d.certificate]), f.file).toBe(true);
    }
  });

  it("takes the emulator's chains", async () => {
    const ca = await EmulatorCa.createEphemeral();
    const leaf = await ca.issueLeaf(ca.newModuleId());
    expect(await agree([...leaf.cabundle, leaf.certificate])).toBe(true);
  });

  it('agrees with pkijs, or leaves the chain to it, on chains around the edges of its profile', async () => {
    const unknownCritical = new x509.Extension('1.3.6.1.4.1.99999.1', true, new Uint8Array([0x05, 0x00]));
    const unknownPlain = new x509.Extension('1.3.6.1.4.1.99999.1', false, new Uint8Array([0x05, 0x00]));
    const cases: Array<[string, Promise<Uint8Array[]>, boolean | null]> = [
      ['plain', chainOf({}), true],
      ['intermediate not a CA', chainOf({ extensions: [new x509.BasicConstraintsExtension(false, undefined, true), new x509.KeyUsagesExtension(ku.keyCertSign, true)] }), false],
      ['intermediate without keyCertSign', chainOf({ extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(ku.digitalSignature, true)] }), false],
      ['intermediate without BasicConstraints', chainOf({ extensions: [new x509.KeyUsagesExtension(ku.keyCertSign, true)] }), false],
      ['intermediate with a path length', chainOf({ extensions: [new x509.BasicConstraintsExtension(true, 2, true), new x509.KeyUsagesExtension(ku.keyCertSign, true)] }), true],
      ['intermediate with an unknown critical extension', chainOf({ extensions: [...caExt(), unknownCritical] }), null],
      ['intermediate with an unknown extension', chainOf({ extensions: [...caExt(), unknownPlain] }), null],
      ['leaf with an unknown critical extension', chainOf({}, { extensions: [...leafExt(), unknownCritical] }), null],
      ['leaf on P-256', chainOf({}, { alg: p256 }), false],
      ['leaf issuer name not the intermediate', chainOf({}, { issuerName: 'CN=someone else' }), false],
      ['dates that never overlap', chainOf({ notBefore: start + 48 * hour, notAfter: start + 72 * hour }), false],
    ];
    for (const [name, built, fastTakes] of cases) {
      const chain = await built;
      const took = await agree(chain);
      const verdict = await full(chain);
      if (fastTakes === true) expect({ name, took, ok: verdict.ok }).toEqual({ name, took: true, ok: true });
      if (fastTakes === false) expect({ name, took, ok: verdict.ok }).toEqual({ name, took: false, ok: false });
      if (fastTakes === null) expect({ name, took }).toEqual({ name, took: false });
    }
  });

  it('never takes a chain with a flipped byte (a signature or a signed field)', async () => {
    const d = decodeAttestationDocument(loadFixtures().find((f) => !f.debug)!.bytes);
    const chain = [...d.cabundle, d.certificate];
    const before = chainPathCounts.fast;
    let taken = 0;
    for (let c = 1; c < chain.length; c++) {
      const der = chain[c]!;
      for (let at = 0; at < der.length; at += 19) {
        const bad = Uint8Array.from(der);
        bad[at] = (bad[at] as number) ^ 0x01;
        const mutated = chain.map((x, i) => (i === c ? bad : x));
        if (await agree(mutated)) taken++;
      }
    }
    expect(taken).toBe(0);
    expect(chainPathCounts.fast).toBe(before);
  });
});
