/**
 * `ekv host`: the untrusted host proxy on a Nitro parent instance. The
 * enclave's unix sockets in --vsock-dir are bridged to vsock by socat (see
 * infra/host/); this process relays client and peer TCP connections to the
 * enclave, the enclave's outbound connections to peers, and stores its sealed
 * blobs under --data-dir.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import pino from 'pino';
import { startBlobStore } from '../../host/blob-store.ts';
import { decommissionLogged } from '../../host/enclave-metrics.ts';
import { startHost, type RunningHost } from '../../host/host.ts';
import { CidrError, cidrPolicy, outboundCidrsDefault } from '../../host/outbound-policy.ts';
import { readReleaseFile } from '../../host/release.ts';
import { fetchRingSecret, ringSecretBlob } from '../../host/ring-secret.ts';
import { exitDecommissioned, firstSignal, run, UsageError } from '../output.ts';
import { logLevelFlag } from '../flags.ts';

function port(v: string, name: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UsageError(`${name} must be a port number`);
  return n;
}

/** The release's PCR0s for the health check; none (no expectation) while there is no valid release file. */
function expectedImages(file: string, logger: pino.Logger): string[] {
  try {
    return readReleaseFile(file)?.accepted ?? [];
  } catch (err) {
    logger.warn({ err: (err as Error).message, file }, 'the release file is not valid; health checks expect no particular image');
    return [];
  }
}

/** In --data-dir once the node was decommissioned: `ekv host` then refuses to start (exit 3). */
export const decommissionedMarker = 'decommissioned';

export function registerHost(program: Command): void {
  program
    .command('host')
    .description('run the host proxy of one node (production: on the Nitro parent instance)')
    .requiredOption('--vsock-dir <dir>', 'directory of the enclave-bridged unix sockets')
    .option('--listen <port>', 'client/peer TCP port', '7000')
    .option('--bind <address>', 'address to bind the TCP and HTTP ports to', '0.0.0.0')
    .option('--http <port>', 'HTTP port (attestation, health, metrics)', '8080')
    .option('--data-dir <dir>', 'where sealed blobs are stored', '/var/lib/ekv')
    .option('--allow-outbound <cidrs>', 'comma-separated CIDRs (or addresses) the enclave may connect to (peers)', outboundCidrsDefault.join(','))
    .option('--enclave-cmd <command>', "launch the enclave with this command and be its watchdog (relaunch with backoff); on Nitro /opt/ekv/bin/run-enclave.sh")
    .option('--health-root <pem>', 'the root the health check verifies the enclave against (default: the AWS Nitro root)')
    .option('--release <file>', "the release file (PCR0s this node may run, written from SSM at boot); the health check reports another image as unhealthy")
    .option('--self-addr <host:port>', "the address peers reach this node's enclave at (passed to the enclave)")
    .option('--join <host:port>', 'a ring member for the enclave to join through (empty: found a ring)', '')
    .option('--imds <url>', "instance metadata service whose role credentials the enclave's KMS calls use ('' : none)", 'http://169.254.169.254')
    .option('--ring-secret <file|url>', "for a node joining a ring: the ring's ring-secret blob (KMS ciphertext, not secret), a file or a member host's http://<ip>:<http port>/v1/ring-secret; put into --data-dir if absent")
    .option('--log-level <level>', 'log level: trace, debug, info, warn, error, fatal or silent (JSON lines on stderr)', 'info')
    .option('--json', 'once listening, print one ready line as JSON on stdout: {"ok":true,"port","httpPort","pid"} (a supervisor learns the ports chosen for 0)')
    .action(async (o: { vsockDir: string; listen: string; bind: string; http: string; dataDir: string; allowOutbound: string; logLevel: string; selfAddr?: string; join: string; imds: string; ringSecret?: string; enclaveCmd?: string; healthRoot?: string; release?: string; json?: boolean }) =>
      run(false, async () => {
        const signal = firstSignal(['SIGUSR2']);
        mkdirSync(o.dataDir, { recursive: true, mode: 0o700 });
        const logger = pino({ level: logLevelFlag(o.logLevel), base: { svc: 'host' } }, pino.destination(2));
        // A decommissioned node stays down: started again, its enclave would only say it retired (a retired log stays
        // retired for good, docs/consistency.md B7a), and the instance is about to go (docs/deploy.md). review-8 F3:
        // removing the marker does not make it a new member; a new node needs a fresh data directory.
        const marker = join(o.dataDir, decommissionedMarker);
        if (existsSync(marker)) {
          logger.error({ code: 'DECOMMISSIONED', marker }, 'this node was decommissioned: not starting (its sealed state is retired for good; a new node needs a fresh data directory)');
          process.stderr.write(`DECOMMISSIONED: this node was decommissioned (${marker}); its sealed state is retired for good: run a new node from a fresh --data-dir\n`);
          process.exitCode = exitDecommissioned;
          return;
        }
        let outboundPolicy;
        try {
          outboundPolicy = cidrPolicy(o.allowOutbound.split(',').map((s) => s.trim()).filter(Boolean));
        } catch (err) {
          if (err instanceof CidrError) throw new UsageError(`--allow-outbound: ${err.message}`);
          throw err;
        }
        const healthRoots = o.healthRoot ? [readFileSync(o.healthRoot, 'utf8')] : undefined;
        const release = o.release;
        // Not secret: only KMS opens it, for the measured image under this deployment's key (docs/membership.md).
        // Fetched in the background from a member's host (which may not have founded the ring yet); the enclave's
        // first launch waits for it: launched without it, the enclave refuses to start.
        const fetching = new AbortController();
        let launchAfter: Promise<boolean> | undefined;
        if (o.ringSecret && /^https?:\/\//.test(o.ringSecret)) {
          launchAfter = fetchRingSecret(o.ringSecret, join(o.dataDir, ringSecretBlob), { logger, signal: fetching.signal });
        } else if (o.ringSecret && !existsSync(join(o.dataDir, ringSecretBlob))) {
          copyFileSync(o.ringSecret, join(o.dataDir, ringSecretBlob));
        }
        let host: RunningHost;
        try {
          host = await startHost({
            vsockDir: o.vsockDir,
            listenHost: o.bind,
            listenPort: port(o.listen, '--listen'),
            httpPort: port(o.http, '--http'),
            dataDir: o.dataDir,
            outboundPolicy,
            logger,
            startBlobStore: (socketPath, dir) => startBlobStore({ socketPath, dir, logger }),
            ...(o.imds ? { imdsUrl: o.imds } : {}),
            ...(o.enclaveCmd ? { enclaveCommand: o.enclaveCmd } : {}),
            ...(launchAfter ? { launchAfter } : {}),
            // The enclave's per-node settings, read by it through the blob store (enclave/host-config.ts).
            ...(o.selfAddr ? { nodeConfig: { selfAddr: o.selfAddr, join: o.join } } : {}),
            ...(healthRoots ? { healthRoots } : {}),
            // Re-read on every check: an upgrade step changes the release without restarting the host.
            ...(release ? { expectPcr0: () => expectedImages(release, logger) } : {}),
            // The `node` label of the enclave's metrics on /metrics: the address peers know the node by.
            ...(o.selfAddr ? { nodeName: o.selfAddr } : {}),
          });
        } catch (err) {
          fetching.abort(); // no host, no launch to wait for
          throw err;
        }
        if (o.json) process.stdout.write(JSON.stringify({ ok: true, port: host.port, httpPort: host.httpPort, pid: process.pid }) + '\n');
        const sig = await signal;
        fetching.abort();
        const retired = sig === 'SIGUSR2' && (await decommissionLogged(() => host.decommission(), logger))?.retired === true;
        if (retired) writeFileSync(marker, JSON.stringify({ decommissionedAt: new Date().toISOString() }) + '\n', { mode: 0o600 });
        await host.close();
        if (retired) process.exitCode = exitDecommissioned;
      }),
    );
}

