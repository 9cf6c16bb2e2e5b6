// Bundles the enclave into one file, the "enclave image" whose bytes the
// emulator measures (PCR0) and the Dockerfile copies into the EIF.
// Deterministic: same sources + lockfile + settings, same bytes.
//
//   node scripts/build-enclave.mjs                       -> dist/enclave.mjs (settings from EKV_PINNED_*, or defaults)
//   node scripts/build-enclave.mjs --out F --settings J  -> F, with the settings of the JSON object J
//                                                           (cli/local/image.ts builds local variants so)
//
// The settings are what a production enclave must not take from its host (enclave/image-config.ts);
// being compiled in, they are measured into PCR0.
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';

// Keep equal to localKmsKeyArn in enclave/image-config.ts (test/image-variant.test.ts checks it).
const localKmsKeyArn = 'arn:aws:kms:us-east-1:111122223333:key/0e4b1000-0000-4000-8000-00000000e4b1';
const keyArnRe = /^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\/([0-9a-f-]{36}|mrk-[0-9a-f]{32})$/;

const { values } = parseArgs({ options: { out: { type: 'string' }, settings: { type: 'string' } } });
const given = values.settings ? JSON.parse(values.settings) : null;
const env = process.env;
const settings = given
  ? {
      kmsKeyArn: given.kmsKeyArn ?? '',
      accessMode: given.accessMode ?? '',
      replicas: given.replicas === undefined ? '' : String(given.replicas),
      peerPcr0s: (given.peerPcr0Allowlist ?? []).join(','),
      singleNode: given.singleNode ? '1' : '',
      ringPeers: given.ringPeers ? '1' : '',
      recoveryMembers: (given.recoveryMembers ?? []).join(','),
      recoveryThreshold: given.recoveryThreshold === undefined ? '' : String(given.recoveryThreshold),
      testUnsafeSkipKeyIdCheck: given.testUnsafeSkipKeyIdCheck ? '1' : '',
      testHostMayFound: given.testHostMayFound ? '1' : '',
      testNoRingCheck: given.testNoRingCheck ? '1' : '',
      testAnyPullSource: given.testAnyPullSource ? '1' : '',
    }
  : {
      kmsKeyArn: env.EKV_PINNED_KMS_KEY ?? localKmsKeyArn,
      accessMode: env.EKV_PINNED_ACCESS_MODE ?? '',
      replicas: env.EKV_PINNED_REPLICAS ?? '',
      peerPcr0s: env.EKV_PINNED_PEER_PCR0S ?? '',
      singleNode: env.EKV_PINNED_SINGLE_NODE ?? '',
      ringPeers: env.EKV_PINNED_RING_PEERS ?? '',
      recoveryMembers: env.EKV_PINNED_RECOVERY_MEMBERS ?? '',
      recoveryThreshold: env.EKV_PINNED_RECOVERY_THRESHOLD ?? '',
      // test seams, never from the environment
      testUnsafeSkipKeyIdCheck: '',
      testHostMayFound: '',
      testNoRingCheck: '',
      testAnyPullSource: '',
    };
// An alias can be repointed by a key administrator (UpdateAlias): only a key ARN pins a key.
if (settings.kmsKeyArn !== '' && !keyArnRe.test(settings.kmsKeyArn)) {
  throw new Error(`EKV_PINNED_KMS_KEY must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID), not ${settings.kmsKeyArn}`);
}
if (!['', 'open', 'closed'].includes(settings.accessMode)) throw new Error('access mode must be open or closed');
if (settings.replicas !== '' && !/^[1-8]$/.test(settings.replicas)) throw new Error('replicas must be 1..8');
if (settings.recoveryMembers !== '' && !/^(ekv1[a-z2-7]{60,61})(,ekv1[a-z2-7]{60,61}){0,15}$/.test(settings.recoveryMembers)) {
  throw new Error('recovery members must be 1..16 comma-separated principals (ekv1...)');
}
if (settings.recoveryThreshold !== '' && !/^([1-9]|1[0-6])$/.test(settings.recoveryThreshold)) throw new Error('recovery threshold must be 1..16');

const outfile = values.out ?? 'dist/enclave.mjs';
mkdirSync(dirname(outfile), { recursive: true });
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
  define: {
    EKV_PINNED_KMS_KEY: JSON.stringify(settings.kmsKeyArn),
    EKV_PINNED_ACCESS_MODE: JSON.stringify(settings.accessMode),
    EKV_PINNED_REPLICAS: JSON.stringify(settings.replicas),
    EKV_PINNED_PEER_PCR0S: JSON.stringify(settings.peerPcr0s),
    EKV_PINNED_SINGLE_NODE: JSON.stringify(settings.singleNode),
    EKV_PINNED_RING_PEERS: JSON.stringify(settings.ringPeers),
    EKV_PINNED_RECOVERY_MEMBERS: JSON.stringify(settings.recoveryMembers),
    EKV_PINNED_RECOVERY_THRESHOLD: JSON.stringify(settings.recoveryThreshold),
    EKV_TEST_UNSAFE_SKIP_KEYID_CHECK: JSON.stringify(settings.testUnsafeSkipKeyIdCheck),
    EKV_TEST_HOST_MAY_FOUND: JSON.stringify(settings.testHostMayFound),
    EKV_TEST_NO_RING_CHECK: JSON.stringify(settings.testNoRingCheck),
    EKV_TEST_ANY_PULL_SOURCE: JSON.stringify(settings.testAnyPullSource),
  },
  logLevel: 'warning',
});

// The default image: local variants built from other sources (cli/local/image.ts names them
// enclave-<default image hash>-<settings hash>.mjs) are stale now.
if (values.out === undefined) {
  const base = createHash('sha256').update(readFileSync(outfile)).digest('hex').slice(0, 12);
  for (const name of readdirSync(dirname(outfile))) {
    if (/^enclave-[0-9a-f]{12}-[0-9a-f]{12}\.mjs$/.test(name) && !name.startsWith(`enclave-${base}-`)) rmSync(join(dirname(outfile), name), { force: true });
    if (/^enclave-[0-9a-f]{16}\.mjs$/.test(name)) rmSync(join(dirname(outfile), name), { force: true }); // older naming
  }
}
