/**
 * Who sees what of a node's state (review-4 A1). Serving and ring state (ring id, successors, epochs,
 * whether it serves, the attested facts of the session) is public to every attested caller: clients need
 * it to route and operators' probes to judge health. Data-derived figures (keys, bytes, the log position,
 * request and message counters, the metrics snapshot) move when anyone writes, so a principal with no read
 * right would learn from them how many keys the ring holds and, polling, when others write: what scans are
 * built not to reveal (docs/scans.md). In a `closed` ring those go only to the ring's operators: the image's
 * recovery members (docs/recovery.md; pinned in PCR0 like the access mode), the one ring-wide admin
 * notion there is. In an `open` ring anyone may read every key anyway, so everyone is an operator.
 * The host's /metrics gets the snapshot over its own socket (enclave/host-channel.ts), never through a
 * client port. docs/observability.md "Who sees counts".
 */
import type { RpcResult } from '../../protocol/rpc.ts';

/** Whether the caller (its proven principal key, or null: anonymous) may see data-derived figures. */
export type OperatorCheck = (principal: Buffer | null) => boolean;

/**
 * `status` fields every attested caller gets. An allowlist: a field added to status later stays
 * operator-only until someone decides it says nothing about the data.
 */
export const statusPublicFields: ReadonlySet<string> = new Set([
  // The ring (enclave.ts ringStatus) and the image.
  'id', 'addr', 'ring', 'predecessor', 'successors', 'replicas', 'ringId', 'founded',
  // Serving state of the data core (data-store.ts status).
  'serving', 'waiting', 'durable', 'ranges', 'rangesOwned', 'rangesMember', 'epochMax', 'livePeers',
  'incarnation', 'boot', 'checking', 'superseded', 'retired',
  'recovery',
]);

/** The recovery gate's status fields every caller gets (its log figures and state hash are left out). */
export const recoveryPublicFields: ReadonlySet<string> = new Set(['ring', 'gen', 'node', 'members', 'k', 'policy', 'prev', 'mode', 'signers', 'next']);

function pick(x: Record<string, unknown>, allowed: ReadonlySet<string>): RpcResult {
  const out: RpcResult = {};
  for (const [k, v] of Object.entries(x)) if (allowed.has(k)) out[k] = v;
  return out;
}

/** The data-derived parts of a `waiting` line (writes in flight and queued in the range). */
const waitingLoad = / (?:inflight|queued)=\d+/g;

/** A node's status as a caller without the operator right sees it. */
export function publicStatus(st: RpcResult): RpcResult {
  const out = pick(st, statusPublicFields);
  // `waiting` says why the node is not serving: public, but its range lines (DataNode.describeRange) also carry
  // the range's writes in flight and waiting, which move with other principals' writes (review-5 A2).
  if (Array.isArray(st.waiting)) out.waiting = st.waiting.map((w) => (typeof w === 'string' ? w.replace(waitingLoad, '') : ''));
  const rec = st.recovery;
  if (typeof rec === 'object' && rec !== null && !Array.isArray(rec)) out.recovery = pick(rec as Record<string, unknown>, recoveryPublicFields);
  else delete out.recovery;
  return out;
}

/**
 * The rule of an image: `open` access, everyone; `closed`, a session that proved one of `operators`
 * (principal bytes, as the handshake carries them).
 */
export function operatorCheck(accessMode: 'open' | 'closed', operators: readonly Uint8Array[]): OperatorCheck {
  if (accessMode === 'open') return () => true;
  const known = new Set(operators.map((p) => Buffer.from(p).toString('hex')));
  return (principal) => principal !== null && known.has(principal.toString('hex'));
}
