/**
 * How every command reports: values on stdout, errors on stderr as
 * `CODE: message` (or one JSON object on stdout with --json), and exit codes
 * 0 (ok), 1 (a refusal or failed operation), 2 (usage).
 */
import { EkvError } from '../protocol/errors.ts';

export const exitFailed = 1;
export const exitUsage = 2;
/**
 * `ekv host` only: the node was decommissioned (it retired for good, docs/consistency.md "Retirement") and
 * will not start again from this data directory; ekv-host.service does not restart on it
 * (RestartPreventExitStatus=3).
 */
export const exitDecommissioned = 3;

export class UsageError extends Error {}

export function errorCode(err: unknown): string {
  if (err instanceof EkvError) return err.reason ? `${err.code}` : err.code;
  if (err instanceof UsageError) return 'USAGE';
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' && /^[A-Z_]+$/.test(code) ? code : 'INTERNAL';
}

/** Run a command body; map any error to the stable output and exit code. */
export async function run(json: boolean | undefined, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    const code = errorCode(err);
    const message = err instanceof Error ? err.message : String(err);
    const reason = err instanceof EkvError ? err.reason : undefined;
    const version = err instanceof EkvError ? err.version : undefined; // a CONFLICT's current version
    if (json) process.stdout.write(JSON.stringify({ ok: false, code, ...(reason ? { reason } : {}), ...(version === undefined ? {} : { version }), message }) + '\n');
    else process.stderr.write(`${code}${reason ? ` (${reason})` : ''}: ${message}\n`);
    process.exitCode = err instanceof UsageError ? exitUsage : exitFailed;
  }
}

/**
 * Resolves with the first SIGINT or SIGTERM (or one of `also`: SIGUSR2 for the node commands' decommission).
 * Long-running commands call it before they start anything,
 * so a signal that arrives while they start (or right after they print their ready line, which a
 * caller may read at once) stops them cleanly instead of killing them.
 */
export function firstSignal(also: readonly NodeJS.Signals[] = []): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', ...also];
    const handlers = signals.map((sig) => [sig, () => on(sig)] as const);
    const on = (sig: NodeJS.Signals) => {
      for (const [s, h] of handlers) process.off(s, h);
      resolve(sig);
    };
    for (const [s, h] of handlers) process.on(s, h);
  });
}
