/**
 * The attested handshake, three messages over length-prefixed CBOR frames:
 *
 *   C -> S  hello   { t:'hello', v, mode, nonce, eph }
 *   S -> C  server  { t:'server', core, sig }        core = CBOR { doc, eph, nonce }
 *   C -> S  finish  { t:'finish', doc?, sig?, principal?, psig? }
 *
 * The server's document is bound to the client's fresh nonce and carries the
 * enclave's Ed25519 identity key as public_key; `sig` by that key covers the
 * whole transcript, binding both ephemeral X25519 keys. A peer enclave (mode
 * 'peer') answers with its own document bound to the server's nonce and a
 * signature over the transcript; a client with a principal signs it too.
 * Traffic keys come from HKDF over the X25519 secret, salted with the
 * transcript hash. Mode 'attest' returns just a document (the host's
 * /v1/attestation) and closes.
 */
import { createHash, randomBytes } from 'node:crypto';
import { deriveTrafficKeys, FrameOpener, FrameSealer } from './aead.ts';
import { bytesField, decodeCbor, encodeCbor, isRecord, optionalBytesField } from './cbor.ts';
import { attestationDocBytesMax, ed25519KeyBytes, ed25519SignatureBytes, frameBytesMax, handshakeBytesMax, nonceBytes, protocolVersion, x25519KeyBytes } from './constants.ts';
import { EkvError, isEkvErrorCode } from './errors.ts';
import type { FramedSocket } from './framed-socket.ts';
import { generateEphemeral, verifyEd25519, type Identity } from './keys.ts';
import { SecureSession } from './session.ts';

export type HelloMode = 'client' | 'peer' | 'attest';
export const handshakeTimeoutMs = 10_000;

const label = {
  server: Buffer.from('ekv/1 server'),
  peer: Buffer.from('ekv/1 peer'),
  principal: Buffer.from('ekv/1 principal'),
};

function sha256(...parts: Uint8Array[]): Buffer {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
}

/** What a verified document tells us about the other side (verifier output, narrowed). */
export interface AttestedPeer {
  publicKey: Uint8Array | null;
  pcrs: Map<number, Uint8Array>;
  leafNotAfter: number;
  timestamp: number;
  moduleId: string;
}

export type VerifyDoc = (doc: Uint8Array, nonce: Uint8Array) => Promise<AttestedPeer>;
export type Attest = (nonce: Uint8Array, publicKey: Uint8Array) => Promise<Uint8Array>;

/** A principal as the handshake sees it: its binary form, a signer, and (server side) a verifier. */
export interface PrincipalSigner {
  principal: Uint8Array;
  sign(message: Uint8Array): Uint8Array;
}
export type VerifyPrincipal = (principal: Uint8Array, message: Uint8Array, signature: Uint8Array) => boolean;

/**
 * Items a handshake message may hold (the finish, the largest, has 10). Before authentication this
 * bound, not the 24 KiB frame limit, sets the CPU a stranger can spend: the scan refuses a message
 * with more items after reading at most this many headers, and strings are skipped, not read.
 */
export const handshakeItemsMax = 32;

function parseMessage(frame: Buffer, expected: string): Record<string, unknown> {
  const msg = decodeCbor(frame, handshakeItemsMax);
  if (!isRecord(msg)) throw new EkvError('PROTOCOL', 'handshake message is not a map');
  if (msg.t === 'error') {
    // Unauthenticated (anyone on the path can send it): never an answer such as NOT_FOUND or FORBIDDEN.
    // The caller sees UNAVAILABLE; the remote's claimed code is only a hint in `reason`.
    const claimed = isEkvErrorCode(msg.code) ? msg.code : 'PROTOCOL';
    throw new EkvError('UNAVAILABLE', `the handshake was refused (unauthenticated: ${String(msg.message ?? '').slice(0, 200)})`, { reason: claimed });
  }
  if (msg.t !== expected) throw new EkvError('PROTOCOL', `expected ${expected}, got ${String(msg.t).slice(0, 20)}`);
  return msg;
}

// ---------------------------------------------------------------- client side

export interface ConnectOptions {
  mode: 'client' | 'peer';
  verifyServer: VerifyDoc;
  /** mode 'peer': this enclave's identity and NSM, to attest back. */
  self?: { identity: Identity; attest: Attest };
  principal?: PrincipalSigner;
  timeoutMs?: number;
}

export interface ConnectResult {
  session: SecureSession;
  server: AttestedPeer;
  serverKey: Buffer;
}

export async function connectHandshake(fs: FramedSocket, opts: ConnectOptions): Promise<ConnectResult> {
  const timeout = opts.timeoutMs ?? handshakeTimeoutMs;
  fs.setMaxFrameBytes(handshakeBytesMax);
  const nonce = randomBytes(nonceBytes);
  const eph = generateEphemeral();
  const hello = encodeCbor({ t: 'hello', v: protocolVersion, mode: opts.mode, nonce, eph: eph.publicKey });
  fs.write(hello);

  const serverMsg = parseMessage(await fs.next(timeout), 'server');
  const coreBytes = bytesField(serverMsg, 'core', 1, handshakeBytesMax);
  const sig = bytesField(serverMsg, 'sig', ed25519SignatureBytes, ed25519SignatureBytes);
  const core = decodeCbor(coreBytes, handshakeItemsMax);
  if (!isRecord(core)) throw new EkvError('PROTOCOL', 'server core is not a map');
  const doc = bytesField(core, 'doc', 1, attestationDocBytesMax);
  const serverEph = bytesField(core, 'eph', x25519KeyBytes, x25519KeyBytes);
  const serverNonce = bytesField(core, 'nonce', nonceBytes, nonceBytes);

  const server = await opts.verifyServer(doc, nonce);
  const serverKey = server.publicKey;
  if (!serverKey || serverKey.length !== ed25519KeyBytes) {
    throw new EkvError('UNATTESTED', 'the document carries no Ed25519 identity key', { reason: 'NO_IDENTITY_KEY' });
  }
  const th = sha256(hello, coreBytes);
  if (!verifyEd25519(serverKey, Buffer.concat([label.server, th]), sig)) {
    throw new EkvError('TAMPERED', 'the server did not prove possession of its attested key');
  }

  const finish: Record<string, unknown> = { t: 'finish' };
  if (opts.mode === 'peer') {
    if (!opts.self) throw new Error('connectHandshake: mode peer needs self');
    finish.doc = await opts.self.attest(serverNonce, opts.self.identity.publicKey);
    finish.sig = opts.self.identity.sign(Buffer.concat([label.peer, th]));
  }
  if (opts.principal) {
    finish.principal = opts.principal.principal;
    finish.psig = opts.principal.sign(Buffer.concat([label.principal, th]));
  }
  const finishBytes = encodeCbor(finish);
  fs.write(finishBytes);

  // The keys cover the finish too, so a relay that swaps or strips the principal (or the peer's
  // document) ends up with a client and server that cannot read each other: the first frame fails.
  const keys = deriveTrafficKeys(agreeOrThrow(eph, serverEph), sha256(th, finishBytes));
  fs.setMaxFrameBytes(frameBytesMax);
  const session = new SecureSession(fs, new FrameSealer(keys.c2s), new FrameOpener(keys.s2c));
  return { session, server, serverKey: Buffer.from(serverKey) };
}

/** Mode 'attest': ask for a document bound to `nonce`, and nothing else. */
export async function requestAttestation(fs: FramedSocket, nonce: Uint8Array, timeoutMs = handshakeTimeoutMs): Promise<Buffer> {
  fs.setMaxFrameBytes(handshakeBytesMax);
  fs.write(encodeCbor({ t: 'hello', v: protocolVersion, mode: 'attest', nonce }));
  const msg = parseMessage(await fs.next(timeoutMs), 'attestation');
  return bytesField(msg, 'doc', 1, attestationDocBytesMax);
}

function agreeOrThrow(eph: ReturnType<typeof generateEphemeral>, peer: Uint8Array): Buffer {
  try {
    return eph.agree(peer);
  } catch {
    throw new EkvError('PROTOCOL', 'invalid X25519 public key');
  }
}

// ---------------------------------------------------------------- server side

export interface AcceptOptions {
  identity: Identity;
  attest: Attest;
  /** Verifies a peer enclave's document (trust roots, PCRs equal to ours or allowlisted). */
  verifyPeer: VerifyDoc;
  verifyPrincipal: VerifyPrincipal;
  timeoutMs?: number;
  /**
   * Admission of unauthenticated work (enclave/admission.ts): called once the hello's mode is known,
   * before any NSM work; throws (UNAVAILABLE/BUSY) to refuse. `attested()` is called once this side's
   * document went out (the handshake then only waits for the caller). The caller releases the ticket.
   */
  admit?: (mode: HelloMode) => { attested(): void };
}

export type Accepted =
  | { kind: 'attest' }
  | { kind: 'session'; session: SecureSession; peer: (AttestedPeer & { key: Buffer }) | null; principal: Buffer | null };

export async function acceptHandshake(fs: FramedSocket, opts: AcceptOptions): Promise<Accepted> {
  const timeout = opts.timeoutMs ?? handshakeTimeoutMs;
  fs.setMaxFrameBytes(handshakeBytesMax);
  const helloBytes = await fs.next(timeout);
  const hello = parseMessage(helloBytes, 'hello');
  if (hello.v !== protocolVersion) throw new EkvError('PROTOCOL', `unsupported protocol version ${String(hello.v)}`);
  const mode = hello.mode;
  if (mode !== 'client' && mode !== 'peer' && mode !== 'attest') throw new EkvError('PROTOCOL', 'unknown handshake mode');
  const clientNonce = bytesField(hello, 'nonce', 0, 512);
  const ticket = opts.admit?.(mode);

  if (mode === 'attest') {
    const doc = await opts.attest(clientNonce, opts.identity.publicKey);
    fs.end(encodeCbor({ t: 'attestation', doc }));
    return { kind: 'attest' };
  }
  if (clientNonce.length !== nonceBytes) throw new EkvError('PROTOCOL', 'nonce must be 32 bytes');
  const clientEph = bytesField(hello, 'eph', x25519KeyBytes, x25519KeyBytes);

  const eph = generateEphemeral();
  const serverNonce = randomBytes(nonceBytes);
  const doc = await opts.attest(clientNonce, opts.identity.publicKey);
  const coreBytes = encodeCbor({ doc, eph: eph.publicKey, nonce: serverNonce });
  const th = sha256(helloBytes, coreBytes);
  fs.write(encodeCbor({ t: 'server', core: coreBytes, sig: opts.identity.sign(Buffer.concat([label.server, th])) }));
  ticket?.attested();

  const finishBytes = await fs.next(timeout);
  const finish = parseMessage(finishBytes, 'finish');
  let peer: (AttestedPeer & { key: Buffer }) | null = null;
  if (mode === 'peer') peer = await checkPeer(finish, serverNonce, th, opts);
  const principal = checkPrincipal(finish, th, opts);

  const keys = deriveTrafficKeys(agreeOrThrow(eph, clientEph), sha256(th, finishBytes));
  fs.setMaxFrameBytes(frameBytesMax);
  const session = new SecureSession(fs, new FrameSealer(keys.s2c), new FrameOpener(keys.c2s));
  return { kind: 'session', session, peer, principal };
}

async function checkPeer(finish: Record<string, unknown>, serverNonce: Buffer, th: Buffer, opts: AcceptOptions): Promise<AttestedPeer & { key: Buffer }> {
  const doc = bytesField(finish, 'doc', 1, attestationDocBytesMax);
  const sig = bytesField(finish, 'sig', ed25519SignatureBytes, ed25519SignatureBytes);
  const peer = await opts.verifyPeer(doc, serverNonce);
  const key = peer.publicKey;
  if (!key || key.length !== ed25519KeyBytes) throw new EkvError('UNATTESTED', 'peer document has no identity key', { reason: 'NO_IDENTITY_KEY' });
  if (!verifyEd25519(key, Buffer.concat([label.peer, th]), sig)) throw new EkvError('TAMPERED', 'peer did not prove its attested key');
  return { ...peer, key: Buffer.from(key) };
}

function checkPrincipal(finish: Record<string, unknown>, th: Buffer, opts: AcceptOptions): Buffer | null {
  const principal = optionalBytesField(finish, 'principal', 1, 128);
  if (!principal) return null;
  const psig = bytesField(finish, 'psig', 1, 128);
  if (!opts.verifyPrincipal(principal, Buffer.concat([label.principal, th]), psig)) {
    throw new EkvError('FORBIDDEN', 'the client did not prove its principal key');
  }
  return principal;
}
