#!/usr/bin/env node
// Reads the JSON that `nitro-cli build-enclave` prints on stdout and writes the PCRs file the
// deployment reads: { "PCR0": "<96 hex>", "PCR1": "...", "PCR2": "...", "KmsKeyArn": "..." }, lowercase;
// KmsKeyArn is EKV_PINNED_KMS_KEY, the key ARN build-eif.sh compiled into the image, and Replicas
// EKV_PINNED_REPLICAS, its replication factor (each when set).
// Usage: node pcrs-from-build.mjs <build-enclave.json> <pcrs.json>
import { readFileSync, writeFileSync } from 'node:fs';

const [input, output] = process.argv.slice(2);
if (!input || !output) {
  console.error('usage: pcrs-from-build.mjs <build-enclave.json> <pcrs.json>');
  process.exit(2);
}
let parsed;
try {
  parsed = JSON.parse(readFileSync(input, 'utf8'));
} catch (err) {
  console.error(`pcrs-from-build: ${input} is not the JSON nitro-cli prints: ${err.message}`);
  process.exit(1);
}
const measurements = parsed?.Measurements;
if (!measurements || typeof measurements !== 'object') {
  console.error(`pcrs-from-build: ${input} has no Measurements object`);
  process.exit(1);
}
const pcrs = {};
for (const name of ['PCR0', 'PCR1', 'PCR2']) {
  const value = typeof measurements[name] === 'string' ? measurements[name].toLowerCase() : '';
  if (!/^[0-9a-f]{96}$/.test(value) || /^0+$/.test(value)) {
    console.error(`pcrs-from-build: Measurements.${name} is not a non-zero SHA-384 in hex`);
    process.exit(1);
  }
  pcrs[name] = value;
}
const keyArn = process.env.EKV_PINNED_KMS_KEY;
if (keyArn) {
  if (!/^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\/([0-9a-f-]{36}|mrk-[0-9a-f]{32})$/.test(keyArn)) {
    console.error('pcrs-from-build: EKV_PINNED_KMS_KEY is not a KMS key ARN');
    process.exit(1);
  }
  pcrs.KmsKeyArn = keyArn;
}
const replicas = process.env.EKV_PINNED_REPLICAS;
if (replicas) {
  if (!/^[1-8]$/.test(replicas)) {
    console.error('pcrs-from-build: EKV_PINNED_REPLICAS is not 1..8');
    process.exit(1);
  }
  pcrs.Replicas = Number(replicas);
}
const access = process.env.EKV_PINNED_ACCESS_MODE;
if (access) {
  if (access !== 'open' && access !== 'closed') {
    console.error('pcrs-from-build: EKV_PINNED_ACCESS_MODE is not open or closed');
    process.exit(1);
  }
  // Recorded so that a rebuild (eif-verify.mjs) compiles the same settings in.
  pcrs.AccessMode = access;
}
const ringPeers = process.env.EKV_PINNED_RING_PEERS;
if (ringPeers !== undefined && ringPeers !== '') {
  if (ringPeers !== '0' && ringPeers !== '1') {
    console.error('pcrs-from-build: EKV_PINNED_RING_PEERS is not 0 or 1');
    process.exit(1);
  }
  pcrs.RingPeers = ringPeers === '1';
}
writeFileSync(output, `${JSON.stringify(pcrs, null, 2)}\n`);
console.log(`PCR0 ${pcrs.PCR0}`);
