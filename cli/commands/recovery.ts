/** `ekv recovery status`, `ekv recovery open --identity FILE`: reopening a ring that stopped as a whole (docs/recovery.md). */
import type { Command } from 'commander';
import { loadCluster } from '../../client/cluster.ts';
import { resolveConnect } from '../../client/index.ts';
import { loadIdentity } from '../../client/identity.ts';
import { EkvError } from '../../protocol/errors.ts';
import { compareSeen, defaultSeenFile, readSeen, recoveryStatuses, signOpens, writeSeen, type NodeRecovery } from '../recovery.ts';
import { run } from '../output.ts';
import { trustChoice, trustOptions, type TrustFlags } from '../trust-flags.ts';

interface RecoveryOpts extends TrustFlags {
  cluster: string;
  timeout: string;
  seen?: string;
  json?: boolean;
}

function options(cmd: Command): Command {
  return trustOptions(cmd)
    .option('-c, --cluster <file>', 'cluster file (node addresses)', process.env.EKV_CLUSTER ?? './cluster.json')
    .option('--timeout <ms>', 'per-request timeout in milliseconds', '10000')
    .option('--seen <file>', "your last-seen record of this ring (default: the cluster file + .seen)")
    .option('--json', 'print one JSON object on stdout');
}

function policyOf(o: RecoveryOpts) {
  const cluster = loadCluster(o.cluster);
  const { how: _how, ...choice } = trustChoice(o, cluster);
  return { cluster, trust: resolveConnect({ cluster, ...choice }).trust.policy };
}

function describe(s: NodeRecovery): string {
  if (s.mode === 'unreachable') return `${s.addr}  unreachable (${s.error})`;
  const head = `${s.addr}  ${s.mode === 'recovery' ? 'RECOVERY MODE' : 'open'}  ring ${s.ring?.slice(0, 16)}  generation ${s.gen}  node ${s.node?.slice(0, 16)}  lastSeq ${s.lastSeq}  entries ${s.entries}`;
  const signed = (s.signers ?? []).join(', ') || 'nobody';
  if (s.mode === 'recovery') {
    return `${head}\n    digest ${s.digest}  state ${s.stateHash}\n    signed by ${signed} (${s.signers?.length ?? 0} of ${s.k} needed)${s.next ? `; pending new identity ${s.next.slice(0, 16)}` : ''}`;
  }
  return (s.prev?.length ?? 0) > 0 ? `${head}\n    reopened from ring ${s.prev?.[0]?.slice(0, 16)}, signed by ${signed}` : head;
}

export function registerRecovery(program: Command): void {
  const rec = program.command('recovery').description("reopen a ring that stopped as a whole: its recovery members sign (docs/recovery.md)");

  options(rec.command('status'))
    .description('every node: recovery mode or open, ring id and generation, the digest of its state, who has signed')
    .action(async (o: RecoveryOpts) =>
      run(o.json, async () => {
        const { cluster, trust } = policyOf(o);
        const statuses = await recoveryStatuses(cluster, trust, Number(o.timeout));
        writeSeen(o.seen ?? defaultSeenFile(o.cluster), statuses);
        const first = statuses.find((s) => s.members);
        if (o.json) {
          process.stdout.write(JSON.stringify({ ok: true, members: first?.members ?? [], k: first?.k ?? null, nodes: statuses }) + '\n');
          return;
        }
        if (first?.members) process.stdout.write(`recovery members (${first.k} of ${first.members.length} must sign): ${first.members.join(' ')}\n`);
        for (const s of statuses) process.stdout.write(describe(s) + '\n');
      }),
    );

  options(rec.command('open'))
    .description('sign the open of every node in recovery mode with your recovery identity (after checking the digest)')
    .requiredOption('--identity <file>', 'your recovery member key (ekv keygen)')
    .option('--force', 'sign even what is older than your last-seen record')
    .action(async (o: RecoveryOpts & { identity: string; force?: boolean }) =>
      run(o.json, async () => {
        const signer = loadIdentity(o.identity);
        const { cluster, trust } = policyOf(o);
        const seenFile = o.seen ?? defaultSeenFile(o.cluster);
        const statuses = await recoveryStatuses(cluster, trust, Number(o.timeout));
        const cmp = compareSeen(readSeen(seenFile), statuses);
        if (!o.json) for (const l of cmp.lines) process.stdout.write(l + '\n');
        if (cmp.older && !o.force) {
          throw new EkvError('STALE', 'refusing to sign: a node recovered state older than you last saw (a rollback?); --force signs anyway');
        }
        const r = await signOpens(statuses, signer, trust, Number(o.timeout));
        const failed = r.outcomes.filter((x) => x.error);
        if (o.json) process.stdout.write(JSON.stringify({ ok: failed.length === 0, ...r }) + '\n');
        else {
          for (const x of r.outcomes) {
            process.stdout.write(`${x.addr}: ${x.error ?? (x.opened ? `OPEN as ring ${r.newRing} (generation ${r.generation})` : `signed; ${x.need} more signature(s) needed`)}\n`);
          }
          if (r.outcomes.every((x) => x.opened)) process.stdout.write(`the ring is open: pin its new ring id ${r.newRing} (--ring, or the cluster file's trust.ringId)\n`);
        }
        if (failed.length > 0) {
          const code = (failed[0]?.error ?? '').split(':')[0] ?? '';
          throw new EkvError(code === 'FORBIDDEN' || code === 'BAD_REQUEST' || code === 'CONFLICT' ? code : 'UNAVAILABLE', `${failed.length} node(s) refused: ${failed[0]?.error}`);
        }
        if (r.outcomes.every((x) => x.opened)) writeSeen(seenFile, await recoveryStatuses(cluster, trust, Number(o.timeout)));
      }),
    );
}
