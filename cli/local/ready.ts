/**
 * Waits until a ring has formed: every node active and serving, and each
 * node's successor the next node clockwise by ring id. Clients that start
 * after this see every key where it belongs.
 */
import { connect } from '../../client/index.ts';
import type { ClusterFile } from '../../client/cluster.ts';

export async function waitForRing(cluster: ClusterFile, timeoutMs: number, progress?: (line: string) => void): Promise<void> {
  const kv = await connect({ cluster, trustClusterFile: true, timeoutMs: 3000 }); // our own ring's file
  const deadline = Date.now() + timeoutMs;
  let last = '';
  try {
    for (;;) {
      const why = await notFormed(kv, cluster);
      if (why === null) return;
      if (why !== last && progress) progress(`waiting for the ring: ${why}`);
      last = why;
      if (Date.now() > deadline) throw new Error(`the ring did not form within ${timeoutMs} ms: ${why}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  } finally {
    await kv.close();
  }
}

async function notFormed(kv: Awaited<ReturnType<typeof connect>>, cluster: ClusterFile): Promise<string | null> {
  const views: Array<{ addr: string; id: string; succ: string | null; serving: boolean; ring: string }> = [];
  for (const n of cluster.nodes) {
    try {
      const s = await kv.node(n.addr).call('status', {});
      const succ = (s.successors as Array<{ addr: string }> | undefined)?.[0]?.addr ?? null;
      views.push({ addr: n.addr, id: Buffer.from(s.id as Uint8Array).toString('hex'), succ, serving: s.serving === true, ring: String(s.ring) });
    } catch (err) {
      return `${n.addr} not answering (${(err as { code?: string }).code ?? 'error'})`;
    }
  }
  const notServing = views.find((v) => !v.serving || v.ring !== 'active');
  if (notServing) return `${notServing.addr} is ${notServing.ring}${notServing.serving ? '' : ', receiving its keys'}`;
  if (views.length === 1) return null;
  const sorted = [...views].sort((a, b) => (a.id < b.id ? -1 : 1));
  for (let i = 0; i < sorted.length; i++) {
    const v = sorted[i] as (typeof sorted)[number];
    const next = sorted[(i + 1) % sorted.length] as (typeof sorted)[number];
    if (v.succ !== next.addr) return `${v.addr}'s successor is ${v.succ ?? 'unknown'}, not yet ${next.addr}`;
  }
  return null;
}
