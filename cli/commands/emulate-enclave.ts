/**
 * `ekv emulate-enclave`: the local stand-in for infra/host/run-enclave.sh (nitro-cli run-enclave, then
 * watching it): launches one enclave image on the emulated TEE and lives exactly as long as the enclave,
 * so `ekv host --enclave-cmd` supervises it the same way on both worlds.
 *
 * The enclave's environment is the image's, as infra/enclave/Dockerfile bakes it (imageEnv below; an infra
 * test holds the two equal): its per-node settings come from the host (EKV_CONFIG_FROM_HOST=1) and KMS is
 * reached through the vsock-proxy's socket (host-8002.sock), never through anything chosen here.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import pino from 'pino';
import { EmulatorCa } from '../../emulator/ca.ts';
import { launchEnclave } from '../../emulator/launcher.ts';
import { measureImage } from '../../emulator/measure.ts';
import { readReleaseFile, selectImage } from '../../host/release.ts';
import { firstSignal, run, UsageError } from '../output.ts';

/** The ENV block of infra/enclave/Dockerfile that concerns the enclave's code, with the vsock directory given. */
export function imageEnv(vsockDir: string): Record<string, string> {
  return {
    EKV_VSOCK_DIR: vsockDir,
    EKV_KMS_SOCKET: join(vsockDir, 'host-8002.sock'),
    EKV_CONFIG_FROM_HOST: '1',
  };
}

/**
 * run-enclave.sh's choice of image, on local files: the release record's image this node was told to run
 * (image-pcr0 beside the release file), as <images-dir>/<pcr0>.mjs, whose measured PCR0 must be the release's.
 */
export function imageFromRelease(releaseFile: string, imagesDir: string): string {
  const release = readReleaseFile(releaseFile);
  if (release === null) throw new UsageError(`no release record at ${releaseFile}`);
  const selectedFile = join(dirname(releaseFile), 'image-pcr0');
  const chosen = selectImage(release, existsSync(selectedFile) ? readFileSync(selectedFile, 'utf8') : null);
  const path = join(imagesDir, `${chosen.pcr0}.mjs`);
  if (!existsSync(path)) throw new UsageError(`no image ${path} for PCR0 ${chosen.pcr0}`);
  const pcr0 = measureImage(readFileSync(path)).pcr0.toString('hex');
  if (pcr0 !== chosen.pcr0) throw new UsageError(`${path} has PCR0 ${pcr0}, the release says ${chosen.pcr0}`);
  return path;
}

export function registerEmulateEnclave(program: Command): void {
  program
    .command('emulate-enclave')
    .description('run one enclave image on the emulated TEE until it exits (the local stand-in for nitro-cli run-enclave)')
    .option('--image <file>', 'the enclave image (an esbuild bundle; its bytes are measured)')
    .option('--release <file>', "instead of --image: the release record (host/release.ts); the image is the one it names for this node (image-pcr0 beside it), from --images-dir")
    .option('--images-dir <dir>', 'with --release: where the images are, as <pcr0>.mjs')
    .requiredOption('--ca <dir>', 'the emulated CA (the NSM signs with it)')
    .requiredOption('--vsock-dir <dir>', "the node's vsock directory (the unix sockets the socat bridges would connect)")
    .option('--work-dir <dir>', 'where the private copy of the image goes (default: <vsock-dir>/../work)')
    .option('--pid-file <file>', "write the enclave's pid here (tests kill it)")
    .option('--log-level <level>', "the enclave's log level", 'info')
    .action(async (o: { image?: string; release?: string; imagesDir?: string; ca: string; vsockDir: string; workDir?: string; pidFile?: string; logLevel: string }) => run(false, async () => {
      const signal = firstSignal();
      if ((o.image === undefined) === (o.release === undefined)) throw new UsageError('give --image or --release (with --images-dir)');
      const image = o.image ?? imageFromRelease(resolve(o.release as string), resolve(o.imagesDir ?? '.'));
      const vsockDir = resolve(o.vsockDir);
      const workDir = resolve(o.workDir ?? join(vsockDir, '..', 'work'));
      mkdirSync(workDir, { recursive: true, mode: 0o700 });
      const logger = pino({ level: o.logLevel, base: { svc: 'emulator' } }, pino.destination(2));
      let ca: EmulatorCa;
      try {
        ca = await EmulatorCa.loadOrCreate(resolve(o.ca));
      } catch (err) {
        throw new UsageError(`--ca ${o.ca}: ${(err as Error).message}`);
      }
      const enclave = await launchEnclave({
        imagePath: resolve(image), nsm: ca, workDir, logger,
        env: { ...imageEnv(vsockDir), EKV_LOG_LEVEL: o.logLevel },
      });
      if (o.pidFile) writeFileSync(o.pidFile, `${enclave.pid}\n`);
      const how = await Promise.race([enclave.exited.then((e) => ({ exit: e })), signal.then((s) => ({ signal: s }))]);
      if ('signal' in how) {
        await enclave.stop();
        process.exit(0);
      }
      logger.warn(how.exit, 'the enclave exited');
      process.exit(1);
    }));
}
