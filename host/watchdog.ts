/**
 * The enclave watchdog of `ekv host --enclave-cmd`: it runs the command that launches this node's enclave
 * and lives as long as the enclave (on Nitro infra/host/run-enclave.sh: nitro-cli run-enclave, then
 * watching describe-enclaves; locally `ekv emulate-enclave`), and launches it again when it exits, or when
 * it stops answering health checks (a hung enclave is stopped first).
 *
 * Relaunches back off exponentially (restartDelayBaseMs doubling to restartDelayMaxMs; the streak resets
 * once an enclave has run stableResetMs) and their rate is bounded: at most restartsPerWindowMax in any
 * restartWindowMs, later ones wait for the window. A crash loop therefore costs a bounded number of KMS
 * calls and boots, never a busy loop, and the node keeps trying (it never gives up on its own).
 *
 * The restart decision is a pure function of the history (nextRestartDelay), tested on its own; this
 * class only wires it to processes, timers, metrics and logs.
 */
import { spawn } from 'node:child_process';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { HealthReport } from './health.ts';

export interface WatchdogLimits {
  restartDelayBaseMs: number;
  restartDelayMaxMs: number;
  /** An enclave that ran this long resets the backoff streak. */
  stableResetMs: number;
  restartsPerWindowMax: number;
  restartWindowMs: number;
  probeIntervalMs: number;
  /** Consecutive 'down' checks of a running enclave before it is stopped and relaunched. */
  probeFailuresMax: number;
  /** After a launch, 'down' checks do not count until the enclave answered once or this much time passed. */
  startGraceMs: number;
}

export const watchdogLimitsDefault: WatchdogLimits = {
  restartDelayBaseMs: 1000,
  restartDelayMaxMs: 60_000,
  stableResetMs: 5 * 60_000,
  restartsPerWindowMax: 6,
  restartWindowMs: 10 * 60_000,
  probeIntervalMs: 5000,
  probeFailuresMax: 3,
  // Long enough for run-enclave.sh's first fetch of a new EIF (hundreds of MB from S3) plus a boot, unseal and
  // join: an enclave that never answered is not stopped as hung before this (one that exits is relaunched at once).
  startGraceMs: 10 * 60_000,
};

export interface RestartHistory {
  /** When the current (exited) enclave was launched. */
  launchedAt: number;
  /** Relaunches so far in the current streak (0: this is the first failure of a stable enclave). */
  streak: number;
  /** Times of past relaunches (any age; only those in the window count). */
  restarts: number[];
}

export interface RestartDecision {
  delayMs: number;
  streak: number;
  /** The delay was lengthened by the rate bound. */
  rateLimited: boolean;
}

/** How long to wait before relaunching an enclave that exited at `now`. */
export function nextRestartDelay(h: RestartHistory, now: number, l: WatchdogLimits): RestartDecision {
  const streak = now - h.launchedAt >= l.stableResetMs ? 0 : h.streak;
  let delayMs = Math.min(l.restartDelayMaxMs, l.restartDelayBaseMs * 2 ** Math.min(streak, 30));
  const recent = h.restarts.filter((t) => t > now - l.restartWindowMs).sort((a, b) => a - b);
  let rateLimited = false;
  if (recent.length >= l.restartsPerWindowMax) {
    // The relaunch may happen once enough old ones have left the window to leave room for it.
    const oldest = recent[recent.length - l.restartsPerWindowMax] as number;
    const free = oldest + l.restartWindowMs - now;
    if (free > delayMs) {
      delayMs = free;
      rateLimited = true;
    }
  }
  return { delayMs, streak: streak + 1, rateLimited };
}

export interface SupervisedProcess {
  pid: number | undefined;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM to the process group, SIGKILL after graceMs. */
  stop(graceMs?: number): Promise<void>;
}

/** Runs `command` through /bin/sh in its own process group (so that stop() reaches what it started). */
export function spawnEnclaveCommand(command: string, env: NodeJS.ProcessEnv = process.env): SupervisedProcess {
  const child = spawn('/bin/sh', ['-c', `exec ${command}`], { detached: true, stdio: ['ignore', 'inherit', 'inherit'], env });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', () => resolve({ code: 127, signal: null }));
  });
  let done = false;
  void exited.then(() => (done = true));
  const signal = (sig: NodeJS.Signals) => {
    try {
      if (child.pid) process.kill(-child.pid, sig);
    } catch {
      // already gone
    }
  };
  return {
    pid: child.pid,
    exited,
    async stop(graceMs = 10_000) {
      if (done) return;
      signal('SIGTERM');
      const timer = setTimeout(() => signal('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

export type WatchdogState = 'starting' | 'running' | 'backoff' | 'stopped';

export interface WatchdogInit {
  launch: () => SupervisedProcess;
  probe: () => Promise<HealthReport>;
  logger: Logger;
  registry: Registry;
  limits?: Partial<WatchdogLimits>;
}

export class EnclaveWatchdog {
  private readonly init: WatchdogInit;
  private readonly limits: WatchdogLimits;
  private proc: SupervisedProcess | null = null;
  private history: RestartHistory = { launchedAt: 0, streak: 0, restarts: [] };
  private answeredSinceLaunch = false;
  private failures = 0;
  private relaunchTimer: NodeJS.Timeout | null = null;
  private probeTimer: NodeJS.Timeout | null = null;
  private stopping = false;
  state: WatchdogState = 'starting';
  nextLaunchAt: number | null = null;
  private readonly restartsTotal: Counter<'reason'>;
  private readonly upGauge: Gauge;
  private readonly backoffGauge: Gauge;

  constructor(init: WatchdogInit) {
    this.init = init;
    this.limits = { ...watchdogLimitsDefault, ...init.limits };
    const registers = [init.registry];
    this.restartsTotal = new Counter({ name: 'ekv_host_enclave_restarts_total', help: 'Enclave relaunches by the watchdog', labelNames: ['reason'], registers });
    this.upGauge = new Gauge({ name: 'ekv_host_enclave_serving', help: '1 when the last health check found the enclave serving', registers });
    this.backoffGauge = new Gauge({ name: 'ekv_host_enclave_restart_delay_seconds', help: 'Delay before the pending relaunch (0: none pending)', registers });
  }

  /** Relaunches since this watchdog started. */
  get restarts(): number {
    return this.restartCount;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  start(): void {
    this.launchNow();
    this.probeTimer = setInterval(() => void this.probeOnce(), this.limits.probeIntervalMs);
    this.probeTimer.unref();
  }

  /** Record a health result (from the probe loop or /healthz) and stop an enclave that stopped answering. */
  observe(report: HealthReport): void {
    this.upGauge.set(report.enclave === 'serving' ? 1 : 0);
    if (this.state !== 'running' || this.proc === null) return;
    // A check that began before this launch describes the previous enclave.
    if (Date.parse(report.checkedAt) < this.history.launchedAt) return;
    if (report.enclave !== 'down') {
      this.answeredSinceLaunch = true;
      this.failures = 0;
      return;
    }
    const inGrace = !this.answeredSinceLaunch && Date.now() - this.history.launchedAt < this.limits.startGraceMs;
    if (inGrace) return;
    this.failures++;
    if (this.failures < this.limits.probeFailuresMax) return;
    this.init.logger.error({ failures: this.failures, code: report.code, reason: report.reason }, 'enclave not answering health checks; stopping it to relaunch');
    this.failures = 0;
    this.unresponsive = true;
    void this.proc.stop();
  }

  private unresponsive = false;
  private restartCount = 0;

  private async probeOnce(): Promise<void> {
    if (this.state !== 'running') return;
    this.observe(await this.init.probe());
  }

  private launchNow(): void {
    this.relaunchTimer = null;
    this.nextLaunchAt = null;
    this.backoffGauge.set(0);
    if (this.stopping) return;
    const proc = this.init.launch();
    this.proc = proc;
    this.state = 'running';
    this.answeredSinceLaunch = false;
    this.failures = 0;
    this.unresponsive = false;
    this.history.launchedAt = Date.now();
    this.init.logger.info({ pid: proc.pid, restarts: this.restarts }, 'enclave launched');
    void proc.exited.then((exit) => this.onExit(proc, exit));
  }

  private onExit(proc: SupervisedProcess, exit: { code: number | null; signal: NodeJS.Signals | null }): void {
    if (this.stopping || proc !== this.proc) return;
    const now = Date.now();
    const reason = this.unresponsive ? 'unresponsive' : 'exit';
    const d = nextRestartDelay(this.history, now, this.limits);
    this.history = { launchedAt: this.history.launchedAt, streak: d.streak, restarts: [...this.history.restarts.filter((t) => t > now - this.limits.restartWindowMs), now + d.delayMs] };
    this.restartsTotal.inc({ reason });
    this.restartCount++;
    this.upGauge.set(0);
    this.backoffGauge.set(d.delayMs / 1000);
    this.state = 'backoff';
    this.nextLaunchAt = now + d.delayMs;
    this.init.logger.warn({ ...exit, reason, delayMs: d.delayMs, streak: d.streak, rateLimited: d.rateLimited, restarts: this.restarts },
      d.rateLimited ? 'enclave exited; restart rate bound reached, relaunching later' : 'enclave exited; relaunching after backoff');
    this.relaunchTimer = setTimeout(() => this.launchNow(), d.delayMs);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.state = 'stopped';
    if (this.relaunchTimer) clearTimeout(this.relaunchTimer);
    if (this.probeTimer) clearInterval(this.probeTimer);
    await this.proc?.stop();
  }

  describe(): Record<string, unknown> {
    return {
      state: this.state, pid: this.pid ?? null, restarts: this.restarts,
      ...(this.nextLaunchAt !== null ? { nextLaunchInMs: Math.max(0, this.nextLaunchAt - Date.now()) } : {}),
    };
  }
}
