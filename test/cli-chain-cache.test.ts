// The CLI's chain cache across processes (cli/chain-cache-file.ts): it stands in only for the chain's
// time-independent verification of exact bytes. A hit must never let a document pass that fails
// uncached: root, window, COSE signature, nonce, PCRs and age are still checked on every document.
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FileChainCache, fileChainCacheEntriesMax } from '../cli/chain-cache-file.ts';
import { AttestationError, decodeAttestationDocument, verifyAttestation, type VerifyPolicy } from '../verifier/index.ts';
import { loadFixtures } from './helpers/nitro-fixtures.ts';

const dir = mkdtempSync(join(tmpdir(), 'ekv-chains-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const docs = loadFixtures().filter((f) => !f.debug);
const real = docs[0]!;
const at = real.timestampMs;
/** The cache's own clock: the fixtures are old, so "now" for expiry is the document's time. */
const cacheAt = (t: number) => new FileChainCache(dir, () => t);

async function codeOf(doc: Uint8Array, policy: VerifyPolicy): Promise<string> {
  try {
    await verifyAttestation(doc, policy);
    return 'OK';
  } catch (err) {
    if (err instanceof AttestationError) return err.code;
    throw err;
  }
}

function chainOf(doc: Uint8Array): Uint8Array[] {
  const d = decodeAttestationDocument(doc);
  return [...d.cabundle, d.certificate];
}

describe('the CLI chain cache', () => {
  it('remembers a verified chain for the next process (a new instance), in a 0600 file', async () => {
    expect(await codeOf(real.bytes, { now: at, cache: cacheAt(at) })).toBe('OK');
    const files = readdirSync(dir);
    expect(files).toHaveLength(1);
    expect(statSync(join(dir, files[0]!)).mode & 0o777).toBe(0o600);
    const hit = cacheAt(at).get(chainOf(real.bytes));
    expect(hit).toBeDefined();
    expect(hit!.leafKey.asymmetricKeyDetails?.namedCurve).toBe('secp384r1');
  });

  it('a hit still checks the window, the signature, the nonce, the PCRs and the age', async () => {
    const cache = cacheAt(at);
    expect(cache.get(chainOf(real.bytes))).toBeDefined();
    expect(await codeOf(real.bytes, { now: at, cache, nonce: new Uint8Array(8) })).toBe('NONCE_MISMATCH');
    expect(await codeOf(real.bytes, { now: at, cache, pcrs: { 0: '00'.repeat(48) } })).toBe('PCR_MISMATCH');
    expect(await codeOf(real.bytes, { now: at + 3_600_000, cache, maxAgeMs: 1000 })).toBe('TOO_OLD');
    expect(await codeOf(real.bytes, { now: Date.now(), cache })).toBe('EXPIRED');
    // A document whose signature was altered, over the same (cached) chain.
    const bad = Uint8Array.from(real.bytes);
    bad[bad.length - 1] = (bad[bad.length - 1] as number) ^ 1;
    expect(await codeOf(bad, { now: at, cache })).toBe('BAD_SIGNATURE');
    // The root must still be one the caller trusts.
    expect(await codeOf(real.bytes, { now: at, cache, roots: [] })).toBe('UNTRUSTED_ROOT');
  });

  it('ignores entries that are expired, name another chain, or do not parse', async () => {
    const key = readdirSync(dir)[0]!;
    const path = join(dir, key);
    const chain = chainOf(real.bytes);
    const good = readFileSync(path, 'utf8');
    expect(cacheAt(Date.now()).get(chain)).toBeUndefined(); // the chain expired long ago
    writeFileSync(path, good.replace(/"chain":"[0-9a-f]+"/, `"chain":"${'0'.repeat(64)}"`));
    expect(cacheAt(at).get(chain)).toBeUndefined();
    writeFileSync(path, '{"v":1');
    expect(cacheAt(at).get(chain)).toBeUndefined();
    const other = docs.find((f) => Buffer.compare(Buffer.concat(chainOf(f.bytes)), Buffer.concat(chain)) !== 0)!;
    writeFileSync(path, good);
    expect(cacheAt(at).get(chainOf(other.bytes))).toBeUndefined();
    expect(cacheAt(at).get(chain)).toBeDefined();
  });

  it(`keeps at most ${fileChainCacheEntriesMax} entries and drops expired ones when writing`, async () => {
    const cache = cacheAt(at);
    const verified = cache.get(chainOf(real.bytes))!;
    for (let i = 0; i < fileChainCacheEntriesMax + 5; i++) cache.set([new Uint8Array([i & 0xff, i >> 8])], verified);
    expect(readdirSync(dir).length).toBeLessThanOrEqual(fileChainCacheEntriesMax);
    cacheAt(verified.notAfter + 1).set([new Uint8Array([0xff, 0xff])], { ...verified, notAfter: verified.notAfter + 10_000 });
    expect(readdirSync(dir)).toHaveLength(1);
  });
});
