// Launches an enclave image as the emulated TEE does: the image file is read
// once, measured, and exactly those bytes are run from a private copy, in a
// fresh network namespace where the platform allows it, with fd 3 a socket
// pair to an EmulatedNsm that reports the measured PCRs (EKV_NSM=fd:3). The
// enclave's environment is only what the caller passes, never the host's.
//
// Orphans: the enclave is spawned under `setpriv --pdeathsig KILL` where that
// exists, so the kernel kills it if the launcher dies; independently, the
// enclave's openNsm() exits when its NSM channel hangs up; and a normal exit
// of the launcher process SIGKILLs every enclave it started.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { EmulatorCa } from './ca.ts';
import { probeIsolation } from './isolation.ts';
import { forwardLines } from './log-lines.ts';
import { serviceChild, serviceLogger } from './service-log.ts';
import { measureImage, pcrMap, type ImageMeasurement } from './measure.ts';
import { EmulatedNsm, serveNsm } from './nsm.ts';
import { stopGraceMs } from './tee-constants.ts';

/** Larger images are refused before they are read. */
export const imageBytesMax = 256 * 1024 * 1024;

export type NsmFactory = (pcrs: Map<number, Uint8Array>) => EmulatedNsm;

export interface LaunchInit {
  imagePath: string;
  /** A CA (a fresh module id is drawn from it) or a factory given the measured PCRs. */
  nsm: EmulatorCa | NsmFactory;
  /** The private copy of the image goes in a new directory under this one. */
  workDir: string;
  env?: Record<string, string>;
  args?: string[];
  /** 'auto': isolate when possible, warn once when not; 'required': refuse to run unisolated. */
  isolate?: 'auto' | 'required' | 'off';
  logger?: Logger;
  /** Between stop()'s signal and SIGKILL; default stopGraceMs (5 s). */
  stopGraceMs?: number;
  onExit?: (code: number | null, signal: NodeJS.Signals | null) => void;
}

export interface EnclaveExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface LaunchedEnclave {
  pid: number;
  pcrs: ImageMeasurement;
  moduleId: string;
  nsm: EmulatedNsm;
  networkIsolated: boolean;
  stop(signal?: NodeJS.Signals): Promise<void>;
  exited: Promise<EnclaveExit>;
  /** The last error or fatal line the enclave logged (message and error), or null. */
  lastError(): string | null;
}

/**
 * On Nitro the enclave's environment is part of the EIF, so measured: the host cannot set any of it. Here
 * the caller (the host side of a local node) passes "where things are"; what would change the code that
 * runs or how Node and OpenSSL behave (NODE_OPTIONS --require, LD_PRELOAD, extra CA files...) is dropped,
 * or a host could run code of its choice under the image's PCR0.
 */
const codeChangingEnvRe = /^(NODE_|NODE$|LD_|DYLD_|OPENSSL_|SSL_|UV_|PATH$|TZDIR$)/i;

function enclaveEnv(env: Record<string, string>, logger: Logger): Record<string, string> {
  const out: Record<string, string> = {};
  const dropped: string[] = [];
  for (const [k, v] of Object.entries(env)) {
    if (codeChangingEnvRe.test(k)) dropped.push(k);
    else out[k] = v;
  }
  if (dropped.length > 0) logger.warn({ dropped }, 'environment that would change the measured code was not passed to the enclave');
  return out;
}

const profilingArgRe = /^--(cpu-prof|heap-prof)(-dir=[\w./-]+|-name=[\w.-]+|-interval=\d+)?$|^--prof$/;

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
let warnedUnisolated = false;

export async function launchEnclave(init: LaunchInit): Promise<LaunchedEnclave> {
  const logger = init.logger ?? serviceLogger('emulator', 'info');
  const bytes = await readImage(init.imagePath);
  const pcrs = measureImage(bytes);
  const nsm = typeof init.nsm === 'function'
    ? init.nsm(pcrMap(pcrs))
    : new EmulatedNsm({ ca: init.nsm, pcrs: pcrMap(pcrs), moduleId: init.nsm.newModuleId() });
  const { prefix, networkIsolated } = await isolationPrefix(init.isolate ?? 'auto', logger);
  const { dir, imageCopy } = await privateCopy(init.workDir, bytes);

  // A developer's aid (never set in production, where nitro-cli runs the EIF): extra node flags for the
  // enclave, e.g. EKV_ENCLAVE_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'.
  // Profiling flags only: anything that loads or runs code (--require, --import, --inspect) would run code
  // of the caller's choice under the image's PCR0.
  const nodeArgs = (process.env.EKV_ENCLAVE_NODE_ARGS ?? '').split(' ').filter((a) => profilingArgRe.test(a));
  const command = [...prefix, process.execPath, ...nodeArgs, imageCopy, ...(init.args ?? [])];
  const child = spawn(command[0] as string, command.slice(1), {
    cwd: dir,
    env: { ...enclaveEnv(init.env ?? {}, logger), PATH: process.env['PATH'] ?? '/usr/bin:/bin', EKV_NSM: 'fd:3' },
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
  });
  track(child);
  const enclaveLog = serviceChild(logger, 'enclave', { enclave: nsm.moduleId });
  let lastError: string | null = null;
  const onError = (text: string) => (lastError = text);
  forwardLines(child.stdout as NonNullable<typeof child.stdout>, enclaveLog, 'stdout', onError);
  forwardLines(child.stderr as NonNullable<typeof child.stderr>, enclaveLog, 'stderr', onError);
  void serveNsm(child.stdio[3] as Duplex, nsm);

  const exited = new Promise<EnclaveExit>((resolve) => {
    child.once('close', (code: number | null, signal: NodeJS.Signals | null) => {
      live.delete(child);
      enclaveLog.info({ code, signal }, 'enclave exited');
      init.onExit?.(code, signal);
      void removeCopy(dir).finally(() => resolve({ code, signal }));
    });
  });
  const spawned = await new Promise<number>((resolve, reject) => {
    child.once('spawn', () => resolve(child.pid as number));
    child.once('error', (err) => {
      live.delete(child);
      void removeCopy(dir);
      reject(err);
    });
  });
  enclaveLog.info({ pid: spawned, pcr0: pcrs.pcr0.toString('hex'), networkIsolated }, 'enclave launched');
  return {
    pid: spawned, pcrs, moduleId: nsm.moduleId, nsm, networkIsolated, exited, lastError: () => lastError,
    stop: (signal = 'SIGTERM') => stopChild(child, exited, signal, init.stopGraceMs ?? stopGraceMs),
  };
}

async function readImage(path: string): Promise<Buffer> {
  const size = (await stat(path)).size;
  if (size > imageBytesMax) throw new Error(`enclave image ${path} is ${size} bytes, over ${imageBytesMax}`);
  return readFile(path);
}

async function isolationPrefix(mode: 'auto' | 'required' | 'off', logger: Logger): Promise<{ prefix: string[]; networkIsolated: boolean }> {
  const isolation = await probeIsolation();
  // Keep the parent-death signal even when network isolation is switched off.
  const deathSig = isolation.prefix[0] === 'setpriv' ? isolation.prefix.slice(0, 3) : [];
  if (mode === 'off') return { prefix: deathSig, networkIsolated: false };
  if (isolation.networkIsolated) return { prefix: isolation.prefix, networkIsolated: true };
  if (mode === 'required') throw new Error(`cannot isolate the enclave: ${isolation.reason}`);
  if (!warnedUnisolated) {
    warnedUnisolated = true;
    logger.warn(
      { reason: isolation.reason },
      '!!! ENCLAVE NOT NETWORK-ISOLATED: it shares the host network namespace; run as root or enable user namespaces !!!',
    );
  }
  return { prefix: isolation.prefix, networkIsolated: false };
}

// The copy lives in a directory only the owner can read and nobody can write,
// so the bytes that run are the bytes that were measured.
async function privateCopy(workDir: string, bytes: Uint8Array): Promise<{ dir: string; imageCopy: string }> {
  await mkdir(workDir, { recursive: true, mode: 0o700 });
  const dir = await mkdtemp(join(workDir, 'enclave-'));
  const imageCopy = join(dir, 'image.mjs');
  await writeFile(imageCopy, bytes, { mode: 0o400, flag: 'wx' });
  await chmod(dir, 0o500);
  return { dir, imageCopy };
}

async function removeCopy(dir: string): Promise<void> {
  await chmod(dir, 0o700).catch(() => undefined);
  await rm(dir, { recursive: true, force: true }).catch(() => undefined);
}

async function stopChild(child: ChildProcess, exited: Promise<EnclaveExit>, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    await exited;
    return;
  }
  child.kill(signal);
  let timer: NodeJS.Timeout | undefined;
  const graceOver = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), graceMs);
  });
  const first = await Promise.race([exited, graceOver]);
  clearTimeout(timer);
  if (first === 'timeout') child.kill('SIGKILL');
  await exited;
}

// A launcher that exits normally takes its enclaves with it.
function track(child: ChildProcess): void {
  live.add(child);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const c of live) c.kill('SIGKILL');
  });
}

