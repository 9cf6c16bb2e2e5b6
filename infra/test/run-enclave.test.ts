// infra/host/run-enclave.sh, the command `ekv host --enclave-cmd` supervises on Nitro, run here with stand-ins
// for `aws` and `nitro-cli` on PATH (jq is the real one): which image it picks from the release record, that it
// refuses an EIF whose PCR0 is not the release's, that it lives as long as the enclave and terminates it on SIGTERM.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const script = join(import.meta.dirname, '..', 'host', 'run-enclave.sh');
const checkEif = join(import.meta.dirname, '..', 'host', 'check-eif.sh');
const A = 'a'.repeat(96);
const B = 'b'.repeat(96);
const hasJq = spawnSync('jq', ['--version']).status === 0;

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'ekv-run-enclave-'));
  mkdirSync(join(dir, 'bin'));
  mkdirSync(join(dir, 'state'));
  // The script calls "$bindir/check-eif.sh": put the real one beside a copy of the script.
  writeFileSync(join(dir, 'bin', 'run-enclave.sh'), readFileSync(script));
  writeFileSync(join(dir, 'bin', 'check-eif.sh'), readFileSync(checkEif));
  const stub = (name: string, body: string) => {
    writeFileSync(join(dir, 'bin', name), `#!/usr/bin/env bash\necho "${name} $*" >> "${dir}/calls"\n${body}\n`);
    chmodSync(join(dir, 'bin', name), 0o755);
  };
  chmodSync(join(dir, 'bin', 'run-enclave.sh'), 0o755);
  chmodSync(join(dir, 'bin', 'check-eif.sh'), 0o755);
  // aws: the release parameter from a file; s3 cp writes an "EIF" whose PCR0 the artifacts prefix decides.
  stub('aws', `case "$1 $2" in
  "ssm get-parameter") cat "${dir}/release.json" ;;
  "s3 cp") src="$6"; dst="$7"; pcr=$(cat "${dir}/pcr-of-$(basename "$(dirname "$src")")"); echo "$pcr" > "$dst" ;;
  *) exit 3 ;;
esac`);
  stub('nitro-cli', `case "$1" in
  describe-eif) printf '{"Measurements":{"PCR0":"%s"}}' "$(cat "$3")" ;;
  run-enclave) touch "${dir}/running" ;;
  describe-enclaves) if [ -f "${dir}/running" ]; then echo '[{"EnclaveName":"ekv","State":"RUNNING"}]'; else echo '[]'; fi ;;
  terminate-enclave) rm -f "${dir}/running" ;;
esac`);
  writeFileSync(join(dir, 'pcr-of-r1'), A);
  writeFileSync(join(dir, 'pcr-of-r2'), B);
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function start(release: unknown, selected?: string) {
  writeFileSync(join(dir, 'release.json'), JSON.stringify(release));
  if (selected) writeFileSync(join(dir, 'state', 'image-pcr0'), `${selected}\n`);
  return spawn(join(dir, 'bin', 'run-enclave.sh'), [], {
    env: {
      PATH: `${join(dir, 'bin')}:${process.env.PATH}`, EKV_STATE_DIR: join(dir, 'state'), EKV_RELEASE_PARAM: '/ekv/T/release',
      AWS_REGION: 'eu-west-1', EKV_ENCLAVE_CPU_COUNT: '2', EKV_ENCLAVE_MEMORY_MIB: '3072', EKV_ENCLAVE_CID: '16', EKV_ENCLAVE_POLL_S: '0.1',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}
const exit = (p: ReturnType<typeof start>) => new Promise<number | null>((r) => p.once('exit', (code) => r(code)));
const calls = () => readFileSync(join(dir, 'calls'), 'utf8');
async function until(pred: () => boolean) {
  for (let i = 0; i < 100 && !pred(); i++) await new Promise((r) => setTimeout(r, 50));
  expect(pred()).toBe(true);
}
const roll = { version: 1, current: { pcr0: A, artifactsUri: 's3://b/r1' }, next: { pcr0: B, artifactsUri: 's3://b/r2' } };

describe.skipIf(!hasJq)('run-enclave.sh', () => {
  it('runs the image an upgrade step selected, fetched from its artifacts and checked, and exits when the enclave is gone', async () => {
    const p = start(roll, B);
    await until(() => existsSync(join(dir, 'running')));
    expect(calls()).toContain(`aws s3 cp --region eu-west-1 --only-show-errors s3://b/r2/ekv.eif ${join(dir, 'state', 'eif', B)}.eif.tmp`);
    expect(calls()).toContain(`nitro-cli run-enclave --enclave-name ekv --eif-path ${join(dir, 'state', 'eif', B)}.eif --cpu-count 2 --memory 3072 --enclave-cid 16`);
    expect(readFileSync(join(dir, 'state', 'release.json'), 'utf8')).toContain(B);
    rmSync(join(dir, 'running')); // the enclave died
    expect(await exit(p)).toBe(1);
  });

  it('runs the current image when none was selected, or the selected one is no longer in the release', async () => {
    for (const selected of [undefined, 'c'.repeat(96)]) {
      const p = start(roll, selected);
      await until(() => existsSync(join(dir, 'running')));
      expect(calls()).toContain(`--eif-path ${join(dir, 'state', 'eif', A)}.eif`);
      p.kill('SIGTERM');
      expect(await exit(p)).toBe(0);
    }
  });

  it('terminates the enclave when stopped (SIGTERM from the watchdog)', async () => {
    const p = start(roll);
    await until(() => existsSync(join(dir, 'running')));
    p.kill('SIGTERM');
    expect(await exit(p)).toBe(0);
    expect(existsSync(join(dir, 'running'))).toBe(false);
    expect(calls()).toMatch(/nitro-cli terminate-enclave --enclave-name ekv\n[^]*nitro-cli terminate-enclave --enclave-name ekv/);
  });

  it('refuses an EIF whose PCR0 is not the release\'s and launches nothing', async () => {
    writeFileSync(join(dir, 'pcr-of-r2'), 'c'.repeat(96));
    const p = start(roll, B);
    expect(await exit(p)).not.toBe(0);
    expect(calls()).not.toContain('nitro-cli run-enclave');
    expect(calls()).toContain('nitro-cli describe-eif');
  });
});
