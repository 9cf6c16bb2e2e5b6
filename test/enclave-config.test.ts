// What an enclave takes from its untrusted host, and what it takes from its own image.
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../enclave/config.ts';
import { parseNodeConfig, nodeConfigBytesMax } from '../enclave/host-config.ts';
import { kmsKeyArnRegion, localKmsKeyArn } from '../enclave/image-config.ts';
import { sealConfigFrom } from '../enclave/persist.ts';

describe('sealing settings', () => {
  const local = { production: false, rootPem: 'ROOT' };
  it('on Nitro (production) refuses an image that pins no real KMS key, whatever the host says', () => {
    // The test process is not a bundle: it has the default image's settings (the local key ARN).
    const env = { EKV_KMS_KEY_ID: 'arn:aws:kms:us-east-1:111122223333:key/11111111-2222-3333-4444-555555555555', EKV_KMS_ENDPOINT: 'http://evil.example:80' };
    expect(() => sealConfigFrom(env, { production: true, rootPem: '' })).toThrow(/pins no KMS key ARN/);
  });

  it('under the emulator too, the key is the image\'s: the host names only where KMS is', () => {
    const c = sealConfigFrom({ EKV_KMS_KEY_ID: 'arn:aws:kms:us-east-1:222233334444:key/11111111-2222-3333-4444-555555555555', EKV_KMS_ENDPOINT: 'http://127.0.0.1:4000', EKV_KMS_ADDR: '127.0.0.1:4000' }, local);
    expect(c).toMatchObject({ keyArn: localKmsKeyArn, endpoint: 'https://kms.us-east-1.amazonaws.com', kmsAddr: '127.0.0.1:4000', tlsRoots: ['ROOT'] });
    expect(sealConfigFrom({}, local)).toMatchObject({ kmsAddr: 'kms.us-east-1.amazonaws.com:443' });
    expect(() => sealConfigFrom({ EKV_KMS_ADDR: 'file:///etc/passwd' }, local)).toThrow(/host:port/);
  });

  it('derives the KMS region from a key ARN only (an alias is not a pin)', () => {
    expect(kmsKeyArnRegion('arn:aws:kms:eu-west-1:111122223333:key/11111111-2222-3333-4444-555555555555')).toBe('eu-west-1');
    expect(kmsKeyArnRegion('arn:aws:kms:us-east-2:111122223333:alias/ekv-seal')).toBeNull();
    expect(kmsKeyArnRegion('alias/ekv-seal')).toBeNull();
    expect(kmsKeyArnRegion('arn:aws:kms:us-east-1:111122223333:key/x; rm -rf /')).toBeNull();
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
