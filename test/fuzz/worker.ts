// Fuzz tasks (one target each, a range of its inputs) in a child process started by run.ts with a heap
// limit. Before each input the worker writes "<task> <index>" to the progress file with a synchronous
// write, so that when this process dies (out of memory) or hangs the parent knows which input did it.
// Inputs slower than --slow-ms and untyped exceptions are failures, saved here as reproducers. Each
// finished task's summary is appended to the results file as one JSON line.
import { appendFileSync, closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { saveReproducer } from './corpus.ts';
import { InputStream } from './inputs.ts';
import { targetByName } from './targets.ts';

export interface WorkerTask {
  target: string;
  start: number;
  end: number;
  /** Replay these files instead of generating inputs. */
  replay?: string[];
}

export interface WorkerArgs {
  tasks: WorkerTask[];
  seed: number;
  slowMs: number;
  progressFile: string;
  resultsFile: string;
}

export interface WorkerFailure {
  index: number;
  kind: 'untyped' | 'slow';
  message: string;
  file: string;
}

export interface TaskResult {
  task: number;
  runs: number;
  failures: WorkerFailure[];
  slowestMs: number;
  slowestBytes: number;
}

const args = JSON.parse(process.argv[2] as string) as WorkerArgs;
const progress = openSync(args.progressFile, 'w');

function mark(task: number, i: number): void {
  const line = Buffer.from(`${task} ${i}`.padEnd(24, ' '));
  writeSync(progress, line, 0, line.length, 0);
}

for (let t = 0; t < args.tasks.length; t++) {
  const task = args.tasks[t] as WorkerTask;
  const target = targetByName(task.target);
  const stream = task.replay ? null : new InputStream(target, args.seed);
  const result: TaskResult = { task: t, runs: 0, failures: [], slowestMs: 0, slowestBytes: 0 };
  for (let i = task.start; i < task.end; i++) {
    const input = task.replay ? readFileSync(task.replay[i] as string) : (stream as InputStream).at(i);
    mark(t, i);
    const start = performance.now();
    try {
      await target.run(input);
    } catch (err) {
      if (!target.typed.some((c) => err instanceof c)) {
        const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
        result.failures.push({ index: i, kind: 'untyped', message: message.slice(0, 300), file: saveReproducer(target.name, input, `untyped: ${message}`) });
      }
    }
    const ms = performance.now() - start;
    if (ms > result.slowestMs) {
      result.slowestMs = ms;
      result.slowestBytes = input.length;
    }
    if (ms > args.slowMs) {
      result.failures.push({ index: i, kind: 'slow', message: `${ms.toFixed(0)} ms for ${input.length} bytes`, file: saveReproducer(target.name, input, `slow: ${ms.toFixed(0)} ms`) });
    }
    result.runs++;
  }
  appendFileSync(args.resultsFile, `${JSON.stringify(result)}\n`);
}
closeSync(progress);
// Timers left by a failed handshake must not keep the process alive.
process.exit(0);
