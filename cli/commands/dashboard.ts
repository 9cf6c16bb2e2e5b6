/** `ekv dashboard`: the attested ring, live, in a browser on 127.0.0.1 (cli/dashboard/). */
import type { Command } from 'commander';
import { connect, resolveConnect } from '../../client/index.ts';
import { startDashboard } from '../dashboard/server.ts';
import { firstSignal, run, UsageError } from '../output.ts';
import { trustChoice, trustOptions, type TrustFlags } from '../trust-flags.ts';
import { defaultClusterFile, loadClusterFile, operatorIdentityPath } from '../flags.ts';
import { loadIdentity, toPrincipalSigner } from '../../client/identity.ts';

export function registerDashboard(program: Command): void {
  trustOptions(program.command('dashboard'))
    .description('serve a live page of the ring on 127.0.0.1: every node verified (attestation), its range, successors, keys, ops/s, latency, document; only what arrived over attested sessions')
    .option('-c, --cluster <file>', 'cluster file', defaultClusterFile())
    .option('-p, --port <port>', 'port on 127.0.0.1 (0: any free port)', '7070')
    .option('--identity <file>', 'prove this principal: in a closed ring, keys and metrics only for its operators (default: $EKV_IDENTITY, else the recovery.key ekv up made beside the cluster file)')
    .option('--json', 'print the ready line as JSON')
    .action(async (o: TrustFlags & { cluster: string; port: string; json?: boolean; identity?: string }) =>
      run(o.json, async () => {
        if (!/^\d{1,5}$/.test(o.port) || Number(o.port) > 65535) throw new UsageError('--port must be 0..65535');
        const cluster = loadClusterFile(o.cluster);
        const { how, ...choice } = trustChoice(o, cluster);
        const policy = resolveConnect({ cluster, ...choice }).trust.policy;
        const pcrs = Object.entries(policy.pcrs ?? {}).map(([i, v]) => `PCR${i} ${(Array.isArray(v) ? v : [v]).map((x) => String(x).slice(0, 12)).join('|')}…`);
        const trust = `${pcrs.join(', ') || 'no PCR pinned'}; roots: ${policy.roots ? `${policy.roots.length} given` : 'AWS Nitro root'}; policy from ${how}`;
        const signal = firstSignal();
        const idFile = operatorIdentityPath(o.identity, o.cluster);
        const identity = idFile === null ? undefined : toPrincipalSigner(loadIdentity(idFile));
        const kv = await connect({ cluster, ...choice, timeoutMs: 1000, ...(identity ? { identity } : {}) });
        const dash = await startDashboard({ cluster, kv, trust, port: Number(o.port) });
        if (o.json) process.stdout.write(JSON.stringify({ ok: true, url: dash.url }) + '\n');
        else process.stdout.write(`dashboard: ${dash.url}  (${cluster.nodes.length} nodes; Ctrl-C to stop)\n`);
        await signal;
        await dash.close();
        await kv.close();
      }),
    );
}
