/**
 * The enclave's start-up configuration. It comes from the host (environment),
 * which is untrusted: nothing here can widen what the enclave trusts. Trust
 * roots and peer PCRs come from the NSM (enclave/trust.ts), never from here.
 */
import { join } from 'node:path';

export interface EnclaveConfig {
  vsockDir: string;
  logLevel: string;
}

export class ConfigError extends Error {
  readonly code = 'BAD_CONFIG';
}

export function loadConfig(env: NodeJS.ProcessEnv): EnclaveConfig {
  const vsockDir = env.EKV_VSOCK_DIR ?? '/run/ekv/vsock';
  const logLevel = env.EKV_LOG_LEVEL ?? 'info';
  if (!['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].includes(logLevel)) {
    throw new ConfigError(`EKV_LOG_LEVEL: unknown level ${logLevel}`);
  }
  return { vsockDir, logLevel };
}

/** Socket paths; each is a vsock port on Nitro, bridged by socat. */
export function socketPaths(vsockDir: string) {
  return {
    inbound: join(vsockDir, 'enclave-5000.sock'),
    outbound: join(vsockDir, 'host-8000.sock'),
    blobs: join(vsockDir, 'host-8001.sock'),
  };
}
