// The attackers of test/e2e-hostile-flood.test.ts, in their own process so that they do not share an
// event loop with the normal client whose latency the test measures.
//   tsx test/helpers/flood-attacker.ts <host:port> <cluster file> <ms> <attackers>
// Prints one JSON line: { sent, sealed }.
import net from 'node:net';
import { loadCluster } from '../../client/cluster.ts';
import { documentVerifier } from '../../client/trust.ts';
import { handshakeBytesMax } from '../../protocol/constants.ts';
import { encodeFrame } from '../../protocol/frame.ts';
import { FramedSocket } from '../../protocol/framed-socket.ts';
import { connectHandshake } from '../../protocol/handshake.ts';
import { bignum, helloWith, hostileShapes } from './hostile-cbor.ts';

const [addrText, clusterFile, msText, attackersText] = process.argv.slice(2) as [string, string, string, string];
const [host, portText] = addrText.split(':') as [string, string];
const addr = { host, port: Number(portText) };
const trust = loadCluster(clusterFile).trust;

/** One hostile connection: send `bytes` (64 bytes every 100 ms when `slow`), wait for the close. */
function hostile(bytes: Buffer, slow = false): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect(addr);
    let drip: NodeJS.Timeout | undefined;
    const done = () => {
      clearTimeout(timer);
      clearInterval(drip);
      s.destroy();
      resolve();
    };
    const timer = setTimeout(done, slow ? 3000 : 5000);
    s.on('data', () => undefined); // read the error frame, so the close is seen
    s.on('error', done);
    s.on('end', done);
    s.on('close', done);
    s.on('connect', () => {
      if (!slow) {
        s.write(bytes);
        return;
      }
      let off = 0;
      drip = setInterval(() => {
        if (off >= bytes.length) return;
        s.write(bytes.subarray(off, off + 64));
        off += 64;
      }, 100);
    });
  });
}

/** After a valid anonymous handshake, one sealed frame holding a 256 KiB bignum (the 3-minute CPU pin of issue 16). */
async function sealedBignum(): Promise<void> {
  const socket = net.connect(addr);
  await new Promise((r, j) => socket.once('connect', r).once('error', j));
  const fs = new FramedSocket(socket, handshakeBytesMax);
  try {
    const { session } = await connectHandshake(fs, { mode: 'client', verifyServer: documentVerifier(trust) });
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    // Bytes no encoder of ours would write, sealed with the session's own sealer.
    const sealer = (session as unknown as { sealer: { seal(b: Uint8Array): Buffer } }).sealer;
    fs.write(sealer.seal(Buffer.concat([Buffer.from([0x81]), helloWith(bignum(256 * 1024))])));
    await Promise.race([closed, new Promise((r) => setTimeout(r, 5000))]);
  } catch {
    // A refused handshake is a result too.
  } finally {
    fs.destroy();
  }
}

const shapes = hostileShapes().map((s) => encodeFrame(s.bytes));
shapes.push(Buffer.from([0xff, 0xff, 0xff, 0xff])); // a frame length of 4 GiB
let sent = 0;
let sealed = 0;
process.stdout.write('start\n');
const deadline = Date.now() + Number(msText);
await Promise.all(
  Array.from({ length: Number(attackersText) }, async (_, a) => {
    for (let k = 0; Date.now() < deadline; k++) {
      if (a === 0) {
        await sealedBignum();
        sealed++;
      } else {
        await hostile(shapes[(a * 7 + k) % shapes.length] as Buffer, a === 1);
        sent++;
      }
    }
  }),
);
console.log(JSON.stringify({ sent, sealed, shapes: shapes.length }));
process.exit(0);
