// The certificate chain: cabundle[0] must be byte-equal to a trusted root, then each cabundle entry is
// signed by the one before it, and the document's certificate by the last. pkijs does the X.509 work
// (signatures, name chaining, CA constraints) with node's WebCrypto passed explicitly at each call, so
// no global pkijs engine is assumed or changed. Validity in time is checked here, at `now` +- skew,
// against the window the chain proved; that check also runs for chains found in the cache.
import { createPublicKey, webcrypto, type KeyObject } from 'node:crypto';
import * as pkijs from 'pkijs';
import { ChainCache, type VerifiedChain } from './cache.ts';
import { AttestationError } from './errors.ts';

const cryptoEngine = new pkijs.CryptoEngine({ name: 'node-webcrypto', crypto: webcrypto as unknown as pkijs.CryptoEngineParameters['crypto'] });
/** pkijs' result code for "a certificate is not valid at checkDate". */
const pkijsCodeNotValidAtDate = 8;

export interface ChainInput {
  cabundle: readonly Uint8Array[];
  certificate: Uint8Array;
  roots: readonly Uint8Array[];
  cache: ChainCache | null;
  now: number;
  clockSkewMs: number;
}

export async function verifyChain(input: ChainInput): Promise<VerifiedChain> {
  const root = input.cabundle[0] as Uint8Array;
  if (!input.roots.some((trusted) => Buffer.compare(trusted, root) === 0)) {
    throw new AttestationError('UNTRUSTED_ROOT', 'cabundle[0] is not a trusted root certificate');
  }
  const chain = [...input.cabundle, input.certificate];
  let verified = input.cache?.get(chain);
  if (verified === undefined) {
    verified = await validateChain(chain).catch((err: unknown) => {
      // pkijs and asn1js see hostile bytes here; whatever they throw is a bad chain, never a crash.
      if (err instanceof AttestationError) throw err;
      throw new AttestationError('BAD_CHAIN', `certificate chain rejected: ${(err as Error)?.message}`, { cause: err });
    });
    input.cache?.set(chain, verified);
  }
  checkValidAt(verified, input.now, input.clockSkewMs);
  return verified;
}

function checkValidAt(chain: VerifiedChain, now: number, skew: number): void {
  if (now + skew < chain.notBefore) {
    throw new AttestationError('EXPIRED', `the chain is not valid before ${new Date(chain.notBefore).toISOString()}`);
  }
  if (now - skew > chain.notAfter) {
    throw new AttestationError('EXPIRED', `the chain expired at ${new Date(chain.notAfter).toISOString()}`);
  }
}

/** Everything about the chain that does not depend on the time of the check. */
async function validateChain(chain: readonly Uint8Array[]): Promise<VerifiedChain> {
  const certs = chain.map(parseCertificate);
  const notBefore = Math.max(...certs.map((c) => c.notBefore.value.getTime()));
  const notAfter = Math.min(...certs.map((c) => c.notAfter.value.getTime()));
  if (!Number.isFinite(notBefore) || !Number.isFinite(notAfter)) {
    throw new AttestationError('BAD_CHAIN', 'a certificate has an unreadable validity period');
  }
  const leaf = certs[certs.length - 1] as pkijs.Certificate;
  const engine = new pkijs.CertificateChainValidationEngine({
    trustedCerts: [certs[0] as pkijs.Certificate],
    certs: certs.slice(1),
    // pkijs checks dates at one instant; any instant of the window will do, we check `now` ourselves.
    checkDate: new Date(notBefore),
    findIssuer: strictIssuerFinder(certs),
  });
  const result = await engine.verify({}, cryptoEngine);
  if (!result.result) {
    const code = result.resultCode === pkijsCodeNotValidAtDate ? 'EXPIRED' : 'BAD_CHAIN';
    throw new AttestationError(code, `certificate chain rejected: ${result.resultMessage}`);
  }
  // pkijs drops duplicate certificates; the path must be the whole bundle, in order.
  if (result.certificatePath?.length !== certs.length) {
    throw new AttestationError('BAD_CHAIN', 'the certificate path does not use every cabundle entry');
  }
  return { notBefore, notAfter, leafNotAfter: leaf.notAfter.value.getTime(), leafKey: leafKeyOf(leaf) };
}

function parseCertificate(der: Uint8Array, index: number, chain: readonly Uint8Array[]): pkijs.Certificate {
  const what = index === chain.length - 1 ? 'certificate' : `cabundle[${index}]`;
  try {
    return pkijs.Certificate.fromBER(der);
  } catch (err) {
    throw new AttestationError('BAD_CHAIN', `${what} is not an X.509 certificate`, { cause: err });
  }
}

/**
 * Replaces pkijs' path building (which searches every certificate, and can loop on hostile cross-signed
 * sets) with the one path AWS's procedure allows: each certificate's issuer is the one before it.
 */
function strictIssuerFinder(certs: readonly pkijs.Certificate[]): pkijs.FindIssuerCallback {
  const issuerOf = new Map<pkijs.Certificate, pkijs.Certificate>();
  for (let i = 1; i < certs.length; i++) issuerOf.set(certs[i] as pkijs.Certificate, certs[i - 1] as pkijs.Certificate);
  return async (certificate) => {
    const issuer = issuerOf.get(certificate);
    if (issuer === undefined) return [];
    try {
      return (await certificate.verify(issuer, cryptoEngine)) ? [issuer] : [];
    } catch {
      return [];
    }
  };
}

function leafKeyOf(leaf: pkijs.Certificate): KeyObject {
  let key: KeyObject;
  try {
    const spki = leaf.subjectPublicKeyInfo.toSchema().toBER();
    key = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
  } catch (err) {
    throw new AttestationError('BAD_CHAIN', 'the leaf public key cannot be read', { cause: err });
  }
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'secp384r1') {
    throw new AttestationError('BAD_CHAIN', 'the leaf key is not an EC P-384 key');
  }
  return key;
}
