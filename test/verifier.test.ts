// The verifier against documents AWS's hardware produced: each verifies inside its validity window,
// fails EXPIRED today, and debug-mode ones fail DEBUG_MODE unless allowed. Policy checks and the
// chain cache are exercised on the same real documents.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  AWS_NITRO_ROOT_PEM,
  AWS_NITRO_ROOT_SHA256,
  AttestationError,
  ChainCache,
  decodeAttestationDocument,
  verifyAttestation,
  type AttestationErrorCode,
  type VerifyPolicy,
} from '../verifier/index.ts';
import { awsRootPem, loadFixtures } from './helpers/nitro-fixtures.ts';

const fixtures = loadFixtures();
const nonDebug = fixtures.filter((f) => !f.debug);
const hex = (b: Uint8Array | null): string | null => (b === null ? null : Buffer.from(b).toString('hex'));

async function codeOf(doc: Uint8Array, policy: VerifyPolicy): Promise<AttestationErrorCode | 'OK'> {
  try {
    await verifyAttestation(doc, policy);
    return 'OK';
  } catch (err) {
    if (err instanceof AttestationError) return err.code;
    throw err;
  }
}

describe('the pinned AWS root', () => {
  it('is the published AWS_NitroEnclaves_Root-G1 and the same as the fixture', () => {
    const der = Buffer.from(AWS_NITRO_ROOT_PEM.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
    expect(createHash('sha256').update(der).digest('hex')).toBe(AWS_NITRO_ROOT_SHA256);
    expect(AWS_NITRO_ROOT_SHA256).toBe('641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b');
    expect(AWS_NITRO_ROOT_PEM.trim()).toBe(awsRootPem().trim());
  });
});

describe('real Nitro documents', () => {
  it('has the fixtures the manifest lists', () => {
    expect(fixtures.length).toBe(11);
    expect(nonDebug.length).toBeGreaterThanOrEqual(5);
  });

  for (const f of fixtures) {
    describe(f.file, () => {
      it('verifies at its own timestamp, uncached, with its manifest contents', async () => {
        const doc = await verifyAttestation(f.bytes, { now: f.timestampMs, allowDebug: true, cache: false });
        expect(doc.moduleId).toBe(f.moduleId);
        expect(doc.timestamp).toBe(f.timestampMs);
        expect(doc.digest).toBe('SHA384');
        expect(doc.pcrs.size).toBe(f.pcrCount);
        expect(hex(doc.pcrs.get(0) ?? null)).toBe(f.pcr0);
        expect(hex(doc.pcrs.get(1) ?? null)).toBe(f.pcr1);
        expect(hex(doc.pcrs.get(2) ?? null)).toBe(f.pcr2);
        expect(doc.publicKey?.length ?? null).toBe(f.publicKeyBytes);
        expect(doc.userData?.length ?? null).toBe(f.userDataBytes);
        expect(doc.nonce?.length ?? null).toBe(f.nonceBytes);
        expect(doc.cabundle.length).toBe(4);
        // The leaf is the chain's shortest-lived certificate: its end is where the manifest's window ends.
        expect(doc.leafNotAfter).toBe(f.chainValidToS * 1000);
      });

      it('verifies at both ends of its chain window and fails EXPIRED just outside (skew 0)', async () => {
        const p = { allowDebug: true, cache: false as const, clockSkewMs: 0 };
        expect(await codeOf(f.bytes, { ...p, now: f.chainValidFromS * 1000 })).toBe('OK');
        expect(await codeOf(f.bytes, { ...p, now: f.chainValidToS * 1000 })).toBe('OK');
        expect(await codeOf(f.bytes, { ...p, now: f.chainValidFromS * 1000 - 1000 })).toBe('EXPIRED');
        expect(await codeOf(f.bytes, { ...p, now: f.chainValidToS * 1000 + 1000 })).toBe('EXPIRED');
      });

      it('fails EXPIRED today', async () => {
        expect(await codeOf(f.bytes, { allowDebug: true, cache: false })).toBe('EXPIRED');
      });

      it(f.debug ? 'fails DEBUG_MODE unless allowed' : 'passes the debug-mode check', async () => {
        expect(await codeOf(f.bytes, { now: f.timestampMs })).toBe(f.debug ? 'DEBUG_MODE' : 'OK');
      });
    });
  }

  it('decodes every fixture synchronously, with the payload bytes found inside the document', () => {
    for (const f of fixtures) {
      const d = decodeAttestationDocument(f.bytes);
      expect(d.tagged).toBe(false);
      expect(hex(d.protectedHeader)).toBe('a1013822');
      expect(d.signature.length).toBe(96);
      expect(Buffer.from(f.bytes).indexOf(Buffer.from(d.payloadBytes))).toBeGreaterThan(0);
    }
  });
});

describe('policy on real documents', () => {
  const f = nonDebug[0]!;
  const at = { now: f.timestampMs };

  it('accepts the expected PCRs, as hex, bytes or an allowlist', async () => {
    const other = 'ff'.repeat(48);
    expect(await codeOf(f.bytes, { ...at, pcrs: { 0: f.pcr0, 1: Buffer.from(f.pcr1, 'hex'), 2: [other, f.pcr2] } })).toBe('OK');
  });

  it('names the mismatching PCR index', async () => {
    const err = await verifyAttestation(f.bytes, { ...at, pcrs: { 0: f.pcr0, 2: 'ab'.repeat(48) } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AttestationError);
    expect((err as AttestationError).code).toBe('PCR_MISMATCH');
    expect((err as AttestationError).message).toContain('PCR2');
  });

  it('refuses a PCR the document does not carry', async () => {
    expect(await codeOf(f.bytes, { ...at, pcrs: { 31: 'ab'.repeat(48) } })).toBe('PCR_MISMATCH');
  });

  it('checks the nonce', async () => {
    const withNonce = fixtures.find((x) => !x.debug && x.nonceBytes !== null)!;
    const doc = await verifyAttestation(withNonce.bytes, { now: withNonce.timestampMs });
    expect(await codeOf(withNonce.bytes, { now: withNonce.timestampMs, nonce: doc.nonce! })).toBe('OK');
    const wrong = Uint8Array.from(doc.nonce!, (b, i) => (i === 0 ? b ^ 1 : b));
    expect(await codeOf(withNonce.bytes, { now: withNonce.timestampMs, nonce: wrong })).toBe('NONCE_MISMATCH');
    const without = fixtures.find((x) => !x.debug && x.nonceBytes === null)!;
    expect(await codeOf(without.bytes, { now: without.timestampMs, nonce: wrong })).toBe('NONCE_MISMATCH');
  });

  it('checks the age against maxAgeMs plus skew, and refuses documents from the future', async () => {
    const p = { maxAgeMs: 5_000, clockSkewMs: 1_000 };
    expect(await codeOf(f.bytes, { ...p, now: f.timestampMs + 6_000 })).toBe('OK');
    expect(await codeOf(f.bytes, { ...p, now: f.timestampMs + 6_001 })).toBe('TOO_OLD');
    expect(await codeOf(f.bytes, { ...p, now: f.timestampMs - 1_000 })).toBe('OK');
    expect(await codeOf(f.bytes, { ...p, now: f.timestampMs - 1_001 })).toBe('TOO_OLD');
  });

  it('reports the first failure in the fixed order: debug before PCRs, PCRs before nonce, nonce before age', async () => {
    const dbg = fixtures.find((x) => x.debug)!;
    const all = { pcrs: { 0: 'ab'.repeat(48) }, nonce: new Uint8Array(8), maxAgeMs: 0, clockSkewMs: 0 };
    expect(await codeOf(dbg.bytes, { ...all, now: dbg.timestampMs + 10_000 })).toBe('DEBUG_MODE');
    expect(await codeOf(f.bytes, { ...all, now: f.timestampMs + 10_000 })).toBe('PCR_MISMATCH');
    expect(await codeOf(f.bytes, { ...all, pcrs: {}, now: f.timestampMs + 10_000 })).toBe('NONCE_MISMATCH');
    // Chain checks come before policy: expired beats everything above.
    expect(await codeOf(dbg.bytes, { ...all })).toBe('EXPIRED');
  });

  it('trusts only the roots given: a PEM or DER root replaces the default', async () => {
    const der = Buffer.from(awsRootPem().replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
    expect(await codeOf(f.bytes, { ...at, roots: [awsRootPem()] })).toBe('OK');
    expect(await codeOf(f.bytes, { ...at, roots: [new Uint8Array(der)] })).toBe('OK');
    expect(await codeOf(f.bytes, { ...at, roots: [] })).toBe('UNTRUSTED_ROOT');
  });

  it('returns copies that do not alias the input buffer', async () => {
    const bytes = Uint8Array.from(f.bytes);
    const doc = await verifyAttestation(bytes, at);
    const pcr0 = hex(doc.pcrs.get(0)!);
    bytes.fill(0);
    expect(hex(doc.pcrs.get(0)!)).toBe(pcr0);
  });
});

describe('the chain cache', () => {
  it('remembers a chain, yet a cached chain is still checked against now', async () => {
    const cache = new ChainCache();
    const f = nonDebug[1]!;
    expect(await codeOf(f.bytes, { now: f.timestampMs, cache })).toBe('OK');
    expect(cache.size).toBe(1);
    expect(await codeOf(f.bytes, { now: f.timestampMs, cache })).toBe('OK');
    expect(await codeOf(f.bytes, { cache })).toBe('EXPIRED');
    expect(await codeOf(f.bytes, { now: f.chainValidFromS * 1000 - 120_000, cache })).toBe('EXPIRED');
    expect(cache.size).toBe(1);
  });

  it('gives the same verdict cached and uncached on every real document', async () => {
    const cache = new ChainCache();
    for (const f of fixtures) {
      for (const now of [f.timestampMs, Date.now(), f.chainValidToS * 1000 + 61_000]) {
        const cold = await codeOf(f.bytes, { now, cache: false });
        expect(await codeOf(f.bytes, { now, cache })).toBe(cold);
        expect(await codeOf(f.bytes, { now, cache })).toBe(cold);
      }
    }
  });

  it('does not let a trusted-root decision leak between policies', async () => {
    const cache = new ChainCache();
    const f = nonDebug[2]!;
    expect(await codeOf(f.bytes, { now: f.timestampMs, cache })).toBe('OK');
    expect(await codeOf(f.bytes, { now: f.timestampMs, cache, roots: [] })).toBe('UNTRUSTED_ROOT');
  });

  it('is bounded, dropping the least recently used chain', async () => {
    const cache = new ChainCache(2);
    for (const f of nonDebug.slice(0, 3)) await verifyAttestation(f.bytes, { now: f.timestampMs, cache });
    expect(cache.size).toBe(2);
    const first = decodeAttestationDocument(nonDebug[0]!.bytes);
    const third = decodeAttestationDocument(nonDebug[2]!.bytes);
    expect(cache.get([...first.cabundle, first.certificate])).toBeUndefined();
    expect(cache.get([...third.cabundle, third.certificate])).toBeDefined();
  });
});
