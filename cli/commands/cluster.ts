/**
 * `ekv cluster init`: writes the client cluster file of a deployment on AWS from the stack's outputs and the
 * release's pcrs.json (cli/deploy/cluster-file.ts).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { ClusterFileError, clusterFromStack, type ImagePcrs } from '../deploy/cluster-file.ts';
import { run, UsageError } from '../output.ts';

function readJson(path: string, what: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new UsageError(`${what} ${path}: ${(err as Error).message.split('\n')[0]}`);
  }
}

export function registerCluster(program: Command): void {
  const cluster = program.command('cluster').description('cluster files for clients of a deployment');
  cluster
    .command('init')
    .description("write a client cluster file from the CloudFormation stack's outputs and the release's pcrs.json")
    .requiredOption('--outputs <file>', 'the JSON `cdk deploy --outputs-file` wrote')
    .requiredOption('--pcrs <file>', "the release's pcrs.json (infra/pcrs.json at the released commit, or your own rebuild's)")
    .option('--next-pcrs <file>', "during a roll: the next image's pcrs.json (both are then trusted)")
    .option('--stack <name>', 'the stack, when the outputs hold several')
    .option('--address <which>', 'private or public node addresses', 'private')
    .option('--ring-id <hex>', 'pin the ring id (`ekv status` shows it once the ring is founded)')
    .option('-o, --out <file>', 'where to write it (default: stdout)')
    .action(async (o: { outputs: string; pcrs: string; nextPcrs?: string; stack?: string; address: string; ringId?: string; out?: string }) =>
      run(false, async () => {
        if (o.address !== 'private' && o.address !== 'public') throw new UsageError('--address must be private or public');
        let file;
        try {
          file = clusterFromStack({
            outputs: readJson(o.outputs, '--outputs'),
            pcrs: readJson(o.pcrs, '--pcrs') as ImagePcrs,
            ...(o.nextPcrs ? { nextPcrs: readJson(o.nextPcrs, '--next-pcrs') as ImagePcrs } : {}),
            ...(o.stack ? { stackName: o.stack } : {}),
            address: o.address,
            ...(o.ringId ? { ringId: o.ringId } : {}),
          });
        } catch (err) {
          if (err instanceof ClusterFileError) throw new UsageError(err.message);
          throw err;
        }
        const text = JSON.stringify(file, null, 2) + '\n';
        if (o.out) writeFileSync(o.out, text, { mode: 0o644 });
        else process.stdout.write(text);
        if (o.out) process.stderr.write(`ekv cluster init: ${file.nodes.length} nodes, PCR0 ${JSON.stringify(file.trust.pcrs?.['0'])} -> ${o.out}\n`);
      }),
    );
}
