// The NSM channel between an enclave and the emulator: StreamNsm (enclave
// side) against serveNsm (emulator side) over a real unix socket, and each of
// them against a hostile peer.
import { Decoder, Encoder } from 'cbor-x';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EmulatorCa } from '../emulator/ca.ts';
import { FrameReader, frame as emulatorFrame } from '../emulator/frames.ts';
import { measureImage, pcrMap } from '../emulator/measure.ts';
import { EmulatedNsm, serveNsm } from '../emulator/nsm.ts';
import { NsmError, StreamNsm, openNsm } from '../enclave/nsm.ts';
import { verifyAttestation } from '../verifier/index.ts';

const encoder = new Encoder({ useRecords: false, mapsAsObjects: false, tagUint8Array: false });
const decoder = new Decoder({ mapsAsObjects: false, useRecords: false });

let dir: string;
let ca: EmulatorCa;
let nsm: EmulatedNsm;
let sockets = 0;
const cleanups: Array<() => void> = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ekv-nsm-'));
  ca = await EmulatorCa.createEphemeral();
  nsm = new EmulatedNsm({ ca, pcrs: pcrMap(measureImage(Buffer.from('image'))), moduleId: ca.newModuleId() });
});
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A connected socket pair: `server` gets the accepted end. */
async function socketPair(onServer: (s: Socket) => void): Promise<Socket> {
  const path = join(dir, `s${sockets++}.sock`);
  const server: Server = createServer(onServer);
  await new Promise<void>((r) => server.listen(path, r));
  const client = connect(path);
  await new Promise<void>((r, j) => client.once('connect', r).once('error', j));
  cleanups.push(() => {
    client.destroy();
    server.close();
  });
  return client;
}

function frame(body: Uint8Array): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt32BE(body.length);
  return Buffer.concat([h, body]);
}

/** Reads `count` framed CBOR responses from a raw client socket. */
function responses(sock: Socket, count: number): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const out: unknown[] = [];
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
        const len = buf.readUInt32BE(0);
        out.push(decoder.decode(buf.subarray(4, 4 + len)));
        buf = buf.subarray(4 + len);
        if (out.length === count) resolve(out);
      }
    });
    sock.on('error', reject);
  });
}

const attestation = (fields: Record<string, unknown>) =>
  Uint8Array.from(encoder.encode(new Map([['Attestation', new Map(Object.entries(fields))]])));
const errorName = (r: unknown) => (r instanceof Map ? r.get('Error') : undefined);

describe('StreamNsm against serveNsm', () => {
  it('gets verifiable documents, many in flight, each answered in order', async () => {
    const client = await socketPair((s) => void serveNsm(s, nsm));
    const stream = new StreamNsm(client);
    const nonces = Array.from({ length: 12 }, () => randomBytes(16));
    const docs = await Promise.all(nonces.map((nonce) => stream.attest({ nonce })));
    for (const [i, doc] of docs.entries()) {
      const v = await verifyAttestation(doc, { roots: [ca.rootPem], nonce: nonces[i], cache: false });
      expect(v.moduleId).toBe(nsm.moduleId);
    }
    stream.close();
    await expect(stream.attest({})).rejects.toMatchObject({ code: 'CLOSED' });
  });

  it('refuses an oversized field locally, before anything is sent', async () => {
    const client = await socketPair((s) => void serveNsm(s, nsm));
    const stream = new StreamNsm(client);
    await expect(stream.attest({ userData: new Uint8Array(1025) })).rejects.toMatchObject({ code: 'INPUT_TOO_LARGE' });
    expect((await stream.attest({ userData: new Uint8Array(1024) })).length).toBeGreaterThan(1024);
    stream.close();
  });
});

describe('serveNsm against a hostile enclave', () => {
  it('answers every bad request with the NSM error and keeps serving', async () => {
    const client = await socketPair((s) => void serveNsm(s, nsm));
    const got = responses(client, 8);
    client.write(frame(Buffer.from([0xff, 0x00, 0x13])));                           // not CBOR
    client.write(frame(Uint8Array.from(encoder.encode('DescribeNSM'))));             // unit variant
    client.write(frame(Uint8Array.from(encoder.encode(new Map([['DescribePCR', new Map([['index', 0]])]])))));
    client.write(frame(attestation({ user_data: new Uint8Array(1025) })));
    client.write(frame(attestation({ nonce: 'not bytes' })));
    const huge = Buffer.alloc(4);
    huge.writeUInt32BE(0x2000);
    client.write(huge);                                                              // over the 0x1000 request buffer
    client.write(randomBytes(0x2000));
    client.write(frame(new Uint8Array(0)));                                          // empty
    client.write(frame(attestation({ nonce: Buffer.from('ok') })));
    const r = await got;
    expect(r.slice(0, 7).map(errorName)).toEqual([
      'InvalidArgument', 'InvalidOperation', 'InvalidOperation', 'InputTooLarge', 'InvalidArgument', 'InputTooLarge', 'InvalidArgument',
    ]);
    const doc = ((r[7] as Map<string, Map<string, Uint8Array>>).get('Attestation') as Map<string, Uint8Array>).get('document');
    const v = await verifyAttestation(doc as Uint8Array, { roots: [ca.rootPem], nonce: Buffer.from('ok'), cache: false });
    expect(v.nonce?.toString()).toBe('ok');
  });
});

describe('StreamNsm against a hostile NSM', () => {
  it('fails on an oversized response length without reading it, then stays closed', async () => {
    const client = await socketPair((s) => s.once('data', () => s.write(Buffer.from([0, 0, 0x30, 0x01]))));
    const stream = new StreamNsm(client);
    await expect(stream.attest({})).rejects.toMatchObject({ code: 'RESPONSE_TOO_LARGE' });
    await expect(stream.attest({})).rejects.toMatchObject({ code: 'CLOSED' });
  });

  it('maps NSM error names, and refuses unknown shapes and unsolicited responses', async () => {
    const replies = [
      encoder.encode(new Map([['Error', 'InvalidOperation']])),
      encoder.encode(new Map([['Attestation', new Map([['document', 'text']])]])),
      encoder.encode(new Map([['Error', 'SomethingNew']])),
    ];
    let n = 0;
    const client = await socketPair((s) => s.on('data', () => s.write(frame(Uint8Array.from(replies[n++] as Uint8Array)))));
    const stream = new StreamNsm(client);
    await expect(stream.attest({})).rejects.toMatchObject({ code: 'INVALID_OPERATION' });
    await expect(stream.attest({})).rejects.toMatchObject({ code: 'MALFORMED_RESPONSE' });
    await expect(stream.attest({})).rejects.toMatchObject({ code: 'INTERNAL_ERROR' });
  });

  it('times out a silent NSM and reports a hang-up once', async () => {
    let serverEnd: Socket | undefined;
    const silent = await socketPair((s) => { serverEnd = s; });
    const slow = new StreamNsm(silent, { timeoutMs: 100 });
    await expect(slow.attest({})).rejects.toMatchObject({ code: 'TIMEOUT' });

    let hangups = 0;
    const client = await socketPair((s) => s.once('data', () => s.end()));
    const stream = new StreamNsm(client, { onHangup: () => hangups++ });
    await expect(stream.attest({})).rejects.toMatchObject({ code: 'CLOSED' });
    await new Promise((r) => setTimeout(r, 50));
    expect(hangups).toBe(1);
    serverEnd?.destroy();
  });

  it('refuses more than pendingMax requests in flight with BUSY', async () => {
    const client = await socketPair(() => undefined);
    const stream = new StreamNsm(client, { pendingMax: 2, timeoutMs: 5000 });
    const first = [stream.attest({}), stream.attest({})];
    await expect(stream.attest({})).rejects.toMatchObject({ code: 'BUSY' });
    stream.close();
    for (const p of first) await expect(p).rejects.toBeInstanceOf(NsmError);
  });
});

describe('openNsm', () => {
  it('refuses unknown modes and stdio descriptors', async () => {
    await expect(openNsm({ EKV_NSM: 'tcp:1234' })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await expect(openNsm({ EKV_NSM: 'fd:1' })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });
});

describe('FrameReader', () => {
  it('yields the same frames and oversized notices however the bytes are split', () => {
    const limit = 64;
    fc.assert(fc.property(
      fc.array(fc.uint8Array({ maxLength: 100 }), { maxLength: 8 }),
      fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 20 }),
      (bodies, cuts) => {
        const wire = Buffer.concat(bodies.map((b) => emulatorFrame(b)));
        const reader = new FrameReader(limit);
        const events = [];
        for (let at = 0, i = 0; at < wire.length; i++) {
          const step = cuts[i % cuts.length] as number;
          events.push(...reader.push(wire.subarray(at, at + step)));
          at += step;
        }
        const expected = bodies.map((b) => (b.length > limit
          ? { kind: 'oversized', length: b.length }
          : { kind: 'frame', body: Uint8Array.from(b) }));
        expect(events).toEqual(expected);
      },
    ), { numRuns: 300 });
  });
});
