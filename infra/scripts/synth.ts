/**
 * `npm run synth`: writes the CloudFormation template offline (no AWS credentials, no lookups) to
 * cdk.out/ and prints its path. Context comes from cdk.json and `-c key=value` arguments; without
 * a pcrs.json (no EIF built yet) it falls back to pcrs.example.json and says so.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App } from 'aws-cdk-lib';
import { buildApp } from '../bin/app.ts';

const root = join(import.meta.dirname, '..');
const context: Record<string, string> = {};
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  const arg = args[i] as string;
  const kv = arg === '-c' || arg === '--context' ? args[++i] : undefined;
  const m = kv ? /^([^=]+)=(.*)$/.exec(kv) : null;
  if (!m) throw new Error(`usage: npm run synth -- [-c key=value]...; got ${arg}`);
  context[m[1] as string] = m[2] as string;
}
if (context.pcrsFile === undefined && !existsSync(join(root, 'pcrs.json'))) {
  console.warn('synth: no pcrs.json (run enclave/build-eif.sh); using pcrs.example.json, NOT deployable');
  context.pcrsFile = 'pcrs.example.json';
}
const outdir = join(root, 'cdk.out');
const app = new App({ outdir, context: { ...readCdkJsonContext(), ...context } });
const { stack } = buildApp(app);
const assembly = app.synth();
console.log(join(assembly.directory, stack.templateFile));

function readCdkJsonContext(): Record<string, unknown> {
  const file = join(root, 'cdk.json');
  if (!existsSync(file)) return {};
  const parsed = JSON.parse(readFileSync(file, 'utf8')) as { context?: Record<string, unknown> };
  return parsed.context ?? {};
}
