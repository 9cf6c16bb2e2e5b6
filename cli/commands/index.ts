// The list of commands: the names each module registers, and how to load it. The modules are loaded
// only when needed (cli/main.ts), so that a command does not pay for the others' dependencies.
import type { Command } from 'commander';

export interface CommandModule {
  /** The top-level command names the module registers (aliases included). */
  names: string[];
  load(): Promise<(program: Command) => void>;
}

export const commandModules: CommandModule[] = [
  { names: ['measure'], load: async () => (await import('./measure.ts')).registerMeasure },
  { names: ['up'], load: async () => (await import('./up.ts')).registerUp },
  { names: ['put', 'get', 'del', 'delete'], load: async () => (await import('./kv.ts')).registerKv },
  { names: ['batch', 'shell'], load: async () => (await import('./batch.ts')).registerBatch },
  { names: ['keys', 'scan', 'mget', 'mput'], load: async () => (await import('./scan.ts')).registerScan },
  { names: ['export', 'import'], load: async () => (await import('./backup.ts')).registerBackup },
  { names: ['keygen', 'ns', 'acl', 'group'], load: async () => (await import('./acl.ts')).registerAcl },
  { names: ['attest'], load: async () => (await import('./attest.ts')).registerAttest },
  { names: ['status'], load: async () => (await import('./status.ts')).registerStatus },
  { names: ['node'], load: async () => (await import('./node.ts')).registerNode },
  { names: ['host'], load: async () => (await import('./host.ts')).registerHost },
  { names: ['verify'], load: async () => (await import('./verify.ts')).registerVerify },
  { names: ['emulate-enclave'], load: async () => (await import('./emulate-enclave.ts')).registerEmulateEnclave },
  { names: ['recovery'], load: async () => (await import('./recovery.ts')).registerRecovery },
  { names: ['cluster'], load: async () => (await import('./cluster.ts')).registerCluster },
  { names: ['dashboard'], load: async () => (await import('./dashboard.ts')).registerDashboard },
];
