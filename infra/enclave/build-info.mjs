#!/usr/bin/env node
// Prints build-info.json, written by build-eif.sh beside pcrs.json: the commit, SOURCE_DATE_EPOCH, the
// tool versions outside the Dockerfile (nitro-cli, docker, buildx, node, npm) and the pins inside it (base image,
// Debian snapshot, the gcc version that compiles the NSM shim, the shim source's SHA-256).
// Usage: node build-info.mjs --nitro-cli V --docker V --buildx V
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { instructions } from './check-pins.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const opt = (name) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? String(argv[i + 1] ?? '') : 'unknown';
};
const args = {};
for (const l of instructions(readFileSync(join(here, 'Dockerfile'), 'utf8'))) {
  const m = /^ARG\s+(\w+)=(\S+)/.exec(l);
  if (m) args[m[1]] = m[2];
}
const shim = join(here, 'nsm', 'ekv-nsm.c');
const git = (...a) => execFileSync('git', ['-C', here, ...a], { encoding: 'utf8' }).trim();
const info = {
  commit: git('rev-parse', 'HEAD'),
  sourceDateEpoch: Number(process.env.SOURCE_DATE_EPOCH ?? git('log', '-1', '--format=%ct')),
  tools: {
    nitroCli: opt('nitro-cli'),
    docker: opt('docker'),
    buildx: opt('buildx'),
    node: process.versions.node,
    npm: execFileSync('npm', ['--version'], { encoding: 'utf8' }).trim(),
  },
  pins: {
    nodeImage: args.NODE_IMAGE, debianSnapshot: args.DEBIAN_SNAPSHOT, gccVersion: args.GCC_VERSION,
    nsmShimSha256: existsSync(shim) ? createHash('sha256').update(readFileSync(shim)).digest('hex') : null,
  },
};
process.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
