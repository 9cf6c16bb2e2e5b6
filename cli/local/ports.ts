/**
 * Listening ports for local nodes, chosen outside the kernel's ephemeral range.
 *
 * A node keeps its ports across restarts (the cluster file names them). A port the kernel handed out as
 * "any free port" (listen on 0) lies in the ephemeral range, the same range it draws the local port of every
 * outgoing connection from: once the node stops, any process's next connection can take that port and hold it
 * for as long as it lives, and the restarted node cannot listen (EADDRINUSE). Ports below the range are never
 * handed out implicitly, so a restart finds its port free unless someone chose it on purpose.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';

/** The lowest port we choose: clear of the well-known and most registered service ports (Redis 6379, 8080, ...). */
const floorPort = 20_000;
const attemptsMax = 32;

/** The kernel's ephemeral range [low, high]; Linux's default when it cannot be read. */
export function ephemeralRange(read: () => string = () => readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')): [number, number] {
  try {
    const [low, high] = read().trim().split(/\s+/).map(Number);
    if (Number.isInteger(low) && Number.isInteger(high) && low! >= 1 && high! <= 65_535 && low! <= high!) return [low!, high!];
  } catch {
    // not Linux, or no /proc: fall through
  }
  return [32_768, 60_999];
}

function canListen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', () => resolve(false));
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve(true)));
  });
}

/**
 * A free port on `host` below the ephemeral range, chosen at random (two rings started at once rarely pick the
 * same one; the listener's own EADDRINUSE retry covers the rest). 0 (any port) when there is no room below the
 * range or no free port was found.
 */
export async function pickListenPort(o: { host?: string; exclude?: readonly number[]; random?: () => number; range?: [number, number] } = {}): Promise<number> {
  const host = o.host ?? '127.0.0.1';
  const random = o.random ?? Math.random;
  const range = o.range ?? ephemeralRange();
  const high = range[0] - 1;
  if (high - floorPort < 1000) return 0;
  for (let i = 0; i < attemptsMax; i++) {
    const port = floorPort + Math.floor(random() * (high - floorPort + 1));
    if (!(o.exclude ?? []).includes(port) && (await canListen(host, port))) return port;
  }
  return 0;
}
