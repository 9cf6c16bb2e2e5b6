// The certificate chain: cabundle[0] must be byte-equal to a trusted root, then each cabundle entry is
// signed by the one before it, and the document's certificate by the last. Validity in time is checked
// here, at `now` +- skew, against the window the chain proved; that check also runs for chains found in
// the cache.
//
// Two implementations, one verdict. The fast path (node:crypto's X509Certificate, i.e. OpenSSL: parse,
// `verify`, `checkIssued`; der.ts for the fields X509Certificate does not expose) accepts only chains of
// a narrow, fully checked profile (v3, ES384 everywhere, byte-equal issuer/subject names, CA issuers with
// keyCertSign, extensions among BasicConstraints, KeyUsage, SubjectKeyIdentifier, AuthorityKeyIdentifier,
// CRLDistributionPoints, dates that overlap), for which pkijs' checks pass too; it never refuses. Every
// chain outside the profile, and every chain that fails any fast check, goes to the complete pkijs check
// (signatures, name chaining, CA constraints, critical extensions, policies), loaded only then, which
// decides the verdict and its code exactly as before. So the codes and their order do not change, and
// a genuine Nitro or emulator chain costs four OpenSSL signature checks instead of pkijs' JavaScript.
import { createPublicKey, webcrypto, X509Certificate, type KeyObject } from 'node:crypto';
import type * as Pkijs from 'pkijs';
import { ChainCache, type VerifiedChain } from './cache.ts';
import { basicConstraintsCa, certFields, keyUsageFirstByte, type CertFields } from './der.ts';
import { AttestationError } from './errors.ts';

/** pkijs' result code for "a certificate is not valid at checkDate". */
const pkijsCodeNotValidAtDate = 8;

/** How many chains each path decided (tests and benchmarks read it). */
export const chainPathCounts = { fast: 0, full: 0 };

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
    verified = fastValidateChain(chain) ?? (await fullValidateChain(chain).catch((err: unknown) => {
      // pkijs and asn1js see hostile bytes here; whatever they throw is a bad chain, never a crash.
      if (err instanceof AttestationError) throw err;
      throw new AttestationError('BAD_CHAIN', `certificate chain rejected: ${(err as Error)?.message}`, { cause: err });
    }));
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

// ---------------------------------------------------------------- the fast path

/** ecdsa-with-SHA384, no parameters: the only signature algorithm of the fast path. */
const es384AlgDer = Buffer.from('300a06082a8648ce3d040303', 'hex');
const oidBasicConstraints = '2.5.29.19';
const oidKeyUsage = '2.5.29.15';
/** Extensions the fast path accepts only as non-critical (pkijs' checks do not read them here). */
const passiveExtensions = new Set(['2.5.29.14', '2.5.29.35', '2.5.29.31']);
const keyCertSignBit = 0x04;

interface FastCert {
  x509: X509Certificate;
  /** x509.publicKey, read once (each read builds a new KeyObject). */
  key: KeyObject;
  fields: CertFields;
  ca: boolean;
  keyCertSign: boolean | null;
}

/**
 * The chain's time-independent facts if it fits the profile and every check passes; otherwise null
 * (never a refusal: the full check decides those). Pure, synchronous, no pkijs.
 */
export function fastValidateChain(chain: readonly Uint8Array[]): VerifiedChain | null {
  try {
    return fastChecks(chain);
  } catch {
    // OpenSSL refusing hostile bytes (a key it cannot decode, ...): the full check decides.
    return null;
  }
}

function fastChecks(chain: readonly Uint8Array[]): VerifiedChain | null {
  const certs: FastCert[] = [];
  for (const der of chain) {
    const c = fastCert(der);
    if (c === null) return null;
    certs.push(c);
  }
  // pkijs drops duplicates and then refuses the shortened path: leave such chains to it.
  for (let i = 0; i < certs.length; i++) {
    for (let j = i + 1; j < certs.length; j++) if (Buffer.compare(certs[i]!.fields.tbs, certs[j]!.fields.tbs) === 0) return null;
  }
  let notBefore = -Infinity;
  let notAfter = Infinity;
  for (const c of certs) {
    notBefore = Math.max(notBefore, c.fields.notBefore);
    notAfter = Math.min(notAfter, c.fields.notAfter);
  }
  if (notBefore > notAfter) return null; // never valid together: the full check reports EXPIRED
  // Every issuer (the root included) is a CA allowed to sign certificates.
  for (let i = 0; i < certs.length - 1; i++) {
    const issuer = certs[i]!;
    if (!issuer.ca || issuer.keyCertSign === false || !issuer.x509.ca) return null;
    if (!isP384(issuer.key)) return null;
  }
  for (let i = 1; i < certs.length; i++) {
    const cert = certs[i]!;
    const issuer = certs[i - 1]!;
    if (Buffer.compare(cert.fields.issuer, issuer.fields.subject) !== 0) return null;
    if (!cert.x509.checkIssued(issuer.x509)) return null;
    if (!cert.x509.verify(issuer.key)) return null;
  }
  const leaf = certs[certs.length - 1]!;
  if (!isP384(leaf.key)) return null;
  chainPathCounts.fast++;
  return { notBefore, notAfter, leafNotAfter: leaf.fields.notAfter, leafKey: leaf.key };
}

function fastCert(der: Uint8Array): FastCert | null {
  const fields = certFields(der);
  if (fields === null) return null;
  if (Buffer.compare(fields.outerAlg, es384AlgDer) !== 0 || Buffer.compare(fields.innerAlg, es384AlgDer) !== 0) return null;
  let ca: boolean | null = null;
  let keyCertSign: boolean | null = null;
  const seen = new Set<string>();
  for (const e of fields.extensions) {
    if (seen.has(e.oid)) return null;
    seen.add(e.oid);
    if (e.oid === oidBasicConstraints) {
      ca = basicConstraintsCa(e.value);
      if (ca === null) return null;
    } else if (e.oid === oidKeyUsage) {
      const first = keyUsageFirstByte(e.value);
      if (first === null) return null;
      keyCertSign = (first & keyCertSignBit) !== 0;
    } else if (!passiveExtensions.has(e.oid) || e.critical) return null;
  }
  const x509 = new X509Certificate(der);
  return { x509, key: x509.publicKey, fields, ca: ca === true, keyCertSign };
}

function isP384(key: KeyObject): boolean {
  return key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'secp384r1';
}

// ---------------------------------------------------------------- the full check (pkijs)

let pkijsLoaded: Promise<{ pkijs: typeof Pkijs; engine: Pkijs.CryptoEngine }> | null = null;

/** pkijs and its engine on node's WebCrypto, loaded at the first chain the fast path leaves to it. */
function loadPkijs(): Promise<{ pkijs: typeof Pkijs; engine: Pkijs.CryptoEngine }> {
  pkijsLoaded ??= import('pkijs').then((pkijs) => ({
    pkijs,
    engine: new pkijs.CryptoEngine({ name: 'node-webcrypto', crypto: webcrypto as unknown as Pkijs.CryptoEngineParameters['crypto'] }),
  }));
  return pkijsLoaded;
}

/** Everything about the chain that does not depend on the time of the check. */
export async function fullValidateChain(chain: readonly Uint8Array[]): Promise<VerifiedChain> {
  const { pkijs, engine: cryptoEngine } = await loadPkijs();
  chainPathCounts.full++;
  const certs = chain.map((der, i) => parseCertificate(pkijs, der, i, chain));
  const notBefore = Math.max(...certs.map((c) => c.notBefore.value.getTime()));
  const notAfter = Math.min(...certs.map((c) => c.notAfter.value.getTime()));
  if (!Number.isFinite(notBefore) || !Number.isFinite(notAfter)) {
    throw new AttestationError('BAD_CHAIN', 'a certificate has an unreadable validity period');
  }
  const leaf = certs[certs.length - 1] as Pkijs.Certificate;
  const engine = new pkijs.CertificateChainValidationEngine({
    trustedCerts: [certs[0] as Pkijs.Certificate],
    certs: certs.slice(1),
    // pkijs checks dates at one instant; any instant of the window will do, we check `now` ourselves.
    checkDate: new Date(notBefore),
    findIssuer: strictIssuerFinder(certs, cryptoEngine),
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

function parseCertificate(pkijs: typeof Pkijs, der: Uint8Array, index: number, chain: readonly Uint8Array[]): Pkijs.Certificate {
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
function strictIssuerFinder(certs: readonly Pkijs.Certificate[], cryptoEngine: Pkijs.CryptoEngine): Pkijs.FindIssuerCallback {
  const issuerOf = new Map<Pkijs.Certificate, Pkijs.Certificate>();
  for (let i = 1; i < certs.length; i++) issuerOf.set(certs[i] as Pkijs.Certificate, certs[i - 1] as Pkijs.Certificate);
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

function leafKeyOf(leaf: Pkijs.Certificate): KeyObject {
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
