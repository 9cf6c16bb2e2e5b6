/** `ekv status`: every node of the cluster, as the ring sees it, with its processes. */
import { createHash } from 'node:crypto';
import type { Command } from 'commander';
import { defaultDocAgeMaxMs } from '../../client/trust.ts';
import { connect, resolveConnect, type ResolvedTrust } from '../../client/index.ts';
import { loadCluster } from '../../client/cluster.ts';
import { principalFromBytes } from '../../protocol/principal.ts';
import { run } from '../output.ts';
import { trustChoice, trustOptions, type TrustFlags } from '../trust-flags.ts';
import { defaultClusterFile, loadClusterFile, operatorIdentityPath } from '../flags.ts';
import { loadIdentity, toPrincipalSigner } from '../../client/identity.ts';
import { fetchHostPids } from '../healthz.ts';

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
  /** Recovery (docs/recovery.md): mode, generation, members and k, who signed the last open. */
  recovery?: { mode: string; generation: number; members: string[]; k: number; signers: string[] };
}

function recoveryOf(r: unknown): NodeStatus['recovery'] | undefined {
  if (typeof r !== 'object' || r === null) return undefined;
  const x = r as Record<string, unknown>;
  const texts = (v: unknown) => (Array.isArray(v) ? v.filter((p): p is Uint8Array => p instanceof Uint8Array).map((p) => principalFromBytes(p).text) : []);
  return { mode: String(x.mode), generation: Number(x.gen), members: texts(x.members), k: Number(x.k), signers: texts(x.signers) };
}

const hex = (b: unknown) => (b instanceof Uint8Array ? Buffer.from(b).toString('hex') : null);

async function healthz(http: string | undefined): Promise<NodeStatus['pids'] | undefined> {
  if (!http) return undefined;
  return (await fetchHostPids(http, 2000)) ?? undefined;
}

/** The trust policy in force and where each part came from (caller flag, cluster file, default). */
export interface TrustReport {
  from: ResolvedTrust['from'];
  how: string;
  parts: Record<string, { source: string; value: unknown }>;
}

function trustReport(r: ResolvedTrust, how: string): TrustReport {
  const p = r.policy;
  const parts: TrustReport['parts'] = {};
  const fingerprint = (pem: string) => createHash('sha256').update(pem.replace(/\s+/g, '')).digest('hex').slice(0, 16);
  for (const [k, source] of Object.entries(r.parts)) {
    let value: unknown;
    if (k === 'roots') value = p.roots ? p.roots.map((pem) => `pem sha256:${fingerprint(pem)}`) : 'AWS Nitro root';
    else if (k.startsWith('pcr')) value = p.pcrs?.[k.slice(3)] ?? 'not pinned';
    else if (k === 'maxAgeMs') value = p.maxAgeMs ?? defaultDocAgeMaxMs;
    else if (k === 'clockSkewMs') value = p.clockSkewMs ?? 'verifier default';
    else if (k === 'ringId') value = p.ringId ?? 'not pinned';
    else value = (p as Record<string, unknown>)[k] ?? false;
    parts[k] = { source: source === 'caller' ? 'caller flag' : source, value };
  }
  return { from: r.from, how, parts };
}

function printTrust(t: TrustReport): void {
  process.stdout.write(`trust policy: ${t.how}\n`);
  for (const [k, v] of Object.entries(t.parts)) {
    process.stdout.write(`  ${k.padEnd(13)} ${(Array.isArray(v.value) ? v.value.join(', ') : String(v.value)).padEnd(40)} from ${v.source}\n`);
  }
}

export function registerStatus(program: Command): void {
  trustOptions(program.command('status'))
    .description('show the trust policy in force (and where each part came from), then every node: ring id, address, predecessor/successor, key count, attestation (PCR0, document age), process ids')
    .option('-c, --cluster <file>', 'cluster file', defaultClusterFile())
    .option('--identity <file>', 'prove this principal: in a closed ring, key counts only for its operators (default: $EKV_IDENTITY, else the recovery.key ekv up made beside the cluster file)')
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: TrustFlags & { cluster: string; json?: boolean; identity?: string }) =>
      run(o.json, async () => {
        const cluster = loadClusterFile(o.cluster);
        const { how, ...choice } = trustChoice(o, cluster);
        const trust = trustReport(resolveConnect({ cluster, ...choice }).trust, how);
        if (!o.json) printTrust(trust);
        const idFile = operatorIdentityPath(o.identity, o.cluster);
        const identity = idFile === null ? undefined : toPrincipalSigner(loadIdentity(idFile));
        const kv = await connect({ cluster, ...choice, timeoutMs: 5000, ...(identity ? { identity } : {}) });
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
                ...(recoveryOf(s.recovery) ? { recovery: recoveryOf(s.recovery) } : {}),
                ...(pids ? { pids } : {}),
              };
            } catch (err) {
              return { addr: n.addr, ok: false, code: (err as { code?: string }).code ?? 'UNAVAILABLE', ...(pids ? { pids } : {}) };
            }
          }),
        );
        await kv.close();
        if (o.json) {
          process.stdout.write(JSON.stringify({ ok: rows.every((r) => r.ok), trust, nodes: rows }) + '\n');
        } else {
          for (const r of rows) {
            if (!r.ok) {
              process.stdout.write(`${r.addr}  DOWN (${r.code})  enclave pid ${r.pids?.enclave ?? '?'}\n`);
              continue;
            }
            process.stdout.write(
              `${r.addr}  id ${r.id?.slice(0, 12)}  ${r.ring}${r.serving ? '' : ' (receiving keys)'}  keys ${r.keys ?? '-'}  pred ${r.predecessor ?? '-'}  succ ${r.successor ?? '-'}  ` +
                `pcr0 ${r.pcr0?.slice(0, 12)}  ring ${r.ringId?.slice(0, 12) ?? '-'}  doc age ${Math.round((r.documentAgeMs ?? 0) / 1000)}s  pids host/emu/enclave ${r.pids?.host ?? '?'}/${r.pids?.emulator ?? '?'}/${r.pids?.enclave ?? '?'}\n`,
            );
          }
        }
        const rec = rows.find((r) => r.recovery)?.recovery;
        if (rec && !o.json) {
          process.stdout.write(`recovery members (${rec.k} of ${rec.members.length} reopen a stopped ring): ${rec.members.join(' ')}\n`);
          process.stdout.write(`ring generation ${rec.generation}${rec.signers.length ? `, reopened by ${rec.signers.join(', ')}` : ''}${rows.some((r) => r.recovery?.mode === 'recovery') ? '; RECOVERY MODE: see ekv recovery status' : ''}\n`);
        }
        if (!rows.every((r) => r.ok)) process.exitCode = 1;
      }),
    );
}
