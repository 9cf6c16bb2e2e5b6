// Builds the enclave image and the compiled CLI (dist/lib/, which bin/ekv.js runs) once before the
// tests, so every test launches the bytes the current sources produce. Also points the CLI's trust store
// (cli/trust-store.ts) at a directory of this run, so the rings the tests
// start never write into the user's ~/.config.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export default function setup(): () => void {
  execFileSync(process.execPath, ['scripts/build.mjs', '--no-types'], { stdio: 'inherit' });
  const trustDir = mkdtempSync(join(tmpdir(), 'ekv-trust-'));
  process.env.EKV_TRUST_DIR ??= trustDir;
  return () => rmSync(trustDir, { recursive: true, force: true });
}
