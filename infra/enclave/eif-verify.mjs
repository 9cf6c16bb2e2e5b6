#!/usr/bin/env node
// `npm run eif:verify`: rebuild the enclave image from this checkout and compare its PCRs with a released
// pcrs.json (default: infra/pcrs.json as committed at HEAD). The settings compiled into the image come from
// that file (KmsKeyArn, Replicas, AccessMode), so the rebuild measures the same thing the release did.
// Exit 0: PCR0, PCR1 and PCR2 all equal; 1: a difference (printed) or a failed build; 2: usage.
//   node infra/enclave/eif-verify.mjs [--expected FILE] [--keep DIR]
// EKV_EIF_BUILD overrides the build command (tests run a stand-in; the default needs docker and nitro-cli).
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
export const measured = ['PCR0', 'PCR1', 'PCR2'];

/** The settings build-eif.sh must compile in to reproduce `expected` (a parsed pcrs.json). */
export function buildEnv(expected) {
  if (typeof expected?.KmsKeyArn !== 'string') throw new Error('the expected pcrs.json names no KmsKeyArn: it cannot be rebuilt to match');
  return {
    EKV_PINNED_KMS_KEY: expected.KmsKeyArn,
    EKV_PINNED_REPLICAS: String(expected.Replicas ?? 3),
    EKV_PINNED_ACCESS_MODE: expected.AccessMode ?? 'closed',
    EKV_PINNED_RING_PEERS: expected.RingPeers === true ? '1' : '0',
  };
}

/** Differences between two pcrs.json objects, one line each (empty: the same image). */
export function comparePcrs(expected, rebuilt) {
  const out = [];
  for (const k of measured) {
    const a = String(expected?.[k] ?? '').toLowerCase();
    const b = String(rebuilt?.[k] ?? '').toLowerCase();
    if (!/^[0-9a-f]{96}$/.test(a)) out.push(`${k}: the expected file has no valid ${k}`);
    else if (a !== b) out.push(`${k}: released ${a}, rebuilt ${b || '(none)'}`);
  }
  return out;
}

function readExpected(file) {
  if (file) return JSON.parse(readFileSync(file, 'utf8'));
  return JSON.parse(execFileSync('git', ['-C', repo, 'show', 'HEAD:infra/pcrs.json'], { encoding: 'utf8' }));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const argv = process.argv.slice(2);
  const opt = (n) => (argv.includes(n) ? argv[argv.indexOf(n) + 1] : undefined);
  let expected;
  try {
    expected = readExpected(opt('--expected'));
  } catch (err) {
    console.error(`eif-verify: cannot read the released pcrs.json (${err.message.split('\n')[0]}); pass --expected FILE`);
    process.exit(2);
  }
  const out = opt('--keep') ?? mkdtempSync(join(tmpdir(), 'ekv-eif-verify-'));
  const build = process.env.EKV_EIF_BUILD ?? join(here, 'build-eif.sh');
  let env;
  try {
    env = { ...process.env, ...buildEnv(expected), EKV_OUT_DIR: out };
  } catch (err) {
    console.error(`eif-verify: ${err.message}`);
    process.exit(2);
  }
  const r = spawnSync(build, [], { cwd: repo, env, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`eif-verify: the build failed (${r.error?.message ?? `exit ${r.status}`})`);
    process.exit(1);
  }
  const rebuilt = JSON.parse(readFileSync(join(out, 'pcrs.json'), 'utf8'));
  const diff = comparePcrs(expected, rebuilt);
  if (!opt('--keep')) rmSync(out, { recursive: true, force: true });
  if (diff.length > 0) {
    for (const d of diff) console.error(`eif-verify: ${d}`);
    console.error('eif-verify: NOT reproduced. Compare build-info.json of both builds (tools, pins), then diff the two images\' file trees');
    process.exit(1);
  }
  console.log(`eif-verify: reproduced, PCR0 ${rebuilt.PCR0}`);
}
