#!/usr/bin/env node
// Fails when anything that goes into the enclave image floats: a base image without a digest, an unpinned
// libnsm commit, an undated Debian snapshot, a nitro-cli version that is not exact, or (with --release) a
// libnsm Cargo.lock that is missing or not committed. build-eif.sh runs it before building.
// Usage: node infra/enclave/check-pins.mjs [--release] [--dockerfile FILE]
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

/** Instructions of a Dockerfile: continuation lines joined, comments dropped. */
export function instructions(text) {
  return text.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
}

/** Problems with the Dockerfile's pins, as sentences (empty: all pinned). */
export function dockerfileProblems(text) {
  const lines = instructions(text);
  const args = new Map();
  for (const l of lines) {
    const m = /^ARG\s+(\w+)=(\S+)/.exec(l);
    if (m) args.set(m[1], m[2]);
  }
  const problems = [];
  const stages = new Set();
  for (const l of lines.filter((x) => /^FROM\s/i.test(x))) {
    const [, image, as, name] = l.split(/\s+/);
    const resolved = image.replace(/^\$\{(\w+)\}$/, (_, a) => args.get(a) ?? `<unset ${a}>`);
    if (resolved !== 'scratch' && !stages.has(resolved) && !/^[a-z0-9./-]+(:[\w.-]+)?@sha256:[0-9a-f]{64}$/.test(resolved)) {
      problems.push(`FROM ${resolved}: a base image must be pinned by digest (@sha256:...), not a tag`);
    }
    if (as && /^as$/i.test(as) && name) stages.add(name);
  }
  if (!/^[0-9a-f]{40}$/.test(args.get('NSM_API_COMMIT') ?? '')) problems.push('NSM_API_COMMIT must be a full 40-hex commit id');
  if (!/^\d{8}T\d{6}Z$/.test(args.get('DEBIAN_SNAPSHOT') ?? '')) problems.push('DEBIAN_SNAPSHOT must be a dated snapshot (YYYYMMDDThhmmssZ)');
  if (/^ADD\s/m.test(lines.join('\n'))) problems.push('ADD fetches at build time; use COPY of committed files');
  if (/\bnpm install\b/.test(text)) problems.push('npm install resolves anew; use npm ci from a lockfile');
  if (/cargo build(?![^\n]*--locked)/.test(text)) problems.push('cargo build without --locked');
  return problems;
}

export function toolchainProblems(toolchain) {
  const problems = [];
  if (!/^\d+\.\d+\.\d+$/.test(String(toolchain?.nitroCli ?? ''))) problems.push('toolchain.json nitroCli must be an exact version (x.y.z)');
  return problems;
}

/** With --release: the lock must exist and be committed unchanged (git knows it, no local edits). */
export function lockProblems(repo, lockPath) {
  if (!existsSync(lockPath)) return [`${relative(repo, lockPath)} is missing: run infra/enclave/build-eif.sh --lock on a machine that reaches crates.io, review and commit it`];
  try {
    const status = execFileSync('git', ['-C', repo, 'status', '--porcelain', '--', lockPath], { encoding: 'utf8' });
    if (status.trim() !== '') return [`${relative(repo, lockPath)} is not committed as it is (${status.trim().slice(0, 2)})`];
  } catch {
    return ['cannot ask git about the Cargo.lock'];
  }
  return [];
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const argv = process.argv.slice(2);
  const at = argv.indexOf('--dockerfile');
  const dockerfile = at >= 0 ? argv[at + 1] : join(here, 'Dockerfile');
  const repo = join(here, '..', '..');
  const problems = [
    ...dockerfileProblems(readFileSync(dockerfile, 'utf8')),
    ...toolchainProblems(JSON.parse(readFileSync(join(here, 'toolchain.json'), 'utf8'))),
    ...(argv.includes('--release') ? lockProblems(repo, join(here, 'libnsm', 'Cargo.lock')) : []),
  ];
  for (const p of problems) console.error(`check-pins: ${p}`);
  if (problems.length > 0) process.exit(1);
  console.log('check-pins: every input of the image is pinned');
}
