// Reproducers: every failing input is saved as test/fuzz/corpus/<target>/<sha256 prefix>.bin with a
// .txt note; test/fuzz.test.ts replays the whole directory on every run.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const corpusDir = process.env.EKV_FUZZ_CORPUS ?? fileURLToPath(new URL('./corpus/', import.meta.url));

export function saveReproducer(target: string, input: Buffer, note: string): string {
  const dir = join(corpusDir, target);
  mkdirSync(dir, { recursive: true });
  const name = createHash('sha256').update(input).digest('hex').slice(0, 16);
  const file = join(dir, `${name}.bin`);
  writeFileSync(file, input);
  writeFileSync(join(dir, `${name}.txt`), `${note}\n`);
  return file;
}

/** The saved reproducers of one target. */
export function reproducers(target: string): string[] {
  const dir = join(corpusDir, target);
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((f) => f.endsWith('.bin')).sort().map((f) => join(dir, f));
}
