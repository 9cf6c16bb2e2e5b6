/** `ekv up`: start a local ring on the emulated TEE and run until SIGINT/SIGTERM. */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { serviceLogger } from '../../emulator/service-log.ts';
import { defaultImagePath } from '../local/image.ts';
import { startLocalRing } from '../local/ring.ts';
import { firstSignal, run, UsageError } from '../output.ts';
import { logLevelFlag } from '../flags.ts';

export { defaultImagePath } from '../local/image.ts';

export function registerUp(program: Command): void {
  program
    .command('up')
    .description('start a local ring of emulated Nitro enclaves (each: emulator + enclave + host proxy) on 127.0.0.1')
    .option('-n, --nodes <n>', 'number of nodes', '3')
    .option('-r, --replicas <r>', 'replication factor', '3')
    .option('-d, --dir <dir>', 'state directory (cluster.json, CA, sealed data); reused when it exists', '.ekv')
    .option('--enclave-image <file>', 'run exactly this enclave image, with the settings compiled into it (default, or dist/enclave.mjs: the image built for --access, --replicas, --no-seal and --nodes)')
    .option('--access <mode>', 'keys outside any namespace: open (anyone) or closed (no one)', 'open')
    .option('--no-seal', 'keep data only in enclave memory (no KMS, no sealed log)')
    .option('--no-recovery', 'a new ring without a recovery member (a whole-ring restart then reopens without anyone signing)')
    .option('--no-auto-open', 'when the restarted ring comes up in recovery mode, leave it there (ekv recovery status / open)')
    .option('--log-level <level>', 'log level of the launcher and hosts: trace, debug, info, warn, error, fatal or silent (JSON lines on stderr, one svc field each; the enclaves\' own: EKV_ENCLAVE_LOG_LEVEL)', 'warn')
    .option('--json', 'print the ready line as JSON')
    .action(async (o: { nodes: string; replicas: string; dir: string; enclaveImage?: string; logLevel: string; access: string; seal: boolean; recovery: boolean; autoOpen: boolean; json?: boolean }) =>
      run(o.json, async () => {
        const nodes = Number(o.nodes);
        const replicas = Number(o.replicas);
        if (!Number.isInteger(nodes) || nodes < 1 || nodes > 64) throw new UsageError('--nodes must be 1..64');
        if (!Number.isInteger(replicas) || replicas < 1 || replicas > 8) throw new UsageError('--replicas must be 1..8');
        const image = o.enclaveImage === undefined ? undefined : resolve(o.enclaveImage);
        if (o.access !== 'open' && o.access !== 'closed') throw new UsageError('--access must be open or closed');
        if (!existsSync(image ?? defaultImagePath)) throw new UsageError(`no enclave image at ${image ?? defaultImagePath}: run \`npm run build\` first`);
        const signal = firstSignal();
        const logger = serviceLogger('ekv-up', logLevelFlag(o.logLevel));
        const started = Date.now();
        const ring = await startLocalRing({
          dir: o.dir, nodes, replicas, ...(image ? { imagePath: image } : {}), logger, access: o.access, seal: o.seal,
          recovery: o.recovery, autoOpen: o.autoOpen,
          progress: (line) => process.stderr.write(`ekv up: ${line}\n`),
        });
        const ready = {
          ok: true,
          nodes: ring.nodes.map((n) => ({ name: n.name, addr: n.addr, http: n.http, pids: n.pids() })),
          cluster: ring.clusterFile,
          pcr0: ring.cluster.trust.pcrs?.['0'],
          startedInMs: Date.now() - started,
        };
        if (o.json) process.stdout.write(JSON.stringify(ready) + '\n');
        else {
          if (ring.recovery.waiting) process.stdout.write(`waiting: the ring is in recovery mode; its recovery members open it (ekv recovery status -c ${ring.clusterFile})\n`);
          process.stdout.write(`ready: ${ring.nodes.length} node(s) in ${ready.startedInMs} ms; cluster file ${ring.clusterFile}\n`);
          for (const n of ready.nodes) process.stdout.write(`  ${n.name}  ${n.addr}  ${n.http}  enclave pid ${n.pids.enclave}\n`);
          process.stdout.write(`try: npx ekv put hello world --cluster ${ring.clusterFile} && npx ekv get hello --cluster ${ring.clusterFile}\n`);
        }
        const sig = await signal;
        process.stderr.write(`ekv up: ${sig}: stopping ${ring.nodes.length} node(s)\n`);
        await ring.stop();
      }),
    );
}
