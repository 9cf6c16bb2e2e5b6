#!/usr/bin/env node
// Fails when anything that goes into the enclave image floats: a base image without a digest, an undated
// Debian snapshot, a C compiler that is not an exact Debian version, a build step that resolves anew, a
// nitro-cli version that is not exact, or (with --release) an NSM shim source (infra/enclave/nsm/ekv-nsm.c)
// that is not committed as it is. build-eif.sh runs it before building.
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
  // A Debian package version (epoch, upstream, revision), exact: apt installs it or fails.
  if (!/^(\d+:)?\d[\w.+~]*-[\w.+~]+$/.test(args.get('GCC_VERSION') ?? '')) problems.push('GCC_VERSION must be an exact Debian package version (e.g. 12.2.0-14+deb12u1)');
  const installsGcc = lines.some((l) => /apt-get install/.test(l) && /\bgcc/.test(l));
  if (installsGcc && !lines.some((l) => /apt-get install/.test(l) && /"?gcc-\d+=\$\{GCC_VERSION\}"?/.test(l))) problems.push('gcc must be installed at ${GCC_VERSION} (gcc-N=${GCC_VERSION})');
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

/** The native source compiled into the image (the NSM shim): with --release it must be committed as it is. */
export const nativeSources = ['infra/enclave/nsm/ekv-nsm.c'];

/** With --release: each file must exist and be committed unchanged (git knows it, no local edits). */
export function committedProblems(repo, path) {
  if (!existsSync(path)) return [`${relative(repo, path)} is missing`];
  try {
    const status = execFileSync('git', ['-C', repo, 'status', '--porcelain', '--', path], { encoding: 'utf8' });
    if (status.trim() !== '') return [`${relative(repo, path)} is not committed as it is (${status.trim().slice(0, 2)})`];
  } catch {
    return [`cannot ask git about ${relative(repo, path)}`];
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
    ...(argv.includes('--release') ? nativeSources.flatMap((f) => committedProblems(repo, join(repo, f))) : []),
  ];
  for (const p of problems) console.error(`check-pins: ${p}`);
  if (problems.length > 0) process.exit(1);
  console.log('check-pins: every input of the image is pinned');
}
