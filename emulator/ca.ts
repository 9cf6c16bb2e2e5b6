// The emulator's certificate authority: a P-384 chain shaped like AWS's Nitro
// PKI (root -> regional -> zonal -> instance CA -> short-lived signing leaf),
// so that documents signed with it exercise the same verifier paths as real
// ones. Only the root is persisted: a restarted local ring keeps its trust
// anchor, while intermediates and leaves are re-issued in memory, before
// expiry, as AWS rotates its own.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { KeyObject, randomBytes, webcrypto } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  caBackdateMs, instanceLifetimeMs, leafBackdateMs, leafLifetimeMs,
  regionalLifetimeMs, rootLifetimeMs, zonalLifetimeMs,
} from './tee-constants.ts';

type CryptoKeyPair = webcrypto.CryptoKeyPair;
const crypto = webcrypto;
x509.cryptoProvider.set(crypto);

const algorithm = { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' } as const;
const rootKeyFile = 'root-key.pem';
const rootCertFile = 'root-cert.pem';
const region = 'local-1';
const { digitalSignature, nonRepudiation, keyCertSign, cRLSign } = x509.KeyUsageFlags;

/** A key that signs attestation documents, with the chain that vouches for it. */
export interface SigningLeaf {
  certificate: Uint8Array;      // DER
  privateKey: KeyObject;        // for node:crypto sign (ieee-p1363 r||s)
  notBefore: number;            // ms
  notAfter: number;             // ms
  cabundle: Uint8Array[];       // DER, root first: [root, regional, zonal, instance]
}

export interface EmulatorCaOptions {
  now?: () => number;           // ms since epoch; injected so tests can move time
}

interface Issued {
  cert: x509.X509Certificate;
  der: Uint8Array;
  keys: CryptoKeyPair;
  notAfter: number;
}

// The three intermediate levels, in issue order. Each must outlive the
// longest certificate it may issue, which decides when it is re-issued.
interface Level {
  lifetimeMs: number;
  childLifetimeMs: number;
  pathLength: number;
  usages: x509.KeyUsageFlags;
  subject: (ids: ChainIds) => string;
}

interface ChainIds { regional: string; zonal: string; instance: string }

const levels: readonly Level[] = [
  {
    lifetimeMs: regionalLifetimeMs, childLifetimeMs: zonalLifetimeMs, pathLength: 2,
    usages: digitalSignature | keyCertSign | cRLSign,
    subject: (ids) => `C=US, O=enclave-kv, OU=emulator, CN=${ids.regional}.${region}.emulator.nitro-enclaves`,
  },
  {
    lifetimeMs: zonalLifetimeMs, childLifetimeMs: instanceLifetimeMs, pathLength: 1,
    usages: digitalSignature | keyCertSign | cRLSign,
    subject: (ids) =>
      `CN=${ids.zonal}.zonal.${region}.emulator.nitro-enclaves, OU=emulator, O=enclave-kv, C=US, ST=WA, L=Seattle`,
  },
  {
    lifetimeMs: instanceLifetimeMs, childLifetimeMs: leafLifetimeMs, pathLength: 0,
    usages: keyCertSign,
    subject: (ids) =>
      `C=US, ST=Washington, L=Seattle, O=enclave-kv, OU=emulator, CN=${ids.instance}.${region}.emulator.nitro-enclaves`,
  },
];

export class EmulatorCa {
  readonly rootPem: string;
  readonly rootDer: Uint8Array;
  /** The emulated EC2 instance id (`i-` + 17 hex), the prefix of every module id. */
  readonly instanceId: string;
  readonly #root: Issued;
  readonly #now: () => number;
  readonly #ids: ChainIds;
  #chain: Issued[] = [];
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(root: Issued, now: () => number) {
    this.#root = root;
    this.#now = now;
    this.rootDer = root.der;
    this.rootPem = root.cert.toString('pem') + '\n';
    this.instanceId = `i-${hex(9).slice(0, 17)}`;
    this.#ids = { regional: hex(8), zonal: hex(8), instance: this.instanceId };
  }

  /** A CA whose root lives only in memory (tests). */
  static async createEphemeral(options: EmulatorCaOptions = {}): Promise<EmulatorCa> {
    const now = options.now ?? Date.now;
    return new EmulatorCa(await createRoot(now()), now);
  }

  /** Loads the root from `dir`, creating and saving one (mode 0600) on first use. */
  static async loadOrCreate(dir: string, options: EmulatorCaOptions = {}): Promise<EmulatorCa> {
    const now = options.now ?? Date.now;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const loaded = await loadRoot(dir);
    if (loaded) return new EmulatorCa(loaded, now);
    const root = await createRoot(now());
    await saveRoot(dir, root);
    return new EmulatorCa(root, now);
  }

  /** A fresh module id shaped like Nitro's: `<instance id>-enc<16 hex>` (39 characters). */
  newModuleId(): string {
    return `${this.instanceId}-enc${hex(8)}`;
  }

  /** The current bundle, root first, re-issuing intermediates near expiry. */
  cabundle(): Promise<Uint8Array[]> {
    return this.#serialized(async () => {
      await this.#refreshChain(this.#now());
      return this.#bundle();
    });
  }

  /** A new signing leaf for `moduleId`, valid 3 h from 3 s before now. */
  issueLeaf(moduleId: string): Promise<SigningLeaf> {
    return this.#serialized(async () => {
      const now = this.#now();
      await this.#refreshChain(now);
      const issuer = this.#chain[this.#chain.length - 1] as Issued;
      const notBefore = now - leafBackdateMs;
      const notAfter = now + leafLifetimeMs;
      const keys = await generateKeys();
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: serial(),
        subject: `C=US, ST=Washington, L=Seattle, O=enclave-kv, OU=emulator, CN=${moduleId}.${region}.emulator`,
        issuer: issuer.cert.subject,
        notBefore: new Date(notBefore),
        notAfter: new Date(notAfter),
        signingAlgorithm: algorithm,
        publicKey: keys.publicKey,
        signingKey: issuer.keys.privateKey,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(digitalSignature | nonRepudiation, false),
        ],
      });
      const privateKey = KeyObject.from(keys.privateKey);
      // X.509 times have whole seconds: report what the certificate says.
      return {
        certificate: new Uint8Array(cert.rawData), privateKey, cabundle: this.#bundle(),
        notBefore: cert.notBefore.getTime(), notAfter: cert.notAfter.getTime(),
      };
    });
  }

  /**
   * A TLS server certificate for `dnsNames`, signed by the root: the emulated KMS serves
   * kms.<region>.amazonaws.com with it, and an emulated enclave verifies it against the root its own
   * NSM document chains to, as a Nitro enclave verifies real KMS against the public roots.
   */
  issueTlsServer(dnsNames: string[], lifetimeMs = 24 * 3600_000): Promise<{ certPem: string; keyPem: string }> {
    return this.#serialized(async () => {
      const now = this.#now();
      const keys = await generateKeys();
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: serial(),
        subject: `O=enclave-kv, OU=emulator, CN=${dnsNames[0] ?? 'localhost'}`,
        issuer: this.#root.cert.subject,
        notBefore: new Date(now - leafBackdateMs),
        notAfter: new Date(now + lifetimeMs),
        signingAlgorithm: algorithm,
        publicKey: keys.publicKey,
        signingKey: this.#root.keys.privateKey,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(digitalSignature, true),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
          new x509.SubjectAlternativeNameExtension(dnsNames.map((value) => ({ type: 'dns' as const, value })), false),
        ],
      });
      const pkcs8 = await crypto.subtle.exportKey('pkcs8', keys.privateKey);
      return { certPem: cert.toString('pem') + '\n', keyPem: x509.PemConverter.encode(pkcs8, 'PRIVATE KEY') };
    });
  }

  #bundle(): Uint8Array[] {
    return [this.#root.der, ...this.#chain.map((c) => c.der)];
  }

  // Walks the chain top-down: a level is re-issued when it is missing, when its
  // issuer was just re-issued, or when it could not outlive its longest child.
  async #refreshChain(now: number): Promise<void> {
    let reissued = false;
    for (let i = 0; i < levels.length; i++) {
      const level = levels[i] as Level;
      const current = this.#chain[i];
      if (!reissued && current && current.notAfter - now >= level.childLifetimeMs) continue;
      const issuer = i === 0 ? this.#root : (this.#chain[i - 1] as Issued);
      this.#chain[i] = await issueIntermediate(level, this.#ids, issuer, now);
      reissued = true;
    }
  }

  // Certificate issue is async; one at a time keeps the chain consistent.
  #serialized<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task, task);
    this.#queue = run.catch(() => undefined);
    return run;
  }
}

async function issueIntermediate(level: Level, ids: ChainIds, issuer: Issued, now: number): Promise<Issued> {
  const keys = await generateKeys();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: level.subject(ids),
    issuer: issuer.cert.subject,
    notBefore: new Date(now - caBackdateMs),
    notAfter: new Date(now + level.lifetimeMs),
    signingAlgorithm: algorithm,
    publicKey: keys.publicKey,
    signingKey: issuer.keys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(true, level.pathLength, true),
      await x509.AuthorityKeyIdentifierExtension.create(issuer.cert.publicKey, false, crypto),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
      new x509.KeyUsagesExtension(level.usages, true),
    ],
  });
  return { cert, der: new Uint8Array(cert.rawData), keys, notAfter: cert.notAfter.getTime() };
}

async function createRoot(now: number): Promise<Issued> {
  const keys = await generateKeys();
  const notAfter = now + rootLifetimeMs;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: 'C=US, O=enclave-kv, OU=emulator, CN=emulator.nitro-enclaves',
    notBefore: new Date(now - caBackdateMs),
    notAfter: new Date(notAfter),
    signingAlgorithm: algorithm,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
      new x509.KeyUsagesExtension(digitalSignature | keyCertSign | cRLSign, true),
    ],
  });
  return { cert, der: new Uint8Array(cert.rawData), keys, notAfter };
}

async function loadRoot(dir: string): Promise<Issued | null> {
  let keyPem: string;
  let certPem: string;
  try {
    keyPem = await readFile(join(dir, rootKeyFile), 'utf8');
    certPem = await readFile(join(dir, rootCertFile), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const cert = new x509.X509Certificate(certPem);
  const pkcs8 = x509.PemConverter.decodeFirst(keyPem);
  const privateKey = await crypto.subtle.importKey('pkcs8', pkcs8, algorithm, false, ['sign']);
  const publicKey = await cert.publicKey.export(algorithm, ['verify'], crypto);
  // A key that does not match the certificate would sign chains nobody trusts.
  const probe = new Uint8Array([1, 2, 3]);
  const sig = await crypto.subtle.sign(algorithm, privateKey, probe);
  if (!(await crypto.subtle.verify(algorithm, publicKey, sig, probe))) {
    throw new Error(`emulator CA in ${dir}: ${rootKeyFile} does not match ${rootCertFile}`);
  }
  return { cert, der: new Uint8Array(cert.rawData), keys: { privateKey, publicKey }, notAfter: cert.notAfter.getTime() };
}

async function saveRoot(dir: string, root: Issued): Promise<void> {
  const pkcs8 = await crypto.subtle.exportKey('pkcs8', root.keys.privateKey);
  await writePrivate(join(dir, rootKeyFile), x509.PemConverter.encode(pkcs8, 'PRIVATE KEY'));
  await writePrivate(join(dir, rootCertFile), root.cert.toString('pem') + '\n');
}

// Write-then-rename, so a crash never leaves a half-written key behind.
async function writePrivate(path: string, text: string): Promise<void> {
  const tmp = `${path}.${hex(4)}.tmp`;
  await writeFile(tmp, text, { mode: 0o600, flag: 'wx' });
  await rename(tmp, path);
}

function generateKeys(): Promise<CryptoKeyPair> {
  // Extractable so the root can be saved and a leaf handed to node:crypto.
  return crypto.subtle.generateKey(algorithm, true, ['sign', 'verify']) as Promise<CryptoKeyPair>;
}

// A positive 16-byte serial, as random as AWS's.
function serial(): string {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] as number) & 0x7f) | 0x01;
  return bytes.toString('hex');
}

function hex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}
