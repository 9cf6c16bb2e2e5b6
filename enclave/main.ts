/**
 * The enclave image entry point (bundled into dist/enclave.mjs). It talks to
 * the world only through its NSM and the unix sockets of its vsock directory.
 * Logs are JSON lines on stderr, which the launcher (or, on Nitro, the socat
 * log bridge) forwards to the host.
 */
import { rmSync } from 'node:fs';
import pino from 'pino';
import { loadConfig, socketPaths } from './config.ts';
import { startEnclave } from './enclave.ts';
import { loadNodeConfigFromHost } from './host-config.ts';
import { openNsm } from './nsm.ts';

let config = loadConfig(process.env);
const logger = pino({ level: config.logLevel, base: { svc: 'enclave' } }, pino.destination({ fd: 2, sync: false }));

async function main(): Promise<void> {
  const nsm = await openNsm();
  const paths = socketPaths(config.vsockDir);
  if (process.env.EKV_CONFIG_FROM_HOST === '1') {
    config = loadConfig({ ...process.env, ...(await loadNodeConfigFromHost(paths.blobs)) });
    logger.info({ selfAddr: config.selfAddr, join: config.join }, 'node settings from the host');
  }
  rmSync(paths.inbound, { force: true });
  rmSync(paths.hostChannel, { force: true });
  // Handlers from the start (review-5 J3): a stop while the node still waits for its join address (retried for as
  // long as it takes) is logged and clean, not a default-signal death.
  let enclave: Awaited<ReturnType<typeof startEnclave>> | null = null;
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      // review-7 F5: a decommission asked for while a stop is under way is not done; say so (the node only leaves).
      if (signal === 'SIGUSR2') logger.warn({ signal }, 'decommission ignored: the enclave is already stopping (it leaves, it does not retire)');
      return;
    }
    stopping = true;
    const decommission = signal === 'SIGUSR2';
    logger.info({ signal, ...(decommission ? { decommission } : {}), ...(enclave ? {} : { started: false }) }, 'enclave stopping');
    await enclave?.stop(true, { decommission });
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  // Decommission (docs/consistency.md, "Retirement"): leave for good. The host can always stop a node for good;
  // this lets the node say so, so that its co-members' restarts do not wait for it.
  process.on('SIGUSR2', () => void stop('SIGUSR2'));
  enclave = await startEnclave({ nsm, logger, paths, config });
  logger.info({ id: enclave.nodeId, listen: paths.inbound }, 'enclave ready');
}

main().catch((err: unknown) => {
  logger.fatal({ err }, 'enclave failed to start');
  setTimeout(() => process.exit(1), 100);
});
