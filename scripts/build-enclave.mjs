// Bundles the enclave into one file, the "enclave image" whose bytes the
// emulator measures (PCR0) and the Dockerfile copies into the EIF.
// Output: dist/enclave.mjs. Deterministic: same sources + lockfile, same bytes.
import { build } from 'esbuild';
import { mkdirSync } from 'node:fs';

mkdirSync('dist', { recursive: true });
const single = process.env.EKV_PINNED_SINGLE_NODE ?? '';
await buildImage('dist/enclave.mjs', single);
// The same sources as a single-node image (imageConfig.singleNode: it may serve its sealed state alone),
// which `ekv up --nodes 1` runs; only built when the main image is not already one.
if (single !== '1') await buildImage('dist/enclave-single.mjs', '1');

async function buildImage(outfile, singleNode) {
await build({
  entryPoints: ['enclave/main.ts'],
  outfile,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  legalComments: 'none',
  // cbor-x falls back to its pure-JS codec when the native add-on is absent,
  // which it always is inside the image (no node_modules there).
  external: ['cbor-extract', 'koffi'],
  banner: {
    js: "import { createRequire as __ekvCreateRequire } from 'node:module'; const require = __ekvCreateRequire(import.meta.url);",
  },
  // What a production enclave must not take from its host is compiled in, and so measured into PCR0
  // (enclave/image-config.ts): the sealing key's ARN, the access mode, the replication factor.
  define: {
    EKV_PINNED_KMS_KEY: JSON.stringify(process.env.EKV_PINNED_KMS_KEY ?? ''),
    EKV_PINNED_ACCESS_MODE: JSON.stringify(process.env.EKV_PINNED_ACCESS_MODE ?? ''),
    EKV_PINNED_REPLICAS: JSON.stringify(process.env.EKV_PINNED_REPLICAS ?? ''),
    EKV_PINNED_PEER_PCR0S: JSON.stringify(process.env.EKV_PINNED_PEER_PCR0S ?? ''),
    EKV_PINNED_SINGLE_NODE: JSON.stringify(singleNode),
  },
  logLevel: 'warning',
});
}
