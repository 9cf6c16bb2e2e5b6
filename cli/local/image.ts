/**
 * Local image variants. What decides trust is compiled into the enclave image (enclave/image-config.ts)
 * in the emulated world as on Nitro, so a local ring runs an image built for its options: the KMS key
 * it seals under (or none, --no-seal), the access mode, the replication factor, whether it may run as
 * one node. Each variant is built once from the sources by scripts/build-enclave.mjs and kept beside the
 * default image as dist/enclave-<base>-<settings>.mjs, the hashes covering the default image's bytes
 * (rebuilt by `npm run build`, `npm start` and the test setup whenever the sources change) and the
 * settings. Rebuilding the default image removes the variants of other sources.
 * The cluster file then pins that variant's PCR0.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { localKmsKeyArn, type ImageConfig } from '../../enclave/image-config.ts';

export interface ImageSettings extends ImageConfig {
  /** Test seam (enclave/image-config.ts testUnsafeSkipKeyIdCheck); only test/attacks/ sets it. */
  testUnsafeSkipKeyIdCheck?: boolean;
  /** Test seams of the membership rules (enclave/image-config.ts); only test/attacks/ sets them. */
  testHostMayFound?: boolean;
  testNoRingCheck?: boolean;
  testAnyPullSource?: boolean;
}

/**
 * The package root: the nearest directory above this module with enclave-kv's package.json (the sources
 * run from cli/local/, the build from dist/lib/chunks/, so no fixed number of levels is right).
 */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      if ((JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown }).name === 'enclave-kv') return dir;
    } catch {
      // no package.json here, or not ours: keep going up
    }
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the enclave-kv package root above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

const repoRoot = packageRoot();
/** The image `npm run build` produces; its settings are defaultImageSettings. */
export const defaultImagePath = join(repoRoot, 'dist', 'enclave.mjs');

export const defaultImageSettings: ImageSettings = {
  kmsKeyArn: localKmsKeyArn, accessMode: 'closed', replicas: 3, singleNode: false, peerPcr0Allowlist: [],
};

/** The settings a local ring's options ask for. */
export function localImageSettings(o: { seal?: boolean; access?: 'open' | 'closed'; replicas: number; nodes: number; kmsKeyArn?: string }): ImageSettings {
  return {
    kmsKeyArn: o.seal === false ? '' : (o.kmsKeyArn ?? localKmsKeyArn),
    accessMode: o.access ?? 'open',
    replicas: o.replicas,
    singleNode: o.nodes === 1,
    peerPcr0Allowlist: [],
  };
}

function canonical(s: ImageSettings): string {
  return JSON.stringify({
    kmsKeyArn: s.kmsKeyArn, accessMode: s.accessMode, replicas: s.replicas, singleNode: s.singleNode,
    peerPcr0Allowlist: [...s.peerPcr0Allowlist].map((x) => x.toLowerCase()).sort(),
    ...(s.ringPeers ? { ringPeers: true } : {}),
    // Only when set, so images without recovery members keep their names (and PCR0s).
    ...(s.recoveryMembers && s.recoveryMembers.length > 0 ? { recoveryMembers: s.recoveryMembers, recoveryThreshold: s.recoveryThreshold ?? 1 } : {}),
    ...(s.testUnsafeSkipKeyIdCheck ? { testUnsafeSkipKeyIdCheck: true } : {}),
    ...(s.testHostMayFound ? { testHostMayFound: true } : {}),
    ...(s.testNoRingCheck ? { testNoRingCheck: true } : {}),
    ...(s.testAnyPullSource ? { testAnyPullSource: true } : {}),
  });
}

/**
 * enclave-<base>-<settings>.mjs: the first part is the default image's hash, so that rebuilding it
 * (scripts/build-enclave.mjs) can remove the variants of older sources.
 */
function variantName(baseBytes: Buffer, settings: string): string {
  const base = createHash('sha256').update(baseBytes).digest('hex').slice(0, 12);
  const set = createHash('sha256').update(baseBytes).update(settings).digest('hex').slice(0, 12);
  return `enclave-${base}-${set}.mjs`;
}

const building = new Map<string, Promise<string>>();

/**
 * The path of the image with these settings, built when it is not there yet. Concurrent callers (in this
 * process or in others, e.g. test workers) may both build it: each writes a private file and renames it
 * into place, and the bytes are the same.
 */
export function localImage(settings: ImageSettings, baseImage: string = defaultImagePath): Promise<string> {
  const base = resolve(baseImage);
  if (!existsSync(base)) return Promise.reject(new Error(`no enclave image at ${base}: run \`npm run build\` first`));
  if (canonical(settings) === canonical(defaultImageSettings)) return Promise.resolve(base);
  const out = join(dirname(base), variantName(readFileSync(base), canonical(settings)));
  if (existsSync(out)) return Promise.resolve(out);
  let p = building.get(out);
  if (!p) {
    p = build(settings, out).finally(() => building.delete(out));
    building.set(out, p);
  }
  return p;
}

async function build(settings: ImageSettings, out: string): Promise<string> {
  const tmp = `${out}.${randomBytes(6).toString('hex')}.tmp.mjs`;
  try {
    await promisify(execFile)(process.execPath, [join(repoRoot, 'scripts', 'build-enclave.mjs'), '--out', tmp, '--settings', canonical(settings)], {
      cwd: repoRoot, timeout: 120_000,
    });
    renameSync(tmp, out);
  } finally {
    rmSync(tmp, { force: true });
  }
  return out;
}
