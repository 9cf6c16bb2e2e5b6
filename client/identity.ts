/**
 * Identity key files for the CLI and the SDK: a principal's private key as
 * PEM PKCS#8 (Ed25519 or P-256), mode 0600. The same files hold group keys.
 *
 * `--identity FILE` wins; otherwise the EKV_IDENTITY environment variable;
 * otherwise there is no identity and the session is anonymous. Like ssh, a
 * key file readable by group or others is refused.
 */
import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { chmodSync, closeSync, fstatSync, openSync, readSync, writeFileSync } from 'node:fs';
import type { PrincipalSigner } from '../protocol/handshake.ts';
import { PrincipalError, signerFromPrivateKey, type Principal, type PrincipalAlg, type Signer } from '../protocol/principal.ts';

export const identityEnvVar = 'EKV_IDENTITY';
/** A PEM private key is under 300 bytes; anything much larger is not one. */
export const identityFileBytesMax = 16 * 1024;

export type IdentityErrorCode = 'NO_IDENTITY' | 'BAD_KEY_FILE' | 'UNSAFE_PERMISSIONS' | 'EXISTS';

export class IdentityError extends Error {
  readonly code: IdentityErrorCode;
  constructor(code: IdentityErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'IdentityError';
    this.code = code;
  }
}

/** A loaded identity: its principal and a signer. */
export type ClientIdentity = Signer;

export function generateIdentity(alg: PrincipalAlg = 'ed25519'): KeyObject {
  if (alg === 'ed25519') return generateKeyPairSync('ed25519').privateKey;
  return generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
}

/** Writes the key (PEM PKCS#8, mode 0600); refuses to replace an existing file unless `overwrite`. */
export function saveIdentity(file: string, key: KeyObject, options: { overwrite?: boolean } = {}): Principal {
  const identity = identityFromKey(key);
  const pem = key.export({ format: 'pem', type: 'pkcs8' });
  try {
    writeFileSync(file, pem, { mode: 0o600, flag: options.overwrite === true ? 'w' : 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new IdentityError('EXISTS', `${file} exists; not replacing a key`);
    throw err;
  }
  // An overwritten file keeps its old mode; the umask may have cleared bits only.
  chmodSync(file, 0o600);
  return identity.principal;
}

export function identityFromKey(key: KeyObject): ClientIdentity {
  if (key.type !== 'private') throw new IdentityError('BAD_KEY_FILE', 'not a private key');
  try {
    return signerFromPrivateKey(key);
  } catch (err) {
    if (err instanceof PrincipalError) throw new IdentityError('BAD_KEY_FILE', 'only Ed25519 and P-256 keys are identities', { cause: err });
    throw err;
  }
}

/** The identity file to use: the explicit path, else $EKV_IDENTITY, else null (anonymous). */
export function identityPath(explicit?: string | null, env: NodeJS.ProcessEnv = process.env): string | null {
  if (explicit !== undefined && explicit !== null && explicit !== '') return explicit;
  const fromEnv = env[identityEnvVar];
  return fromEnv !== undefined && fromEnv !== '' ? fromEnv : null;
}

/** Loads `file`, or $EKV_IDENTITY when `file` is omitted; NO_IDENTITY when neither is set. */
export function loadIdentity(file?: string | null, env: NodeJS.ProcessEnv = process.env): ClientIdentity {
  const path = identityPath(file, env);
  if (path === null) throw new IdentityError('NO_IDENTITY', `no identity: pass --identity FILE or set ${identityEnvVar}`);
  return identityFromKey(readKeyFile(path));
}

function readKeyFile(path: string): KeyObject {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw new IdentityError('BAD_KEY_FILE', `cannot open ${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const st = fstatSync(fd);
    if (process.platform !== 'win32' && (st.mode & 0o077) !== 0) {
      throw new IdentityError('UNSAFE_PERMISSIONS', `${path} is readable by others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
    }
    if (st.size > identityFileBytesMax) throw new IdentityError('BAD_KEY_FILE', `${path}: ${st.size} bytes is not a key file`);
    const buf = Buffer.alloc(st.size);
    const n = readSync(fd, buf, 0, st.size, 0);
    return createPrivateKey({ key: buf.subarray(0, n), format: 'pem' });
  } catch (err) {
    if (err instanceof IdentityError) throw err;
    throw new IdentityError('BAD_KEY_FILE', `${path}: not a PEM private key`, { cause: err });
  } finally {
    closeSync(fd);
  }
}

/** The shape the handshake wants (principal as its binary form). */
export function toPrincipalSigner(identity: ClientIdentity): PrincipalSigner {
  return { principal: identity.principal.bytes, sign: (m) => identity.sign(m) };
}
