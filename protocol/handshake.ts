/**
 * The attested handshake, three messages over length-prefixed CBOR frames:
 *
 *   C -> S  hello   { t:'hello', v, mode, nonce, eph, ts?, pmac? }
 *   S -> C  server  { t:'server', core, sig, rmac? }  core = CBOR { doc, eph, nonce, ring? }
 *   C -> S  finish  { t:'finish', doc?, sig?, rmac?, principal?, psig? }
 *
 * The server's document is bound to the client's fresh nonce and carries the
 * enclave's Ed25519 identity key as public_key; `sig` by that key covers the
 * whole transcript, binding both ephemeral X25519 keys. A peer enclave (mode
 * 'peer') answers with its own document bound to the server's nonce and a
 * signature over the transcript; a client with a principal signs it too.
 * Traffic keys come from HKDF over the X25519 secret, salted with the
 * transcript hash.
 *
 * Rings (docs/membership.md): `ring` in the signed core is the server's ring
 * id, which a client may pin (WRONG_RING otherwise). In mode 'peer' both sides
 * also prove the ring secret: `rmac` = HMAC(ring MAC key, label || transcript
 * hash), the server's beside its core, the peer's in its finish. A peer of
 * another ring, or one without a MAC, is refused with WRONG_RING. A peer's hello
 * already proves the secret (`pmac` over its nonce, ephemeral key and send time
 * `ts`), checked before admission and before any NSM work, so a hello that only
 * claims 'peer' cannot take a peer-reserved handshake slot.
 *
 * Mode 'attest' returns just a document (the host's /v1/attestation) and
 * closes. Mode 'metrics' returns the enclave's metrics snapshot (counters and
 * histograms that name no key, value or principal: docs/observability.md) and
 * closes; no NSM work, unauthenticated, for the host's Prometheus /metrics.
 */
import { createHash, randomBytes } from 'node:crypto';
import { deriveTrafficKeys, FrameOpener, FrameSealer } from './aead.ts';
import { bytesField, decodeCbor, encodeCbor, isRecord, optionalBytesField } from './cbor.ts';
import { attestationDocBytesMax, ed25519KeyBytes, ed25519SignatureBytes, frameBytesMax, handshakeBytesMax, nonceBytes, protocolVersion, x25519KeyBytes } from './constants.ts';
import { EkvError, isEkvErrorCode } from './errors.ts';
import type { FramedSocket } from './framed-socket.ts';
import { generateEphemeral, verifyEd25519, type Identity } from './keys.ts';
import { previousRingIdsMax, ringHelloMac, ringHelloMacValid, ringIdBytes, ringMac, ringMacBytes, ringMacValid, type RingCredential } from './ring.ts';
import { metricsBytesMax } from './metrics.ts';
import { SecureSession } from './session.ts';

export type HelloMode = 'client' | 'peer' | 'attest' | 'metrics';
export const handshakeTimeoutMs = 10_000;

const label = {
  server: Buffer.from('ekv/1 server'),
  peer: Buffer.from('ekv/1 peer'),
  principal: Buffer.from('ekv/1 principal'),
  ringServer: Buffer.from('ekv/1 ring server'),
  ringPeer: Buffer.from('ekv/1 ring peer'),
};

/**
 * Test-only: setting `connect` (the connecting side) or `accept` (the accepting side) to false skips that
 * side's ring id and MAC checks: the control of the attack tests. The enclave clears both only when its image
 * was built with the test seam testNoRingCheck (enclave/image-config.ts: compiled in, measured, refused on Nitro).
 */
export const ringChecks = { connect: true, accept: true };

/** This side's ring: null for a node without one (an unsealed emulator node), which only meets ringless peers. */
export type RingOption = RingCredential | null;

function sameRing(own: RingOption, theirs: Buffer | null): boolean {
  if (own === null || theirs === null) return own === null && theirs === null;
  return own.id.equals(theirs);
}

function ringHex(id: Buffer | null): string {
  return id ? id.toString('hex').slice(0, 16) : 'none';
}

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
  /** mode 'peer': this enclave's identity, NSM and ring, to attest back and prove the ring secret. */
  self?: { identity: Identity; attest: Attest; ring: RingOption };
  /** mode 'client': the ring id the server must belong to (WRONG_RING otherwise); omitted: any ring. */
  expectRing?: Buffer;
  principal?: PrincipalSigner;
  timeoutMs?: number;
}

export interface ConnectResult {
  session: SecureSession;
  server: AttestedPeer;
  serverKey: Buffer;
  /** The server's ring id, signed by its attested key (null: a node without a ring). */
  ring: Buffer | null;
  /** A reopened ring's previous ids (newest first) and generation, signed with the ring id (none and 0 otherwise). */
  previousRings: Buffer[];
  generation: number;
}

export async function connectHandshake(fs: FramedSocket, opts: ConnectOptions): Promise<ConnectResult> {
  const timeout = opts.timeoutMs ?? handshakeTimeoutMs;
  fs.setMaxFrameBytes(handshakeBytesMax);
  const nonce = randomBytes(nonceBytes);
  const eph = generateEphemeral();
  const helloMsg: Record<string, unknown> = { t: 'hello', v: protocolVersion, mode: opts.mode, nonce, eph: eph.publicKey };
  if (opts.mode === 'peer' && opts.self?.ring) {
    helloMsg.ts = Date.now();
    helloMsg.pmac = ringHelloMac(opts.self.ring.macKey, nonce, eph.publicKey, helloMsg.ts as number);
  }
  const hello = encodeCbor(helloMsg);
  fs.write(hello);

  const serverMsg = parseMessage(await fs.next(timeout), 'server');
  const coreBytes = bytesField(serverMsg, 'core', 1, handshakeBytesMax);
  const sig = bytesField(serverMsg, 'sig', ed25519SignatureBytes, ed25519SignatureBytes);
  const core = decodeCbor(coreBytes, handshakeItemsMax);
  if (!isRecord(core)) throw new EkvError('PROTOCOL', 'server core is not a map');
  const doc = bytesField(core, 'doc', 1, attestationDocBytesMax);
  const serverEph = bytesField(core, 'eph', x25519KeyBytes, x25519KeyBytes);
  const serverNonce = bytesField(core, 'nonce', nonceBytes, nonceBytes);
  const serverRing = optionalBytesField(core, 'ring', ringIdBytes, ringIdBytes);
  const previousRings = previousRingsField(core);

  const server = await opts.verifyServer(doc, nonce);
  const serverKey = server.publicKey;
  if (!serverKey || serverKey.length !== ed25519KeyBytes) {
    throw new EkvError('UNATTESTED', 'the document carries no Ed25519 identity key', { reason: 'NO_IDENTITY_KEY' });
  }
  const th = sha256(hello, coreBytes);
  if (!verifyEd25519(serverKey, Buffer.concat([label.server, th]), sig)) {
    throw new EkvError('TAMPERED', 'the server did not prove possession of its attested key');
  }
  // The ring id is believed only now: the attested key signed it with the transcript.
  if (opts.expectRing && ringChecks.connect && !(serverRing?.equals(opts.expectRing) ?? false)) {
    // RECOVERY HOOK (issue 12, docs/recovery.md): the ring this client pinned was reopened by its recovery
    // members under a new identity; say so, rather than a bare WRONG_RING.
    const expected = opts.expectRing;
    if (previousRings.some((p) => p.equals(expected))) {
      throw new EkvError('RING_RECOVERED', `ring ${ringHex(expected)} was stopped and reopened by its recovery members as ring ${serverRing?.toString('hex') ?? 'none'} (generation ${String(core.rgen)}): check \`ekv recovery status\`, then pin the new ring id`);
    }
    throw new EkvError('WRONG_RING', `the node belongs to ring ${ringHex(serverRing)}, not ${ringHex(opts.expectRing)}`);
  }

  const finish: Record<string, unknown> = { t: 'finish' };
  if (opts.mode === 'peer') {
    if (!opts.self) throw new Error('connectHandshake: mode peer needs self');
    checkServerRing(opts.self.ring, serverRing, optionalBytesField(serverMsg, 'rmac', ringMacBytes, ringMacBytes), th);
    finish.doc = await opts.self.attest(serverNonce, opts.self.identity.publicKey);
    finish.sig = opts.self.identity.sign(Buffer.concat([label.peer, th]));
    if (opts.self.ring) finish.rmac = ringMac(opts.self.ring.macKey, label.ringPeer, th);
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
  return { session, server, serverKey: Buffer.from(serverKey), ring: serverRing, previousRings, generation: generationField(core, previousRings) };
}

/** A reopened ring's previous ids and generation, for the signed core (docs/recovery.md). */
function recoveredFields(ring: RingCredential): Record<string, unknown> {
  const prev = ring.previous ?? [];
  return prev.length === 0 ? {} : { rprev: prev.slice(0, previousRingIdsMax), rgen: ring.generation ?? 0 };
}

/** `rgen`: the reopened ring's generation, signed with the core (0: never reopened, no `rprev`). */
function generationField(core: Record<string, unknown>, previous: readonly Buffer[]): number {
  if (previous.length === 0) return 0;
  const g = core.rgen;
  if (typeof g !== 'number' || !Number.isSafeInteger(g) || g < 1) throw new EkvError('PROTOCOL', 'malformed rgen');
  return g;
}

/** `rprev`: at most previousRingIdsMax ring ids; absent: none. */
function previousRingsField(core: Record<string, unknown>): Buffer[] {
  const v = core.rprev;
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.length > previousRingIdsMax || !v.every((x) => x instanceof Uint8Array && x.length === ringIdBytes)) {
    throw new EkvError('PROTOCOL', 'malformed rprev');
  }
  return v.map((x) => Buffer.from(x as Uint8Array));
}

/** A peer's server must be of our ring and prove its secret over this transcript. */
function checkServerRing(own: RingOption, serverRing: Buffer | null, rmac: Buffer | null, th: Buffer): void {
  if (!ringChecks.connect) return;
  if (!sameRing(own, serverRing)) throw new EkvError('WRONG_RING', `peer of ring ${ringHex(serverRing)}, we are ${ringHex(own?.id ?? null)}`);
  if (own && !ringMacValid(own.macKey, label.ringServer, th, rmac)) throw new EkvError('WRONG_RING', 'the peer did not prove the ring secret');
}

/** Mode 'attest': ask for a document bound to `nonce`, and nothing else. */
export async function requestAttestation(fs: FramedSocket, nonce: Uint8Array, timeoutMs = handshakeTimeoutMs): Promise<Buffer> {
  fs.setMaxFrameBytes(handshakeBytesMax);
  fs.write(encodeCbor({ t: 'hello', v: protocolVersion, mode: 'attest', nonce }));
  const msg = parseMessage(await fs.next(timeoutMs), 'attestation');
  return bytesField(msg, 'doc', 1, attestationDocBytesMax);
}

/** Mode 'metrics': ask for the enclave's metrics snapshot (decoded, not yet checked: protocol/metrics.ts). */
export async function requestMetrics(fs: FramedSocket, timeoutMs = handshakeTimeoutMs): Promise<unknown> {
  fs.setMaxFrameBytes(metricsBytesMax);
  fs.write(encodeCbor({ t: 'hello', v: protocolVersion, mode: 'metrics', nonce: Buffer.alloc(0) }));
  const frame = await fs.next(timeoutMs);
  const msg = decodeCbor(frame);
  if (isRecord(msg) && msg.t === 'error') throw new EkvError('UNAVAILABLE', 'the metrics request was refused', { reason: isEkvErrorCode(msg.code) ? msg.code : 'PROTOCOL' });
  if (!isRecord(msg) || msg.t !== 'metrics') throw new EkvError('PROTOCOL', 'expected a metrics answer');
  return Object.hasOwn(msg, 'm') ? msg.m : null;
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
  /** This enclave's ring: its id goes into the signed core; peers must prove its secret. */
  ring: RingOption;
  timeoutMs?: number;
  /**
   * Admission of unauthenticated work (enclave/admission.ts): called once the hello's mode is known,
   * before any NSM work; throws (UNAVAILABLE/BUSY) to refuse. `attested()` is called once this side's
   * document went out (the handshake then only waits for the caller). The caller releases the ticket.
   */
  admit?: (mode: HelloMode, proof: PeerHelloProof | null) => { attested(): void };
  /** Mode 'metrics': the snapshot to answer with (none: the mode is refused). */
  metrics?: () => unknown;
}

/** A peer hello whose MAC proved the ring secret: the admission still refuses a replay (enclave/admission.ts). */
export interface PeerHelloProof {
  nonce: Buffer;
  /** The sender's clock when it sent the hello (ms since the epoch), covered by the MAC. */
  sentAtMs: number;
}

export type Accepted =
  | { kind: 'attest' }
  | { kind: 'metrics' }
  | { kind: 'session'; session: SecureSession; peer: (AttestedPeer & { key: Buffer }) | null; principal: Buffer | null };

/**
 * The host channel's one exchange (enclave/host-channel.ts): a 'metrics' hello answered with `snapshot()`
 * and closed. Every other mode is refused (FORBIDDEN) before any work: the channel is the host's own socket,
 * offers no session, and costs a caller one decode.
 */
export async function acceptMetricsHello(fs: FramedSocket, snapshot: () => unknown, timeoutMs = handshakeTimeoutMs): Promise<void> {
  await acceptHostChannelHello(fs, { metrics: snapshot }, timeoutMs);
}

/**
 * The host channel's exchanges: 'metrics' (above) and, when the enclave offers it, 'decommission': the node
 * leaves for good and retires (docs/consistency.md, "Retirement"), answered with the outcome once it is done.
 * The host may ask this of its own node at any time: it can stop the node for good anyway; retiring only lets the
 * node say so to its peers. Anything else is refused (FORBIDDEN).
 */
export async function acceptHostChannelHello(
  fs: FramedSocket,
  answers: { metrics: () => unknown; decommission?: (waitMs: number | undefined) => Promise<unknown> },
  timeoutMs = handshakeTimeoutMs,
): Promise<'metrics' | 'decommission'> {
  fs.setMaxFrameBytes(handshakeBytesMax);
  const hello = parseMessage(await fs.next(timeoutMs), 'hello');
  if (hello.v !== protocolVersion) throw new EkvError('PROTOCOL', `unsupported protocol version ${String(hello.v)}`);
  if (hello.mode === 'decommission' && answers.decommission) {
    // How long the node may wait for its ranges to move before it retires (default the enclave's, 30 s).
    const w = hello.waitMs;
    if (w !== undefined && (typeof w !== 'number' || !Number.isInteger(w) || w < 0 || w > decommissionWaitMsMax)) {
      throw new EkvError('PROTOCOL', `waitMs must be an integer 0..${decommissionWaitMsMax}`);
    }
    const r = await answers.decommission(w);
    fs.end(encodeCbor({ t: 'decommissioned', r }));
    return 'decommission';
  }
  if (hello.mode !== 'metrics') throw new EkvError('FORBIDDEN', 'this socket answers only the metrics and decommission hellos');
  fs.end(encodeCbor({ t: 'metrics', m: answers.metrics() }));
  return 'metrics';
}

/** The longest a decommission may wait for the node's ranges to move before it retires. */
export const decommissionWaitMsMax = 60_000;

/** Host side of 'decommission': asks the node to leave for good; resolves with the enclave's outcome. */
export async function requestDecommission(fs: FramedSocket, timeoutMs: number, waitMs?: number): Promise<unknown> {
  fs.setMaxFrameBytes(handshakeBytesMax);
  fs.write(encodeCbor({ t: 'hello', v: protocolVersion, mode: 'decommission', nonce: Buffer.alloc(0), ...(waitMs === undefined ? {} : { waitMs }) }));
  const msg = decodeCbor(await fs.next(timeoutMs));
  if (isRecord(msg) && msg.t === 'error') throw new EkvError('UNAVAILABLE', 'the decommission request was refused', { reason: isEkvErrorCode(msg.code) ? msg.code : 'PROTOCOL' });
  if (!isRecord(msg) || msg.t !== 'decommissioned') throw new EkvError('PROTOCOL', 'expected a decommission answer');
  return Object.hasOwn(msg, 'r') ? msg.r : null;
}

export async function acceptHandshake(fs: FramedSocket, opts: AcceptOptions): Promise<Accepted> {
  const timeout = opts.timeoutMs ?? handshakeTimeoutMs;
  fs.setMaxFrameBytes(handshakeBytesMax);
  const helloBytes = await fs.next(timeout);
  const hello = parseMessage(helloBytes, 'hello');
  if (hello.v !== protocolVersion) throw new EkvError('PROTOCOL', `unsupported protocol version ${String(hello.v)}`);
  const mode = hello.mode;
  if (mode !== 'client' && mode !== 'peer' && mode !== 'attest' && mode !== 'metrics') throw new EkvError('PROTOCOL', 'unknown handshake mode');
  if (mode === 'metrics' && !opts.metrics) throw new EkvError('FORBIDDEN', 'the metrics hello is answered only on the host\'s own channel, not here');
  const clientNonce = bytesField(hello, 'nonce', 0, 512);
  const proof = mode === 'peer' ? checkPeerHello(hello, clientNonce, opts.ring) : null;
  const ticket = opts.admit?.(mode, proof);

  if (mode === 'metrics') {
    fs.end(encodeCbor({ t: 'metrics', m: (opts.metrics as () => unknown)() }));
    return { kind: 'metrics' };
  }
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
  const coreBytes = encodeCbor({ doc, eph: eph.publicKey, nonce: serverNonce, ...(opts.ring ? { ring: opts.ring.id, ...recoveredFields(opts.ring) } : {}) });
  const th = sha256(helloBytes, coreBytes);
  const serverMsg: Record<string, unknown> = { t: 'server', core: coreBytes, sig: opts.identity.sign(Buffer.concat([label.server, th])) };
  // Only a peer gets the ring MAC: it proves the secret to a fellow member, and tells a client nothing it needs.
  if (mode === 'peer' && opts.ring) serverMsg.rmac = ringMac(opts.ring.macKey, label.ringServer, th);
  fs.write(encodeCbor(serverMsg));
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

/**
 * Before admission and before any NSM work: does this 'peer' hello prove the ring secret?
 *
 * A node with a ring REFUSES (WRONG_RING) a peer hello without a valid MAC rather than counting it in the
 * anonymous share: such a handshake could never finish (checkPeer demands the ring MAC in the finish), so
 * refusing it at once costs no genuine peer anything, spends no NSM work and takes no anonymous slot from
 * clients. A node without a ring (an unsealed --no-seal emulator node, where peers are per-image) has nothing
 * to check: its peer hellos return null and are admitted in the anonymous share, so they still work (they
 * only lose the reservation). The same with the test seam (ringChecks.accept false): unproven peer hellos go
 * to the anonymous share, so the seam's controls still see a peer of another ring get through.
 */
function checkPeerHello(hello: Record<string, unknown>, nonce: Buffer, ring: RingOption): PeerHelloProof | null {
  if (!ring) return null;
  if (nonce.length !== nonceBytes) throw new EkvError('PROTOCOL', 'nonce must be 32 bytes');
  const eph = bytesField(hello, 'eph', x25519KeyBytes, x25519KeyBytes);
  const pmac = optionalBytesField(hello, 'pmac', ringMacBytes, ringMacBytes);
  const ts = hello.ts;
  const sentAtMs = typeof ts === 'number' && Number.isSafeInteger(ts) && ts >= 0 ? ts : -1;
  if (ringHelloMacValid(ring.macKey, nonce, eph, sentAtMs, pmac)) return { nonce: Buffer.from(nonce), sentAtMs };
  if (!ringChecks.accept) return null;
  throw new EkvError('WRONG_RING', 'a peer hello without proof of the ring secret');
}

async function checkPeer(finish: Record<string, unknown>, serverNonce: Buffer, th: Buffer, opts: AcceptOptions): Promise<AttestedPeer & { key: Buffer }> {
  const doc = bytesField(finish, 'doc', 1, attestationDocBytesMax);
  const sig = bytesField(finish, 'sig', ed25519SignatureBytes, ed25519SignatureBytes);
  const peer = await opts.verifyPeer(doc, serverNonce);
  const key = peer.publicKey;
  if (!key || key.length !== ed25519KeyBytes) throw new EkvError('UNATTESTED', 'peer document has no identity key', { reason: 'NO_IDENTITY_KEY' });
  if (!verifyEd25519(key, Buffer.concat([label.peer, th]), sig)) throw new EkvError('TAMPERED', 'peer did not prove its attested key');
  // An enclave of our image but another deployment (another ring secret) is not a peer.
  const rmac = optionalBytesField(finish, 'rmac', ringMacBytes, ringMacBytes);
  if (ringChecks.accept && opts.ring && !ringMacValid(opts.ring.macKey, label.ringPeer, th, rmac)) {
    throw new EkvError('WRONG_RING', 'the peer did not prove the ring secret');
  }
  if (ringChecks.accept && !opts.ring && rmac !== null) throw new EkvError('WRONG_RING', 'a peer of a ring, and we have none');
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
