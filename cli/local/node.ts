/**
 * One emulated node on this machine: the host proxy (in this process), the
 * emulated TEE (launcher + NSM, in this process) and the enclave (a child
 * process without network). Like `Restart=always` under systemd on Nitro, an
 * enclave that dies is launched again from the same image.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { EmulatorCa } from '../../emulator/ca.ts';
import { launchEnclave, type LaunchedEnclave } from '../../emulator/launcher.ts';
import type { ImageMeasurement } from '../../emulator/measure.ts';
import { hostSocketPaths, loopbackOnly, startHost, type RunningHost } from '../../host/host.ts';
import { decommissionEnclave, type DecommissionOutcome } from '../../host/enclave-metrics.ts';
import { serviceChild } from '../../emulator/service-log.ts';
import { spawnHostProcess, type HostProcess } from './host-process.ts';
import { pickListenPort } from './ports.ts';

export const restartDelayMs = 500;
/**
 * An enclave that dies before it answers (a KMS that refuses its image, a join address that never answers)
 * is launched again after a growing pause (restartDelayMs, x2 each time), at most this many times in all;
 * then the node gives up with the enclave's last error instead of looping forever.
 */
export const startAttemptsMax = 4;
/** An enclave that dies within this long of answering counts as crash-looping: its relaunch pause doubles. */
export const quickDeathMs = 3000;
const relaunchDelayMaxMs = 30_000;
const socketPathBytesMax = 100;

export interface LocalNodeOptions {
  name: string;
  dir: string;
  imagePath: string;
  ca: EmulatorCa;
  listenPort: number;
  httpPort: number;
  logger: Logger;
  /** Extra environment for the enclave: where things are (join address, KMS address); never trust. */
  enclaveEnv?: (self: { addr: string; relaunch: boolean }) => Record<string, string>;
  startBlobStore?: (socketPath: string, dataDir: string) => Promise<{ close(): Promise<void> }>;
  /** The emulated IMDS whose role credentials this node's host hands its enclave. */
  imdsUrl?: string;
  isolate?: 'auto' | 'required' | 'off';
  /** Called once if a relaunch gives up (startAttemptsMax start-up failures in a row); the node is then stopped. */
  onGiveUp?: (err: Error) => void;
  /**
   * Run the host proxy as its own `ekv host` process (cli/local/host-process.ts) instead of in this
   * process, so a fault test can kill -9 it (killHost) and start it again (reviveHost). Default false.
   */
  hostProcess?: boolean;
}

export class LocalNode {
  readonly name: string;
  host!: RunningHost;
  enclave: LaunchedEnclave | null = null;
  restarts = 0;
  private stopping = false;
  private quickDeaths = 0;
  private pause: { timer: NodeJS.Timeout; resolve: () => void } | null = null;
  private readonly opts: LocalNodeOptions;
  private readonly vsockDir: string;
  private readonly dataDir: string;
  private readonly workDir: string;

  constructor(opts: LocalNodeOptions) {
    this.opts = opts;
    this.name = opts.name;
    this.vsockDir = join(opts.dir, 'vsock');
    this.dataDir = join(opts.dir, 'data');
    this.workDir = join(opts.dir, 'work');
    const longest = join(this.vsockDir, 'enclave-5000.sock');
    if (Buffer.byteLength(longest) > socketPathBytesMax) {
      throw new Error(`node directory path too long for unix sockets (${longest}); use a shorter --dir`);
    }
  }

  get addr(): string {
    return `127.0.0.1:${this.host.port}`;
  }

  get http(): string {
    return `http://127.0.0.1:${this.host.httpPort}`;
  }

  get measurement(): ImageMeasurement | null {
    return this.enclave?.pcrs ?? null;
  }

  async start(): Promise<void> {
    for (const d of [this.vsockDir, this.dataDir, this.workDir]) mkdirSync(d, { recursive: true, mode: 0o700 });
    // Ports asked as 0 are chosen below the ephemeral range, so restarts on the same ports find them free.
    const listenPort = this.opts.listenPort === 0 ? await pickListenPort() : this.opts.listenPort;
    const httpPort = this.opts.httpPort === 0 ? await pickListenPort({ exclude: [listenPort] }) : this.opts.httpPort;
    this.host = await this.startHost(listenPort, httpPort);
    await this.launch();
  }

  /**
   * The host proxy dies and comes back on the same ports (a fault to test: its relays and blob store
   * go away under the running enclave, which must fail closed and recover by itself).
   */
  async restartHost(downMs: number): Promise<void> {
    const { port, httpPort } = this.host;
    await this.host.close();
    await new Promise((r) => setTimeout(r, downMs));
    this.host = await this.startHost(port, httpPort);
  }

  /** Asks the enclave to leave for good (retire; docs/consistency.md, "Retirement") over its host channel. */
  decommission(waitMs?: number): Promise<DecommissionOutcome> {
    return decommissionEnclave(hostSocketPaths(this.vsockDir).enclaveMetrics, waitMs === undefined ? {} : { waitMs });
  }

  /** The host proxy's own process, in hostProcess mode (else null: it runs in this process). */
  get hostProcess(): HostProcess | null {
    return 'kill9' in this.host ? (this.host as HostProcess) : null;
  }

  /** hostProcess mode: kill -9 the host proxy under the running enclave; resolves once it is gone. Returns its pid. */
  async killHost(): Promise<number> {
    const p = this.hostProcess;
    if (!p) throw new Error(`${this.name}: the host proxy runs in this process (start the node with hostProcess)`);
    await p.kill9();
    return p.pid;
  }

  /** Start the host proxy again on the same ports (after killHost). */
  async reviveHost(): Promise<void> {
    const { port, httpPort } = this.host;
    this.host = await this.startHost(port, httpPort);
  }

  private startHost(listenPort: number, httpPort: number): Promise<RunningHost> {
    if (this.opts.hostProcess) {
      return spawnHostProcess({
        vsockDir: this.vsockDir, dataDir: this.dataDir, listenPort, httpPort,
        logger: this.opts.logger.child({ svc: 'host', node: this.name }),
        ...(this.opts.imdsUrl ? { imdsUrl: this.opts.imdsUrl } : {}),
      });
    }
    return startHost({
      vsockDir: this.vsockDir,
      listenHost: '127.0.0.1',
      listenPort,
      httpPort,
      dataDir: this.dataDir,
      outboundPolicy: loopbackOnly,
      logger: serviceChild(this.opts.logger, 'host', { node: this.name }),
      info: () => ({ node: this.name, enclavePid: this.enclave?.pid ?? null, pids: this.pids(), restarts: this.restarts }),
      ...(this.opts.startBlobStore ? { startBlobStore: this.opts.startBlobStore } : {}),
      ...(this.opts.imdsUrl ? { imdsUrl: this.opts.imdsUrl } : {}),
      // The health check verifies the enclave's document as a client would: against this emulated world's root.
      healthRoots: [this.opts.ca.rootPem],
    });
  }

  /**
   * Launches the enclave and resolves when it accepts connections (its socket answers an attestation
   * request). One that dies during start-up is launched again after a growing pause, startAttemptsMax times
   * in all; then this rejects with the enclave's last error and the node stays stopped.
   */
  async launch(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.launchOnce();
        return;
      } catch (err) {
        if (this.stopping) throw err;
        const last = this.enclave?.lastError() ?? null;
        if (attempt >= startAttemptsMax) {
          this.stopping = true;
          throw new Error(`the enclave failed to start ${attempt} times (the last time: ${(err as Error).message}); giving up. Its last error: ${last ?? (err as Error).message}`);
        }
        const delay = restartDelayMs * 2 ** (attempt - 1);
        this.opts.logger.warn({ node: this.name, attempt, delayMs: delay, err: last ?? (err as Error).message }, 'the enclave failed to start; trying again');
        await this.sleep(delay);
        if (this.stopping) throw err;
      }
    }
  }

  /** A pause that stop() cuts short. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pause = null;
        resolve();
      }, ms);
      this.pause = { timer, resolve };
    });
  }

  private async launchOnce(): Promise<void> {
    const env = {
      EKV_VSOCK_DIR: this.vsockDir,
      EKV_LOG_LEVEL: process.env.EKV_ENCLAVE_LOG_LEVEL ?? 'info',
      EKV_SELF_ADDR: this.addr,
      ...(this.opts.enclaveEnv?.({ addr: this.addr, relaunch: this.enclave !== null }) ?? {}),
    };
    const enclave = await launchEnclave({
      imagePath: this.opts.imagePath,
      nsm: this.opts.ca,
      workDir: this.workDir,
      env,
      isolate: this.opts.isolate ?? 'auto',
      logger: serviceChild(this.opts.logger, 'emulator', { node: this.name }),
    });
    this.enclave = enclave;
    let readyAt: number | null = null;
    void enclave.exited.then(async () => {
      // A death during start-up is launch()'s to retry; this is for an enclave that was running.
      if (this.stopping || this.enclave !== enclave || readyAt === null) return;
      this.restarts++;
      this.quickDeaths = Date.now() - readyAt < quickDeathMs ? this.quickDeaths + 1 : 0;
      const delay = Math.min(relaunchDelayMaxMs, restartDelayMs * 2 ** Math.min(this.quickDeaths, 10));
      this.opts.logger.warn({ node: this.name, restarts: this.restarts, delayMs: delay }, 'enclave died; launching it again');
      await this.sleep(delay);
      if (this.stopping) return;
      this.launch().catch((err: unknown) => {
        if ((err as Error).message.startsWith('the enclave failed to start')) {
          this.opts.logger.error({ node: this.name, err: (err as Error).message }, 'relaunch gave up');
          this.opts.onGiveUp?.(err as Error);
        } else if (!this.stopping) this.opts.logger.error({ err }, 'relaunch failed');
      });
    });
    try {
      await waitForEnclave(this.host.enclaveSocket, enclave);
    } catch (err) {
      // Never two enclaves at once: one that did not answer in time is stopped before any retry.
      await enclave.stop().catch(() => undefined);
      throw err;
    }
    readyAt = Date.now();
  }

  pids(): { host: number; emulator: number; enclave: number | null } {
    return { host: this.hostProcess?.pid ?? process.pid, emulator: process.pid, enclave: this.enclave?.pid ?? null };
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.pause) {
      clearTimeout(this.pause.timer);
      this.pause.resolve();
      this.pause = null;
    }
    await this.enclave?.stop();
    await this.host?.close();
  }
}

async function waitForEnclave(socketPath: string, enclave: LaunchedEnclave, timeoutMs = 30_000): Promise<void> {
  const { fetchAttestation } = await import('../../host/http.ts');
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  void enclave.exited.then(() => (exited = true));
  for (;;) {
    if (exited) throw new Error('the enclave exited during start-up (see its log)');
    try {
      await fetchAttestation(socketPath, Buffer.alloc(0));
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`the enclave did not start within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
