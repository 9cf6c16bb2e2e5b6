// The reproducibility tooling that runs without docker or nitro-cli: the pin check build-eif.sh runs first,
// and eif-verify's settings and comparison, driven end to end with a stand-in build.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
// @ts-expect-error plain ESM scripts without types
import { committedProblems, dockerfileProblems, nativeSources, toolchainProblems } from '../enclave/check-pins.mjs';
// @ts-expect-error plain ESM scripts without types
import { buildEnv, comparePcrs } from '../enclave/eif-verify.mjs';

const enclaveDir = join(import.meta.dirname, '..', 'enclave');
const dockerfile = readFileSync(join(enclaveDir, 'Dockerfile'), 'utf8');
const hex = (c: string) => c.repeat(96);

describe('check-pins', () => {
  it('passes the committed Dockerfile and toolchain', () => {
    expect(dockerfileProblems(dockerfile)).toEqual([]);
    expect(toolchainProblems(JSON.parse(readFileSync(join(enclaveDir, 'toolchain.json'), 'utf8')))).toEqual([]);
  });

  it('fails a floating tag, an undated snapshot, a vague gcc, unlocked builds and a vague nitro-cli', () => {
    const mutate = (from: RegExp, to: string) => {
      const m = dockerfile.replace(from, to);
      expect(m).not.toBe(dockerfile);
      return dockerfileProblems(m);
    };
    expect(mutate(/ARG NODE_IMAGE=\S+/, 'ARG NODE_IMAGE=node:20-bookworm-slim')[0]).toMatch(/pinned by digest/);
    expect(mutate(/FROM \$\{NODE_IMAGE\} AS nsm-shim/, 'FROM gcc:12 AS nsm-shim')[0]).toMatch(/pinned by digest/);
    expect(mutate(/ARG DEBIAN_SNAPSHOT=\S+/, 'ARG DEBIAN_SNAPSHOT=latest')[0]).toMatch(/DEBIAN_SNAPSHOT/);
    expect(mutate(/ARG GCC_VERSION=\S+/, 'ARG GCC_VERSION=12')[0]).toMatch(/GCC_VERSION/);
    expect(mutate(/"gcc-12=\$\{GCC_VERSION\}"/, 'gcc')[0]).toMatch(/gcc must be installed at/);
    expect(dockerfileProblems(`${dockerfile}\nRUN cargo build --release\n`)[0]).toMatch(/--locked/);
    expect(mutate(/npm ci --omit=dev/, 'npm install --omit=dev')[0]).toMatch(/npm ci/);
    expect(toolchainProblems({ nitroCli: '1.4' })).toHaveLength(1);
    expect(toolchainProblems({ nitroCli: 'latest' })).toHaveLength(1);
  });

  it('a release build needs the NSM shim source committed as it is; no lockfile to generate', () => {
    const repo = join(enclaveDir, '..', '..');
    expect(nativeSources).toEqual(['infra/enclave/nsm/ekv-nsm.c']);
    expect(committedProblems(repo, join(enclaveDir, 'nsm', 'no-such.c'))[0]).toMatch(/is missing/);
    const dir = mkdtempSync(join(enclaveDir, 'tmp-shim-'));
    try {
      writeFileSync(join(dir, 'ekv-nsm.c'), '/* not committed */\n');
      expect(committedProblems(repo, join(dir, 'ekv-nsm.c'))[0]).toMatch(/not committed/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(dockerfile.split('\n').filter((l) => !l.startsWith('#')).join('\n')).not.toMatch(/Cargo\.lock|cargo |RUST_IMAGE|NSM_API_COMMIT/);
  });
});

describe('eif-verify', () => {
  const released = { PCR0: hex('a'), PCR1: hex('b'), PCR2: hex('c'), KmsKeyArn: 'arn:aws:kms:us-east-1:111122223333:key/0e4b1000-0000-4000-8000-00000000e4b1', Replicas: 3, AccessMode: 'closed' };

  it('rebuilds with the settings the release recorded', () => {
    expect(buildEnv(released)).toEqual({ EKV_PINNED_KMS_KEY: released.KmsKeyArn, EKV_PINNED_REPLICAS: '3', EKV_PINNED_ACCESS_MODE: 'closed', EKV_PINNED_RING_PEERS: '0' });
    expect(buildEnv({ ...released, RingPeers: true }).EKV_PINNED_RING_PEERS).toBe('1');
    expect(() => buildEnv({ PCR0: hex('a') })).toThrow(/KmsKeyArn/);
  });

  it('compares PCR0..2, case-insensitively', () => {
    expect(comparePcrs(released, { ...released, PCR0: hex('A') })).toEqual([]);
    expect(comparePcrs(released, { ...released, PCR1: hex('d') })).toEqual([`PCR1: released ${hex('b')}, rebuilt ${hex('d')}`]);
    expect(comparePcrs({ PCR0: 'x' }, released)).toHaveLength(3);
  });

  function run(rebuiltPcr0: string) {
    const dir = mkdtempSync(join(tmpdir(), 'ekv-verify-test-'));
    try {
      writeFileSync(join(dir, 'pcrs.json'), JSON.stringify(released));
      // A stand-in for build-eif.sh: checks it got the release's settings, writes pcrs.json where told.
      const stub = join(dir, 'build.sh');
      writeFileSync(stub, `#!/bin/sh
[ "$EKV_PINNED_KMS_KEY" = "${released.KmsKeyArn}" ] && [ "$EKV_PINNED_REPLICAS" = 3 ] && [ "$EKV_PINNED_ACCESS_MODE" = closed ] || exit 9
printf '{"PCR0":"${rebuiltPcr0}","PCR1":"${hex('b')}","PCR2":"${hex('c')}"}' > "$EKV_OUT_DIR/pcrs.json"
`);
      chmodSync(stub, 0o755);
      return spawnSync(process.execPath, [join(enclaveDir, 'eif-verify.mjs'), '--expected', join(dir, 'pcrs.json')], {
        encoding: 'utf8', env: { ...process.env, EKV_EIF_BUILD: stub },
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it('exits 0 when the rebuild reproduces the release, 1 with the differing PCR otherwise', () => {
    const same = run(hex('a'));
    expect([same.status, same.stdout]).toEqual([0, `eif-verify: reproduced, PCR0 ${hex('a')}\n`]);
    const other = run(hex('e'));
    expect(other.status).toBe(1);
    expect(other.stderr).toContain(`PCR0: released ${hex('a')}, rebuilt ${hex('e')}`);
  });
});
