#!/usr/bin/env -S npx tsx
/**
 * The CDK app: one ring stack, configured from context (see lib/config.ts and docs/deploy.md).
 *   npx cdk deploy -c pcrsFile=pcrs.json -c adminRoleArn=... -c artifactsUri=s3://bucket/release ...
 */
import { App } from 'aws-cdk-lib';
import { join } from 'node:path';
import { readConfig } from '../lib/config.ts';
import { RingStack } from '../lib/ring-stack.ts';

export function buildApp(app: App = new App()): { app: App; stack: RingStack } {
  const ctx = (key: string): unknown => app.node.tryGetContext(key);
  const config = readConfig(ctx, join(import.meta.dirname, '..'));
  const amiId = ctx('amiId');
  const stack = new RingStack(app, String(ctx('stackName') ?? 'EnclaveKvRing'), {
    config,
    ...(typeof amiId === 'string' ? { amiId } : {}),
    env: { region: config.region, ...(process.env.CDK_DEFAULT_ACCOUNT ? { account: process.env.CDK_DEFAULT_ACCOUNT } : {}) },
    description: `enclave-kv ring: ${config.nodeCount} nodes, replication ${config.replicationFactor}`,
  });
  return { app, stack };
}

if (process.argv[1] && import.meta.filename === process.argv[1]) {
  buildApp().app.synth();
}
