/**
 * CPU time of processes, for the benchmark's per-operation figures: a server's process tree from
 * /proc/<pid>/stat (user + system time of the process and every live descendant), and the load
 * generator's own from process.cpuUsage(). Linux only; elsewhere the figures are null.
 */
import { readdirSync, readFileSync } from 'node:fs';

const ticksPerSecond = 100; // USER_HZ on Linux

interface Stat {
  pid: number;
  ppid: number;
  cpuSeconds: number;
}

function readStat(pid: number): Stat | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The command name is in parentheses and may hold spaces: the fields start after the last ')'.
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
    const ppid = Number(rest[1]);
    const utime = Number(rest[11]);
    const stime = Number(rest[12]);
    if (!Number.isFinite(ppid) || !Number.isFinite(utime) || !Number.isFinite(stime)) return null;
    return { pid, ppid, cpuSeconds: (utime + stime) / ticksPerSecond };
  } catch {
    return null;
  }
}

/** Seconds of CPU used so far by `root` and its live descendants (null where /proc is missing). */
export function treeCpuSeconds(root: number): number | null {
  let pids: number[];
  try {
    pids = readdirSync('/proc').filter((n) => /^\d+$/.test(n)).map(Number);
  } catch {
    return null;
  }
  const stats = pids.map(readStat).filter((s): s is Stat => s !== null);
  const children = new Map<number, Stat[]>();
  for (const s of stats) children.set(s.ppid, [...(children.get(s.ppid) ?? []), s]);
  const self = stats.find((s) => s.pid === root);
  if (!self) return null;
  let total = 0;
  const stack = [self];
  while (stack.length > 0) {
    const s = stack.pop() as Stat;
    total += s.cpuSeconds;
    stack.push(...(children.get(s.pid) ?? []));
  }
  return total;
}

/** The load generator's own CPU seconds (user + system). */
export function selfCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** The 1-minute load average (a shared machine: printed beside every figure). */
export function loadAverage(): number {
  try {
    return Number(readFileSync('/proc/loadavg', 'latin1').split(' ')[0]);
  } catch {
    return NaN;
  }
}
