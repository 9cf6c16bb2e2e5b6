// The real Nitro attestation documents in test/fixtures/nitro/, with their manifest entries.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const fixtureDir = fileURLToPath(new URL('../fixtures/nitro/', import.meta.url));

export interface NitroFixture {
  file: string;
  timestampMs: number;
  chainValidFromS: number;
  chainValidToS: number;
  moduleId: string;
  debug: boolean;
  pcrCount: number;
  pcr0: string;
  pcr1: string;
  pcr2: string;
  publicKeyBytes: number | null;
  userDataBytes: number | null;
  nonceBytes: number | null;
  /** The document's bytes. */
  bytes: Uint8Array;
}

export function loadFixtures(): NitroFixture[] {
  const manifest = JSON.parse(readFileSync(`${fixtureDir}manifest.json`, 'utf8')) as Array<Omit<NitroFixture, 'bytes'>>;
  return manifest.map((m) => ({ ...m, bytes: new Uint8Array(readFileSync(`${fixtureDir}${m.file}`)) }));
}

export const awsRootPem = (): string => readFileSync(`${fixtureDir}root.pem`, 'utf8');
