/** `ekv status`: every node of the cluster, as the ring sees it, with its processes. */
import type { Command } from 'commander';
import { connect } from '../../client/index.ts';
import { loadCluster } from '../../client/cluster.ts';
import { run } from '../output.ts';

interface NodeStatus {
  addr: string;
  ok: boolean;
  code?: string;
  id?: string;
  ring?: string;
  serving?: boolean;
  predecessor?: string | null;
  successor?: string | null;
  successors?: string[];
  keys?: number;
  pcr0?: string;
  documentAgeMs?: number;
  /** The ring (deployment) id the node's attested key signed in the handshake. */
  ringId?: string;
  pids?: { host: number | null; emulator: number | null; enclave: number | null };
}

const hex = (b: unknown) => (b instanceof Uint8Array ? Buffer.from(b).toString('hex') : null);

async function healthz(http: string | undefined): Promise<NodeStatus['pids'] | undefined> {
  if (!http) return undefined;
  try {
    const r = await fetch(`${http}/healthz`, { signal: AbortSignal.timeout(2000) });
    const j = (await r.json()) as Record<string, unknown>;
    const pids = j.pids as Record<string, number> | undefined;
    return { host: pids?.host ?? null, emulator: pids?.emulator ?? null, enclave: pids?.enclave ?? (j.enclavePid as number | null) ?? null };
  } catch {
    return undefined;
  }
}

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description('show every node: ring id, address, predecessor/successor, key count, attestation (PCR0, document age), process ids')
    .option('-c, --cluster <file>', 'cluster file', process.env.EKV_CLUSTER ?? './cluster.json')
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: { cluster: string; json?: boolean }) =>
      run(o.json, async () => {
        const cluster = loadCluster(o.cluster);
        const kv = await connect({ cluster, timeoutMs: 5000 });
        const rows: NodeStatus[] = await Promise.all(
          cluster.nodes.map(async (n): Promise<NodeStatus> => {
            const pids = await healthz(n.http);
            try {
              const conn = kv.node(n.addr);
              const s = await conn.call('status', {});
              const att = conn.attested;
              const succ = Array.isArray(s.successors) ? (s.successors as Array<{ addr: string }>) : [];
              return {
                addr: n.addr, ok: true, id: hex(s.id) ?? undefined, ring: String(s.ring), serving: s.serving === true,
                predecessor: (s.predecessor as { addr: string } | null)?.addr ?? null,
                successor: succ[0]?.addr ?? null, successors: succ.map((x) => x.addr),
                keys: typeof s.keys === 'number' ? s.keys : undefined,
                pcr0: att ? Buffer.from(att.pcrs.get(0) ?? []).toString('hex') : undefined,
                documentAgeMs: att ? Date.now() - att.timestamp : undefined,
                ...(conn.ringId ? { ringId: conn.ringId.toString('hex') } : {}),
                ...(pids ? { pids } : {}),
              };
            } catch (err) {
              return { addr: n.addr, ok: false, code: (err as { code?: string }).code ?? 'UNAVAILABLE', ...(pids ? { pids } : {}) };
            }
          }),
        );
        await kv.close();
        if (o.json) {
          process.stdout.write(JSON.stringify({ ok: rows.every((r) => r.ok), nodes: rows }) + '\n');
        } else {
          for (const r of rows) {
            if (!r.ok) {
              process.stdout.write(`${r.addr}  DOWN (${r.code})  enclave pid ${r.pids?.enclave ?? '?'}\n`);
              continue;
            }
            process.stdout.write(
              `${r.addr}  id ${r.id?.slice(0, 12)}  ${r.ring}${r.serving ? '' : ' (receiving keys)'}  keys ${r.keys}  pred ${r.predecessor ?? '-'}  succ ${r.successor ?? '-'}  ` +
                `pcr0 ${r.pcr0?.slice(0, 12)}  ring ${r.ringId?.slice(0, 12) ?? '-'}  doc age ${Math.round((r.documentAgeMs ?? 0) / 1000)}s  pids host/emu/enclave ${r.pids?.host ?? '?'}/${r.pids?.emulator ?? '?'}/${r.pids?.enclave ?? '?'}\n`,
            );
          }
        }
        if (!rows.every((r) => r.ok)) process.exitCode = 1;
      }),
    );
}
