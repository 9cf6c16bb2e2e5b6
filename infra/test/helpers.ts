// Synthesizes the ring stack offline from a context, as `cdk synth` would, for assertions.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { buildApp } from '../bin/app.ts';

export const pcr0 = 'a1'.repeat(48);
export const pcr0Previous = 'b2'.repeat(48);
export const adminRoleArn = 'arn:aws:iam::111122223333:role/ekv-key-admin';

let dir: string | undefined;
let written = 0;

/** Writes a PCRs file into this process's temp dir (removed by removeTempFiles). */
/** The key ARN test images pin (region eu-west-1, as baseContext). */
export const pinnedKeyArn = 'arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';

export function pcrsFile(pcrs: Record<string, string> = { PCR0: pcr0, PCR1: 'c3'.repeat(48), PCR2: 'd4'.repeat(48), KmsKeyArn: pinnedKeyArn }): string {
  dir ??= mkdtempSync(join(tmpdir(), 'ekv-infra-'));
  const file = join(dir, `pcrs-${written++}.json`);
  writeFileSync(file, JSON.stringify(pcrs));
  return file;
}

/** The image a roll moves to: PCR0 pcr0Previous, same key. */
export function nextPcrsFile(): string {
  return pcrsFile({ PCR0: pcr0Previous, PCR1: 'c3'.repeat(48), PCR2: 'e5'.repeat(48), KmsKeyArn: pinnedKeyArn });
}

export function removeTempFiles(): void {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
}

export const baseContext = (): Record<string, unknown> => ({
  region: 'eu-west-1',
  pcrsFile: pcrsFile(),
  adminRoleArn,
  artifactsUri: 's3://ekv-release-test/v1',
  amiId: 'ami-0123456789abcdef0',
});

export function synth(context: Record<string, unknown> = {}): Template {
  const app = new App({ context: { ...baseContext(), ...context } });
  return Template.fromStack(buildApp(app).stack);
}

/** CloudFormation user data is Fn::Base64 of a string or an Fn::Join; flatten it, tokens shown as JSON. */
export function userDataText(ud: unknown): string {
  const inner = (ud as { 'Fn::Base64': string | { 'Fn::Join': [string, unknown[]] } })['Fn::Base64'];
  if (typeof inner === 'string') return inner;
  return inner['Fn::Join'][1].map((part) => (typeof part === 'string' ? part : JSON.stringify(part))).join('');
}

export interface Statement {
  Sid?: string;
  Effect: 'Allow' | 'Deny';
  Principal?: unknown;
  Action: string | string[];
  Condition?: Record<string, Record<string, unknown>>;
}

export const actions = (s: Statement): string[] => (Array.isArray(s.Action) ? s.Action : [s.Action]);

/** Does an IAM action pattern (with * wildcards) cover this action? */
export function covers(pattern: string, action: string): boolean {
  const re = new RegExp(`^${pattern.split('*').map((p) => p.replace(/[.?+^$()[\]{}|\\]/g, '\\$&')).join('.*')}$`, 'i');
  return re.test(action);
}
