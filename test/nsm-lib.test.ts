// The production NSM binding (enclave/nsm-lib.ts) through the production C shim (infra/enclave/nsm/ekv-nsm.c),
// compiled here with the test's stand-in for the NSM driver (test/fixtures/libnsm/fake-nsm-device.c, linked
// with -Wl,--wrap=ioctl so the shim's ioctl lands there). The stand-in checks the ioctl number and struct
// layout of include/uapi/linux/nsm.h and forwards the request bytes to the server below, which answers with the
// emulator's NSM server (emulator/nsm-server.ts, the same CBOR API) unless a test overrides the answer.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Encoder } from 'cbor-x';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serveNsm } from '../emulator/nsm-server.ts';
import { LibNsm, nsmIoctlRaw, shimErrorCode } from '../enclave/nsm-lib.ts';
import { NsmError, nsmFieldBytesMax, nsmPendingMax, nsmResponseBytesMax } from '../enclave/nsm.ts';
import { decodeUntrustedCbor } from '../verifier/strict-cbor.ts';
import { fakeAttester } from './fixtures/libnsm/attester.ts';

const shim = join(import.meta.dirname, '../infra/enclave/nsm/ekv-nsm.c');
const device = join(import.meta.dirname, 'fixtures/libnsm/fake-nsm-device.c');
const hasCc = spawnSync('cc', ['--version'], { stdio: 'ignore' }).status === 0;
if (!hasCc) console.warn('nsm-lib.test.ts: skipped, no C compiler (`cc`) to build the NSM shim');
// The Dockerfile's flags (infra/enclave/Dockerfile, stage nsm-shim), plus the stand-in driver.
const cflags = ['-std=c11', '-D_GNU_SOURCE', '-O2', '-fPIC', '-shared', '-fvisibility=hidden', '-Wall', '-Wextra', '-Wconversion', '-Werror'];
const encoder = new Encoder({ useRecords: false, mapsAsObjects: false, tagUint8Array: false });

type Override = (request: Map<unknown, unknown>) => Buffer | { errno: number } | undefined;

function frame(body: Uint8Array): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length, 0);
  return Buffer.concat([head, body]);
}

/** The fake device's connection: frames in, frames (or an errno) out, in order. */
function serveDevice(socket: Socket, answer: (body: Buffer) => Promise<Buffer | { errno: number }>): void {
  let buffered = Buffer.alloc(0);
  let busy = Promise.resolve();
  socket.on('data', (chunk) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 4 && buffered.length >= 4 + buffered.readUInt32BE(0)) {
      const body = buffered.subarray(4, 4 + buffered.readUInt32BE(0));
      buffered = buffered.subarray(4 + body.length);
      busy = busy.then(async () => {
        const a = await answer(Buffer.from(body));
        if (Buffer.isBuffer(a)) socket.write(frame(a));
        else {
          const b = Buffer.alloc(8);
          b.writeUInt32BE(0xffffffff, 0);
          b.writeUInt32BE(a.errno, 4);
          socket.write(b);
        }
      });
    }
  });
  socket.on('error', () => socket.destroy());
}

describe.skipIf(!hasCc)('LibNsm through the ekv-nsm shim and a stand-in NSM driver', () => {
  let dir: string;
  let libPath: string;
  let devicePath: string;
  let server: Server;
  let emulated: Server;
  let upstream: Socket;
  let upstreamQueue: Array<(b: Buffer) => void> = [];
  const seen: Map<unknown, unknown>[] = [];
  const deviceConnections = new Set<Socket>();
  let override: Override | undefined;
  let attester: Awaited<ReturnType<typeof fakeAttester>>;

  /** The emulator's answer to a request frame (through serveNsm, over its own socket). */
  function emulatorAnswer(body: Buffer): Promise<Buffer> {
    return new Promise((resolve) => {
      upstreamQueue.push(resolve);
      upstream.write(frame(body));
    });
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ekv-nsm-shim-'));
    libPath = join(dir, 'libekv-nsm.so');
    devicePath = join(dir, 'nsm'); // opened by ekv_nsm_open; every ioctl on it goes to the stand-in
    writeFileSync(devicePath, '');
    const cc = spawnSync('cc', [...cflags, '-o', libPath, shim, device, '-Wl,--wrap=ioctl', '-lpthread'], { encoding: 'utf8' });
    expect(cc.status, cc.stderr).toBe(0);
    attester = await fakeAttester();
    emulated = createServer((s) => void serveNsm(s, attester.nsm));
    await new Promise<void>((r) => emulated.listen(join(dir, 'emulated.sock'), r));
    upstream = connect(join(dir, 'emulated.sock'));
    let up = Buffer.alloc(0);
    upstream.on('data', (chunk) => {
      up = Buffer.concat([up, chunk]);
      while (up.length >= 4 && up.length >= 4 + up.readUInt32BE(0)) {
        const body = up.subarray(4, 4 + up.readUInt32BE(0));
        up = up.subarray(4 + body.length);
        upstreamQueue.shift()?.(Buffer.from(body));
      }
    });
    server = createServer((socket) => {
      deviceConnections.add(socket);
      socket.once('close', () => deviceConnections.delete(socket));
      serveDevice(socket, async (body) => {
        const request = decodeUntrustedCbor(body, { maps: 'map', depthMax: 4, itemsMax: 64 }) as Map<unknown, unknown>;
        seen.push(request);
        return override?.(request) ?? emulatorAnswer(body);
      });
    });
    await new Promise<void>((resolve) => server.listen(join(dir, 'device.sock'), resolve));
    process.env.EKV_FAKE_NSM_SOCKET = join(dir, 'device.sock'); // read by the stand-in (getenv)
  });

  afterAll(async () => {
    upstream?.destroy();
    upstreamQueue = [];
    // The stand-in driver keeps its connection for the process's life (like an open device): cut it.
    for (const c of deviceConnections) c.destroy();
    await new Promise((resolve) => server?.close(resolve));
    await new Promise((resolve) => emulated?.close(resolve));
    if (dir) rmSync(dir, { recursive: true, force: true });
    delete process.env.EKV_FAKE_NSM_SOCKET;
  });

  const nsmAt = (init: { pendingMax?: number } = {}) => new LibNsm(libPath, { device: devicePath, ...init });
  /** The fields of the i-th request the device saw (byte strings as plain Uint8Arrays). */
  const args = (i: number) => new Map([...(seen[i]?.get('Attestation') as Map<string, Uint8Array | null>)]
    .map(([k, v]) => [k, v === null ? null : new Uint8Array(v)] as const));

  it('returns a document bound to the nonce, public key and user data, that the verifier accepts', async () => {
    const nsm = nsmAt();
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

  it('sends the NSM API request: absent fields as null, empty ones as empty byte strings', async () => {
    const nsm = nsmAt();
    try {
      seen.length = 0;
      await nsm.attest({ nonce: new Uint8Array(0) });
      expect(seen).toHaveLength(1);
      expect([...seen[0]!.keys()]).toEqual(['Attestation']);
      expect(args(0)).toEqual(new Map([['user_data', null], ['nonce', new Uint8Array(0)], ['public_key', null]]));
    } finally {
      nsm.close();
    }
  });

  it('maps NSM errors, device errors and bad responses to typed errors; the descriptor stays usable', async () => {
    const nsm = nsmAt();
    try {
      override = () => Buffer.from(encoder.encode(new Map([['Error', 'InputTooLarge']])));
      await expect(nsm.attest({ nonce: new Uint8Array(8) })).rejects.toMatchObject({ name: 'NsmError', code: 'INPUT_TOO_LARGE' });
      override = () => Buffer.from(encoder.encode(new Map([['Error', 'SomethingNew']])));
      await expect(nsm.attest({})).rejects.toMatchObject({ code: 'INTERNAL_ERROR' });
      override = () => ({ errno: 5 }); // EIO from the driver
      await expect(nsm.attest({})).rejects.toMatchObject({ code: 'INTERNAL_ERROR', message: expect.stringContaining('-5') });
      override = () => ({ errno: 90 }); // EMSGSIZE: the driver refused the request's size
      await expect(nsm.attest({})).rejects.toMatchObject({ code: 'INPUT_TOO_LARGE' });
      override = () => Buffer.from([0xff, 0x00]);
      await expect(nsm.attest({})).rejects.toMatchObject({ code: 'MALFORMED_RESPONSE' });
      override = () => Buffer.from(encoder.encode(new Map([['Attestation', new Map([['document', 'not bytes']])]])));
      await expect(nsm.attest({})).rejects.toMatchObject({ code: 'MALFORMED_RESPONSE' });
      override = () => Buffer.alloc(0);
      await expect(nsm.attest({})).rejects.toMatchObject({ code: 'MALFORMED_RESPONSE' });
      // A response longer than the driver's 0x3000-byte buffer: the device copied what fit and said how long it was.
      override = () => Buffer.alloc(nsmResponseBytesMax + 1, 0x41);
      await expect(nsm.attest({})).rejects.toMatchObject({ code: 'RESPONSE_TOO_LARGE' });
      override = undefined;
      const nonce = new Uint8Array(16).fill(9);
      expect((await attester.check(await nsm.attest({ nonce }), nonce)).nonce).toEqual(nonce);
    } finally {
      override = undefined;
      nsm.close();
    }
  });

  it('refuses oversized fields before the device sees them; the largest fields fit the driver buffer', async () => {
    const nsm = nsmAt();
    try {
      seen.length = 0;
      const big = new Uint8Array(nsmFieldBytesMax + 1);
      await expect(nsm.attest({ userData: big })).rejects.toMatchObject({ code: 'INPUT_TOO_LARGE' });
      await expect(nsm.attest({ publicKey: big })).rejects.toBeInstanceOf(NsmError);
      expect(seen).toHaveLength(0);
      const max = new Uint8Array(nsmFieldBytesMax).fill(1);
      const doc = await nsm.attest({ nonce: max, userData: max, publicKey: max });
      expect(args(0).get('nonce')).toEqual(max);
      expect((await attester.check(doc, max)).userData).toEqual(max);
    } finally {
      nsm.close();
    }
  });

  it('serializes concurrent requests on one descriptor', async () => {
    const nsm = nsmAt();
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
    const nsm = nsmAt({ pendingMax: 3 });
    try {
      const nonces = Array.from({ length: 3 }, (_, i) => new Uint8Array(16).fill(i + 20));
      const first = nonces.map((nonce) => nsm.attest({ nonce }));
      await expect(nsm.attest({ nonce: new Uint8Array(16) })).rejects.toMatchObject({ name: 'NsmError', code: 'BUSY' });
      await Promise.all(first);
      const again = new Uint8Array(16).fill(99);
      expect((await attester.check(await nsm.attest({ nonce: again }), again)).nonce).toEqual(again);
      // The default bound is the stream NSM's.
      const dflt = nsmAt();
      const many = Array.from({ length: nsmPendingMax }, () => dflt.attest({ nonce: new Uint8Array(8) }));
      await expect(dflt.attest({})).rejects.toMatchObject({ code: 'BUSY' });
      await Promise.all(many);
      dflt.close();
    } finally {
      nsm.close();
    }
  });

  it('refuses calls after close', async () => {
    const nsm = nsmAt();
    nsm.close();
    nsm.close(); // idempotent
    await expect(nsm.attest({})).rejects.toMatchObject({ code: 'CLOSED' });
  });

  it('reports a missing device and a missing or foreign library with typed errors', () => {
    expect(() => new LibNsm(libPath, { device: join(dir, 'no-such-nsm') })).toThrow(
      expect.objectContaining({ code: 'UNAVAILABLE', message: expect.stringContaining('ekv_nsm_open') }),
    );
    expect(() => new LibNsm(join(dir, 'no-such-libekv-nsm.so'))).toThrow(
      expect.objectContaining({ code: 'UNAVAILABLE', message: expect.stringContaining('cannot load the NSM shim') }),
    );
    // A library without the shim's symbols (AWS's libnsm, say) is refused at load, not at the first call.
    const other = join(dir, 'other.so');
    writeFileSync(join(dir, 'other.c'), 'int nsm_lib_init(void) { return 3; }\n');
    expect(spawnSync('cc', ['-shared', '-fPIC', '-o', other, join(dir, 'other.c')]).status).toBe(0);
    expect(() => new LibNsm(other)).toThrow(expect.objectContaining({ code: 'UNAVAILABLE' }));
  });
});

describe('the NSM device interface', () => {
  it('uses NSM_IOCTL_RAW = _IOWR(0x0A, 0, struct nsm_raw) with the uapi layout, in the shim and in the binding', () => {
    // _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr; _IOC_READ|_IOC_WRITE = 3;
    // struct nsm_raw { struct nsm_iovec { __u64 addr, len } request, response } = 32 bytes.
    expect(nsmIoctlRaw).toBe(0xc0200a00);
    const src = readFileSync(shim, 'utf8');
    expect(src).toMatch(/struct ekv_nsm_iovec \{\s*uint64_t addr;\s*uint64_t len;\s*\};/);
    expect(src).toMatch(/struct ekv_nsm_raw \{\s*struct ekv_nsm_iovec request;\s*struct ekv_nsm_iovec response;\s*\};/);
    expect(src).toContain('_Static_assert(EKV_NSM_IOCTL_RAW == 0xC0200A00u');
    expect(src).toMatch(/#define EKV_NSM_REQUEST_MAX 0x1000u/);
    expect(src).toMatch(/#define EKV_NSM_RESPONSE_MAX 0x3000u/);
  });

  it('maps the shim\'s errno returns, and refuses what is not one', () => {
    expect([-22, -90, -105, -5, -1].map(shimErrorCode)).toEqual(['INVALID_ARGUMENT', 'INPUT_TOO_LARGE', 'RESPONSE_TOO_LARGE', 'INTERNAL_ERROR', 'INTERNAL_ERROR']);
    for (const bad of [0, 1, -4096, 1.5, Number.NaN]) expect(shimErrorCode(bad)).toBe('MALFORMED_RESPONSE');
  });
});
