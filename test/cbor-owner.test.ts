// One module owns the decoding of untrusted CBOR (verifier/strict-cbor.ts, issue 16). Every other
// production file, test helper and the emulator may import cbor-x only to ENCODE (Encoder, Tag), and
// may not call `.decode` on what it imported (cbor-x's Encoder is also a Decoder). Tests, benchmarks
// and the fuzzer's mutators may decode freely.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const owner = 'verifier/strict-cbor.ts';
const scanned = ['verifier', 'protocol', 'enclave', 'host', 'client', 'cli', 'emulator', 'bin', 'scripts', 'test/helpers'];
const encodeOnly = new Set(['Encoder', 'Tag', 'encode', 'addExtension']);

function files(dir: string): string[] {
  let out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (name === 'node_modules') continue;
    if (statSync(p).isDirectory()) out = out.concat(files(p));
    else if (/\.(ts|mts|js|mjs)$/.test(p)) out.push(p);
  }
  return out;
}

/** What `src` does with a CBOR library that only the owner may do; empty when nothing. */
export function decoderUses(src: string): string[] {
  const found: string[] = [];
  const lib = `['"](?:cbor-x|cborg|cbor|cbor2|tiny-cbor)(?:/[^'"]*)?['"]`;
  let importsLib = false;
  for (const m of src.matchAll(new RegExp(`import\\s+(type\\s+)?([^'";]*?)\\s+from\\s+${lib}`, 'g'))) {
    importsLib = true;
    if (m[1]) continue; // a type-only import
    const clause = m[2] as string;
    const braced = /^\{([^}]*)\}$/.exec(clause.trim());
    if (!braced) {
      found.push(`namespace or default import: ${clause.trim()}`);
      continue;
    }
    for (const spec of (braced[1] as string).split(',').map((x) => x.trim()).filter(Boolean)) {
      if (spec.startsWith('type ')) continue;
      const name = spec.split(/\s+as\s+/)[0] as string;
      if (!encodeOnly.has(name)) found.push(`imports ${name}`);
    }
  }
  if (new RegExp(`(?:require|import)\\s*\\(\\s*${lib}`).test(src)) found.push('dynamic import or require');
  if (importsLib && /\.decode(?:Multiple)?\s*\(/.test(src)) found.push('calls .decode on a cbor-x object');
  return found;
}

describe('CBOR decoding has one owner', () => {
  it(`only ${owner} imports a CBOR decoder`, () => {
    const bad: string[] = [];
    for (const dir of scanned) {
      for (const f of files(dir)) {
        if (f === owner) continue;
        for (const use of decoderUses(readFileSync(f, 'utf8'))) bad.push(`${f}: ${use}`);
      }
    }
    expect(bad).toEqual([]);
  });

  it('the owner is found by the same check (the check can fail)', () => {
    expect(decoderUses(readFileSync(owner, 'utf8'))).toEqual(['imports Decoder', 'calls .decode on a cbor-x object']);
    expect(decoderUses("import { Encoder } from 'cbor-x';\nconst c = new Encoder();\nc.decode(b);")).toEqual(['calls .decode on a cbor-x object']);
    expect(decoderUses("import { decode } from 'cborg';")).toEqual(['imports decode']);
    expect(decoderUses("import * as cbor from 'cbor-x';")).toEqual(['namespace or default import: * as cbor']);
    expect(decoderUses("import { Encoder, Tag } from 'cbor-x';\nimport type { Decoder } from 'cbor-x';")).toEqual([]);
  });
});
