/**
 * Two in-memory streams wired to each other (what one writes the other reads), for protocol tests without
 * sockets. Ending or destroying one side ends the other's readable side once.
 */
import { Duplex } from 'node:stream';

export function duplexPair(): [Duplex, Duplex] {
  const sides: Duplex[] = [];
  const ended = [false, false];
  const endPeer = (i: number) => {
    const peer = sides[1 - i] as Duplex;
    if (ended[1 - i] || peer.destroyed) return;
    ended[1 - i] = true;
    peer.push(null);
  };
  for (const i of [0, 1]) {
    sides.push(
      new Duplex({
        read() {},
        write(chunk: Buffer, _enc, cb) {
          const peer = sides[1 - i] as Duplex;
          if (!ended[1 - i] && !peer.destroyed) peer.push(chunk);
          cb();
        },
        final(cb) {
          endPeer(i);
          cb();
        },
        destroy(err, cb) {
          endPeer(i);
          cb(err);
        },
      }),
    );
  }
  return [sides[0] as Duplex, sides[1] as Duplex];
}
