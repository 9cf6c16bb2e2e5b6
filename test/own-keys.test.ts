// A key read off the wire or the host's disk indexes only own properties (issue 16, item 3):
// `constructor`, `__proto__`, `toString` are unknown names, not Object.prototype's members.
import { describe, expect, it } from 'vitest';
import { HostConfigError, parseNodeConfig } from '../enclave/host-config.ts';

describe('own-property lookups of untrusted keys', () => {
  for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf', '__defineGetter__']) {
    it(`host config refuses the setting ${name}`, () => {
      // Written as raw JSON: JSON.parse makes even "__proto__" an own property.
      const bytes = Buffer.from(`{"${name}": "x"}`);
      expect(() => parseNodeConfig(bytes)).toThrow(HostConfigError);
      expect(() => parseNodeConfig(bytes)).toThrow(/unknown setting/);
    });
  }

  it('still accepts a known setting', () => {
    expect(parseNodeConfig(Buffer.from('{"selfAddr": "10.0.0.5:7001"}'))).toEqual({ EKV_SELF_ADDR: '10.0.0.5:7001' });
  });
});
