// Logs: one `svc` field per line, whatever the nesting (issue 14: host lines under `ekv up` carried two).
import { PassThrough, Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { forwardLines } from '../emulator/log-lines.ts';
import { serviceChild, serviceLogger } from '../emulator/service-log.ts';

function sink(): { lines: string[]; dest: Writable } {
  const lines: string[] = [];
  const dest = new Writable({
    write(chunk: Buffer, _e, done) {
      for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(l);
      done();
    },
  });
  return { lines, dest };
}
const svcOf = (line: string) => [...line.matchAll(/"svc":"([^"]*)"/g)].map((m) => m[1]);

describe('service loggers', () => {
  it('every line has exactly one svc: the root\'s, or the nearest service child\'s', async () => {
    const { lines, dest } = sink();
    const root = serviceLogger('ekv-up', 'info', dest);
    root.info('launcher line');
    const host = serviceChild(root, 'host', { node: 'node-1' });
    host.info('host line');
    host.child({ conn: 7 }).warn('nested host line');
    serviceChild(host, 'kms').info('kms line');
    // The enclave's own JSON lines, forwarded by the launcher under an 'enclave' child.
    const stderr = new PassThrough();
    forwardLines(stderr, serviceChild(serviceChild(root, 'emulator', { node: 'node-1' }), 'enclave', { enclave: 'i-1' }), 'stderr');
    stderr.write('{"level":30,"time":1,"svc":"enclave","msg":"enclave ready","id":"ab"}\n');
    stderr.end();
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 20));
    expect(lines.map(svcOf)).toEqual([['ekv-up'], ['host'], ['host'], ['kms'], ['enclave']]);
    expect(JSON.parse(lines[1] as string)).toMatchObject({ node: 'node-1', msg: 'host line' });
  });
});
