// The launcher: it runs the exact bytes it measured, from a private copy, in a
// fresh network namespace, with the NSM on fd 3; it forwards the enclave's
// logs, stops it, and leaves no orphan when the launcher itself is killed.
import { build } from 'esbuild';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, statSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EmulatorCa } from '../emulator/ca.ts';
import { probeIsolation } from '../emulator/isolation.ts';
import { launchEnclave } from '../emulator/launcher.ts';
import { measureImage } from '../emulator/measure.ts';
import { verifyAttestation } from '../verifier/index.ts';

const repo = new URL('..', import.meta.url).pathname;
let dir: string;
let ca: EmulatorCa;
let tcp: Server;
let tcpPort: number;
let attestImage: string;

// The test enclave: asks its NSM (openNsm, so EKV_NSM=fd:3 over the CBOR
// protocol) for a document bound to TEST_NONCE, prints it, then tries to
// reach a TCP listener on the host's loopback.
const attestSource = `
import { connect } from 'node:net';
import { openNsm } from ${JSON.stringify(join(repo, 'enclave/nsm.ts'))};
const nsm = await openNsm();
const doc = await nsm.attest({ nonce: Buffer.from(process.env.TEST_NONCE, 'hex') });
process.stdout.write(JSON.stringify({ document: Buffer.from(doc).toString('base64') }) + '\\n');
const network = await new Promise((resolve) => {
  const s = connect(Number(process.env.TEST_PORT), '127.0.0.1');
  s.setTimeout(2000, () => { s.destroy(); resolve('TIMEOUT'); });
  s.on('connect', () => { s.destroy(); resolve('connected'); });
  s.on('error', (e) => resolve(e.code));
});
process.stdout.write(JSON.stringify({ network, envKeys: Object.keys(process.env).sort() }) + '\\n');
nsm.close();
`;

// Runs until stopped; logs a pino line to stderr; ignores SIGTERM when told to.
const idleSource = `
if (process.argv[2] === 'stubborn') process.on('SIGTERM', () => {});
process.stderr.write(JSON.stringify({ level: 40, time: Date.now(), msg: 'hello from the enclave', answer: 42 }) + '\\n');
process.stdout.write('plain line\\n');
setInterval(() => {}, 1000);
`;

interface Captured { lines: Array<Record<string, unknown>>; logger: pino.Logger }

function capture(): Captured {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { lines, logger: pino({ level: 'trace' }, sink) };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ekv-launch-'));
  ca = await EmulatorCa.createEphemeral();
  tcp = createServer((s) => s.destroy());
  await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
  tcpPort = (tcp.address() as { port: number }).port;
  await writeFile(join(dir, 'attest-entry.mjs'), attestSource);
  attestImage = join(dir, 'attest.mjs');
  await build({
    entryPoints: [join(dir, 'attest-entry.mjs')], outfile: attestImage, bundle: true, platform: 'node',
    target: 'node20', format: 'esm', external: ['cbor-extract', 'koffi'], logLevel: 'warning',
    banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
  });
  await writeFile(join(dir, 'idle.mjs'), idleSource);
});

afterAll(async () => {
  tcp.close();
  await rm(dir, { recursive: true, force: true });
});

describe('launchEnclave', () => {
  it('runs the measured image with an NSM reporting its PCRs, and no network', async () => {
    const { lines, logger } = capture();
    const nonce = randomBytes(32);
    const workDir = join(dir, 'work-attest');
    const launched = await launchEnclave({
      imagePath: attestImage, nsm: ca, workDir, logger,
      env: { TEST_NONCE: nonce.toString('hex'), TEST_PORT: String(tcpPort) },
    });
    const expected = measureImage(await readFile(attestImage));
    expect(launched.pcrs.pcr0.toString('hex')).toBe(expected.pcr0.toString('hex'));
    expect(await launched.exited).toEqual({ code: 0, signal: null });

    const docLine = lines.find((l) => typeof l['document'] === 'string');
    const doc = Buffer.from(docLine?.['document'] as string, 'base64');
    const v = await verifyAttestation(doc, {
      roots: [ca.rootPem], nonce, cache: false,
      pcrs: { 0: expected.pcr0.toString('hex'), 1: expected.pcr1.toString('hex'), 2: expected.pcr2.toString('hex') },
    });
    expect(v.moduleId).toBe(launched.moduleId);
    expect(docLine?.['enclave']).toBe(launched.moduleId);

    const probe = lines.find((l) => 'network' in l);
    // The enclave sees only what it was given, never the host's environment.
    expect(probe?.['envKeys']).toEqual(['EKV_NSM', 'PATH', 'TEST_NONCE', 'TEST_PORT']);
    if ((await probeIsolation()).networkIsolated) {
      expect(launched.networkIsolated).toBe(true);
      expect(probe?.['network']).not.toBe('connected');
    } else {
      expect(probe?.['network']).toBe('connected');
    }
    // The private copy is gone once the enclave has exited.
    expect(readdirSync(workDir)).toEqual([]);
  });

  it('measures a one-byte change of the image as a different PCR0', async () => {
    const bytes = await readFile(join(dir, 'idle.mjs'));
    bytes[bytes.length - 2] = 0x20; // a space instead of the last ';'
    await writeFile(join(dir, 'idle-changed.mjs'), bytes);
    const [a, b] = await Promise.all(['idle.mjs', 'idle-changed.mjs'].map((f) =>
      launchEnclave({ imagePath: join(dir, f), nsm: ca, workDir: join(dir, 'work-pcr'), logger: capture().logger })));
    expect(a?.pcrs.pcr0.toString('hex')).not.toBe(b?.pcrs.pcr0.toString('hex'));
    expect(a?.pcrs.pcr1.toString('hex')).toBe(b?.pcrs.pcr1.toString('hex'));
    await Promise.all([a?.stop(), b?.stop()]);
  });

  it('runs from a read-only private copy, forwards logs, and stops with SIGTERM', async () => {
    const { lines, logger } = capture();
    const workDir = join(dir, 'work-idle');
    const launched = await launchEnclave({ imagePath: join(dir, 'idle.mjs'), nsm: ca, workDir, logger });
    const [copyDir] = readdirSync(workDir);
    expect((statSync(join(workDir, copyDir as string)).mode & 0o777).toString(8)).toBe('500');
    expect((statSync(join(workDir, copyDir as string, 'image.mjs')).mode & 0o777).toString(8)).toBe('400');
    await waitFor(() => lines.some((l) => l['msg'] === 'hello from the enclave'));
    expect(lines.find((l) => l['msg'] === 'hello from the enclave')).toMatchObject({ level: 40, answer: 42, source: 'stderr' });
    await waitFor(() => lines.some((l) => l['msg'] === 'plain line'));
    await launched.stop();
    expect(await launched.exited).toEqual({ code: null, signal: 'SIGTERM' });
    expect(readdirSync(workDir)).toEqual([]);
  });

  it('kills an enclave that ignores SIGTERM after the grace period', async () => {
    const { lines, logger } = capture();
    const launched = await launchEnclave({
      imagePath: join(dir, 'idle.mjs'), nsm: ca, workDir: join(dir, 'work-stubborn'), args: ['stubborn'],
      stopGraceMs: 300, logger,
    });
    // Its first line is written after its SIGTERM handler is installed (a fixed pause lost that race under load).
    await waitFor(() => lines.some((l) => l['msg'] === 'hello from the enclave'));
    await launched.stop();
    expect((await launched.exited).signal).toBe('SIGKILL');
  });

  it('leaves no orphan when the launcher process is killed', async () => {
    const script = join(dir, 'launcher-main.mts'); // .mts: ESM outside the package
    await writeFile(script, `
      import { EmulatorCa } from ${JSON.stringify(join(repo, 'emulator/ca.ts'))};
      import { launchEnclave } from ${JSON.stringify(join(repo, 'emulator/launcher.ts'))};
      const ca = await EmulatorCa.createEphemeral();
      const e = await launchEnclave({ imagePath: ${JSON.stringify(join(dir, 'idle.mjs'))}, nsm: ca, workDir: ${JSON.stringify(join(dir, 'work-orphan'))} });
      process.stdout.write(e.pid + '\\n');
      setInterval(() => {}, 1000);
    `);
    const launcher = spawn(process.execPath, ['--import', 'tsx', script], { cwd: repo, stdio: ['ignore', 'pipe', 'ignore'] });
    const pid = await new Promise<number>((resolve, reject) => {
      launcher.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
      launcher.once('exit', () => reject(new Error('launcher exited early')));
    });
    expect(alive(pid)).toBe(true);
    launcher.kill('SIGKILL');
    await waitFor(() => !alive(pid), 5000);
  });
});

describe('ekv measure', () => {
  it('prints the PCRs the launcher measures, as JSON and as text', async () => {
    const image = join(dir, 'idle.mjs');
    const expected = measureImage(await readFile(image));
    const run = promisify(execFile);
    const json = await run(process.execPath, ['bin/ekv.js', 'measure', image, '--json'], { cwd: repo });
    expect(JSON.parse(json.stdout)).toEqual({
      PCR0: expected.pcr0.toString('hex'), PCR1: expected.pcr1.toString('hex'), PCR2: expected.pcr2.toString('hex'),
    });
    const text = await run(process.execPath, ['bin/ekv.js', 'measure', image], { cwd: repo });
    expect(text.stdout).toContain(`PCR0 ${expected.pcr0.toString('hex')}`);
    const missing = await run(process.execPath, ['bin/ekv.js', 'measure', join(dir, 'nope.mjs')], { cwd: repo }).catch((e: { code: number; stderr: string }) => e);
    expect(missing).toMatchObject({ code: 1 });
    expect((missing as { stderr: string }).stderr).toMatch(/^NOT_FOUND/);
  });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitFor(cond: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 20));
  }
}
