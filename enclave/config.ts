/**
 * The enclave's start-up configuration. It comes from the host (environment),
 * which is untrusted: nothing here can widen what the enclave trusts. Trust
 * roots and peer PCRs come from the NSM (enclave/trust.ts), and the KMS key,
 * access mode, replication factor and single-node permission from the image
 * (enclave/image-config.ts), never from here: only where things are.
 * What a hostile host can do with these settings (point us at a wrong join
 * address, advertise a wrong address) it could do anyway by controlling the
 * network; peers and clients verify every node they reach.
 */
import { join } from 'node:path';

export interface EnclaveConfig {
  vsockDir: string;
  logLevel: string;
  /** The address (host:port) at which peers and clients reach this node's host. */
  selfAddr: string;
  /** A ring member to join through; null starts a new ring. */
  join: string | null;
  /** The raw environment, for where KMS is (EKV_KMS_SOCKET, EKV_KMS_ADDR). */
  env: NodeJS.ProcessEnv;
}

export class ConfigError extends Error {
  readonly code = 'BAD_CONFIG';
}

const addrRe = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]{1,253}):\d{1,5}$/;

export function loadConfig(env: NodeJS.ProcessEnv): EnclaveConfig {
  const vsockDir = env.EKV_VSOCK_DIR ?? '/run/ekv/vsock';
  const logLevel = env.EKV_LOG_LEVEL ?? 'info';
  if (!['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].includes(logLevel)) {
    throw new ConfigError(`EKV_LOG_LEVEL: unknown level ${logLevel}`);
  }
  const selfAddr = env.EKV_SELF_ADDR ?? '127.0.0.1:7000';
  if (!addrRe.test(selfAddr)) throw new ConfigError('EKV_SELF_ADDR must be host:port');
  const joinAddr = env.EKV_JOIN && env.EKV_JOIN.length > 0 ? env.EKV_JOIN : null;
  if (joinAddr !== null && !addrRe.test(joinAddr)) throw new ConfigError('EKV_JOIN must be host:port');
  return { vsockDir, logLevel, selfAddr, join: joinAddr, env };
}

/** Socket paths; each is a vsock port on Nitro, bridged by socat. */
export function socketPaths(vsockDir: string) {
  return {
    inbound: join(vsockDir, 'enclave-5000.sock'),
    /** The host's own channel: the metrics hello only (enclave/host-channel.ts); never relayed to a client port. */
    hostChannel: join(vsockDir, 'enclave-5001.sock'),
    outbound: join(vsockDir, 'host-8000.sock'),
    blobs: join(vsockDir, 'host-8001.sock'),
  };
}
