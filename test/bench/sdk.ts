/**
 * `npm run bench:sdk` (tsx test/bench/sdk.ts): the SDK's own CPU per operation (issue 15), without an enclave: the real
 * client (EkvClient: attested handshake, AES-GCM session, CBOR, RPC, range write sessions, the floor) against a
 * fake node in a child process (the real handshake and session code with a stand-in attestation document,
 * and an in-memory map answering get/put/open at once). No enclave, host proxy or KMS shares the cores, so
 * what moves the figure is mostly the SDK's code; on a shared 2-core machine it still moves by +-20 % from run
 * to run (batching follows scheduling): compare two builds by running both at the same time (same contention),
 * several times, with `--warmup 2 --rounds 2` and reading the second round (the first one pays for the JIT).
 *
 * Prints ops/s and the load generator's CPU µs/op (process.cpuUsage over the measured window) per mix;
 * `--cpu-prof` also writes a V8 profile of the client and prints its top costs per operation.
 *
 *   npm run bench:sdk -- [--clients 64] [--connections 4] [--seconds 4] [--warmup 1] [--keys 10000]
 *                          [--value-bytes 100] [--mixes get,put] [--rounds 1] [--no-floor] [--json]
 *                          [--cpu-prof [--prof-dir DIR]]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { EkvClient } from '../../client/index.ts';
import { decodeCbor, encodeCbor } from '../../protocol/cbor.ts';
import { handshakeBytesMax } from '../../protocol/constants.ts';
import { EkvError } from '../../protocol/errors.ts';
import { FramedSocket } from '../../protocol/framed-socket.ts';
import { acceptHandshake, type VerifyDoc } from '../../protocol/handshake.ts';
import { generateIdentity, verifyEd25519 } from '../../protocol/keys.ts';
import { serveRpc } from '../../protocol/rpc.ts';
import { summarizeProfile, type CpuProfile } from './lib/cpuprofile.ts';
import { runMix, type KvConnection, type LoadSettings, type Mix } from './lib/harness.ts';
import { helpFromHeader } from './lib/help.ts';

helpFromHeader(import.meta.url);

/** The fake node: the real accept side with a stand-in document, and a map. Prints its port on stdout. */
function serve(): void {
  const identity = generateIdentity();
  const store = new Map<string, { v: Uint8Array; n: number }>();
  let sessions = 0;
  const server = net.createServer({ noDelay: true }, (socket) => {
    const fs = new FramedSocket(socket, handshakeBytesMax);
    acceptHandshake(fs, {
      identity,
      attest: (nonce, key) => Promise.resolve(encodeCbor({ fake: 1, nonce, key })),
      verifyPeer: () => Promise.reject(new EkvError('UNATTESTED', 'no peers here')),
      verifyPrincipal: (p, m, s) => verifyEd25519(p, m, s),
      ring: null,
      timeoutMs: 5000,
    }).then((a) => {
      if (a.kind !== 'session') return socket.destroy();
      serveRpc(a.session, (op, req) => {
        const k = Buffer.from(req.k as Uint8Array).toString('latin1');
        if (op === 'open') return { s: ++sessions, S: 1, sh: 0, w: 64 };
        if (op === 'put') {
          const n = (store.get(k)?.n ?? 0) + 1;
          store.set(k, { v: req.v as Uint8Array, n });
          return { n };
        }
        if (op === 'get') {
          const e = store.get(k);
          if (!e) throw new EkvError('NOT_FOUND', 'no value', { version: 0 });
          return { v: e.v, n: e.n };
        }
        throw new EkvError('BAD_REQUEST', `op ${op}`);
      }, () => undefined);
    }, () => socket.destroy());
  });
  server.listen(0, '127.0.0.1', () => process.stdout.write(`fake node port ${(server.address() as net.AddressInfo).port}\n`));
  process.on('disconnect', () => process.exit(0));
}

/** Accepts the fake node's document: the nonce must be this handshake's, as the real verifier checks. */
const fakeVerify: VerifyDoc = async (doc, nonce) => {
  const d = decodeCbor(doc) as { nonce?: Uint8Array; key?: Uint8Array | null };
  if (!(d.nonce instanceof Uint8Array) || !Buffer.from(d.nonce).equals(Buffer.from(nonce))) throw new EkvError('UNATTESTED', 'nonce differs');
  return { publicKey: d.key ?? null, pcrs: new Map(), leafNotAfter: Date.now() + 3_600_000, timestamp: Date.now(), moduleId: 'fake' };
};

function startNode(): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), '--serve'], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    // Its port, on a line of its own (node flags such as --trace-gc may print to stdout too).
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /^fake node port (\d+)$/m.exec(out);
      if (m) {
        child.stdout?.removeAllListeners('data');
        child.stdout?.resume();
        resolve({ child, port: Number(m[1]) });
      }
    });
  });
}

async function clients(port: number, n: number, floor: boolean): Promise<KvConnection[]> {
  const out: KvConnection[] = [];
  for (let i = 0; i < n; i++) {
    const kv = new EkvClient([`127.0.0.1:${port}`], { pcrs: { 0: '00'.repeat(48) } }, { timeoutMs: 30_000, ...(floor ? {} : { floor: null }) });
    // The stand-in document needs the stand-in verifier (the trust policy above is never consulted).
    (kv.node(`127.0.0.1:${port}`) as unknown as { verify: VerifyDoc }).verify = fakeVerify;
    await kv.verifyAll();
    out.push({ get: (k) => kv.get(k), put: (k, v) => kv.put(k, v), close: () => kv.close() });
  }
  return out;
}

async function main(): Promise<void> {
  if (process.argv.includes('--serve')) return serve();
  const { values } = parseArgs({
    options: {
      clients: { type: 'string', default: '64' }, connections: { type: 'string', default: '4' }, seconds: { type: 'string', default: '4' },
      warmup: { type: 'string', default: '1' }, keys: { type: 'string', default: '10000' }, 'value-bytes': { type: 'string', default: '100' },
      mixes: { type: 'string', default: 'get,put' }, rounds: { type: 'string', default: '1' }, 'no-floor': { type: 'boolean', default: false },
      json: { type: 'boolean', default: false }, 'cpu-prof': { type: 'boolean', default: false }, 'prof-dir': { type: 'string' },
    },
  });
  const int = (name: string, v: string, lo: number, hi: number): number => {
    const x = Number(v);
    if (!Number.isInteger(x) || x < lo || x > hi) throw new Error(`--${name} takes an integer in [${lo}, ${hi}]`);
    return x;
  };
  const s: LoadSettings = {
    clients: int('clients', values.clients, 1, 4096), connections: int('connections', values.connections, 1, 256),
    seconds: int('seconds', values.seconds, 1, 3600), warmupSeconds: int('warmup', values.warmup, 0, 600),
    keys: int('keys', values.keys, 1, 10_000_000), valueBytes: int('value-bytes', values['value-bytes'], 0, 65536), ops: null,
  } as LoadSettings;
  const allMixes: Array<Mix & { id: string }> = [{ id: 'get', name: 'get-heavy 90/10', getFraction: 0.9 }, { id: 'put', name: 'put-heavy 10/90', getFraction: 0.1 }];
  const mixes = allMixes.filter((m) => values.mixes.split(',').includes(m.id));
  if (mixes.length === 0) throw new Error('--mixes takes get,put');
  const rounds = int('rounds', values.rounds, 1, 100);

  const { child, port } = await startNode();
  const rows: Array<{ mix: string; round: number; opsPerSec: number; cpuUsPerOp: number; p50Ms: number }> = [];
  try {
    const conns = await clients(port, s.connections, !values['no-floor']);
    // Every key once, so gets find values (and the floors fill as in `npm run bench:kv`).
    const value = Buffer.alloc(s.valueBytes, 0x61);
    await Promise.all(conns.map(async (c, i) => {
      for (let k = i; k < s.keys; k += conns.length) await c.put(Buffer.from(`bench:${k.toString().padStart(8, '0')}`), value);
    }));
    const profiler = values['cpu-prof'] ? new Session() : null;
    for (let round = 1; round <= rounds; round++) {
      for (const mix of mixes) {
        let cpu0 = process.cpuUsage();
        let ops = 0;
        const counted = conns.map((c) => ({ get: (k: Buffer) => (ops++, c.get(k)), put: (k: Buffer, v: Buffer) => (ops++, c.put(k, v)), close: c.close }));
        let opsAtStart = 0;
        let used = { user: 0, system: 0 };
        let opsAtEnd = 0;
        const f = await runMix(counted, s, mix, 1000 * round, {
          start: () => {
            cpu0 = process.cpuUsage();
            opsAtStart = ops;
            if (profiler) {
              profiler.connect();
              void profiler.post('Profiler.enable').then(() => profiler.post('Profiler.start'));
            }
          },
          end: () => {
            used = process.cpuUsage(cpu0);
            opsAtEnd = ops;
          },
        });
        const measured = opsAtEnd - opsAtStart;
        const cpuUsPerOp = (used.user + used.system) / measured;
        if (profiler) {
          const { profile } = await profiler.post('Profiler.stop');
          profiler.disconnect();
          const dir = values['prof-dir'] ?? join(tmpdir(), `ekv-sdk-prof-${Date.now()}`);
          mkdirSync(dir, { recursive: true });
          const file = join(dir, `sdk-${mix.id}-${round}.cpuprofile`);
          writeFileSync(file, JSON.stringify(profile));
          const sum = summarizeProfile(profile as unknown as CpuProfile, 'sdk', measured);
          process.stderr.write(`bench:sdk: profile ${file}\n` + sum.functions.slice(0, 12).map((l) => `  ${l.usPerOp.toFixed(2).padStart(6)} us/op  ${l.name}\n`).join(''));
        }
        rows.push({ mix: mix.name, round, opsPerSec: f.opsPerSec, cpuUsPerOp, p50Ms: f.p50Ms });
        process.stderr.write(`bench:sdk: ${mix.name} round ${round}: ${Math.round(f.opsPerSec)} ops/s, client CPU ${cpuUsPerOp.toFixed(1)} us/op\n`);
      }
    }
    await Promise.all(conns.map((c) => c.close()));
  } finally {
    child.kill();
  }
  if (values.json) process.stdout.write(JSON.stringify({ settings: s, floor: !values['no-floor'], rows }, null, 2) + '\n');
  else {
    process.stdout.write(`clients ${s.clients}, connections ${s.connections}, value ${s.valueBytes} B, keys ${s.keys}, floor ${values['no-floor'] ? 'off' : 'on'}\n`);
    process.stdout.write('mix              round     ops/s  cli us/op   p50 ms\n');
    for (const r of rows) process.stdout.write(`${r.mix.padEnd(16)} ${String(r.round).padStart(5)} ${String(Math.round(r.opsPerSec)).padStart(9)} ${r.cpuUsPerOp.toFixed(1).padStart(10)} ${r.p50Ms.toFixed(3).padStart(8)}\n`);
  }
}

await main();
