// What an enclave takes from its untrusted host, and what it takes from its own image.
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../enclave/config.ts';
import { parseNodeConfig, nodeConfigBytesMax } from '../enclave/host-config.ts';
import { kmsArnRegion } from '../enclave/image-config.ts';
import { sealConfigFrom } from '../enclave/persist.ts';

describe('sealing settings', () => {
  it('on Nitro (production) refuses to run without a KMS key pinned in the image, whatever the host says', () => {
    // The test process is not a bundle: no EKV_PINNED_KMS_KEY is compiled in.
    const env = { EKV_KMS_KEY_ID: 'arn:aws:kms:us-east-1:111122223333:key/11111111-2222-3333-4444-555555555555', EKV_KMS_ENDPOINT: 'http://evil.example:80' };
    expect(() => sealConfigFrom(env, true)).toThrow(/pinned KMS key/);
  });

  it('under the emulator honours the environment, and refuses a malformed endpoint', () => {
    expect(sealConfigFrom({}, false)).toBeNull();
    const c = sealConfigFrom({ EKV_KMS_KEY_ID: 'alias/x', EKV_KMS_ENDPOINT: 'http://127.0.0.1:4000' }, false);
    expect(c).toMatchObject({ keyId: 'alias/x', endpoint: 'http://127.0.0.1:4000' });
    expect(() => sealConfigFrom({ EKV_KMS_KEY_ID: 'k', EKV_KMS_ENDPOINT: 'file:///etc/passwd' }, false)).toThrow();
  });

  it('derives the KMS region from a key or alias ARN only', () => {
    expect(kmsArnRegion('arn:aws:kms:eu-west-1:111122223333:key/11111111-2222-3333-4444-555555555555')).toBe('eu-west-1');
    expect(kmsArnRegion('arn:aws:kms:us-east-2:111122223333:alias/ekv-seal')).toBe('us-east-2');
    expect(kmsArnRegion('alias/ekv-seal')).toBeNull();
    expect(kmsArnRegion('arn:aws:kms:us-east-1:111122223333:key/x; rm -rf /')).toBeNull();
  });
});

describe('per-node settings from the host (node-config.json)', () => {
  const bytes = (x: unknown) => Buffer.from(JSON.stringify(x));

  it('maps the known settings and loadConfig validates them', () => {
    const env = parseNodeConfig(bytes({ selfAddr: '10.0.0.5:7001', join: '10.0.0.4:7001' }));
    expect(env).toEqual({ EKV_SELF_ADDR: '10.0.0.5:7001', EKV_JOIN: '10.0.0.4:7001' });
    expect(loadConfig(env)).toMatchObject({ selfAddr: '10.0.0.5:7001', join: '10.0.0.4:7001' });
    expect(() => loadConfig(parseNodeConfig(bytes({ selfAddr: 'not an address' })))).toThrow(/EKV_SELF_ADDR/);
  });

  it('refuses unknown settings (nothing that widens trust can come this way), wrong types, non-JSON and oversize', () => {
    expect(() => parseNodeConfig(bytes({ accessMode: 'open' }))).toThrow(/unknown setting/);
    expect(() => parseNodeConfig(bytes({ EKV_KMS_KEY_ID: 'x' }))).toThrow(/unknown setting/);
    // Whether a node may serve alone is the image's (imageConfig.singleNode), never the host's (issue 10).
    expect(() => parseNodeConfig(bytes({ join: '', solo: true }))).toThrow(/unknown setting solo/);
    expect(() => parseNodeConfig(bytes({ selfAddr: 7 }))).toThrow(/must be a string/);
    expect(() => parseNodeConfig(bytes(['a']))).toThrow(/object/);
    expect(() => parseNodeConfig(Buffer.from('{'))).toThrow(/not JSON/);
    expect(() => parseNodeConfig(Buffer.alloc(nodeConfigBytesMax + 1, 0x20))).toThrow(/over/);
  });
});
