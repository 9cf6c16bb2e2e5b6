// `npm run fuzz [-- --runs N] [--targets a,b] [--seed S] [--mem MB] [--timeout-ms T] [--slow-ms T] [--jobs J] [--replay]`
//
// Runs every parser entry point of test/fuzz/targets.ts on the seeds, the hand-built dangerous shapes
// and then N structure-aware mutations of real inputs (N = --runs times the target's weight), each target in a child process with a heap
// limit (--mem, default 256 MB). The parent watches each child's progress file: an input that runs
// longer than --timeout-ms (default 10 s) is a hang (the child is killed), a child that dies is a
// crash (out of memory included); both are saved as reproducers under test/fuzz/corpus/<target>/,
// as are untyped exceptions and inputs slower than --slow-ms (default 2 s), which the child reports.
// After a crash or hang the campaign goes on from the next input. --replay runs only the saved
// reproducers. Prints runs and failures per target; exits 1 if anything failed.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { reproducers, saveReproducer } from './corpus.ts';
import { InputStream } from './inputs.ts';
import { targetByName, targets } from './targets.ts';
import type { TaskResult, WorkerArgs, WorkerTask } from './worker.ts';

interface Options {
  runs: number;
  targets: string[];
  seed: number;
  memMb: number;
  timeoutMs: number;
  slowMs: number;
  jobs: number;
  replay: boolean;
}

export interface TargetReport {
  target: string;
  runs: number;
  failures: Array<{ index: number; kind: 'untyped' | 'slow' | 'hang' | 'crash'; message: string; file: string }>;
  slowestMs: number;
  slowestBytes: number;
  wallMs: number;
}

const workerPath = fileURLToPath(new URL('./worker.ts', import.meta.url));
const startupAllowanceMs = 60_000;

function parseArgs(argv: string[]): Options {
  const o: Options = { runs: 2000, targets: targets.map((t) => t.name), seed: 1, memMb: 256, timeoutMs: 10_000, slowMs: 2000, jobs: 2, replay: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => argv[++i] as string;
    if (a === '--runs') o.runs = Number(v());
    else if (a === '--targets') o.targets = v().split(',');
    else if (a === '--seed') o.seed = Number(v());
    else if (a === '--mem') o.memMb = Number(v());
    else if (a === '--timeout-ms') o.timeoutMs = Number(v());
    else if (a === '--slow-ms') o.slowMs = Number(v());
    else if (a === '--jobs') o.jobs = Number(v());
    else if (a === '--replay') o.replay = true;
    else throw new Error(`unknown argument ${a}`);
  }
  for (const t of o.targets) targetByName(t);
  return o;
}

interface ChildResult {
  hung: boolean;
  code: number | null;
  signal: string | null;
  /** Where the child was: task and input index (null before its first input). */
  at: { task: number; index: number } | null;
  results: TaskResult[];
}

/** Runs `tasks` in one child; watches its progress file for hangs. */
function runChild(o: Options, tasks: WorkerTask[], dir: string, label: string): Promise<ChildResult> {
  const progressFile = join(dir, `${label}.progress`);
  const resultsFile = join(dir, `${label}.results`);
  writeFileSync(progressFile, '');
  writeFileSync(resultsFile, '');
  const args: WorkerArgs = { tasks, seed: o.seed, slowMs: o.slowMs, progressFile, resultsFile };
  const child = spawn(process.execPath, [`--max-old-space-size=${o.memMb}`, '--import', 'tsx', workerPath, JSON.stringify(args)], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
  });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)));
  const readAt = (): { task: number; index: number } | null => {
    const text = readFileSync(progressFile, 'utf8').trim();
    if (text === '') return null;
    const [task, index] = text.split(' ').map(Number) as [number, number];
    return { task, index };
  };
  let last = '';
  let lastChange = Date.now();
  let hung = false;
  const timer = setInterval(() => {
    const now = readFileSync(progressFile, 'utf8');
    if (now !== last) {
      last = now;
      lastChange = Date.now();
    } else if (Date.now() - lastChange > (now.trim() === '' ? startupAllowanceMs : o.timeoutMs)) {
      hung = true;
      child.kill('SIGKILL');
    }
  }, 100);
  return new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      clearInterval(timer);
      if (code !== 0 && !hung && stderr) process.stderr.write(`[${label}] child exited ${code ?? signal}: ${stderr.split('\n').filter(Boolean).slice(-3).join(' | ')}\n`);
      const results = readFileSync(resultsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as TaskResult);
      resolve({ hung, code, signal, at: readAt(), results });
    });
  });
}

function emptyReport(target: string): TargetReport {
  return { target, runs: 0, failures: [], slowestMs: 0, slowestBytes: 0, wallMs: 0 };
}

function addResult(report: TargetReport, r: TaskResult): void {
  report.runs += r.runs;
  report.failures.push(...r.failures);
  if (r.slowestMs > report.slowestMs) {
    report.slowestMs = r.slowestMs;
    report.slowestBytes = r.slowestBytes;
  }
}

/** One group of targets in one child at a time; after a crash or hang, a new child goes on after the culprit. */
async function fuzzGroup(o: Options, names: string[], dir: string, group: number, reports: Map<string, TargetReport>): Promise<void> {
  const began = Date.now();
  const streams = new Map<string, InputStream>();
  let tasks: WorkerTask[] = names.map((name) => {
    const target = targetByName(name);
    if (o.replay) return { target: name, start: 0, end: reproducers(name).length, replay: reproducers(name) };
    const stream = new InputStream(target, o.seed);
    streams.set(name, stream);
    // The seeds and the hand-built shapes always run; --runs counts the mutations after them.
    return { target: name, start: 0, end: stream.hand.length + Math.max(1, Math.round(o.runs * target.weight)) };
  });
  for (let attempt = 0; tasks.length > 0; attempt++) {
    const r = await runChild(o, tasks, dir, `g${group}-${attempt}`);
    for (const res of r.results) addResult(reports.get((tasks[res.task] as WorkerTask).target) as TargetReport, res);
    if (r.code === 0 && !r.hung) break;
    // Crash or hang: the input in progress is the culprit. Save it and go on after it.
    const at = r.at ?? { task: r.results.length, index: (tasks[r.results.length] as WorkerTask | undefined)?.start ?? 0 };
    const task = tasks[at.task];
    if (!task) break;
    const input = task.replay ? readFileSync(task.replay[at.index] as string) : (streams.get(task.target) as InputStream).at(at.index);
    const kind = r.hung ? 'hang' : 'crash';
    const message = r.hung ? `no progress for ${o.timeoutMs} ms` : `child exited with ${r.code ?? r.signal} (heap limit ${o.memMb} MB)`;
    const report = reports.get(task.target) as TargetReport;
    report.failures.push({ index: at.index, kind, message, file: task.replay ? (task.replay[at.index] as string) : saveReproducer(task.target, input, `${kind}: ${message}`) });
    report.runs += at.index - task.start + 1;
    tasks = [{ ...task, start: at.index + 1 }, ...tasks.slice(at.task + 1)].filter((t) => t.start < t.end);
  }
  for (const n of names) (reports.get(n) as TargetReport).wallMs = Date.now() - began;
}

export async function fuzz(o: Options): Promise<TargetReport[]> {
  const dir = mkdtempSync(join(tmpdir(), 'ekv-fuzz-'));
  try {
    const reports = new Map(o.targets.map((t) => [t, emptyReport(t)]));
    const groups: string[][] = Array.from({ length: Math.max(1, Math.min(o.jobs, o.targets.length)) }, () => []);
    o.targets.forEach((t, i) => (groups[i % groups.length] as string[]).push(t));
    await Promise.all(groups.map((g, i) => fuzzGroup(o, g, dir, i, reports)));
    return o.targets.map((t) => reports.get(t) as TargetReport);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function print(reports: TargetReport[], o: Options): void {
  console.log(`fuzz ${o.replay ? 'replay of saved reproducers' : `seed ${o.seed}, --runs ${o.runs}`}, heap limit ${o.memMb} MB, hang after ${o.timeoutMs} ms, slow after ${o.slowMs} ms`);
  console.log(['target', 'runs', 'failures', 'slowest input', 'wall'].join('\t'));
  for (const r of reports) {
    console.log([r.target.padEnd(22), r.runs, r.failures.length, `${r.slowestMs.toFixed(1)} ms (${r.slowestBytes} B)`, `${(r.wallMs / 1000).toFixed(1)} s (group)`].join('\t'));
    for (const f of r.failures.slice(0, 5)) console.log(`    ${f.kind} at input ${f.index}: ${f.message}\n      reproducer: ${f.file}`);
  }
  const runs = reports.reduce((n, r) => n + r.runs, 0);
  const failures = reports.reduce((n, r) => n + r.failures.length, 0);
  console.log(`total: ${runs} runs, ${failures} failures`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const o = parseArgs(process.argv.slice(2));
  const reports = await fuzz(o);
  print(reports, o);
  if (process.env.EKV_FUZZ_JSON) console.log(`FUZZ_JSON ${JSON.stringify(reports)}`);
  process.exit(reports.some((r) => r.failures.length > 0) ? 1 : 0);
}
