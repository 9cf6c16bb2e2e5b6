// `ekv verify`: check a Nitro attestation document file against a policy. Exit 0 when valid, 1 when
// refused (the verifier's code), 2 for a usage error. Nothing here decides validity: the flags only
// become a VerifyPolicy for verifier/.
import { openSync, readFileSync, readSync, closeSync } from 'node:fs';
import { Command, Option } from 'commander';
import {
  AttestationError,
  verifierLimits,
  verifyAttestation,
  type AttestationDocument,
  type VerifyPolicy,
} from '../../verifier/index.ts';

interface VerifyFlags {
  root?: string[];
  at?: string;
  pcr?: string[];
  nonce?: string;
  maxAge?: string;
  allowDebug?: boolean;
  json?: boolean;
}

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

export function registerVerify(program: Command): void {
  program
    .command('verify')
    .description('Verify an AWS Nitro attestation document (raw COSE_Sign1 bytes) and print its contents.')
    .argument('<document-file>', 'file holding the attestation document as the NSM returned it (raw COSE_Sign1 bytes), or in base64 or hex; - reads stdin')
    .addOption(new Option('--root <pem>', 'trust this PEM root certificate file instead of the AWS Nitro root (repeatable)').argParser(collect))
    .addOption(new Option('--at <time>', 'verify at this time, ISO 8601 or epoch milliseconds, instead of now'))
    .addOption(new Option('--pcr <index>=<hex>', 'require PCR <index> (0-31) to equal <hex>; repeat an index to allow any of several values').argParser(collect))
    .addOption(new Option('--nonce <hex>', 'require the document to carry this nonce'))
    .addOption(new Option('--max-age <seconds>', 'refuse documents older than this, relative to --at or now (clock skew of 60 s allowed)'))
    .option('--allow-debug', 'accept debug-mode documents (PCR0 all zeros); refused by default')
    .option('--json', 'print one JSON object on stdout: {"ok":true,...} or {"ok":false,"code","message"}')
    .addHelpText(
      'after',
      '\nExit status: 0 valid, 1 invalid (codes MALFORMED, UNTRUSTED_ROOT, BAD_CHAIN, EXPIRED, BAD_SIGNATURE,\n' +
        'DEBUG_MODE, PCR_MISMATCH, NONCE_MISMATCH, TOO_OLD), 2 usage error.',
    )
    .action(async function (this: Command, file: string, flags: VerifyFlags) {
      const policy = policyFrom(this, flags);
      const { bytes, form } = readDocument(this, file);
      try {
        printValid(await verifyAttestation(bytes, policy), flags.json === true);
      } catch (err) {
        if (!(err instanceof AttestationError)) throw err;
        // A decoder's complaint about text it was never meant to read helps no one: say what was expected.
        printInvalid(err.code === 'MALFORMED' && form === 'unknown' ? new AttestationError('MALFORMED', expectedDocument) : err, flags.json === true);
        process.exitCode = 1;
      }
    });
}

/**
 * The document's bytes: raw COSE_Sign1 (it starts with a CBOR array or tag 18 header, never a printable
 * character), or the same in base64 (standard or URL alphabet) or hex, whitespace ignored. Anything else is a
 * usage error saying what was expected, not a CBOR decoder's message.
 */
export function documentBytes(input: Uint8Array): { bytes: Uint8Array; form: 'raw' | 'hex' | 'base64' | 'unknown' } {
  const first = input[0];
  if (first === 0x84 || first === 0xd2) return { bytes: input, form: 'raw' };
  const text = Buffer.from(input).toString('latin1').replace(/\s+/g, '');
  if (/^([0-9a-fA-F]{2})+$/.test(text)) return { bytes: new Uint8Array(Buffer.from(text, 'hex')), form: 'hex' };
  if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(text) && text.length % 4 !== 1) {
    const bytes = Buffer.from(text.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
    if (bytes[0] === 0x84 || bytes[0] === 0xd2) return { bytes: new Uint8Array(bytes), form: 'base64' };
  }
  // Left to the verifier, which refuses it MALFORMED; the caller says what was expected.
  return { bytes: input, form: 'unknown' };
}

export const expectedDocument = 'not an attestation document: expected the raw COSE_Sign1 bytes the NSM returns, or them in base64 or hex';

/** Reads at most a little more than any document may hold (in hex: twice), so a huge file is refused, not loaded. */
function readDocument(cmd: Command, file: string): ReturnType<typeof documentBytes> {
  const limit = verifierLimits.documentBytesMax * 2 + 1024;
  let fd: number;
  try {
    fd = file === '-' ? 0 : openSync(file, 'r');
  } catch (err) {
    return cmd.error(`error: cannot read ${file}: ${(err as Error).message}`, { exitCode: 2 });
  }
  try {
    const buf = Buffer.alloc(limit);
    let filled = 0;
    for (let n = -1; n !== 0 && filled < limit; filled += n) n = readSyncRetrying(fd, buf, filled, limit - filled);
    return documentBytes(buf.subarray(0, filled));
  } catch (err) {
    return cmd.error(`error: cannot read ${file}: ${(err as Error).message}`, { exitCode: 2 });
  } finally {
    if (fd !== 0) closeSync(fd);
  }
}

/** readSync on stdin may throw EAGAIN when it is a non-blocking pipe: wait and try again. */
function readSyncRetrying(fd: number, buf: Buffer, offset: number, length: number): number {
  for (;;) {
    try {
      return readSync(fd, buf, offset, length, null);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
    }
  }
}

function policyFrom(cmd: Command, flags: VerifyFlags): VerifyPolicy {
  const usage = (message: string): never => cmd.error(`error: ${message}`, { exitCode: 2 });
  const policy: VerifyPolicy = { allowDebug: flags.allowDebug === true };
  if (flags.root !== undefined) policy.roots = flags.root.map((path) => readRoot(path, usage));
  if (flags.at !== undefined) policy.now = parseTime(flags.at, usage);
  if (flags.pcr !== undefined) policy.pcrs = parsePcrs(flags.pcr, usage);
  if (flags.nonce !== undefined) policy.nonce = parseHex(flags.nonce, '--nonce', usage);
  if (flags.maxAge !== undefined) {
    const seconds = Number(flags.maxAge);
    if (flags.maxAge.trim() === '' || !Number.isFinite(seconds) || seconds < 0) usage('--max-age must be a number of seconds >= 0');
    policy.maxAgeMs = seconds * 1000;
  }
  return policy;
}

function readRoot(path: string, usage: (m: string) => never): string {
  let pem: string;
  try {
    pem = readFileSync(path, 'utf8');
  } catch (err) {
    return usage(`cannot read --root ${path}: ${(err as Error).message}`);
  }
  if (!/-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----/.test(pem)) {
    usage(`--root ${path} holds no PEM certificate`);
  }
  return pem;
}

function parseTime(text: string, usage: (m: string) => never): number {
  const ms = /^\d+$/.test(text) ? Number(text) : Date.parse(text);
  if (!Number.isSafeInteger(ms)) usage(`--at ${text} is neither an ISO 8601 time nor epoch milliseconds`);
  return ms;
}

function parsePcrs(specs: string[], usage: (m: string) => never): Record<number, Uint8Array[]> {
  const pcrs: Record<number, Uint8Array[]> = {};
  for (const spec of specs) {
    const m = /^(\d{1,2})=([0-9a-fA-F]*)$/.exec(spec);
    const index = Number(m?.[1]);
    if (!m || index > verifierLimits.pcrIndexMax) usage(`--pcr ${spec} must be <index 0-31>=<hex>`);
    const value = parseHex(m![2]!, `--pcr ${index}`, usage);
    if (!verifierLimits.pcrValueLengths.includes(value.length)) usage(`--pcr ${index} must be 32, 48 or 64 bytes of hex`);
    (pcrs[index] ??= []).push(value);
  }
  return pcrs;
}

function parseHex(text: string, what: string, usage: (m: string) => never): Uint8Array {
  if (!/^([0-9a-fA-F]{2})*$/.test(text)) usage(`${what} must be an even number of hex digits`);
  if (text.length / 2 > verifierLimits.optionalFieldBytesMax) usage(`${what} is longer than ${verifierLimits.optionalFieldBytesMax} bytes`);
  return new Uint8Array(Buffer.from(text, 'hex'));
}

const hexOrNull = (b: Uint8Array | null): string | null => (b === null ? null : Buffer.from(b).toString('hex'));

function printValid(doc: AttestationDocument, json: boolean): void {
  const pcrs = Object.fromEntries([...doc.pcrs].sort(([a], [b]) => a - b).map(([i, v]) => [String(i), hexOrNull(v)]));
  const out = {
    ok: true,
    moduleId: doc.moduleId,
    timestamp: doc.timestamp,
    digest: doc.digest,
    pcrs,
    publicKey: hexOrNull(doc.publicKey),
    userData: hexOrNull(doc.userData),
    nonce: hexOrNull(doc.nonce),
  };
  if (json) {
    process.stdout.write(`${JSON.stringify(out)}\n`);
    return;
  }
  const lines = [
    'OK: the attestation document is valid',
    `module_id   ${doc.moduleId}`,
    `timestamp   ${new Date(doc.timestamp).toISOString()} (${doc.timestamp})`,
    `leaf until  ${new Date(doc.leafNotAfter).toISOString()}`,
    ...Object.entries(pcrs).map(([i, v]) => `PCR${i.padEnd(9)}${v}`),
    `public_key  ${out.publicKey ?? '(none)'}`,
    `user_data   ${out.userData ?? '(none)'}`,
    `nonce       ${out.nonce ?? '(none)'}`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

function printInvalid(err: AttestationError, json: boolean): void {
  if (json) process.stdout.write(`${JSON.stringify({ ok: false, code: err.code, message: err.message })}\n`);
  else process.stderr.write(`${err.code}: ${err.message}\n`);
}
