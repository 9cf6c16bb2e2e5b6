// `npm run jepsen`: the fault schedules of issue 11 against real processes, for longer than CI runs them
// (docs/fault-testing.md). Exit status 1 if any run finds an anomaly; each failing run leaves its history
// in a file whose path it prints.
//
//   npm run jepsen -- --fault pause --duration 120 --nodes 5 --clients 6 --seed 7
//   npm run jepsen -- --fault all --short            # the four lean runs of npm test
//   npm run jepsen -- --fault rolling --runs 5       # seeds 1..5
import { parseArgs } from 'node:util';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runJepsen, type RunResult } from '../helpers/jepsen.ts';
import { schedules, type ScheduleParams } from './schedules.ts';

const { values } = parseArgs({
  options: {
    fault: { type: 'string', default: 'all' },
    duration: { type: 'string', default: '60' },
    nodes: { type: 'string' },
    replicas: { type: 'string' },
    clients: { type: 'string' },
    keys: { type: 'string' },
    seed: { type: 'string', default: '1' },
    runs: { type: 'string', default: '1' },
    short: { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});

const names = Object.keys(schedules) as Array<keyof typeof schedules>;
if (values.help) {
  process.stdout.write(
    'npm run jepsen -- [--fault all|' + names.join('|') + '] [--duration S] [--nodes N] [--replicas R] [--clients K]\n' +
    '                  [--keys M] [--seed S] [--runs N] [--short] [--keep]\n' +
    names.map((n) => `  ${n.padEnd(8)} ${schedules[n].what}`).join('\n') + '\n',
  );
  process.exit(0);
}
const chosen = values.fault === 'all' ? names : (values.fault as string).split(',');
for (const c of chosen) if (!names.includes(c as keyof typeof schedules)) throw new Error(`unknown fault ${c}; one of ${names.join(', ')}`);
const num = (v: string | undefined, name: string): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} must be a number`);
  return n;
};

// The CLI's trust store must not collect these throwaway rings (as test/global-setup.ts arranges for vitest).
const trustDir = mkdtempSync(join(tmpdir(), 'ekv-trust-'));
process.env.EKV_TRUST_DIR ??= trustDir;

const results: RunResult[] = [];
const seed0 = num(values.seed, 'seed') ?? 1;
for (let run = 0; run < (num(values.runs, 'runs') ?? 1); run++) {
  for (const name of chosen as Array<keyof typeof schedules>) {
    const p: ScheduleParams = { seed: seed0 + run, short: values.short === true, durationMs: (num(values.duration, 'duration') ?? 60) * 1000 };
    for (const k of ['nodes', 'replicas', 'clients', 'keys'] as const) {
      const v = num(values[k] as string | undefined, k);
      if (v !== undefined) p[k] = v;
    }
    const o = schedules[name].options(p);
    results.push(await runJepsen({ ...o, keep: values.keep === true }));
  }
}
rmSync(trustDir, { recursive: true, force: true });
process.stdout.write(`\n${results.filter((r) => r.ok).length}/${results.length} runs clean\n`);
for (const r of results) process.stdout.write(`  ${r.ok ? 'ok  ' : 'FAIL'} ${r.name} seed ${r.seed} (${Math.round(r.durationMs / 1000)} s)${r.dumpPath ? `: ${r.dumpPath}` : ''}\n`);
process.exit(results.every((r) => r.ok) ? 0 : 1);
