/**
 * Where the enclave's outbound relay may connect: IPv4 or IPv6 literals inside the operator's CIDRs, matched
 * as addresses (node:net BlockList), never as string prefixes. A DNS name never matches: the relay would
 * resolve it, and a name such as 10.example.com must not pass for 10.0.0.0/8.
 *
 * Not a trust decision (the enclave authenticates every peer by attestation); it keeps a compromised or
 * buggy enclave build from using the host as an open proxy into whatever the instance can reach.
 */
import net from 'node:net';
import type { OutboundPolicy } from './relay.ts';

/**
 * Private ranges a ring's peers live in: RFC 1918 (which covers the AWS default VPC, 172.31.0.0/16, and
 * 10.0.0.0/16 of a new CDK VPC) and loopback.
 */
export const outboundCidrsDefault = ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '127.0.0.1/32'];

export class CidrError extends Error {
  readonly code = 'BAD_CIDR';
}

/** `a.b.c.d/n`, `a.b.c.d` (= /32), or an IPv6 `x::y/n`; anything else is a CidrError. */
export function parseCidr(text: string): { address: string; prefix: number; type: 'ipv4' | 'ipv6' } {
  const [address = '', bits, ...rest] = text.trim().split('/');
  const version = net.isIP(address);
  if (version === 0 || rest.length > 0) throw new CidrError(`${text.slice(0, 60)}: not an IP address or CIDR`);
  const max = version === 4 ? 32 : 128;
  const prefix = bits === undefined ? max : /^\d{1,3}$/.test(bits) ? Number(bits) : NaN;
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) throw new CidrError(`${text.slice(0, 60)}: prefix length must be 0..${max}`);
  return { address, prefix, type: version === 4 ? 'ipv4' : 'ipv6' };
}

export function cidrPolicy(cidrs: readonly string[]): OutboundPolicy {
  const list = new net.BlockList();
  for (const c of cidrs) {
    const p = parseCidr(c);
    list.addSubnet(p.address, p.prefix, p.type);
  }
  return (host) => {
    const version = net.isIP(host);
    if (version === 0) return false;
    return list.check(host, version === 4 ? 'ipv4' : 'ipv6');
  };
}
