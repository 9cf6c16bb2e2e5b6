// The outbound relay's allowlist (host/outbound-policy.ts): CIDRs matched as addresses, not string prefixes.
import { describe, expect, it } from 'vitest';
import { CidrError, cidrPolicy, outboundCidrsDefault, parseCidr } from '../host/outbound-policy.ts';

describe('outbound CIDR allowlist', () => {
  const allow = cidrPolicy(outboundCidrsDefault);

  it('admits the private ranges peers live in, the AWS default VPC included', () => {
    for (const ip of ['10.0.0.5', '10.255.255.255', '172.16.0.1', '172.31.44.7', '172.31.0.1', '192.168.1.1', '127.0.0.1']) {
      expect([ip, allow(ip, 7001)]).toEqual([ip, true]);
    }
  });

  it('refuses public addresses, near misses of a string prefix, DNS names and other loopbacks', () => {
    for (const h of ['172.32.0.1', '172.15.255.255', '100.64.0.1', '11.0.0.1', '8.8.8.8', '169.254.169.254',
      '1.10.0.0', '192.169.0.1', '10.example.com', 'kms.us-east-1.amazonaws.com', '127.0.0.2', '::1', '']) {
      expect([h, allow(h, 7001)]).toEqual([h, false]);
    }
  });

  it('matches IPv4-mapped IPv6 literals as the IPv4 address they carry', () => {
    expect(allow('::ffff:10.1.2.3', 7001)).toBe(true);
    expect(allow('::ffff:8.8.8.8', 7001)).toBe(false);
  });

  it('takes single addresses and IPv6 prefixes; refuses what is not a CIDR', () => {
    const p = cidrPolicy(['203.0.113.7', 'fd00::/8']);
    expect(p('203.0.113.7', 1)).toBe(true);
    expect(p('203.0.113.8', 1)).toBe(false);
    expect(p('fd12::1', 1)).toBe(true);
    for (const bad of ['10.', '172.16.', '10.0.0.0/33', '10.0.0.0/8/1', 'example.com/8', '10.0.0.0/-1', '::/129', '']) {
      expect(() => parseCidr(bad)).toThrow(CidrError);
    }
  });
});
