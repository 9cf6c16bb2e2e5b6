// Local image variants (cli/local/image.ts): the settings that decide trust are compiled into the image
// in the emulated world as on Nitro, so different settings are different measurements (PCR0), the same
// settings the same image; the build refuses a KMS alias as the pin.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { defaultImagePath, defaultImageSettings, localImage, localImageSettings } from '../cli/local/image.ts';
import { measureImage } from '../emulator/measure.ts';
import { localKmsKeyArn } from '../enclave/image-config.ts';

const pcr0 = (path: string) => measureImage(readFileSync(path)).pcr0.toString('hex');

describe('local image variants', () => {
  it('the build script and the enclave agree on the local key ARN', () => {
    expect(readFileSync(join(import.meta.dirname, '..', 'scripts', 'build-enclave.mjs'), 'utf8')).toContain(`'${localKmsKeyArn}'`);
  });

  it('the default settings are the default image; other settings another PCR0, built once and cached', async () => {
    expect(await localImage(defaultImageSettings)).toBe(defaultImagePath);
    const settings = localImageSettings({ nodes: 1, replicas: 1, access: 'open', seal: true });
    const [a, b] = await Promise.all([localImage(settings), localImage({ ...settings })]);
    expect(a).toBe(b);
    expect(a).toMatch(/enclave-[0-9a-f]{12}-[0-9a-f]{12}\.mjs$/);
    expect(pcr0(a)).not.toBe(pcr0(defaultImagePath));
    const closed = await localImage({ ...settings, accessMode: 'closed' });
    expect(pcr0(closed)).not.toBe(pcr0(a));
    expect(readFileSync(a, 'utf8')).toContain(localKmsKeyArn);
  }, 120_000);

  it('the build refuses an alias as the pinned key', async () => {
    const run = promisify(execFile)(process.execPath, ['scripts/build-enclave.mjs', '--out', '/tmp/ekv-never.mjs'], {
      env: { ...process.env, EKV_PINNED_KMS_KEY: 'arn:aws:kms:us-east-1:111122223333:alias/ekv-seal' },
    });
    await expect(run).rejects.toThrow(/must be a KMS key ARN/);
  });
});
