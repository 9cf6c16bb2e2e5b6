/**
 * `--help` / `-h` for every benchmark script: prints the script's own header comment (its usage and what it
 * measures) to stdout and exits 0, before any flag parsing.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export function helpFromHeader(moduleUrl: string): void {
  if (!process.argv.includes('--help') && !process.argv.includes('-h')) return;
  const src = readFileSync(fileURLToPath(moduleUrl), 'utf8');
  let text: string;
  if (src.startsWith('//')) {
    const lines: string[] = [];
    for (const l of src.split('\n')) {
      if (!l.startsWith('//')) break;
      lines.push(l.replace(/^\/\/ ?/, ''));
    }
    text = lines.join('\n').trim();
  } else {
    const m = /\/\*\*([\s\S]*?)\*\//.exec(src);
    text = (m?.[1] ?? 'no usage recorded').split('\n').map((l) => l.replace(/^\s*\* ?/, '')).join('\n').trim();
  }
  process.stdout.write(text + '\n');
  process.exit(0);
}
