// docs/deploy.md as an operator reads it: what can be checked offline. Every repository path it names exists,
// every bash block parses (and passes shellcheck where installed), every CDK context key in its table is one
// the stack reads, and the units and scripts it tells the operator about are the ones the user data installs.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { hostFiles, startedUnits } from '../lib/user-data.ts';

const repo = join(import.meta.dirname, '..', '..');
const guide = readFileSync(join(repo, 'docs', 'deploy.md'), 'utf8');
const config = readFileSync(join(repo, 'infra', 'lib', 'config.ts'), 'utf8') + readFileSync(join(repo, 'infra', 'bin', 'app.ts'), 'utf8');

describe('docs/deploy.md', () => {
  it('names only repository paths that exist', () => {
    const paths = new Set([...guide.matchAll(/`((?:infra|scripts|host|cli|enclave|docs|test|client|verifier)\/[\w./@-]+)`/g)].map((m) => m[1] as string));
    const generated = new Set(['infra/pcrs.json', 'infra/build-info.json', 'infra/ekv.eif', 'infra/outputs.json']);
    const missing = [...paths].filter((p) => !generated.has(p) && !existsSync(join(repo, p.replace(/[.,:]$/, ''))));
    expect(missing).toEqual([]);
    expect(paths.size).toBeGreaterThan(15);
  });

  it('has bash blocks that parse, and pass shellcheck where it is installed', () => {
    const blocks = [...guide.matchAll(/```bash\n([^]*?)```/g)].map((m) => (m[1] as string).replace(/<([^>\n]+)>/g, 'PLACEHOLDER'));
    expect(blocks.length).toBeGreaterThan(8);
    const dir = mkdtempSync(join(tmpdir(), 'ekv-guide-'));
    try {
      blocks.forEach((b, i) => {
        const f = join(dir, `block-${i}.sh`);
        writeFileSync(f, `#!/usr/bin/env bash\n${b}`);
        const r = spawnSync('bash', ['-n', f], { encoding: 'utf8' });
        expect(r.status, `${b}\n${r.stderr}`).toBe(0);
      });
      // SC2034 (unused), SC2154 (set elsewhere): blocks are fragments of one session.
      const sc = spawnSync('shellcheck', ['-e', 'SC2034,SC2154,SC2086', ...blocks.map((_, i) => join(dir, `block-${i}.sh`))], { encoding: 'utf8' });
      if (!sc.error) expect(sc.status, sc.stdout).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('documents context keys the stack reads, and not the removed previousPcr0 as a setting', () => {
    const table = guide.slice(guide.indexOf('Context keys'), guide.indexOf('What the stack creates'));
    const keys = [...table.matchAll(/^\| `([^|]+?)` \|/gm)].flatMap((m) => (m[1] as string).split(/`, `/));
    expect(keys.length).toBeGreaterThan(15);
    for (const k of keys) expect(config, k).toMatch(new RegExp(`'${k}'`));
    expect(table).not.toContain('previousPcr0');
  });

  it('lists the units the user data starts and no unit that is gone', () => {
    for (const u of startedUnits.filter((x) => x.startsWith('ekv-'))) expect(guide, u).toContain(`\`${u.replace(/@\d+\.service$/, '').replace(/\.service$/, '')}`);
    expect(guide).not.toMatch(/systemctl (restart|stop|status) ekv-enclave\b/);
    expect(Object.keys(hostFiles)).toContain('run-enclave.sh');
  });
});
