// The production NSM binding (enclave/nsm-lib.ts) against a libnsm-compatible shared library that the
// test compiles from test/fixtures/libnsm/fake-libnsm.c. The fake forwards each request over a unix
// socket to the server below, which answers from an attester (by default the emulated NSM).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LibNsm, libNsmStatusCode, nsmDocumentBytesMax } from '../enclave/nsm-lib.ts';
import { NsmError, nsmFieldBytesMax, nsmPendingMax } from '../enclave/nsm.ts';
import { fakeAttester, type FakeAnswer, type FakeRequest } from './fixtures/libnsm/attester.ts';

const source = join(import.meta.dirname, 'fixtures/libnsm/fake-libnsm.c');
const hasCc = spawnSync('cc', ['--version'], { stdio: 'ignore' }).status === 0;
if (!hasCc) console.warn('nsm-lib.test.ts: skipped, no C compiler (`cc`) to build the fake libnsm');

const fieldBytesMaxServer = 4096; // the fake server's own bound on what it reads

/** Reads the fake library's request frames from one connection; bounded, in order. */
function serveConnection(socket: Socket, answer: (req: FakeRequest) => Promise<FakeAnswer>): void {
  let buffered = Buffer.alloc(0);
  let busy = Promise.resolve();
  socket.on('data', (chunk) => {
    buffered = Buffer.concat([buffered, chunk]);
    for (;;) {
      const parsed = parseRequest(buffered);
      if (parsed === undefined) return;
      buffered = buffered.subarray(parsed.used);
      const req = parsed.req;
      busy = busy.then(async () => {
        const { status, document } = await answer(req);
        const head = Buffer.alloc(8);
        head.writeUInt32BE(status, 0);
        head.writeUInt32BE(document.byteLength, 4);
        socket.write(Buffer.concat([head, document]));
      });
    }
  });
  socket.on('error', () => socket.destroy());
}

function parseRequest(buf: Buffer): { req: FakeRequest; used: number } | undefined {
  const fields: (Uint8Array | null)[] = [];
  let at = 0;
  for (let i = 0; i < 3; i++) {
    if (buf.length < at + 8) return undefined;
    const present = buf.readUInt32BE(at);
    const len = buf.readUInt32BE(at + 4);
    if (len > fieldBytesMaxServer) throw new Error(`fake NSM server: field of ${len} bytes`);
    if (buf.length < at + 8 + len) return undefined;
    fields.push(present ? new Uint8Array(buf.subarray(at + 8, at + 8 + len)) : null);
    at += 8 + len;
  }
  const [userData, nonce, publicKey] = fields as [Uint8Array | null, Uint8Array | null, Uint8Array | null];
  return { req: { userData, nonce, publicKey }, used: at };
}

describe.skipIf(!hasCc)('LibNsm through a libnsm-compatible library', () => {
  let dir: string;
  let libPath: string;
  let server: Server;
  const seen: FakeRequest[] = [];
  let override: ((req: FakeRequest) => FakeAnswer | undefined) | undefined;
  let attester: Awaited<ReturnType<typeof fakeAttester>>;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ekv-libnsm-'));
    libPath = join(dir, 'libnsm.so');
    const cc = spawnSync('cc', ['-shared', '-fPIC', '-O2', '-o', libPath, source], { encoding: 'utf8' });
    expect(cc.status, cc.stderr).toBe(0);
    attester = await fakeAttester();
    const socketPath = join(dir, 'nsm.sock');
    server = createServer((socket) =>
      serveConnection(socket, async (req) => {
        seen.push(req);
        return override?.(req) ?? { status: 0, document: await attester.attest(req) };
      }),
    );
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    process.env.EKV_FAKE_NSM_SOCKET = socketPath; // read by the fake's nsm_lib_init (getenv)
  });

  afterAll(async () => {
    await new Promise((resolve) => server?.close(resolve));
    if (dir) rmSync(dir, { recursive: true, force: true });
    delete process.env.EKV_FAKE_NSM_SOCKET;
  });

  it('returns a document bound to the nonce, public key and user data, that the verifier accepts', async () => {
    const nsm = new LibNsm(libPath);
    try {
      const nonce = new Uint8Array(32).map((_, i) => i + 1);
      const publicKey = new Uint8Array(32).fill(7);
      const userData = new TextEncoder().encode('ekv-user-data');
      const doc = await nsm.attest({ nonce, publicKey, userData });
      const checked = await attester.check(doc, nonce);
      expect(checked.digest).toBe('SHA384');
      expect(checked.nonce).toEqual(nonce);
      expect(checked.publicKey).toEqual(publicKey);
      expect(checked.userData).toEqual(userData);
    } finally {
      nsm.close();
    }
  });

  it('passes absent fields as NULL and empty ones as present with length 0', async () => {
    const nsm = new LibNsm(libPath);
    try {
      seen.length = 0;
      await nsm.attest({ nonce: new Uint8Array(0) });
      expect(seen).toHaveLength(1);
      expect(seen[0]).toEqual({ userData: null, nonce: new Uint8Array(0), publicKey: null });
    } finally {
      nsm.close();
    }
  });

  it('maps libnsm status codes to typed errors', async () => {
    const nsm = new LibNsm(libPath);
    try {
      override = () => ({ status: 7, document: new Uint8Array(0) });
      await expect(nsm.attest({ nonce: new Uint8Array(8) })).rejects.toMatchObject({ name: 'NsmError', code: 'INPUT_TOO_LARGE' });
      override = () => ({ status: 8, document: new Uint8Array(0) });
      await expect(nsm.attest({})).rejects.toMatchObject({ code: 'INTERNAL_ERROR', message: expect.stringContaining('status 8') });
      override = () => ({ status: 99, document: new Uint8Array(0) });
      await expect(nsm.attest({})).rejects.toMatchObject({ code: 'MALFORMED_RESPONSE' });
      // A document above the 16 KiB buffer: the library truncates it and says so.
      override = () => ({ status: 0, document: new Uint8Array(nsmDocumentBytesMax + 1) });
      await expect(nsm.attest({})).rejects.toMatchObject({ code: 'BUFFER_TOO_SMALL' });
      // The descriptor is still usable after errors.
      override = undefined;
      const nonce = new Uint8Array(16).fill(9);
      expect((await attester.check(await nsm.attest({ nonce }), nonce)).nonce).toEqual(nonce);
    } finally {
      override = undefined;
      nsm.close();
    }
  });

  it('refuses oversized fields before calling the library', async () => {
    const nsm = new LibNsm(libPath);
    try {
      seen.length = 0;
      const big = new Uint8Array(nsmFieldBytesMax + 1);
      await expect(nsm.attest({ userData: big })).rejects.toMatchObject({ code: 'INPUT_TOO_LARGE' });
      await expect(nsm.attest({ publicKey: big })).rejects.toBeInstanceOf(NsmError);
      expect(seen).toHaveLength(0);
      const max = new Uint8Array(nsmFieldBytesMax).fill(1);
      await nsm.attest({ nonce: max });
      expect(seen[0]?.nonce).toEqual(max);
    } finally {
      nsm.close();
    }
  });

  it('serializes concurrent requests on one descriptor', async () => {
    const nsm = new LibNsm(libPath);
    try {
      const nonces = Array.from({ length: 6 }, (_, i) => new Uint8Array(16).fill(i + 1));
      const docs = await Promise.all(nonces.map((nonce) => nsm.attest({ nonce })));
      for (const [i, doc] of docs.entries()) {
        expect((await attester.check(doc, nonces[i] as Uint8Array)).nonce).toEqual(nonces[i]);
      }
    } finally {
      nsm.close();
    }
  });

  it('bounds its queue like StreamNsm: BUSY beyond pendingMax, and room again once calls finish', async () => {
    const nsm = new LibNsm(libPath, { pendingMax: 3 });
    try {
      const nonces = Array.from({ length: 3 }, (_, i) => new Uint8Array(16).fill(i + 20));
      const first = nonces.map((nonce) => nsm.attest({ nonce }));
      await expect(nsm.attest({ nonce: new Uint8Array(16) })).rejects.toMatchObject({ name: 'NsmError', code: 'BUSY' });
      await Promise.all(first);
      const again = new Uint8Array(16).fill(99);
      expect((await attester.check(await nsm.attest({ nonce: again }), again)).nonce).toEqual(again);
      // The default bound is the stream NSM's.
      const dflt = new LibNsm(libPath);
      const many = Array.from({ length: nsmPendingMax }, () => dflt.attest({ nonce: new Uint8Array(8) }));
      await expect(dflt.attest({})).rejects.toMatchObject({ code: 'BUSY' });
      await Promise.all(many);
      dflt.close();
    } finally {
      nsm.close();
    }
  });

  it('refuses calls after close and releases the descriptor', async () => {
    const closedOnServer = new Promise<void>((resolve) => server.once('connection', (s) => s.once('close', resolve)));
    const nsm = new LibNsm(libPath);
    nsm.close();
    nsm.close(); // idempotent
    await expect(nsm.attest({})).rejects.toMatchObject({ code: 'CLOSED' });
    await closedOnServer; // nsm_lib_exit closed the fake's socket
  });

  it('reports a missing device and a missing library with typed errors', () => {
    const saved = process.env.EKV_FAKE_NSM_SOCKET;
    process.env.EKV_FAKE_NSM_SOCKET = join(dir, 'absent.sock');
    try {
      expect(() => new LibNsm(libPath)).toThrow(expect.objectContaining({ code: 'UNAVAILABLE', message: expect.stringContaining('nsm_lib_init') }));
    } finally {
      process.env.EKV_FAKE_NSM_SOCKET = saved;
    }
    expect(() => new LibNsm(join(dir, 'no-such-libnsm.so'))).toThrow(
      expect.objectContaining({ code: 'UNAVAILABLE', message: expect.stringContaining('cannot load libnsm') }),
    );
  });
});

describe('libnsm status mapping', () => {
  it('follows the order of the ErrorCode enum and refuses values outside it', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8].map(libNsmStatusCode)).toEqual([
      'INVALID_ARGUMENT', 'INVALID_INDEX', 'INVALID_RESPONSE', 'READ_ONLY_INDEX',
      'INVALID_OPERATION', 'BUFFER_TOO_SMALL', 'INPUT_TOO_LARGE', 'INTERNAL_ERROR',
    ]);
    for (const bad of [0, -1, 9, 2 ** 31, 1.5, Number.NaN]) expect(libNsmStatusCode(bad)).toBe('MALFORMED_RESPONSE');
  });
});
