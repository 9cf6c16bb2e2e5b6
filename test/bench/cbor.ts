// `npm run bench:cbor`: what the strict decoder (verifier/strict-cbor.ts) costs, and why it is cbor-x
// behind a scan. For each message shape: decodes per second with plain cbor-x (what the project used
// before issue 16), with the strict decoder (scan + cbor-x + duplicate-key count), and with cborg 6
// when it is installed (`npm install --no-save cborg@6.1.5`; it is not a dependency). Then the cost of
// refusing hostile input, in microseconds per KiB: the scan walks the whole input when the fault is
// at its end, so that is the worst case per byte.
// BENCH_MS=<n> sets the time spent per measurement (default 300).
import { randomBytes } from 'node:crypto';
import { Decoder, Encoder } from 'cbor-x';
import { decodeUntrustedCbor, type UntrustedCborOptions } from '../../verifier/strict-cbor.ts';
import { loadFixtures } from '../helpers/nitro-fixtures.ts';
import { bignum, head, hostileShapes, packedTableBomb } from '../helpers/hostile-cbor.ts';
import { helpFromHeader } from './lib/help.ts';

helpFromHeader(import.meta.url);

const benchMs = Number(process.env.BENCH_MS ?? 300);
const encoder = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false } as never);
const rawObjects = new Decoder({ useRecords: false, mapsAsObjects: true } as never);
const rawMaps = new Decoder({ useRecords: false, mapsAsObjects: false } as never);

type Cborg = { decode(b: Uint8Array, o?: Record<string, unknown>): unknown };
let cborg: Cborg | null = null;
try {
  cborg = (await import('cborg' as string)) as Cborg;
} catch {
  cborg = null;
}

/** Operations per second of `run`, over about benchMs. */
function rate(run: () => void): number {
  for (let i = 0; i < 50; i++) run();
  let n = 0;
  const start = process.hrtime.bigint();
  const budget = BigInt(benchMs) * 1_000_000n;
  let elapsed = 0n;
  while (elapsed < budget) {
    for (let i = 0; i < 20; i++) run();
    n += 20;
    elapsed = process.hrtime.bigint() - start;
  }
  return n / (Number(elapsed) / 1e9);
}

const fixture = loadFixtures().find((f) => !f.debug) ?? loadFixtures()[0];
const shapes: Array<{ name: string; bytes: Buffer; options: UntrustedCborOptions }> = [
  { name: 'hello (client)', bytes: encoder.encode({ t: 'hello', v: 1, mode: 'client', nonce: randomBytes(32), eph: randomBytes(32) }), options: { maps: 'object' } },
  { name: 'server message (5 KiB core)', bytes: encoder.encode({ t: 'server', core: randomBytes(5000), sig: randomBytes(64) }), options: { maps: 'object' } },
  { name: 'attestation document', bytes: Buffer.from(fixture!.bytes), options: { maps: 'map', indefinite: true, outerTag: 18, depthMax: 8, itemsMax: 4096 } },
  { name: 'RPC batch of 64 gets', bytes: encoder.encode(Array.from({ length: 64 }, (_, i) => ({ id: i, op: 'get', req: { k: randomBytes(24) } }))), options: { maps: 'object' } },
  { name: 'one 512 KiB put', bytes: encoder.encode([{ id: 1, op: 'put', req: { k: randomBytes(24), v: randomBytes(512 * 1024) } }]), options: { maps: 'object' } },
  { name: 'worst 24 KiB hello (24,000 small items)', bytes: Buffer.concat([head(4, 24_000), Buffer.alloc(24_000, 0x01)]), options: { maps: 'object' } },
  { name: 'worst 24 KiB hello (3,000 one-key maps)', bytes: Buffer.concat([head(4, 3000), Buffer.concat(Array.from({ length: 3000 }, () => Buffer.from([0xa1, 0x61, 0x61, 0x00])))]), options: { maps: 'object' } },
  { name: 'replica batch (4096 entries)', bytes: encoder.encode({ e: Array.from({ length: 4096 }, (_, i) => [randomBytes(24), randomBytes(40), i]) }), options: { maps: 'object' } },
];

console.log('decodes per second (higher is better); ratio = strict / plain cbor-x');
console.log('(the strict column also gives the cost of accepting: 1e6 / rate / KiB = microseconds per KiB)');
console.log(['shape', 'bytes', 'cbor-x', 'strict', 'ratio', 'cborg', 'strict/cborg'].join('\t'));
for (const s of shapes) {
  const raw = s.options.maps === 'map' ? rawMaps : rawObjects;
  const plain = rate(() => raw.decode(s.bytes));
  const strict = rate(() => decodeUntrustedCbor(s.bytes, s.options));
  const alt = cborg ? rate(() => cborg!.decode(s.bytes, { useMaps: s.options.maps === 'map', tags: [] as unknown[] })) : NaN;
  const fmt = (x: number) => (Number.isNaN(x) ? '-' : x.toFixed(0));
  console.log([s.name, s.bytes.length, fmt(plain), fmt(strict), (strict / plain).toFixed(2), fmt(alt), Number.isNaN(alt) ? '-' : (strict / alt).toFixed(2)].join('\t'));
}

// Refusal cost. Each input is valid CBOR up to its last item, which is refused, so the scan reads all of it.
function itemsThenTag(kib: number): Buffer {
  const n = kib * 1024 - 8;
  return Buffer.concat([head(4, n + 1), Buffer.alloc(n, 0x01), head(6, 2), head(2, 0)]);
}
function stringsThenTag(kib: number): Buffer {
  const n = kib * 1024 - 16;
  return Buffer.concat([head(4, 2), head(2, n), Buffer.alloc(n), head(6, 51), head(4, 0)]);
}
console.log('\nrefusing hostile input (microseconds per KiB, lower is better)');
const refusals: Array<{ name: string; bytes: Buffer; itemsMax?: number }> = [
  { name: '24 KiB of small items, tag at the end (items bound lifted)', bytes: itemsThenTag(24) },
  { name: '517 KiB of small items, tag at the end (items bound lifted)', bytes: itemsThenTag(517) },
  { name: '517 KiB byte string, tag at the end', bytes: stringsThenTag(517) },
  { name: 'bignum 24 KiB', bytes: bignum(24 * 1024) },
  { name: 'bignum 256 KiB', bytes: bignum(256 * 1024) },
  { name: 'tag51/225 bomb (30 levels)', bytes: packedTableBomb(30) },
  ...hostileShapes(),
];
// Before authentication the bound is the handshake's 32 items, not the input's size.
refusals.unshift({ name: 'worst 24 KiB hello under the handshake bound (32 items)', bytes: itemsThenTag(24), itemsMax: 32 });
for (const r of refusals) {
  const options: UntrustedCborOptions = { maps: 'object', itemsMax: r.itemsMax ?? Number.MAX_SAFE_INTEGER, depthMax: 16 };
  const ops = rate(() => {
    try {
      decodeUntrustedCbor(r.bytes, options);
    } catch {
      return;
    }
    throw new Error(`${r.name} was accepted`);
  });
  const us = 1e6 / ops;
  console.log(`${r.name}\t${r.bytes.length} B\t${us.toFixed(1)} us\t${(us / (r.bytes.length / 1024)).toFixed(2)} us/KiB`);
}
