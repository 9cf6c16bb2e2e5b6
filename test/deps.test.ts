// The dependency direction of docs/architecture.md, enforced.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

function tsFiles(dir: string): string[] {
  let out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (name === 'node_modules') continue;
    if (statSync(p).isDirectory()) out = out.concat(tsFiles(p));
    else if (p.endsWith('.ts')) out.push(p);
  }
  return out;
}

function imports(file: string): string[] {
  const src = readFileSync(file, 'utf8');
  const re = /(?:import|export)[^'"]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;
  const found: string[] = [];
  for (const m of src.matchAll(re)) found.push((m[1] ?? m[2]) as string);
  return found;
}

const forbidden: Record<string, string[]> = {
  verifier: ['protocol', 'enclave', 'host', 'client', 'emulator', 'cli', 'infra', 'test'],
  protocol: ['enclave', 'host', 'client', 'emulator', 'cli', 'infra'],
  enclave: ['host', 'client', 'emulator', 'cli', 'infra'],
  host: ['enclave', 'client', 'emulator', 'cli', 'infra'],
  client: ['enclave', 'host', 'emulator', 'cli', 'infra'],
};

describe('dependency direction', () => {
  for (const [dir, banned] of Object.entries(forbidden)) {
    it(`${dir}/ imports none of ${banned.join(', ')}`, () => {
      const bad: string[] = [];
      for (const f of tsFiles(dir)) {
        for (const spec of imports(f)) {
          if (!spec.startsWith('.')) continue;
          const target = join(f, '..', spec).split('/')[0] as string;
          if (banned.includes(target)) bad.push(`${f} -> ${spec}`);
        }
      }
      expect(bad).toEqual([]);
    });
  }
});
