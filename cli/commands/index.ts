// The list of commands. One line per command file.
import type { Command } from 'commander';
import { registerMeasure } from './measure.ts';
import { registerUp } from './up.ts';
import { registerKv } from './kv.ts';
import { registerAcl } from './acl.ts';
import { registerAttest } from './attest.ts';
import { registerStatus } from './status.ts';
import { registerNode } from './node.ts';
import { registerHost } from './host.ts';
import { registerVerify } from './verify.ts';
import { registerRecovery } from './recovery.ts';

export const commands: Array<(program: Command) => void> = [
  registerMeasure,
  registerUp,
  registerKv,
  registerAcl,
  registerAttest,
  registerStatus,
  registerNode,
  registerHost,
  registerVerify,
  registerRecovery,
];
