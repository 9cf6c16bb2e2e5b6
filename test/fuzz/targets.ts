// The parser entry points the fuzzer drives, each with real seed inputs and the error classes it may
// throw. A run that returns is fine (the input was valid or refused by a return value); a throw of
// one of `typed` is fine; any other throw is a failure, as are a crash, a hang, running out of
// memory, and an input slower than the per-input limit (see run.ts).
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Duplex } from 'node:stream';
import { encodeRingValue } from '../../enclave/cluster/codec.ts';
import { decodeLogRecord, decodePeerBatch, encodeLogRecord, encodePeerBatch } from '../../enclave/cluster/data-wire.ts';
import { decodeClientKey, decodeDataOp, decodeForward, type DataOpName } from '../../enclave/cluster/op-wire.ts';
import { decodeScan } from '../../enclave/cluster/scan-ops.ts';
import { decodeCursor, encodeCursor } from '../../client/scan.ts';
import { DataError, type PeerBody, shardOf, type Sessions } from '../../enclave/data/index.ts';
import { HostConfigError, parseNodeConfig } from '../../enclave/host-config.ts';
import { NsmError, StreamNsm } from '../../enclave/nsm.ts';
import { RingError } from '../../enclave/ring/errors.ts';
import { validateRingMessage } from '../../enclave/ring/messages.ts';
import { parseRecipientCms } from '../../enclave/seal/cms.ts';
import { createBlobClient } from '../../enclave/seal/blob-client.ts';
import { parseRecord } from '../../enclave/seal/data-key.ts';
import { KmsError, SealError } from '../../enclave/seal/errors.ts';
import {
  appendSegmentHeader, encodeSegment, genesisTag, openRecord, parseAnySegment, parseSegment, sealAppendRecord, sealRecord,
} from '../../enclave/seal/record.ts';
import { openSnapshotChunk, sealSnapshot } from '../../enclave/seal/snapshot.ts';
import { KmsFault } from '../../emulator/kms-errors.ts';
import { blob, encryptionContext, int, optionalStr, recipientDocument, str } from '../../emulator/kms-request.ts';
import { AclError, buildAclCreate, buildGroupCreate, decodeAclBody, decodeGroupBody, decodeSignedDoc, encodeSignedDoc, grantEdit, buildAclUpdate } from '../../protocol/acl-doc.ts';
import { deriveTrafficKeys, FrameOpener, FrameSealer } from '../../protocol/aead.ts';
import { decodeBlobMessage, encodeBlobMessage } from '../../protocol/blob-wire.ts';
import { decodeCbor, encodeCbor } from '../../protocol/cbor.ts';
import { handshakeBytesMax } from '../../protocol/constants.ts';
import { EkvError } from '../../protocol/errors.ts';
import { encodeFrame, FrameDecoder } from '../../protocol/frame.ts';
import { FramedSocket } from '../../protocol/framed-socket.ts';
import { acceptHandshake, connectHandshake, type VerifyDoc } from '../../protocol/handshake.ts';
import { generateIdentity } from '../../protocol/keys.ts';
import { PrincipalError, principalFromPublicKey, signerFromPrivateKey } from '../../protocol/principal.ts';
import { SecureSession } from '../../protocol/session.ts';
import { generateIdentity as generateClientKey } from '../../client/identity.ts';
import { AttestationError, ChainCache, verifyAttestation } from '../../verifier/index.ts';
import { CborRefused, decodeUntrustedCbor } from '../../verifier/strict-cbor.ts';
import { fixtureDir, loadFixtures } from '../helpers/nitro-fixtures.ts';
import type { Layout } from './mutate.ts';

type ErrorClass = abstract new (...args: never[]) => Error;

export interface FuzzTarget {
  name: string;
  layout: Layout;
  /** Share of `--runs` this target gets (the verifier's inputs that pass decoding cost milliseconds). */
  weight: number;
  seeds: () => Buffer[];
  run: (input: Buffer) => unknown;
  typed: readonly ErrorClass[];
}

// ------------------------------------------------------------------ shared seed material

const fixtures = loadFixtures();
const docs = fixtures.map((f) => Buffer.from(f.bytes));
const realDoc = docs[0] as Buffer;
const cache = new ChainCache();

/** Verifier errors become UNATTESTED, as client/trust.ts and enclave/trust.ts do. */
const verifyServer = (now: number): VerifyDoc => async (doc, nonce) => {
  try {
    const v = await verifyAttestation(doc, { now, cache, nonce });
    return { publicKey: v.publicKey, pcrs: v.pcrs, leafNotAfter: Date.now() + 3_600_000, timestamp: v.timestamp, moduleId: v.moduleId };
  } catch (err) {
    if (err instanceof AttestationError) throw new EkvError('UNATTESTED', err.code);
    throw err;
  }
};

/** An in-memory stream that delivers `incoming` to its reader once something is written, then ends. */
function scriptedStream(incoming: Buffer, opts: { onFirstWrite?: boolean } = {}): Duplex {
  let sent = false;
  const send = () => {
    if (sent) return;
    sent = true;
    stream.push(incoming);
    stream.push(null);
  };
  // allowHalfOpen false: the end of what we deliver closes the stream, as a real socket's peer hanging up does.
  const stream: Duplex = new Duplex({
    allowHalfOpen: false,
    read() {},
    write(_c, _e, cb) {
      send();
      cb();
    },
  });
  if (!opts.onFirstWrite) queueMicrotask(send);
  return stream;
}

const helloSeed = (mode: string) => encodeCbor({ t: 'hello', v: 1, mode, nonce: randomBytes(32), eph: randomBytes(32) });

// ------------------------------------------------------------------ targets

export const targets: FuzzTarget[] = [
  {
    name: 'strict-cbor',
    layout: 'cbor',
    weight: 1,
    seeds: () => [helloSeed('client'), ...docs.slice(0, 3)],
    run: (b) => decodeUntrustedCbor(b, { maps: 'map', indefinite: true, outerTag: 18 }),
    typed: [CborRefused],
  },
  {
    name: 'verifier',
    layout: 'cbor',
    weight: 0.25,
    seeds: () => docs,
    run: (b) => verifyAttestation(b, { now: fixtures[0]!.timestampMs, cache }),
    typed: [AttestationError],
  },
  {
    name: 'handshake-server',
    layout: 'frames',
    weight: 0.5,
    seeds: () => {
      const key = signerFromPrivateKey(generateClientKey());
      return [
        Buffer.concat([encodeFrame(helloSeed('client')), encodeFrame(encodeCbor({ t: 'finish' }))]),
        Buffer.concat([encodeFrame(helloSeed('client')), encodeFrame(encodeCbor({ t: 'finish', principal: key.principal.bytes, psig: randomBytes(64) }))]),
        Buffer.concat([encodeFrame(helloSeed('peer')), encodeFrame(encodeCbor({ t: 'finish', doc: realDoc, sig: randomBytes(64) }))]),
        encodeFrame(encodeCbor({ t: 'hello', v: 1, mode: 'attest', nonce: randomBytes(32) })),
      ];
    },
    run: async (b) => {
      const fs = new FramedSocket(scriptedStream(b), handshakeBytesMax);
      const identity = generateIdentity();
      try {
        await acceptHandshake(fs, {
          identity,
          attest: (nonce, publicKey) => Promise.resolve(encodeCbor({ nonce, publicKey })),
          verifyPeer: verifyServer(fixtures[0]!.timestampMs),
          ring: null,
          verifyPrincipal: () => false,
          timeoutMs: 2000,
        });
      } finally {
        fs.destroy();
      }
    },
    typed: [EkvError],
  },
  {
    name: 'handshake-client',
    layout: 'frames',
    weight: 0.5,
    seeds: () => [
      encodeFrame(encodeCbor({ t: 'server', core: encodeCbor({ doc: realDoc, eph: randomBytes(32), nonce: randomBytes(32) }), sig: randomBytes(64) })),
      encodeFrame(encodeCbor({ t: 'error', code: 'BUSY', message: 'try later' })),
    ],
    run: async (b) => {
      const fs = new FramedSocket(scriptedStream(b, { onFirstWrite: true }), handshakeBytesMax);
      try {
        await connectHandshake(fs, { mode: 'client', verifyServer: verifyServer(fixtures[0]!.timestampMs), timeoutMs: 2000 });
      } finally {
        fs.destroy();
      }
    },
    typed: [EkvError],
  },
  {
    name: 'frame-decoder',
    layout: 'bytes',
    weight: 1,
    seeds: () => [Buffer.concat([encodeFrame(helloSeed('client')), encodeFrame(Buffer.alloc(1000)), encodeFrame(Buffer.alloc(0))])],
    run: (b) => {
      const d = new FrameDecoder(handshakeBytesMax);
      for (let i = 0; i < b.length; i += 7) d.push(b.subarray(i, i + 7));
    },
    typed: [EkvError],
  },
  {
    name: 'protocol-cbor',
    layout: 'cbor',
    weight: 1,
    seeds: () => [
      helloSeed('client'),
      encodeCbor([{ id: 1, op: 'put', req: { k: Buffer.from('key'), v: randomBytes(100) } }, { id: 2, op: 'get', req: { k: Buffer.from('key') } }]),
      encodeCbor([{ id: 7, ok: true, res: { v: randomBytes(40), n: 3 } }]),
      encodeCbor({ e: [[randomBytes(24), randomBytes(40), 1], [randomBytes(24), null, 2]], more: false }),
    ],
    run: (b) => decodeCbor(b),
    typed: [EkvError],
  },
  {
    name: 'session-frame',
    layout: 'bytes',
    weight: 1,
    seeds: () => [sessionSeed()],
    run: (b) => runSession(b),
    typed: [EkvError],
  },
  {
    name: 'ring-message',
    layout: 'cbor',
    weight: 1,
    seeds: () => {
      const a = { id: 5n, addr: 'node-a' };
      const c = { id: 2n ** 255n + 7n, addr: 'node-b' };
      return [
        { type: 'find_successor', from: a, origin: c, rid: 3, hopId: 9, key: 42n, final: false, path: [c.id, a.id] },
        { type: 'found', from: a, rid: 3, key: 42n, path: [c.id, a.id], predecessor: null, successors: [c] },
        { type: 'closest_preceding_reply', from: a, rid: 1, key: 42n, result: 'next', next: c, predecessor: c, successors: [] },
        { type: 'leave', from: a, predecessor: null, successors: [c] },
      ].map((m) => encodeCbor(encodeRingValue(m)));
    },
    run: (b) => validateRingMessage(decodeCbor(b)),
    typed: [EkvError, RingError],
  },
  {
    name: 'acl-document',
    layout: 'cbor',
    weight: 1,
    seeds: () => {
      const owner = signerFromPrivateKey(generateClientKey('ed25519'));
      const other = principalFromPublicKey(generateClientKey('p256'));
      const acl = buildAclCreate('ns1', owner);
      const updated = buildAclUpdate(acl, owner, grantEdit(other, 'read'));
      const group = buildGroupCreate('g1', owner, [other]);
      return [encodeSignedDoc(acl), encodeSignedDoc(updated), encodeSignedDoc(group), updated.body, group.body];
    },
    run: (b) => {
      // Each of the document decoders, on the same bytes.
      for (const f of [() => decodeSignedDoc(b, 'acl'), () => decodeSignedDoc(b, 'group'), () => decodeAclBody(b), () => decodeGroupBody(b)]) {
        try {
          f();
        } catch (err) {
          if (!(err instanceof AclError) && !(err instanceof PrincipalError)) throw err;
        }
      }
    },
    typed: [AclError, PrincipalError],
  },
  {
    name: 'sealed-records',
    layout: 'bytes',
    weight: 1,
    seeds: () => [sealedSegmentSeed()],
    run: (b) => {
      for (const r of parseSegment(b, sealKeys.nodeTag, 'wal-1')) decodeCbor(openRecord(sealKeys.key, sealKeys.nodeTag, r));
    },
    typed: [SealError, EkvError],
  },
  {
    // The append-only segment (docs/durability.md T3, T4) as the newest one: torn tails allowed, anything else typed.
    name: 'sealed-append-segment',
    layout: 'bytes',
    weight: 1,
    seeds: () => [appendSegmentSeed()],
    run: (b) => {
      const keys = { nodeTag: sealKeys.nodeTag.subarray(0, 8), walHeader: sealKeys.key };
      for (const r of parseAnySegment(b, keys, 'wal-0000000000000001', 1, true).raws) openRecord(sealKeys.key, keys.nodeTag, r);
    },
    typed: [SealError, EkvError],
  },
  {
    name: 'sealed-snapshot',
    layout: 'bytes',
    weight: 1,
    seeds: () => sealSnapshot(sealKeys.key, sealKeys.nodeTag, 5, genesisTag, encodeCbor(['snap', randomBytes(48), [[randomBytes(8), randomBytes(20), 1]]])),
    run: (b) => decodeCbor(openSnapshotChunk(sealKeys.key, sealKeys.nodeTag, b, 'snap-1').plaintext),
    typed: [SealError, EkvError],
  },
  {
    name: 'data-key-record',
    layout: 'cbor',
    weight: 1,
    seeds: () => [encodeCbor({ v: 1, nodeId: randomBytes(16), keyId: 'arn:aws:kms:eu-west-1:111122223333:key/abc', ciphertextBlob: randomBytes(184) })],
    run: (b) => parseRecord(b),
    typed: [SealError],
  },
  {
    name: 'kms-cms',
    layout: 'bytes',
    weight: 0.5,
    seeds: () => [readFileSync(`${fixtureDir}kms-cms-sample.ber`)],
    run: (b) => parseRecipientCms(b),
    typed: [KmsError, SealError],
  },
  {
    name: 'blob-wire',
    layout: 'frames',
    weight: 0.5,
    seeds: () => [
      encodeBlobMessage({ id: 1, ok: true, data: randomBytes(300) } as never),
      encodeBlobMessage({ id: 1, ok: false, code: 'NOT_FOUND', message: 'no such blob' } as never),
      encodeBlobMessage({ id: 1, ok: true, names: ['wal-00000001', 'snap-00000002-0000'] } as never),
    ],
    run: async (b) => {
      // The host side's decode, then the enclave's client on the same bytes as the host's answer.
      for (const frame of new FrameDecoder(1 << 24).push(b)) decodeBlobMessage(frame);
      const client = createBlobClient({ connect: () => scriptedStream(b, { onFirstWrite: true }) as never, timeoutMs: 1000 });
      try {
        await client.get('datakey');
      } finally {
        client.close();
      }
    },
    typed: [SealError, EkvError],
  },
  {
    name: 'host-config',
    layout: 'json',
    weight: 1,
    seeds: () => [Buffer.from(JSON.stringify({ selfAddr: '10.0.0.5:7001', join: '10.0.0.4:7001', logLevel: 'info' }))],
    run: (b) => parseNodeConfig(b),
    typed: [HostConfigError],
  },
  {
    name: 'emulated-kms-request',
    layout: 'json',
    weight: 1,
    seeds: () => [
      Buffer.from(JSON.stringify({ KeyId: 'alias/ekv-seal', NumberOfBytes: 32, EncryptionContext: { 'ekv:store': 'ab12' }, Recipient: { KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256', AttestationDocument: realDoc.toString('base64') } })),
      Buffer.from(JSON.stringify({ CiphertextBlob: randomBytes(184).toString('base64'), EncryptionContext: { 'ekv:store': 'ab12' } })),
    ],
    run: (b) => {
      let body: unknown;
      try {
        body = JSON.parse(b.toString('utf8'));
      } catch {
        throw new KmsFault('SerializationException', 'not JSON');
      }
      if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new KmsFault('SerializationException', 'not an object');
      const r = body as Record<string, unknown>;
      optionalStr(r, 'KeyId', 2048);
      int(r, 'NumberOfBytes', 1, 1024);
      encryptionContext(r);
      recipientDocument(r);
      if ('CiphertextBlob' in r) blob(r, 'CiphertextBlob', 6144);
      if ('KeySpec' in r) str(r, 'KeySpec', 32);
    },
    typed: [KmsFault],
  },
  {
    name: 'nsm-response',
    layout: 'frames',
    weight: 1,
    seeds: () => [
      encodeFrame(encodeCbor(new Map([['Attestation', new Map([['document', realDoc]])]]))),
      encodeFrame(encodeCbor(new Map([['Error', 'InvalidArgument']]))),
    ],
    run: async (b) => {
      const nsm = new StreamNsm(scriptedStream(b, { onFirstWrite: true }), { timeoutMs: 2000 });
      try {
        await nsm.attest({ nonce: randomBytes(32) });
      } finally {
        nsm.close();
      }
    },
    typed: [NsmError],
  },
  {
    name: 'data-peer-batch',
    layout: 'cbor',
    weight: 1,
    seeds: () => [encodePeerBatch(dataBodies()), encodePeerBatch(dataBodies().slice(5))],
    run: (b) => decodePeerBatch(b, dataShards),
    typed: [EkvError, DataError],
  },
  {
    name: 'data-log-record',
    layout: 'cbor',
    weight: 0.5,
    seeds: () => [
      encodeLogRecord({ t: 'snap', shard: 3, instance: 4, ballot: null, synced: true, data: new Map([['k', { value: 'v', version: 1, epoch: 1 }]]), sessions: dataSessions() }),
      encodeLogRecord({ t: 'w', shard: 3, epoch: 4, op: (dataBodies()[5] as Extract<PeerBody, { t: 'replicate' }>).op }),
    ],
    run: (b) => decodeLogRecord(b, dataShards),
    typed: [EkvError, DataError],
  },
  {
    name: 'data-client-op',
    layout: 'cbor',
    weight: 1,
    seeds: () => [
      encodeCbor({ o: 'put', k: Buffer.from('team/plan'), v: randomBytes(40), s: [2 ** 21 + 5, 3, 2], iv: 0 }),
      encodeCbor({ o: 'del', k: Buffer.from('k'), s: [2 ** 22 + 1, 1, 1] }),
      encodeCbor({ fo: 'put', k: Buffer.from('k'), v: Buffer.from('v'), s: [2 ** 21 + 5, 3, 2], iv: null, p: 'anon' }),
      encodeCbor({ fo: 'open', sh: 3, p: 'k' + 'a'.repeat(64) }),
    ],
    run: (b) => {
      // A client's request as the enclave decodes it (the op named by `o`, else each), and a peer's forwarded form.
      const req = decodeCbor(b);
      if (req === null || typeof req !== 'object' || Array.isArray(req)) return;
      const r = req as Record<string, unknown>;
      const shardOfKey = (k: Buffer) => shardOf(k.toString('latin1'), dataShards);
      for (const op of dataOps.includes(r.o as DataOpName) ? [r.o as DataOpName] : dataOps) {
        try {
          decodeDataOp(op, r, decodeClientKey(r), shardOfKey, 'anon');
        } catch (err) {
          if (!(err instanceof EkvError)) throw err;
        }
      }
      decodeForward(r, dataShards, shardOfKey);
    },
    typed: [EkvError],
  },
  {
    // Scans (docs/scans.md): a scan request as the enclave decodes it (client `scan` and peer `scanf`), and the
    // SDK's cursor decoder on the same bytes taken as text.
    name: 'scan-request',
    layout: 'cbor',
    weight: 1,
    seeds: () => [
      encodeCbor({ sh: 3, p: Buffer.from('team/'), a: Buffer.from('team/a'), l: 100, b: 65536, v: true }),
      encodeCbor({ sh: 0, l: 1, ns: true, p: Buffer.from('te'), pk: randomBytes(32) }),
      Buffer.from(encodeCursor(Buffer.from('team/'), Buffer.from('team/plan'))),
    ],
    run: (b) => {
      try {
        decodeCursor(b.toString('latin1'), Buffer.from('team/'));
      } catch (err) {
        if (!(err instanceof EkvError)) throw err;
      }
      const req = decodeCbor(b);
      if (req === null || typeof req !== 'object' || Array.isArray(req)) return;
      decodeScan(req as Record<string, unknown>, dataShards);
    },
    typed: [EkvError],
  },
];

// ------------------------------------------------------------------ sealed-state and session seeds

const sealKeys = { key: createHash('sha256').update('fuzz key').digest(), nodeTag: createHash('sha256').update('fuzz node').digest().subarray(0, 16) };

function sealedSegmentSeed(): Buffer {
  let prev = genesisTag;
  const records: Buffer[] = [];
  for (let seq = 1; seq <= 3; seq++) {
    const r = sealRecord(sealKeys.key, sealKeys.nodeTag, seq, prev, randomBytes(12), encodeCbor(['e', randomBytes(8), randomBytes(30), seq]));
    records.push(r.bytes);
    prev = r.tag;
  }
  return encodeSegment(sealKeys.nodeTag, records);
}

function appendSegmentSeed(): Buffer {
  const nodeTag = sealKeys.nodeTag.subarray(0, 8);
  let prev = genesisTag;
  const parts = [appendSegmentHeader(nodeTag, 1)];
  for (let seq = 1; seq <= 3; seq++) {
    const r = sealAppendRecord({ wal: sealKeys.key, walHeader: sealKeys.key }, nodeTag, seq, prev, randomBytes(12), encodeCbor(['d', randomBytes(30)]));
    parts.push(r.bytes);
    prev = r.tag;
  }
  return Buffer.concat(parts);
}

// A session whose keys the fuzzer knows: mutated frames are sealed again before delivery half of the
// time (so mutations reach the decoder behind the AEAD), and delivered as mutated otherwise.
const sessionKeys = deriveTrafficKeys(createHash('sha256').update('fuzz ecdh').digest(), createHash('sha256').update('fuzz th').digest());

function sessionSeed(): Buffer {
  return encodeCbor([{ id: 1, op: 'put', req: { k: Buffer.from('key'), v: randomBytes(64) } }, { id: 2, op: 'get', req: { k: Buffer.from('key') } }]);
}

async function runSession(plain: Buffer): Promise<void> {
  const sealed = plain.length % 2 === 0 ? new FrameSealer(sessionKeys.c2s).seal(plain) : plain;
  const fs = new FramedSocket(scriptedStream(encodeFrame(sealed)), 1 << 20);
  const session = new SecureSession(fs, new FrameSealer(sessionKeys.s2c), new FrameOpener(sessionKeys.c2s));
  await new Promise<void>((resolve, reject) => {
    session.start(
      () => undefined,
      (err) => (err instanceof EkvError ? resolve() : reject(err)),
    );
  });
}

// ------------------------------------------------------------------ the data path (review-3: not fuzzed before)

const dataShards = 64;
const dataMember = { name: 'a'.repeat(64), ring: 5n, inc: 0 };

function dataSessions(): Sessions {
  const results = new Map([
    [3, { result: { ok: true as const, version: 7, existed: true }, digest: 'f'.repeat(32) }],
    [4, { result: { ok: false as const, code: 'CONFLICT' as const, version: 0, t: 6 }, digest: 'e'.repeat(32) }],
  ]);
  return { next: 3, clock: 9, table: new Map([[2 * 2 ** 21 + 77, { owner: 'anon', floor: 3, used: 9, results }]]) };
}

function dataBodies(): PeerBody[] {
  const config = { shard: 3, epoch: 4, members: [dataMember] };
  const ballot = { round: 2, name: dataMember.name, inc: 0 };
  const data = new Map([['k1', { value: 'v\xff', version: 2, epoch: 4 }], ['k2', { value: null, version: 3, epoch: 4 }]]);
  const op = { key: 'k1', entry: { value: 'v', version: 3, epoch: 4 }, req: { session: 2 * 2 ** 21 + 77, seq: 5, floor: 5, result: { ok: false as const, code: 'CONFLICT' as const, version: 0, t: 2 }, digest: 'a'.repeat(32), used: 10 }, open: null };
  return [
    { t: 'hb', leaving: false, configs: [config] },
    { t: 'prepare', base: config, ballot },
    { t: 'promise', shard: 3, instance: 4, ballot, accepted: { ballot, value: config }, data, sessions: dataSessions() },
    { t: 'install', base: config, ballot, value: { ...config, epoch: 5 }, data, sessions: dataSessions() },
    { t: 'sync', config, data, sessions: dataSessions() },
    { t: 'replicate', shard: 3, epoch: 4, opId: 9, op },
    { t: 'replicateAck', shard: 3, epoch: 4, key: 'k1', opId: 9 },
    { t: 'leaseReq', shard: 3, epoch: 4, t0: 100 },
    { t: 'witA', nonce: 5, pos: 10, inc: 0, boot: 7, posBoot: 6, live: false },
    { t: 'bootQ', t0: 100 },
    { t: 'bootA', t0: 100, boot: 7 },
    { t: 'superseded', boot: 7 },
  ];
}

const dataOps: readonly DataOpName[] = ['get', 'put', 'del', 'open'];

export function targetByName(name: string): FuzzTarget {
  const t = targets.find((x) => x.name === name);
  if (!t) throw new Error(`no fuzz target ${name}`);
  return t;
}
