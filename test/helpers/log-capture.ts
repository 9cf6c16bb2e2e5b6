/** A pino logger whose JSON lines are kept in memory, so tests can look for what the enclaves logged. */
import { Writable } from 'node:stream';
import pino from 'pino';

export function captureLogs(level = 'info'): { logs: Array<Record<string, unknown>>; logger: pino.Logger } {
  const logs: Array<Record<string, unknown>> = [];
  const logger = pino(
    { level, base: { svc: 'test' } },
    new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString('utf8').split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
        done();
      },
    }),
  );
  return { logs, logger };
}
