/**
 * The member's side of a recovery (docs/recovery.md), shared by `ekv recovery status|open` and `ekv up`'s
 * automatic open of a local ring: read every node's recovery status, compare it with this member's
 * last-seen record (`<cluster>.seen`), sign the open statement of every node in recovery mode (one `next`
 * for all of them), and keep the last-seen record.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { ClusterFile } from '../client/cluster.ts';
import { EkvClient, EkvError } from '../client/index.ts';
import type { TrustPolicy } from '../client/trust.ts';
import { principalFromBytes, type Signer } from '../protocol/principal.ts';
import { recoveredRingId, signOpen } from '../protocol/recovery.ts';

export interface NodeRecovery {
  addr: string;
  mode: 'recovery' | 'open' | 'unreachable';
  error?: string;
  ring?: string;
  gen?: number;
  node?: string;
  lastSeq?: number;
  entries?: number;
  stateHash?: string;
  digest?: string;
  nonce?: string;
  members?: string[];
  k?: number;
  signers?: string[];
  next?: string | null;
  prev?: string[];
}

const hex = (x: unknown): string | undefined => (x instanceof Uint8Array ? Buffer.from(x).toString('hex') : undefined);
const principals = (x: unknown): string[] => (Array.isArray(x) ? x.filter((p): p is Uint8Array => p instanceof Uint8Array).map((p) => principalFromBytes(p).text) : []);

/** The policy without its ring pin: recovery talks to nodes whose ring id is about to change (or has). */
function unpinned(trust: TrustPolicy): TrustPolicy {
  const { ringId: _ring, ...rest } = trust;
  return rest;
}

async function withNode<T>(addr: string, trust: TrustPolicy, timeoutMs: number, body: (kv: EkvClient) => Promise<T>): Promise<T> {
  const kv = new EkvClient([addr], unpinned(trust), { timeoutMs, floor: null });
  try {
    return await body(kv);
  } finally {
    await kv.close();
  }
}

export async function recoveryStatuses(cluster: ClusterFile, trust: TrustPolicy, timeoutMs = 10_000): Promise<NodeRecovery[]> {
  return Promise.all(cluster.nodes.map(async ({ addr }): Promise<NodeRecovery> => {
    try {
      const s = await withNode(addr, trust, timeoutMs, (kv) => kv.node(addr).call('rcvStatus', {}));
      return {
        addr, mode: s.mode === 'recovery' ? 'recovery' : 'open', ring: hex(s.ring), gen: Number(s.gen), node: hex(s.node),
        lastSeq: Number(s.lastSeq), entries: Number(s.entries), stateHash: hex(s.stateHash), digest: hex(s.digest), nonce: hex(s.nonce),
        members: principals(s.members), k: Number(s.k), signers: principals(s.signers), next: hex(s.next) ?? null,
        prev: Array.isArray(s.prev) ? s.prev.map((p) => hex(p) as string) : [],
      };
    } catch (err) {
      return { addr, mode: 'unreachable', error: err instanceof EkvError ? `${err.code}: ${err.message}` : (err as Error).message };
    }
  }));
}

// ---------------------------------------------------------------- the member's last-seen record

export interface SeenRecord {
  version: 1;
  ring: string;
  gen: number;
  /** node id (hex) -> what this member last saw of it. */
  nodes: Record<string, { lastSeq: number; entries: number }>;
}

export function defaultSeenFile(clusterPath: string): string {
  return `${clusterPath}.seen`;
}

export function readSeen(file: string): SeenRecord | null {
  if (!existsSync(file)) return null;
  const r = JSON.parse(readFileSync(file, 'utf8')) as SeenRecord;
  if (r?.version !== 1 || typeof r.ring !== 'string' || typeof r.nodes !== 'object') throw new EkvError('BAD_REQUEST', `${file}: not a last-seen record`);
  return r;
}

/** Keep what the open nodes show (never lowering a node's figures, nor the generation). */
export function writeSeen(file: string, statuses: NodeRecovery[]): void {
  const open = statuses.filter((s) => s.mode === 'open' && s.node && s.ring);
  if (open.length === 0) return;
  const top = open.reduce((a, b) => ((b.gen ?? 0) > (a.gen ?? 0) ? b : a));
  const old = readSeen(file);
  const rec: SeenRecord = old && old.gen === top.gen && old.ring === top.ring ? old : { version: 1, ring: top.ring as string, gen: top.gen ?? 0, nodes: { ...(old?.nodes ?? {}) } };
  for (const s of open) {
    if (s.ring !== rec.ring) continue;
    const had = rec.nodes[s.node as string];
    rec.nodes[s.node as string] = { lastSeq: Math.max(had?.lastSeq ?? 0, s.lastSeq ?? 0), entries: s.entries ?? 0 };
  }
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(rec, null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, file);
}

/**
 * How each recovering node compares with the record: lines to print, and whether to refuse. Refused: a lower
 * generation or another ring; a node whose log is behind what the member saw; a node the record does not know
 * (a fresh or wiped node offered in its place) or a recorded node that is not among them (a partial ring).
 */
export function compareSeen(seen: SeenRecord | null, statuses: NodeRecovery[]): { lines: string[]; older: boolean } {
  if (!seen) return { lines: ['no last-seen record of yours for this ring: compare the digests with what you know before you sign'], older: false };
  const lines: string[] = [];
  let older = false;
  const recovering = statuses.filter((x) => x.mode === 'recovery');
  for (const s of recovering) {
    const gen = s.gen ?? 0;
    if (gen < seen.gen || (gen === seen.gen && s.ring !== seen.ring)) {
      older = true;
      lines.push(`${s.addr}: recovered ring ${s.ring?.slice(0, 16)} generation ${gen}; you last saw ring ${seen.ring.slice(0, 16)} generation ${seen.gen}: OLDER (or another history)`);
      continue;
    }
    if (gen > seen.gen) {
      lines.push(`${s.addr}: generation ${gen}, newer than your record (${seen.gen}): reopened since you last looked`);
      continue;
    }
    const had = seen.nodes[s.node as string];
    if (!had) {
      older = true;
      lines.push(`${s.addr}: node ${s.node?.slice(0, 16)} (lastSeq ${s.lastSeq}, ${s.entries} entries) is not one you saw in this ring: a new or wiped node?`);
      continue;
    }
    const isOlder = (s.lastSeq ?? 0) < had.lastSeq;
    older ||= isOlder;
    lines.push(`${s.addr}: lastSeq ${s.lastSeq} (you last saw ${had.lastSeq}), ${s.entries} entries (you saw ${had.entries})${isOlder ? ': OLDER than you last saw' : ''}`);
  }
  const here = new Set(recovering.map((s) => s.node));
  const missing = recovering.every((s) => (s.gen ?? 0) === seen.gen) ? Object.keys(seen.nodes).filter((n) => !here.has(n)) : [];
  if (missing.length > 0) {
    older = true;
    lines.push(`${missing.length} node(s) you saw are not among those in recovery mode (${missing.map((n) => n.slice(0, 16)).join(', ')}): not the whole ring`);
  }
  return { lines, older };
}

// ---------------------------------------------------------------- signing

export interface OpenOutcome {
  addr: string;
  opened: boolean;
  need?: number;
  error?: string;
}

export interface OpenResult {
  outcomes: OpenOutcome[];
  /** The reopened ring's id (once opened) and generation. */
  newRing: string;
  generation: number;
}

/** Sign the open of every node in recovery mode with one `next`: the pending one if a member began, else new. */
export async function signOpens(statuses: NodeRecovery[], signer: Signer, trust: TrustPolicy, timeoutMs = 10_000): Promise<OpenResult> {
  const rec = statuses.filter((s) => s.mode === 'recovery');
  if (rec.length === 0) throw new EkvError('BAD_REQUEST', 'no node is in recovery mode');
  const rings = new Set(rec.map((s) => `${s.ring}/${s.gen}`));
  if (rings.size !== 1) throw new EkvError('CONFLICT', `the nodes in recovery mode recovered different rings or generations (${[...rings].join(', ')}): open them separately, if at all`);
  const pending = new Set(rec.map((s) => s.next).filter((n): n is string => typeof n === 'string'));
  if (pending.size > 1) throw new EkvError('CONFLICT', 'the nodes have different pending opens (two members began at once): wait for their processes to restart');
  const next = pending.size === 1 ? Buffer.from([...pending][0] as string, 'hex') : randomBytes(32);
  const first = rec[0] as NodeRecovery;
  const outcomes = await Promise.all(rec.map(async (s): Promise<OpenOutcome> => {
    const sig = signOpen(signer, {
      prevRing: Buffer.from(s.ring as string, 'hex'), generation: s.gen ?? 0, node: Buffer.from(s.node as string, 'hex'),
      digest: Buffer.from(s.digest as string, 'hex'), nonce: Buffer.from(s.nonce as string, 'hex'), next,
    });
    try {
      const r = await withNode(s.addr, trust, timeoutMs, (kv) => kv.node(s.addr).call('rcvOpen', { s: sig.statement, m: sig.member, sig: sig.sig }));
      return { addr: s.addr, opened: r.opened === true, need: Number(r.need) };
    } catch (err) {
      return { addr: s.addr, opened: false, error: err instanceof EkvError ? `${err.code}: ${err.message}` : (err as Error).message };
    }
  }));
  return { outcomes, newRing: recoveredRingId(Buffer.from(first.ring as string, 'hex'), first.gen ?? 0, next).toString('hex'), generation: (first.gen ?? 0) + 1 };
}
