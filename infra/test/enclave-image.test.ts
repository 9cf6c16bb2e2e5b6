// What can be checked of the enclave image and the host units without docker or nitro-cli: pinning,
// reproducibility settings, the vsock port plan on both sides, and the PCR extraction script.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { hostDir, hostFiles, startedUnits } from '../lib/user-data.ts';

const enclaveDir = join(import.meta.dirname, '..', 'enclave');
const read = (dir: string, name: string) => readFileSync(join(dir, name), 'utf8');
const dockerfile = read(enclaveDir, 'Dockerfile');
const entrypoint = read(enclaveDir, 'entrypoint.sh');
const instructions = dockerfile.replace(/\\\n/g, ' ').split('\n').filter((l) => l.trim() && !l.trim().startsWith('#'));

function argDefaults(): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of instructions) {
    const m = /^ARG\s+(\w+)=(\S+)/.exec(line);
    if (m) out.set(m[1] as string, m[2] as string);
  }
  return out;
}

describe('infra/enclave/Dockerfile', () => {
  const args = argDefaults();
  const stages = instructions.filter((l) => l.startsWith('FROM '));

  it('pins every base image by digest and never uses a moving tag', () => {
    const names = new Set<string>();
    expect(stages.length).toBeGreaterThanOrEqual(3);
    for (const from of stages) {
      const [, image, , name] = from.split(/\s+/);
      const resolved = (image as string).replace(/^\$\{(\w+)\}$/, (_, a: string) => args.get(a) ?? `<unset ${a}>`);
      if (resolved !== 'scratch' && !names.has(resolved)) {
        expect(resolved, from).toMatch(/^[a-z0-9./-]+:[\w.-]+@sha256:[0-9a-f]{64}$/);
      }
      if (name) names.add(name);
    }
    expect(dockerfile).not.toMatch(/:latest\b/);
    expect(dockerfile).not.toMatch(/^ADD\s/m);
  });

  it('compiles the NSM shim from the committed source with the snapshot\'s gcc at an exact version, on the runtime base', () => {
    expect(args.get('GCC_VERSION')).toMatch(/^\d[\w.+~]*-[\w.+~]+$/);
    expect(dockerfile).toMatch(/^FROM \$\{NODE_IMAGE\} AS nsm-shim$/m);
    expect(dockerfile).toContain('"gcc-12=${GCC_VERSION}"');
    expect(dockerfile).toContain('COPY --chmod=0444 --chown=0:0 infra/enclave/nsm/ekv-nsm.c /src/ekv-nsm.c');
    // The flags the shim's test compiles with (test/nsm-lib.test.ts), warnings as errors.
    expect(dockerfile).toMatch(/gcc-12 -std=c11 -D_GNU_SOURCE -O2 -fPIC -shared -fvisibility=hidden -Wall -Wextra -Wconversion -Werror/);
    expect(dockerfile).toMatch(/COPY --from=nsm-shim .*\/out\/libekv-nsm\.so \/usr\/lib\/libekv-nsm\.so/);
    expect(instructions.join('\n')).not.toMatch(/cargo|rust/i); // comments may name what it replaced
  });

  it('installs Debian packages from a dated snapshot and koffi from its lockfile', () => {
    expect(args.get('DEBIAN_SNAPSHOT')).toMatch(/^\d{8}T\d{6}Z$/);
    expect(dockerfile).toContain('snapshot.debian.org/archive/debian/');
    expect(dockerfile).toContain('npm ci --omit=dev --ignore-scripts');
    expect(dockerfile).not.toMatch(/npm install/);
    const lock = JSON.parse(read(enclaveDir, 'runtime/package-lock.json')) as { packages: Record<string, { version?: string; integrity?: string }> };
    expect(lock.packages['node_modules/koffi']).toMatchObject({ version: '3.3.4', integrity: expect.stringMatching(/^sha512-/) });
  });

  it('bakes in no build-time state: fixed owners and modes, no apt lists or logs', () => {
    const finalStage = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
    for (const copy of finalStage.split('\n').filter((l) => l.startsWith('COPY '))) {
      expect(copy, copy).toContain('--chown=0:0');
    }
    expect(finalStage).toContain('rm -rf /var/lib/apt/lists/*');
    expect(finalStage).toContain('/var/log/dpkg.log');
    expect(dockerfile).toContain('ARG SOURCE_DATE_EPOCH');
  });

  it('sets the environment `ekv emulate-enclave` gives the enclave locally (the rehearsal runs the same configuration)', async () => {
    const { imageEnv } = await import('../../cli/commands/emulate-enclave.ts');
    const env = instructions.filter((l) => l.startsWith('ENV ')).join(' ');
    for (const [k, v] of Object.entries(imageEnv('/run/ekv/vsock'))) expect(env, k).toMatch(new RegExp(`\\b${k}=${v.replace(/[.]/g, '\\.')}\\b`));
  });

  it('runs the bundled enclave with the production NSM', () => {
    expect(dockerfile).toContain('dist/enclave.mjs /app/enclave.mjs');
    expect(dockerfile).toMatch(/EKV_NSM=libnsm/);
    expect(dockerfile).toMatch(/EKV_LIBNSM=\/usr\/lib\/libekv-nsm\.so/);
    expect(dockerfile).toMatch(/^ENTRYPOINT \["\/usr\/local\/bin\/ekv-entrypoint"\]$/m);
  });

  it('sends every file it copies through the dockerignore', () => {
    const ignore = read(enclaveDir, 'Dockerfile.dockerignore').split('\n');
    const sources = instructions.filter((l) => l.startsWith('COPY ') && !l.includes('--from='))
      .flatMap((l) => l.split(/\s+/).slice(1, -1).filter((w) => !w.startsWith('--')));
    expect(sources.length).toBeGreaterThanOrEqual(5);
    for (const s of sources) expect(ignore, s).toContain(`!${s}`);
  });
});

describe('infra/enclave/entrypoint.sh', () => {
  it('brings up lo, then bridges vsock to the unix sockets, then runs node', () => {
    const lo = entrypoint.indexOf('ip link set lo up');
    const bridge = entrypoint.indexOf('socat "VSOCK-LISTEN:5000,fork,reuseaddr,max-children=$children_5000" "UNIX-CONNECT:$dir/enclave-5000.sock"');
    const node = entrypoint.indexOf('node /app/enclave.mjs');
    expect(lo).toBeGreaterThan(0);
    expect(bridge).toBeGreaterThan(lo);
    expect(node).toBeGreaterThan(bridge);
    expect(entrypoint).toContain('for port in 8000 8001 8002; do');
    expect(entrypoint).toContain('"UNIX-LISTEN:$dir/host-$port.sock,fork,mode=0600" "VSOCK-CONNECT:$parent_cid:$port"');
    expect(entrypoint).toContain('socat "VSOCK-LISTEN:5001,fork,reuseaddr,max-children=$children_5001" "UNIX-CONNECT:$dir/enclave-5001.sock"');
    expect(entrypoint).toContain('parent_cid=3');
    expect(entrypoint).toContain('VSOCK-CONNECT:$parent_cid:8003');
    expect(entrypoint).not.toMatch(/\/dev\/console|ttyS0/);
  });

  it('bounds the socat children of the inbound bridges from MemTotal (the formula of enclave/admission.ts connectionsFor)', () => {
    // Every inbound vsock connection forks a socat child before node can refuse it: both listeners have max-children.
    for (const line of entrypoint.split('\n').filter((l) => l.includes('VSOCK-LISTEN'))) expect(line, line).toMatch(/max-children=\$children_500[01]\b/);
    // Without its --limits mode (the unfixed entrypoint) running it would start the bridges and node: refuse first.
    expect(entrypoint).toContain('if [ "${1:-}" = "--limits" ]; then');
    const limits = (kib: number) => {
      const dir = mkdtempSync(join(tmpdir(), 'ekv-meminfo-'));
      try {
        writeFileSync(join(dir, 'meminfo'), `MemTotal:       ${kib} kB\n`);
        const r = spawnSync('sh', [join(enclaveDir, 'entrypoint.sh'), '--limits'], { encoding: 'utf8', timeout: 5000, killSignal: 'SIGKILL', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', EKV_VSOCK_DIR: dir, EKV_MEMINFO: join(dir, 'meminfo') } });
        expect(r.status, r.stderr).toBe(0);
        return r.stdout.trim();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    };
    expect(limits(1024 * 1024)).toBe('connections=512 children_5000=576 children_5001=16');
    expect(limits(3 * 1024 * 1024)).toBe('connections=1536 children_5000=1600 children_5001=16');
    expect(limits(64 * 1024 * 1024)).toBe('connections=8192 children_5000=8256 children_5001=16');
    expect(limits(256 * 1024)).toBe('connections=512 children_5000=576 children_5001=16');
  });

  it('passes sh -n and, where installed, shellcheck', () => {
    for (const [shell, file] of [['sh', 'entrypoint.sh'], ['bash', 'build-eif.sh']] as const) {
      const r = spawnSync(shell, ['-n', join(enclaveDir, file)], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
    }
    for (const file of ['check-eif.sh', 'run-enclave.sh']) {
      const r = spawnSync('bash', ['-n', join(hostDir, file)], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
    }
    const files = [join(enclaveDir, 'entrypoint.sh'), join(enclaveDir, 'build-eif.sh'), join(hostDir, 'check-eif.sh'), join(hostDir, 'run-enclave.sh')];
    const sc = spawnSync('shellcheck', files, { encoding: 'utf8' });
    if (sc.error) return; // not installed: the syntax check above still ran
    expect(sc.status, sc.stdout).toBe(0);
  });
});

describe('infra/enclave/build-eif.sh and pcrs-from-build.mjs', () => {
  const script = read(enclaveDir, 'build-eif.sh');
  it('builds with the commit time, rewritten layer timestamps, and records the PCRs', () => {
    expect(script).toContain('SOURCE_DATE_EPOCH="$(git log -1 --format=%ct)"');
    expect(script).toContain('rewrite-timestamp=true');
    expect(script).toMatch(/nitro-cli build-enclave --docker-uri "\$tag" --output-file "\$out_dir\/ekv.eif"/);
    expect(script).toContain('pcrs-from-build.mjs "$out_dir/build-enclave.json" "$out_dir/pcrs.json"');
    expect(script).not.toContain('--debug');
  });

  const run = (output: unknown) => {
    const dir = mkdtempSync(join(tmpdir(), 'ekv-pcrs-'));
    writeFileSync(join(dir, 'in.json'), typeof output === 'string' ? output : JSON.stringify(output));
    const r = spawnSync(process.execPath, [join(enclaveDir, 'pcrs-from-build.mjs'), join(dir, 'in.json'), join(dir, 'pcrs.json')], { encoding: 'utf8' });
    try {
      return { ...r, pcrs: r.status === 0 ? JSON.parse(readFileSync(join(dir, 'pcrs.json'), 'utf8')) : undefined };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };

  it('turns nitro-cli build-enclave output into pcrs.json, lowercased', () => {
    const [p0, p1, p2] = ['AB', 'cd', 'Ef'].map((b) => b.repeat(48));
    const r = run({ Measurements: { HashAlgorithm: 'Sha384 { ... }', PCR0: p0, PCR1: p1, PCR2: p2 } });
    expect(r.status, r.stderr).toBe(0);
    expect(r.pcrs).toEqual({ PCR0: 'ab'.repeat(48), PCR1: 'cd'.repeat(48), PCR2: 'ef'.repeat(48) });
    expect(r.stdout).toContain(`PCR0 ${'ab'.repeat(48)}`);
  });

  it('refuses output without all three measurements, with short or zero values, or that is not JSON', () => {
    const good = 'ab'.repeat(48);
    for (const bad of [
      'Start building the Enclave Image...',
      { Measurements: { PCR0: good, PCR1: good } },
      { Measurements: { PCR0: good.slice(2), PCR1: good, PCR2: good } },
      { Measurements: { PCR0: '0'.repeat(96), PCR1: good, PCR2: good } },
      { PCR0: good, PCR1: good, PCR2: good },
    ]) {
      const r = run(bad);
      expect(r.status, JSON.stringify(bad)).toBe(1);
      expect(r.stderr).toMatch(/pcrs-from-build:/);
    }
  });
});

describe('infra/host units', () => {
  const units = readdirSync(hostDir).filter((f) => f.endsWith('.service'));

  it('are all installed by the user data, and every started ekv unit exists', () => {
    expect(units.sort()).toEqual(Object.keys(hostFiles).filter((f) => f.endsWith('.service')).sort());
    for (const u of startedUnits.filter((s) => s.startsWith('ekv-'))) {
      expect(units, u).toContain(u.replace(/@\d+\.service$/, '@.service'));
    }
  });

  it('have the three sections and absolute ExecStart paths', () => {
    for (const u of units) {
      const text = read(hostDir, u);
      for (const section of ['[Unit]', '[Service]', '[Install]']) expect(text, `${u} ${section}`).toContain(section);
      for (const line of text.split('\n').filter((l) => /^Exec\w*=/.test(l))) expect(line, u).toMatch(/^Exec\w*=\//);
    }
  });

  it('launch the enclave from the host, its watchdog, in production mode with the allocator resources', () => {
    const run = read(hostDir, 'run-enclave.sh');
    expect(run).toMatch(/nitro-cli run-enclave --enclave-name "\$name" --eif-path "\$eif" \\\n\s+--cpu-count "\$EKV_ENCLAVE_CPU_COUNT" --memory "\$EKV_ENCLAVE_MEMORY_MIB" --enclave-cid "\$EKV_ENCLAVE_CID"/);
    expect(run).not.toMatch(/--debug-mode|--attach-console/);
    expect(run).toContain('"$bindir/check-eif.sh" "$eif" "$pcr0"');
    const host = read(hostDir, 'ekv-host.service');
    expect(host).toContain('--enclave-cmd /opt/ekv/bin/run-enclave.sh --release ${EKV_STATE_DIR}/release.json');
    expect(host).toContain('Requires=nitro-enclaves-allocator.service');
    expect(host).toMatch(/^Restart=always$/m);
    expect(host).toMatch(/^SupplementaryGroups=ne$/m);
    // No unit launches the enclave any more (the old Type=oneshot unit restarted nothing), and none is bound to one.
    for (const u of units) expect(read(hostDir, u), u).not.toMatch(/nitro-cli run-enclave|Type=oneshot|ekv-enclave\.service/);
  });

  it('mirror the enclave side: the same vsock ports, the parent listening where the enclave connects', () => {
    expect(read(hostDir, 'ekv-bridge-enclave.service')).toContain('UNIX-LISTEN:${EKV_VSOCK_DIR}/enclave-5000.sock,fork,mode=0660 VSOCK-CONNECT:${EKV_ENCLAVE_CID}:5000');
    // The host channel (metrics hello only, review-4 A1): bridged for the host, never behind a TCP port.
    expect(read(hostDir, 'ekv-bridge-metrics.service')).toContain('UNIX-LISTEN:${EKV_VSOCK_DIR}/enclave-5001.sock,fork,mode=0660 VSOCK-CONNECT:${EKV_ENCLAVE_CID}:5001');
    expect(startedUnits).toContain('ekv-bridge-metrics.service');
    for (const u of ['ekv-ring-listener.service', 'ekv-host.service']) expect(read(hostDir, u)).not.toContain('5001');
    expect(read(hostDir, 'ekv-bridge-host@.service')).toContain('VSOCK-LISTEN:%i,fork,reuseaddr UNIX-CONNECT:${EKV_VSOCK_DIR}/host-%i.sock');
    expect(startedUnits).toEqual(expect.arrayContaining(['ekv-bridge-host@8000.service', 'ekv-bridge-host@8001.service']));
    expect(read(hostDir, 'ekv-vsock-proxy.service')).toMatch(/vsock-proxy 8002 kms\.\$\{AWS_REGION\}\.amazonaws\.com 443 --config \/etc\/nitro_enclaves\/vsock-proxy\.yaml/);
    expect(read(hostDir, 'ekv-enclave-logs.service')).toContain('VSOCK-LISTEN:8003');
    expect(read(hostDir, 'ekv-host.service')).toMatch(/ekv\.js host --vsock-dir \$\{EKV_VSOCK_DIR\} --listen \$\{EKV_CLIENT_PORT\} --http \$\{EKV_HTTP_PORT\} --data-dir \/var\/lib\/ekv/);
  });
});
