// What a node's host says about its processes (/healthz): untrusted, shown to the operator as the host's word.
// A hostile host answers with anything: the body is read up to healthzBytesMax (a longer one is dropped, never
// buffered whole), and only integer process ids are kept (no strings reach a terminal or a page).

/** The largest /healthz body read; a real one is a few hundred bytes. */
export const healthzBytesMax = 16 * 1024;

export interface HostPids {
  host: number | null;
  emulator: number | null;
  enclave: number | null;
}

const pidOf = (v: unknown): number | null => (typeof v === 'number' && Number.isSafeInteger(v) && v > 0 ? v : null);

/** The host's process ids from `${base}/healthz`, or null when it cannot be read (down, slow, too long, malformed). */
export async function fetchHostPids(base: string, timeoutMs: number): Promise<HostPids | null> {
  try {
    const r = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(timeoutMs) });
    if (!r.body) return null;
    const chunks: Uint8Array[] = [];
    let n = 0;
    for await (const c of r.body as AsyncIterable<Uint8Array>) {
      n += c.length;
      if (n > healthzBytesMax) return null; // leaving the loop cancels the body's stream
      chunks.push(c);
    }
    const j = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
    if (typeof j !== 'object' || j === null) return null;
    const o = j as Record<string, unknown>;
    const p = typeof o.pids === 'object' && o.pids !== null ? (o.pids as Record<string, unknown>) : {};
    return { host: pidOf(p.host), emulator: pidOf(p.emulator), enclave: pidOf(p.enclave) ?? pidOf(o.enclavePid) };
  } catch {
    return null;
  }
}
