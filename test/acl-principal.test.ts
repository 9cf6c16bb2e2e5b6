// Principals (protocol/principal.ts) and identity key files (client/identity.ts).
import { ECDH, generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, rmSync, statSync, chmodSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { generateIdentity, IdentityError, identityEnvVar, loadIdentity, saveIdentity, toPrincipalSigner } from '../client/identity.ts';
import {
  Principal,
  PrincipalError,
  principalFromBytes,
  principalFromPublicKey,
  principalFromText,
  principalTag,
  principalTextPrefix,
  signerFromPrivateKey,
  verifyPrincipalSignature,
} from '../protocol/principal.ts';

const dir = mkdtempSync(join(tmpdir(), 'ekv-acl-principal-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function codeOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
}

describe('principal forms', () => {
  it('Ed25519: 33-byte binary, 64-char text, round trips', () => {
    const s = signerFromPrivateKey(generateIdentity('ed25519'));
    expect(s.principal.alg).toBe('ed25519');
    expect(s.principal.bytes.length).toBe(33);
    expect(s.principal.bytes[0]).toBe(principalTag.ed25519);
    expect(s.principal.text).toMatch(/^ekv1[a-z2-7]{60}$/);
    expect(principalFromText(s.principal.text).equals(s.principal)).toBe(true);
    expect(principalFromBytes(s.principal.bytes).text).toBe(s.principal.text);
  });

  it('P-256: compressed 34-byte binary, 65-char text, round trips', () => {
    const s = signerFromPrivateKey(generateIdentity('p256'));
    expect(s.principal.alg).toBe('p256');
    expect(s.principal.bytes.length).toBe(34);
    expect([0x02, 0x03]).toContain(s.principal.bytes[1]);
    expect(s.principal.text).toMatch(/^ekv1[a-z2-7]{61}$/);
    expect(principalFromText(s.principal.text).id).toBe(s.principal.id);
  });

  it('text parsing is case-insensitive', () => {
    const p = signerFromPrivateKey(generateIdentity()).principal;
    expect(principalFromText(p.text.toUpperCase()).equals(p)).toBe(true);
  });

  it('a mistyped character fails the checksum', () => {
    const p = signerFromPrivateKey(generateIdentity()).principal;
    const i = 20;
    const typo = p.text.slice(0, i) + (p.text[i] === 'a' ? 'b' : 'a') + p.text.slice(i + 1);
    expect(() => principalFromText(typo)).toThrow(/checksum/);
  });

  it('refuses bad binary and text forms with BAD_PRINCIPAL', () => {
    const good = signerFromPrivateKey(generateIdentity()).principal;
    const bad: Array<() => unknown> = [
      () => principalFromBytes(new Uint8Array(0)),
      () => principalFromBytes(Buffer.concat([Buffer.of(0x09), good.bytes.subarray(1)])),
      () => principalFromBytes(good.bytes.subarray(0, 32)),
      () => principalFromBytes(Buffer.concat([good.bytes, Buffer.of(0)])),
      () => principalFromBytes(Buffer.concat([Buffer.of(principalTag.p256, 0x04), Buffer.alloc(32)])),
      () => principalFromText(''),
      () => principalFromText('ekv1'),
      () => principalFromText(good.text.slice(4)),
      () => principalFromText(`${good.text}a`),
      () => principalFromText(good.text.slice(0, -1)),
      () => principalFromText(`${good.text.slice(0, 30)}1${good.text.slice(31)}`),
      () => principalFromText('x'.repeat(10_000)),
    ];
    for (const f of bad) expect(codeOf(f)).toBe('BAD_PRINCIPAL');
  });

  it('fast-check: any bytes either parse to a principal that round-trips, or fail with BAD_PRINCIPAL', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), (b) => {
        try {
          const p = principalFromBytes(b);
          expect(principalFromText(p.text).bytes.equals(Buffer.from(b))).toBe(true);
        } catch (err) {
          expect(err).toBeInstanceOf(PrincipalError);
        }
      }),
      { numRuns: 500 },
    );
    fc.assert(
      fc.property(fc.string({ maxLength: 70 }), (s) => {
        expect(codeOf(() => principalFromText(principalTextPrefix + s)) ?? 'ok').toMatch(/^(ok|BAD_PRINCIPAL)$/);
      }),
      { numRuns: 500 },
    );
  });
});

describe('signatures', () => {
  for (const alg of ['ed25519', 'p256'] as const) {
    it(`${alg}: a signature verifies for its principal only, over its message only`, () => {
      const a = signerFromPrivateKey(generateIdentity(alg));
      const b = signerFromPrivateKey(generateIdentity(alg));
      const msg = Buffer.from('hello');
      const sig = a.sign(msg);
      expect(sig.length).toBe(64);
      expect(verifyPrincipalSignature(a.principal, msg, sig)).toBe(true);
      expect(verifyPrincipalSignature(a.principal.bytes, msg, sig)).toBe(true);
      expect(verifyPrincipalSignature(b.principal, msg, sig)).toBe(false);
      expect(verifyPrincipalSignature(a.principal, Buffer.from('hellO'), sig)).toBe(false);
      const flipped = Buffer.from(sig);
      flipped[5] = (flipped[5] as number) ^ 1;
      expect(verifyPrincipalSignature(a.principal, msg, flipped)).toBe(false);
      expect(verifyPrincipalSignature(a.principal, msg, sig.subarray(0, 63))).toBe(false);
    });
  }

  it('P-256 signatures made by node directly (ieee-p1363) verify', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const sig = sign('sha256', Buffer.from('m'), { key: privateKey, dsaEncoding: 'ieee-p1363' });
    expect(verifyPrincipalSignature(principalFromPublicKey(publicKey), Buffer.from('m'), sig)).toBe(true);
  });

  it('a P-256 principal off the curve parses but never verifies', () => {
    // About half of all x have no point on the curve; take the first small one.
    const x = Buffer.alloc(32);
    for (x[31] = 1; ; x[31] += 1) {
      try {
        ECDH.convertKey(Buffer.concat([Buffer.of(0x02), x]), 'prime256v1');
      } catch {
        break;
      }
    }
    const p = principalFromBytes(Buffer.concat([Buffer.of(principalTag.p256, 0x02), x]));
    expect(p).toBeInstanceOf(Principal);
    expect(p.publicKey()).toBeNull();
    expect(verifyPrincipalSignature(p, Buffer.from('m'), Buffer.alloc(64))).toBe(false);
  });

  it('garbage principal bytes never throw from verify', () => {
    expect(verifyPrincipalSignature(Buffer.of(1, 2, 3), Buffer.from('m'), Buffer.alloc(64))).toBe(false);
  });
});

describe('identity files', () => {
  for (const alg of ['ed25519', 'p256'] as const) {
    it(`${alg}: saved 0600 as PEM PKCS#8, loaded back to the same principal, signs`, () => {
      const file = join(dir, `id-${alg}.pem`);
      const key = generateIdentity(alg);
      const principal = saveIdentity(file, key);
      expect(statSync(file).mode & 0o777).toBe(0o600);
      const id = loadIdentity(file, {});
      expect(id.principal.equals(principal)).toBe(true);
      const sig = id.sign(Buffer.from('x'));
      expect(verifyPrincipalSignature(principal, Buffer.from('x'), sig)).toBe(true);
      const hs = toPrincipalSigner(id);
      expect(Buffer.from(hs.principal).equals(principal.bytes)).toBe(true);
    });
  }

  it('refuses to replace an existing key unless asked', () => {
    const file = join(dir, 'keep.pem');
    const first = saveIdentity(file, generateIdentity());
    expect(codeOf(() => saveIdentity(file, generateIdentity()))).toBe('EXISTS');
    expect(loadIdentity(file, {}).principal.equals(first)).toBe(true);
    const second = saveIdentity(file, generateIdentity(), { overwrite: true });
    expect(loadIdentity(file, {}).principal.equals(second)).toBe(true);
  });

  it(`uses ${identityEnvVar} when no file is given, and NO_IDENTITY when neither is set`, () => {
    const file = join(dir, 'env.pem');
    const p = saveIdentity(file, generateIdentity());
    expect(loadIdentity(undefined, { [identityEnvVar]: file }).principal.equals(p)).toBe(true);
    expect(codeOf(() => loadIdentity(undefined, {}))).toBe('NO_IDENTITY');
  });

  it('refuses a group/world-readable key, a non-key file, an unsupported key type', () => {
    const open = join(dir, 'open.pem');
    saveIdentity(open, generateIdentity());
    chmodSync(open, 0o644);
    expect(codeOf(() => loadIdentity(open, {}))).toBe('UNSAFE_PERMISSIONS');
    const junk = join(dir, 'junk.pem');
    writeFileSync(junk, 'not a key', { mode: 0o600 });
    expect(codeOf(() => loadIdentity(junk, {}))).toBe('BAD_KEY_FILE');
    expect(codeOf(() => loadIdentity(join(dir, 'missing.pem'), {}))).toBe('BAD_KEY_FILE');
    const rsa = join(dir, 'rsa.pem');
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
    writeFileSync(rsa, privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
    expect(codeOf(() => loadIdentity(rsa, {}))).toBe('BAD_KEY_FILE');
    expect(() => loadIdentity(rsa, {})).toThrow(IdentityError);
  });
});
