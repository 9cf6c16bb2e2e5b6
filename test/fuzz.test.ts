// A short fuzz campaign on every parser entry point (test/fuzz/run.ts, `npm run fuzz` for longer
// ones), then a replay of every saved reproducer under test/fuzz/corpus/. Each target runs in a
// child process with a heap limit; a crash, a hang, an input over the time limit or an untyped
// exception fails the test and names its reproducer.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import type { TargetReport } from './fuzz/run.ts';

function campaign(args: string[]): TargetReport[] {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/fuzz/run.ts', ...args], {
    encoding: 'utf8',
    env: { ...process.env, EKV_FUZZ_JSON: '1' },
    timeout: 150_000,
  });
  const line = r.stdout.split('\n').find((l) => l.startsWith('FUZZ_JSON '));
  if (!line) throw new Error(`no fuzz summary (exit ${r.status}): ${r.stderr.slice(-2000)}`);
  process.stdout.write(r.stdout.split('\n').filter((l) => !l.startsWith('FUZZ_JSON')).join('\n'));
  return JSON.parse(line.slice('FUZZ_JSON '.length)) as TargetReport[];
}

describe('fuzz', () => {
  it('every parser survives the hand-built shapes and a short mutation campaign', { timeout: 180_000 }, () => {
    // Generous time limits: the whole suite shares 2 cores; a quadratic decode (minutes) or a bomb (out of
    // memory) still fails, and `npm run fuzz` keeps the tight 2 s per input.
    const seed = String(Date.now() % 1_000_000);
    console.log(`fuzz seed ${seed} (replay: npm run fuzz -- --seed ${seed} --runs 150)`);
    const reports = campaign(['--runs', process.env.EKV_FUZZ_RUNS ?? '150', '--seed', seed, '--slow-ms', '10000', '--timeout-ms', '30000']);
    expect(reports.length).toBeGreaterThanOrEqual(17);
    for (const r of reports) expect(r.runs, r.target).toBeGreaterThan(10);
    expect(reports.flatMap((r) => r.failures.map((f) => `${r.target}: ${f.kind} ${f.message} (${f.file})`))).toEqual([]);
  });

  it('every saved reproducer is refused cleanly', { timeout: 120_000 }, () => {
    const reports = campaign(['--replay', '--slow-ms', '10000', '--timeout-ms', '30000']);
    expect(reports.flatMap((r) => r.failures.map((f) => `${r.target}: ${f.kind} ${f.message} (${f.file})`))).toEqual([]);
  });
});
