/** `ekv attest <address>`: fetch a node's document for a fresh nonce and verify it. */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import type { Command } from 'commander';
import { parseAddress } from '../../client/node-connection.ts';
import { checkTrustPolicy, documentVerifier, resolveTrust } from '../../client/trust.ts';
import { handshakeBytesMax } from '../../protocol/constants.ts';
import { FramedSocket } from '../../protocol/framed-socket.ts';
import { requestAttestation } from '../../protocol/handshake.ts';
import { run } from '../output.ts';
import { trustChoice, trustOptions, type TrustFlags } from '../trust-flags.ts';
import { defaultClusterFile, loadClusterFile } from '../flags.ts';

export function registerAttest(program: Command): void {
  trustOptions(program.command('attest'))
    .argument('<address>', 'the node, host:port')
    .description("fetch the node's attestation document for a fresh nonce and verify it against your trust policy (--pcr/--root, or the cluster file's: see --trust-cluster-file)")
    .option('-c, --cluster <file>', 'cluster file (its trust section only with --trust-cluster-file or when your own ekv up wrote it)', defaultClusterFile())
    .option('--out <file>', 'also write the raw document (COSE_Sign1) to this file')
    .option('--json', 'print one JSON object on stdout')
    .action(async (address: string, o: TrustFlags & { cluster: string; json?: boolean; out?: string }) =>
      run(o.json, async () => {
        const cluster = loadClusterFile(o.cluster);
        const { how: _how, ...choice } = trustChoice(o, cluster);
        const trust = resolveTrust({ ...choice, fileTrust: cluster.trust }).policy;
        checkTrustPolicy(trust);
        const nonce = randomBytes(32);
        const { host, port } = parseAddress(address);
        const socket = net.connect({ host, port });
        const fs = new FramedSocket(socket, handshakeBytesMax);
        let doc: Buffer;
        try {
          doc = await requestAttestation(fs, nonce);
        } finally {
          socket.destroy();
        }
        if (o.out) (await import('node:fs')).writeFileSync(o.out, doc);
        const v = await documentVerifier(trust)(doc, nonce);
        const pcrs: Record<string, string> = {};
        for (const [i, b] of v.pcrs) if (i <= 8) pcrs[String(i)] = Buffer.from(b).toString('hex');
        const out = {
          ok: true,
          address,
          moduleId: v.moduleId,
          timestamp: new Date(v.timestamp).toISOString(),
          ageMs: Date.now() - v.timestamp,
          certificateExpires: new Date(v.leafNotAfter).toISOString(),
          identityKey: v.publicKey ? Buffer.from(v.publicKey).toString('hex') : null,
          pcrs,
        };
        if (o.json) process.stdout.write(JSON.stringify(out) + '\n');
        else {
          process.stdout.write(`verified: ${address}\n  module    ${out.moduleId}\n  timestamp ${out.timestamp}\n  cert exp. ${out.certificateExpires}\n  identity  ${out.identityKey}\n`);
          for (const [i, h] of Object.entries(pcrs)) process.stdout.write(`  PCR${i.padEnd(6)}${h}\n`);
        }
      }),
    );
}
