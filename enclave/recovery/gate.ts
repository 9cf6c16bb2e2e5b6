/**
 * Recovery mode (docs/recovery.md): a member node that found no live member of its ring serves nothing until
 * k of the image's recovery members have signed the open of exactly the state it recovered, bound to a nonce
 * drawn at this boot. Then it seals the new generation and identity and boots on as a normal member.
 *
 * Operations (anyone may call them; only valid member signatures count):
 *   rcvStatus {}                 -> the recovered ring, generation, node, digest, nonce, policy, signers, pending next
 *   rcvOpen   {s, m, sig}        -> { opened, signers, need }   (s: the statement, m: the member, sig: its signature)
 *   rcvAlive  {}  (peers)        -> { serving, recovery, gen }  (a restarting node's probe for a live member)
 * Refusals carry the check's code first in the message (`NOT_MEMBER: ...`), which the SDK returns as `reason`.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { EkvError } from '../../protocol/errors.ts';
import {
  decodeOpenStatement, digestHash, openStatementBytes, policyDigest, recoveredRingId, RecoveryError, verifyOpenSignature, type OpenStatement,
  type RecoveryPolicy, type StateDigest,
} from '../../protocol/recovery.ts';
import { principalBytesMax, principalSignatureBytes, type Principal } from '../../protocol/principal.ts';
import { previousRingIdsMax, type RingCredential } from '../../protocol/ring.ts';
import type { RpcResult } from '../../protocol/rpc.ts';
import type { Generation } from './generation.ts';

export const recoveryOps: ReadonlySet<string> = new Set(['rcvStatus', 'rcvOpen', 'rcvAlive']);

export interface RecoveryGateInit {
  policy: RecoveryPolicy;
  /** The node's ring credential, shared with its server and peer pool: its id is replaced in place on open. */
  ring: RingCredential;
  /** The generation as sealed (null: 0, never reopened). */
  sealed: Generation | null;
  /** SHA-256 of the node's identity key (its ring node id). */
  node: Buffer;
  /** The digest of the recovered state (computed once, in recovery mode: it hashes every entry). */
  digest: () => StateDigest;
  /** The live figures shown when open (cheap: anyone may ask). */
  figures: () => { lastSeq: number; entries: number };
  /** Seal the new generation (durable before the node serves). */
  seal: (g: Generation) => Promise<void>;
  /** Whether the node serves now (for rcvAlive). */
  serving: () => boolean;
  /**
   * Close every peer session set up at the old ring id (outbound pooled and inbound), called on open right after
   * the new id is in the credential: the id is checked only at handshakes, so later peer exchanges re-handshake.
   */
  closePeerSessions?: () => void;
  logger: Logger;
}

export class RecoveryGate {
  private recovering: boolean;
  private readonly nonce = randomBytes(32);
  private readonly signers: Principal[] = [];
  private pendingNext: Buffer | null = null;
  private opening: Promise<void> | null = null;
  private readonly recoveredDigest: StateDigest | null;
  private resolveOpened: () => void = () => undefined;
  /** Resolves once the ring is open (at once when the node did not start in recovery mode). */
  readonly opened: Promise<void>;
  /** The live member found at boot (the node joins through it when its host gave no join address). */
  liveVia: string | null = null;

  constructor(private readonly c: RecoveryGateInit, recovering: boolean) {
    this.recovering = recovering;
    this.recoveredDigest = recovering ? c.digest() : null;
    this.opened = recovering ? new Promise((r) => (this.resolveOpened = r)) : Promise.resolve();
  }

  get inRecovery(): boolean {
    return this.recovering;
  }

  get generation(): number {
    return this.c.sealed?.generation ?? 0;
  }

  /** Client and ACL operations while in recovery mode. */
  refuse(): never {
    throw new EkvError('UNAVAILABLE', 'RECOVERY_MODE: this node recovered its ring from sealed state and serves nothing until its recovery members open it (ekv recovery status)');
  }

  handle(op: string, req: Record<string, unknown>): Promise<RpcResult> | RpcResult {
    if (op === 'rcvStatus') return this.status();
    if (op === 'rcvAlive') return { serving: !this.recovering && this.c.serving(), recovery: this.recovering, gen: this.generation };
    if (op === 'rcvOpen') return this.submit(req);
    throw new EkvError('BAD_REQUEST', 'unknown recovery operation');
  }

  status(): RpcResult {
    const members = this.c.policy.members.map((m) => m.bytes);
    const base = {
      ring: this.c.ring.id, gen: this.generation, node: this.c.node, members, k: this.c.policy.threshold, policy: policyDigest(this.c.policy),
      prev: this.c.ring.previous ?? [],
    };
    if (!this.recovering) {
      const d = this.c.figures();
      return { ...base, mode: 'open', lastSeq: d.lastSeq, entries: d.entries, signers: this.c.sealed?.signers ?? [] };
    }
    const d = this.recoveredDigest as StateDigest;
    return {
      ...base, mode: 'recovery', lastSeq: d.lastSeq, entries: d.entries, stateHash: d.stateHash, digest: this.digest(), nonce: this.nonce,
      signers: this.signers.map((s) => s.bytes), next: this.pendingNext,
    };
  }

  private digest(): Buffer {
    return digestHash(this.c.ring.id, this.generation, this.c.node, this.recoveredDigest as StateDigest);
  }

  private async submit(req: Record<string, unknown>): Promise<RpcResult> {
    if (!this.recovering) throw new EkvError('CONFLICT', 'NOT_IN_RECOVERY: this node is open');
    const s = req.s;
    const m = req.m;
    const sig = req.sig;
    if (!(s instanceof Uint8Array) || s.length !== openStatementBytes || !(m instanceof Uint8Array) || m.length > principalBytesMax || !(sig instanceof Uint8Array) || sig.length !== principalSignatureBytes) {
      throw new EkvError('BAD_REQUEST', 'MALFORMED: rcvOpen needs s (the statement), m (the member) and sig');
    }
    let member: Principal;
    try {
      const next = this.pendingNext ?? decodeOpenStatement(s).next;
      member = verifyOpenSignature(this.c.policy, this.expected(next), { statement: s, member: m, sig });
      if (this.signers.some((x) => x.equals(member))) throw new RecoveryError('DUPLICATE_SIGNER', `${member.text} has signed already`);
      this.pendingNext ??= next;
    } catch (err) {
      if (err instanceof RecoveryError) throw new EkvError(err.code === 'MALFORMED' ? 'BAD_REQUEST' : 'FORBIDDEN', `${err.code}: ${err.message}`);
      throw err;
    }
    this.signers.push(member);
    this.c.logger.warn({ member: member.text, signers: this.signers.length, k: this.c.policy.threshold }, 'recovery: a member signed the open');
    if (this.signers.length >= this.c.policy.threshold) await (this.opening ??= this.open());
    return { opened: !this.recovering, signers: this.signers.map((x) => x.bytes), need: Math.max(0, this.c.policy.threshold - this.signers.length) };
  }

  private expected(next: Buffer): OpenStatement {
    return { prevRing: this.c.ring.id, generation: this.generation, node: this.c.node, digest: this.digest(), nonce: this.nonce, next };
  }

  /** k members signed: seal generation g+1 under its new identity, then let the node boot on. */
  private async open(): Promise<void> {
    const prevId = Buffer.from(this.c.ring.id);
    const g: Generation = {
      generation: this.generation + 1,
      ringId: recoveredRingId(prevId, this.generation, this.pendingNext as Buffer),
      previous: [prevId, ...(this.c.sealed?.previous ?? [])].slice(0, previousRingIdsMax),
      signers: this.signers.map((x) => x.bytes),
      policyDigest: policyDigest(this.c.policy),
    };
    await this.c.seal(g);
    applyGeneration(this.c.ring, g);
    this.c.closePeerSessions?.();
    this.c.sealed = g;
    this.recovering = false;
    this.c.logger.warn({ generation: g.generation, ring: g.ringId.toString('hex').slice(0, 16), signers: g.signers.length }, 'recovery: the ring is open under a new identity');
    this.resolveOpened();
  }
}

/** Put a sealed generation into the shared ring credential (the server and peers read it at each handshake). */
export function applyGeneration(ring: RingCredential, g: Generation | null): void {
  if (!g) return;
  ring.id = g.ringId;
  ring.previous = g.previous;
  ring.generation = g.generation;
}
