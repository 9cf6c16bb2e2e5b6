import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { ephemeralRange, pickListenPort } from '../cli/local/ports.ts';

describe('local node ports (outside the ephemeral range, so a restart finds them free)', () => {
  it('reads the kernel range, with the Linux default when it cannot', () => {
    expect(ephemeralRange(() => '40000\t50000\n')).toEqual([40000, 50000]);
    expect(ephemeralRange(() => 'garbage')).toEqual([32768, 60999]);
    expect(ephemeralRange(() => { throw new Error('no /proc'); })).toEqual([32768, 60999]);
  });

  it('picks a free port below the ephemeral range', async () => {
    const [low] = ephemeralRange();
    for (let i = 0; i < 5; i++) {
      const port = await pickListenPort();
      expect(port).toBeGreaterThanOrEqual(20_000);
      expect(port).toBeLessThan(low);
    }
  });

  it('skips a port that is taken and one it was told to exclude', async () => {
    const taken = net.createServer();
    await new Promise<void>((r) => taken.listen({ host: '127.0.0.1', port: 0 }, () => r()));
    const busy = (taken.address() as net.AddressInfo).port;
    try {
      // The range is set so the first draw lands on the busy port, the second on the excluded one.
      const range: [number, number] = [busy + 1 + 1000, 65_000];
      const draws = [busy, busy + 1, busy + 2].map((p) => (p - 20_000) / (range[0] - 20_000));
      let i = 0;
      const port = await pickListenPort({ range, exclude: [busy + 1], random: () => draws[i++]! + 1e-9 });
      expect(port).toBe(busy + 2);
    } finally {
      taken.close();
    }
  });

  it('answers 0 (any port) when there is no room below the range', async () => {
    expect(await pickListenPort({ range: [20_500, 60_999] })).toBe(0);
  });
});
