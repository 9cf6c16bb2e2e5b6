/**
 * On Nitro the enclave's environment is baked into the image (EIF), so the per-node settings that
 * differ between instances come from the host instead: the host proxy (`ekv host --self-addr
 * --join`) writes them as the blob `node-config.json`, and the enclave reads it through the blob
 * store at boot when its image says EKV_CONFIG_FROM_HOST=1.
 *
 * These settings are untrusted and only say where things are (this node's address, a ring member to
 * join through): a host could lie about them as easily as it can misroute any connection, and every
 * peer and client still verifies every node it reaches. Nothing that widens trust is read here.
 */
import net from 'node:net';
import { createBlobClient } from './seal/blob-client.ts';

export const nodeConfigBlob = 'node-config.json';
export const nodeConfigBytesMax = 4096;
// No "solo": whether a node may serve alone is the image's (imageConfig.singleNode), never the host's.
const keys: Record<string, string> = { selfAddr: 'EKV_SELF_ADDR', join: 'EKV_JOIN', logLevel: 'EKV_LOG_LEVEL' };

export class HostConfigError extends Error {
  readonly code = 'BAD_CONFIG';
}

/** Parse the host's node configuration into environment-style settings (validated later by loadConfig). */
export function parseNodeConfig(bytes: Uint8Array): Record<string, string> {
  if (bytes.length > nodeConfigBytesMax) throw new HostConfigError(`${nodeConfigBlob} is over ${nodeConfigBytesMax} bytes`);
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    throw new HostConfigError(`${nodeConfigBlob} is not JSON`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new HostConfigError(`${nodeConfigBlob} must be an object`);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw)) {
    // Own properties only: `constructor`, `__proto__`, `toString` are unknown settings, not Object's.
    const env = Object.hasOwn(keys, k) ? keys[k] : undefined;
    if (!env) throw new HostConfigError(`${nodeConfigBlob}: unknown setting ${k.slice(0, 40)}`);
    if (typeof v !== 'string' && typeof v !== 'boolean') throw new HostConfigError(`${nodeConfigBlob}: ${k} must be a string`);
    out[env] = typeof v === 'boolean' ? (v ? '1' : '') : v;
  }
  return out;
}

/** Read node-config.json from the host, waiting (bounded) for the host to be up. */
export async function loadNodeConfigFromHost(blobsSocket: string, timeoutMs = 60_000): Promise<Record<string, string>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const blobs = createBlobClient({ connect: () => net.connect(blobsSocket) });
    try {
      const bytes = await blobs.get(nodeConfigBlob);
      if (bytes) return parseNodeConfig(bytes);
    } catch (err) {
      if (err instanceof HostConfigError) throw err;
    } finally {
      blobs.close();
    }
    if (Date.now() > deadline) throw new HostConfigError(`no ${nodeConfigBlob} from the host within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 500));
  }
}
