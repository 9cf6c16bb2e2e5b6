// Builds the enclave image once before the tests, so every test launches the
// bytes the current sources produce.
import { execFileSync } from 'node:child_process';

export default function setup(): void {
  execFileSync(process.execPath, ['scripts/build-enclave.mjs'], { stdio: 'inherit' });
}
