// Measurement of an enclave image, the emulator's counterpart of nitro-cli's
// PCRs. Every register starts at 48 zero bytes and is extended, part by part,
// with the Nitro rule PCR = SHA-384(PCR || SHA-384(part)).
//
// What each register covers in the emulator (compare Nitro: PCR0 the whole
// EIF, PCR1 the kernel + boot ramdisk, PCR2 the application):
// - PCR1, the "kernel + init": the runtime descriptor below, i.e. the emulator
//   protocol version and the Node major version the launcher runs the image
//   with. Like Nitro's PCR1 it is shared by every image on the same runtime.
// - PCR2, the application: the image file's bytes.
// - PCR0, everything launched: extended with the runtime descriptor, then the
//   image bytes, so it changes whenever PCR1 or PCR2 does.
// PCR3..15 are 48 zero bytes (Nitro puts IAM role and instance hashes in PCR3
// and PCR4; locally there are none). Changing one byte of the image changes
// PCR0 and PCR2, never PCR1.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { pcrBytes, pcrCount } from './tee-constants.ts';

/** Bumped whenever the launcher changes what the enclave can observe or ask of it. */
export const emulatorProtocolVersion = 1;

export interface ImageMeasurement {
  pcr0: Buffer;
  pcr1: Buffer;
  pcr2: Buffer;
}

/** The emulated "kernel + init": what the launcher runs an image with. */
export function runtimeDescriptor(nodeVersion: string = process.versions.node): Buffer {
  const major = nodeVersion.split('.')[0];
  assert.ok(major && /^\d+$/.test(major), `bad node version ${nodeVersion}`);
  return Buffer.from(`enclave-kv emulator/${emulatorProtocolVersion} node/${major}`, 'utf8');
}

/** PCR = SHA-384(previous || SHA-384(part)). */
export function extendPcr(previous: Uint8Array, part: Uint8Array): Buffer {
  assert.equal(previous.length, pcrBytes);
  const partDigest = createHash('sha384').update(part).digest();
  return createHash('sha384').update(previous).update(partDigest).digest();
}

export function measureImage(bytes: Uint8Array, runtime: Uint8Array = runtimeDescriptor()): ImageMeasurement {
  const zero = Buffer.alloc(pcrBytes);
  const pcr1 = extendPcr(zero, runtime);
  const pcr2 = extendPcr(zero, bytes);
  const pcr0 = extendPcr(extendPcr(zero, runtime), bytes);
  return { pcr0, pcr1, pcr2 };
}

/** The 16 registers a document reports: PCR0..2 measured, the rest zero unless given. */
export function pcrMap(measured: ImageMeasurement, extra: ReadonlyMap<number, Uint8Array> = new Map()): Map<number, Uint8Array> {
  const pcrs = new Map<number, Uint8Array>();
  for (let i = 0; i < pcrCount; i++) pcrs.set(i, Buffer.alloc(pcrBytes));
  pcrs.set(0, measured.pcr0).set(1, measured.pcr1).set(2, measured.pcr2);
  for (const [index, value] of extra) {
    assert.ok(Number.isInteger(index) && index >= 3 && index < pcrCount, `PCR${index} cannot be set`);
    assert.equal(value.length, pcrBytes);
    pcrs.set(index, value);
  }
  return pcrs;
}
