// The host channel's decommission hello (protocol/handshake.ts acceptHostChannelHello, requestDecommission):
// answered with the enclave's outcome, its wait bounded and checked before any work, refused where the enclave
// offers no decommission. (The client port refusing it with real processes: test/e2e-decommission.test.ts.)
import { describe, expect, it } from 'vitest';
import { FramedSocket } from '../protocol/framed-socket.ts';
import { acceptHostChannelHello, decommissionWaitMsMax, requestDecommission, requestMetrics } from '../protocol/handshake.ts';
import { encodeCbor } from '../protocol/cbor.ts';
import { duplexPair } from './helpers/duplex.ts';

function pair(): [FramedSocket, FramedSocket] {
  const [a, b] = duplexPair();
  return [new FramedSocket(a as never, 1 << 20), new FramedSocket(b as never, 1 << 20)];
}

describe('host channel: decommission', () => {
  it('runs the enclave\'s decommission with the asked wait and answers its outcome; metrics still answered', async () => {
    const waits: Array<number | undefined> = [];
    const answers = { metrics: () => ({ f: [] }), decommission: async (w: number | undefined) => (waits.push(w), { retired: true, rangesStillNamingIt: 3 }) };
    let [host, enclave] = pair();
    const served = acceptHostChannelHello(enclave, answers, 5000);
    expect(await requestDecommission(host, 5000, 1500)).toEqual({ retired: true, rangesStillNamingIt: 3 });
    expect(await served).toBe('decommission');
    expect(waits).toEqual([1500]);
    [host, enclave] = pair();
    const m = acceptHostChannelHello(enclave, answers, 5000);
    expect(await requestMetrics(host, 5000)).toEqual({ f: [] });
    expect(await m).toBe('metrics');
  });

  it('refuses a wait out of bounds (PROTOCOL) before any work', async () => {
    let called = 0;
    const answers = { metrics: () => null, decommission: async () => (called++, {}) };
    for (const waitMs of [-1, 1.5, decommissionWaitMsMax + 1, 'soon']) {
      const [host, enclave] = pair();
      const served = acceptHostChannelHello(enclave, answers, 5000);
      host.write(encodeCbor({ t: 'hello', v: 1, mode: 'decommission', nonce: Buffer.alloc(0), waitMs }));
      await expect(served).rejects.toMatchObject({ code: 'PROTOCOL' });
    }
    expect(called).toBe(0);
  });

  it('is refused (FORBIDDEN) where the enclave offers no decommission', async () => {
    const [host, enclave] = pair();
    const served = acceptHostChannelHello(enclave, { metrics: () => null }, 5000);
    void requestDecommission(host, 5000).catch(() => undefined);
    await expect(served).rejects.toMatchObject({ code: 'FORBIDDEN' });
  });
});
