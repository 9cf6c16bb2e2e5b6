/**
 * What this enclave trusts in its peers, learned from its own attestation
 * document at boot: the NSM channel is the one input the host cannot forge,
 * so the root at the top of our own cabundle is the root of our TEE (the AWS
 * Nitro root on Nitro, the emulator's root locally), and a peer must show
 * PCR0/1/2 equal to ours, or a PCR0 in the allowlist compiled into the image
 * (for rolling upgrades).
 */
import { randomBytes } from 'node:crypto';
import { EkvError } from '../protocol/errors.ts';
import type { AttestedPeer } from '../protocol/handshake.ts';
import { AWS_NITRO_ROOT_PEM, AttestationError, decodeAttestationDocument, pemCertificates, verifyAttestation } from '../verifier/index.ts';
import type { Nsm } from './nsm.ts';
import { imageConfig } from './image-config.ts';

/** PCR0 values of other images this image accepts as peers (hex), fixed at build time. */
export const upgradePcr0Allowlist: readonly string[] = imageConfig.peerPcr0Allowlist;

/** A peer's document must be at most this old (plus the verifier's clock skew). */
export const peerDocAgeMaxMs = 5 * 60 * 1000;

export interface SelfTrust {
  root: Buffer;
  pcrs: Map<number, Uint8Array>;
  moduleId: string;
  /** Real Nitro: our own document chains to the AWS Nitro root (see enclave/image-config.ts). */
  production: boolean;
}

const awsRootDer = pemCertificates(AWS_NITRO_ROOT_PEM)[0] as Uint8Array;

export async function learnSelfTrust(nsm: Nsm): Promise<SelfTrust> {
  const nonce = randomBytes(32);
  const doc = await nsm.attest({ nonce });
  const decoded = decodeAttestationDocument(doc);
  const root = Buffer.from(decoded.cabundle[0] as Uint8Array);
  // Our own document must verify against the root it names: a sanity check of the NSM and the clock.
  const verified = await verifyAttestation(doc, { roots: [root], nonce, allowDebug: true });
  return { root, pcrs: verified.pcrs, moduleId: verified.moduleId, production: Buffer.from(awsRootDer).equals(root) };
}

function hex(b: Uint8Array | undefined): string {
  return b ? Buffer.from(b).toString('hex') : '';
}

/**
 * A peer runs our image (PCR0, PCR1 and PCR2 all ours) or one of the allowlisted images. An allowlisted image is
 * pinned by PCR0 alone: PCR0 measures the whole image (on Nitro the EIF: kernel, boot ramdisk and application; in
 * the emulator the runtime and the image bytes), so it fixes PCR1 and PCR2, and another image's PCR2 differs from
 * ours by construction. Requiring our PCR1/PCR2 of it, as this did before, refused every allowlisted image.
 */
export interface PeerVerifierOptions {
  /**
   * Accept a peer of any other (non-debug) image of our root, because the handshake then demands that it prove
   * this ring's secret (protocol/handshake.ts: the ring MAC of a peer hello, of the server's answer and of the
   * peer's finish), and only an enclave of an image the KMS key policy admits can open that secret. The caller
   * sets it only when the image allows it (imageConfig.ringPeers) AND this node has a ring AND the ring checks
   * are on: without a ring there is no secret to prove, and nothing else would stand in for the PCR0 pin.
   */
  ringPeers?: boolean;
}

export function peerVerifier(self: SelfTrust, now: () => number = Date.now, allowlist: readonly string[] = upgradePcr0Allowlist, o: PeerVerifierOptions = {}) {
  const own = { 0: hex(self.pcrs.get(0)), 1: hex(self.pcrs.get(1)), 2: hex(self.pcrs.get(2)) };
  const other = new Set(allowlist.map((p) => p.toLowerCase()).filter((p) => p !== own[0]));
  return async (doc: Uint8Array, nonce: Uint8Array): Promise<AttestedPeer> => {
    try {
      const pcrs: Record<number, string[]> = o.ringPeers === true ? {} : { 0: [own[0], ...other] };
      const peer = await verifyAttestation(doc, { roots: [self.root], pcrs, nonce, maxAgeMs: peerDocAgeMaxMs, allowDebug: false, now: now() });
      const pcr0 = hex(peer.pcrs.get(0));
      if (other.has(pcr0) || (o.ringPeers === true && pcr0 !== own[0])) return peer;
      // Our own image: PCR1 and PCR2 as well (implied by PCR0; checked anyway, as before).
      if (hex(peer.pcrs.get(1)) !== own[1] || hex(peer.pcrs.get(2)) !== own[2]) {
        throw new AttestationError('PCR_MISMATCH', 'a peer with our PCR0 but other PCR1/PCR2');
      }
      return peer;
    } catch (err) {
      if (err instanceof AttestationError) {
        throw new EkvError('UNATTESTED', `peer refused: ${err.code}: ${err.message}`, { reason: err.code });
      }
      throw err;
    }
  };
}
