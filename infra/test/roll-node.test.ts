// infra/scripts/roll-node.sh, one step of an image roll, with stand-ins for `aws` and `curl` on PATH: it selects
// the image on the node through SSM Run Command, restarts the host, and waits for /healthz to show that image.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const script = join(import.meta.dirname, '..', 'scripts', 'roll-node.sh');
const B = 'b'.repeat(96);
const hasJq = spawnSync('jq', ['--version']).status === 0;

function run(servedPcr0: string, args: string[] = ['i-0abc', B, '10.0.0.12']) {
  const dir = mkdtempSync(join(tmpdir(), 'ekv-roll-'));
  try {
    const stub = (name: string, body: string) => {
      writeFileSync(join(dir, name), `#!/usr/bin/env bash\nprintf '%s\\n' "${name} $*" >> "${dir}/calls"\n${body}\n`);
      chmodSync(join(dir, name), 0o755);
    };
    stub('aws', `[ "$2" = send-command ] && echo cmd-123; exit 0`);
    stub('curl', `printf '{"ok":true,"pcr0":"%s"}' "${servedPcr0}"`);
    const r = spawnSync('bash', [script, ...args], {
      encoding: 'utf8', env: { PATH: `${dir}:${process.env.PATH}`, AWS_REGION: 'eu-west-1', EKV_ROLL_TIMEOUT_S: '1', EKV_ROLL_POLL_S: '0.2' },
    });
    return { ...r, calls: readFileSync(join(dir, 'calls'), 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe.skipIf(!hasJq)('roll-node.sh', () => {
  it('selects the image on the node, restarts its host, and returns once /healthz shows that image', () => {
    const r = run(B);
    expect(r.status, r.stderr).toBe(0);
    expect(r.calls).toContain(`aws ssm send-command --region eu-west-1 --instance-ids i-0abc --document-name AWS-RunShellScript`);
    expect(r.calls).toContain(`"echo ${B} > /var/lib/ekv/image-pcr0"`);
    expect(r.calls).toContain('"systemctl restart ekv-host"');
    expect(r.calls).toContain('aws ssm wait command-executed --region eu-west-1 --command-id cmd-123 --instance-id i-0abc');
    expect(r.calls).toContain('curl -sf --max-time 10 http://10.0.0.12:8080/healthz');
  });

  it('fails (stop the roll) when the node does not come back on that image in time', () => {
    const r = run('a'.repeat(96));
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/is not serving image b+.*stop the roll/);
  });

  it('refuses a malformed PCR0 before touching anything', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ekv-roll-'));
    const r = spawnSync('bash', [script, 'i-0abc', 'B'.repeat(96), '10.0.0.12'], { encoding: 'utf8', env: { PATH: `${dir}:${process.env.PATH}`, AWS_REGION: 'x' } });
    rmSync(dir, { recursive: true, force: true });
    expect(r.status).toBe(2);
  });
});
