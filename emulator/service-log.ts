/**
 * One `svc` field per log line. pino appends a child's bindings after its parent's, so a child bound with
 * `svc` under a root whose base has `svc` printed the field twice. Here `svc` is not a binding: the root's
 * mixin writes the nearest logger's service name, which serviceChild sets (children inherit it).
 */
import pino, { type DestinationStream, type Logger } from 'pino';

const svcKey = Symbol.for('ekv.svc');
type WithSvc = Logger & { [svcKey]?: string };

/** A root logger for one process: JSON on `dest`, each line with `svc` (the nearest serviceChild's, else `svc`). */
export function serviceLogger(svc: string, level: string, dest: DestinationStream = pino.destination(2)): Logger {
  const root = pino({ level, mixin: (_obj, _level, logger) => ({ svc: (logger as WithSvc)[svcKey] ?? svc }) }, dest) as WithSvc;
  root[svcKey] = svc;
  return root;
}

/** A child for another service in the same process (the host, the emulator, the KMS, an enclave's forwarded lines). */
export function serviceChild(logger: Logger, svc: string, bindings: Record<string, unknown> = {}): Logger {
  if ((logger as WithSvc)[svcKey] === undefined) return logger.child({ svc, ...bindings });
  const child = logger.child(bindings) as WithSvc;
  child[svcKey] = svc;
  return child;
}
