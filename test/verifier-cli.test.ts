// `ekv verify` as a user runs it: a child process per invocation, checking exit status and output.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { fixtureDir, loadFixtures } from './helpers/nitro-fixtures.ts';
import { selfSignedCert } from './helpers/test-ca.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));
const fixtures = loadFixtures();
const good = fixtures.find((f) => !f.debug && f.nonceBytes !== null)!;
const debug = fixtures.find((f) => f.debug)!;
const docPath = (f: { file: string }): string => join(fixtureDir, f.file);
const scratch = mkdtempSync(join(tmpdir(), 'ekv-verify-cli-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function ekv(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['bin/ekv.js', 'verify', ...args], { cwd: repo, timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

function json(run: Run): Record<string, unknown> {
  const lines = run.stdout.trim().split('\n');
  expect(lines.length).toBe(1);
  return JSON.parse(lines[0]!) as Record<string, unknown>;
}

describe('ekv verify', () => {
  it('prints the verified contents as JSON and exits 0 for a real document at its time', async () => {
    const run = await ekv(docPath(good), '--at', String(good.timestampMs), '--json');
    expect(run.code).toBe(0);
    const out = json(run);
    expect(out.ok).toBe(true);
    expect(out.moduleId).toBe(good.moduleId);
    expect(out.timestamp).toBe(good.timestampMs);
    expect(out.digest).toBe('SHA384');
    expect((out.pcrs as Record<string, string>)['0']).toBe(good.pcr0);
    expect(Object.keys(out.pcrs as object).length).toBe(good.pcrCount);
    expect((out.nonce as string).length).toBe(2 * good.nonceBytes!);
    expect(out.publicKey).toBe(null);
  });

  it('accepts an ISO time and the matching PCRs, nonce and age; prints a summary without --json', async () => {
    const nonce = (json(await ekv(docPath(good), '--at', String(good.timestampMs), '--json')).nonce as string);
    const run = await ekv(
      docPath(good),
      '--at', new Date(good.timestampMs + 30_000).toISOString(),
      '--pcr', `0=${good.pcr0}`, '--pcr', `1=${'00'.repeat(48)}`, '--pcr', `1=${good.pcr1}`,
      '--nonce', nonce, '--max-age', '60',
    );
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('OK');
    expect(run.stdout).toContain(good.moduleId);
  });

  it('exits 1 with the code for refused documents', async () => {
    const at = String(good.timestampMs);
    const cases: Array<[string[], string]> = [
      [[docPath(good), '--json'], 'EXPIRED'],
      [[docPath(debug), '--at', String(debug.timestampMs), '--json'], 'DEBUG_MODE'],
      [[docPath(good), '--at', at, '--pcr', `2=${'ab'.repeat(48)}`, '--json'], 'PCR_MISMATCH'],
      [[docPath(good), '--at', at, '--nonce', '00ff', '--json'], 'NONCE_MISMATCH'],
      [[docPath(good), '--at', String(good.timestampMs + 600_000), '--max-age', '10', '--json'], 'TOO_OLD'],
    ];
    const runs = await Promise.all(cases.map(([args]) => ekv(...args)));
    runs.forEach((run, i) => {
      expect(run.code).toBe(1);
      const out = json(run);
      expect(out).toMatchObject({ ok: false, code: cases[i]![1] });
      expect(typeof out.message).toBe('string');
    });
  });

  it('--allow-debug accepts a debug document; --root replaces the AWS root', async () => {
    const foreign = await selfSignedCert('CN=foreign', Date.now(), true);
    const pem = join(scratch, 'foreign.pem');
    writeFileSync(pem, foreign.pem);
    const [allowed, untrusted] = await Promise.all([
      ekv(docPath(debug), '--at', String(debug.timestampMs), '--allow-debug', '--json'),
      ekv(docPath(good), '--at', String(good.timestampMs), '--root', pem, '--json'),
    ]);
    expect(allowed.code).toBe(0);
    expect(json(allowed).ok).toBe(true);
    expect(untrusted.code).toBe(1);
    expect(json(untrusted).code).toBe('UNTRUSTED_ROOT');
  });

  it('says MALFORMED, with no stack trace, for a file that is not a document', async () => {
    const junk = join(scratch, 'junk.bin');
    writeFileSync(junk, 'this is not CBOR at all\n');
    const run = await ekv(junk);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^MALFORMED: /);
    expect(run.stderr).not.toMatch(/\n\s+at /);
  });

  it('exits 2 for usage errors', async () => {
    const f = docPath(good);
    const runs = await Promise.all([
      ekv(),
      ekv(f, '--at', 'not-a-time'),
      ekv(f, '--pcr', `32=${'00'.repeat(48)}`),
      ekv(f, '--nonce', 'abc'),
      ekv(f, '--no-such-flag'),
      ekv(join(scratch, 'missing.cbor')),
      ekv(f, '--root', join(scratch, 'missing.pem')),
    ]);
    for (const run of runs) {
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(/error/);
    }
  });

  it('--help explains every flag', async () => {
    const run = await ekv('--help');
    expect(run.code).toBe(0);
    for (const flag of ['--root', '--at', '--pcr', '--nonce', '--max-age', '--allow-debug', '--json']) expect(run.stdout).toContain(flag);
  });
});
