// Forwards an enclave's stdout/stderr to the launcher's pino logger. The
// enclave writes pino JSON lines to stderr; each is re-logged at its own level
// under the enclave's bindings. Lines are cut at logLineBytesMax, so a chatty
// or hostile enclave cannot make the launcher buffer without bound.
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { logLineBytesMax } from './tee-constants.ts';

const levels: Record<number, 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'> = {
  10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal',
};

/** What an error or fatal line of the enclave said (its message, and its err's), for a launcher that gives up. */
export type OnErrorLine = (text: string) => void;

export function forwardLines(stream: Readable, logger: Logger, source: 'stdout' | 'stderr', onError?: OnErrorLine): void {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const emit = (line: string): void => logLine(logger, source, line, onError);
  stream.on('data', (chunk: Buffer) => {
    let start = 0;
    for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, start)) {
      pending.push(chunk.subarray(start, nl));
      emit(Buffer.concat(pending).toString('utf8'));
      pending = [];
      pendingBytes = 0;
      start = nl + 1;
    }
    const rest = chunk.subarray(start);
    if (rest.length === 0) return;
    // Keep at most logLineBytesMax of an unfinished line; emit it cut.
    pending.push(rest);
    pendingBytes += rest.length;
    if (pendingBytes >= logLineBytesMax) {
      emit(Buffer.concat(pending).subarray(0, logLineBytesMax).toString('utf8') + '…');
      pending = [];
      pendingBytes = 0;
    }
  });
  stream.on('end', () => {
    if (pendingBytes > 0) emit(Buffer.concat(pending).toString('utf8'));
  });
}

function logLine(logger: Logger, source: string, line: string, onError?: OnErrorLine): void {
  if (line.length === 0) return;
  const record = parseRecord(line);
  if (!record) {
    logger.info({ source }, line);
    return;
  }
  // Time, pid and service name are the launcher's own bindings; the rest is kept.
  const { level, msg, time: _time, pid: _pid, hostname: _hostname, svc: _svc, ...fields } = record;
  const method = levels[typeof level === 'number' ? level : 30] ?? 'info';
  if (onError && typeof level === 'number' && level >= 50) {
    const err = fields.err as { message?: unknown; code?: unknown } | undefined;
    const detail = err && typeof err.message === 'string' ? `: ${typeof err.code === 'string' ? `${err.code} ` : ''}${err.message}` : '';
    onError(`${typeof msg === 'string' ? msg : 'error'}${detail}`.slice(0, 500));
  }
  logger[method]({ source, ...fields }, typeof msg === 'string' ? msg : '');
}

function parseRecord(line: string): Record<string, unknown> | null {
  if (line[0] !== '{') return null;
  try {
    const value: unknown = JSON.parse(line);
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
