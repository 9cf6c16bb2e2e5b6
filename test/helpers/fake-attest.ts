/**
 * A stand-in attestation for protocol tests that run the real handshake without an NSM: the "document" is CBOR of
 * the nonce and the key, and the verifier checks the nonce (UNATTESTED/NONCE_MISMATCH when it differs).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { HandshakeAdmission } from '../../enclave/admission.ts';
import { EnclaveServer } from '../../enclave/server.ts';
import { handshakeBytesMax } from '../../protocol/constants.ts';
import { FramedSocket } from '../../protocol/framed-socket.ts';
import { connectHandshake, type VerifyDoc } from '../../protocol/handshake.ts';
import { generateIdentity, verifyEd25519 } from '../../protocol/keys.ts';
import type { SecureSession } from '../../protocol/session.ts';
import { decodeCbor, encodeCbor } from '../../protocol/cbor.ts';
import { EkvError } from '../../protocol/errors.ts';

export const fakeAttest = (nonce: Uint8Array, publicKey: Uint8Array): Promise<Buffer> => Promise.resolve(encodeCbor({ fake: 1, nonce, key: publicKey }));

export const fakeVerify: VerifyDoc = async (doc, nonce) => {
  const d = decodeCbor(doc) as { nonce?: Uint8Array; key?: Uint8Array | null };
  if (!(d.nonce instanceof Uint8Array) || !Buffer.from(d.nonce).equals(Buffer.from(nonce))) {
    throw new EkvError('UNATTESTED', 'nonce differs', { reason: 'NONCE_MISMATCH' });
  }
  return { publicKey: d.key ?? null, pcrs: new Map(), leafNotAfter: Date.now() + 3_600_000, timestamp: Date.now(), moduleId: 'fake' };
};

/**
 * A real EnclaveServer on a unix socket in a temp dir, attesting with the stand-in above (no peers, no ring), and a
 * way to open client sessions to it (the real handshake). `stop` closes it and removes the dir.
 */
export async function fakeEnclaveServer(
  prefix: string,
  handler: (op: string) => Record<string, unknown>,
  opts: { admission?: HandshakeAdmission; answerMemory?: { bytesMax?: number; stallMs?: number; holdsMax?: number; holdGraceMs?: number } } = {},
): Promise<{ server: EnclaveServer; path: string; open: () => Promise<{ socket: net.Socket; session: SecureSession }>; stop: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const path = join(dir, 'enclave.sock');
  const server = new EnclaveServer(
    { identity: generateIdentity(), attest: fakeAttest, verifyPeer: () => Promise.reject(new EkvError('UNATTESTED', 'no peers')), verifyPrincipal: (p, m, s) => verifyEd25519(p, m, s), ring: null },
    (op) => handler(op), pino({ level: 'silent' }),
    { ...(opts.admission ? { admission: opts.admission } : {}), ...(opts.answerMemory ? { answerMemory: opts.answerMemory } : {}) },
  );
  await server.listen(path);
  const open = async () => {
    const socket = net.connect(path);
    socket.on('error', () => undefined);
    await new Promise((r) => socket.once('connect', r));
    const { session } = await connectHandshake(new FramedSocket(socket, handshakeBytesMax), { mode: 'client', verifyServer: fakeVerify, timeoutMs: 2000 });
    return { socket, session };
  };
  const stop = async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  };
  return { server, path, open, stop };
}
