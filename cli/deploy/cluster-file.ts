/**
 * The client cluster file of a deployment on AWS, from what the deployment itself says: the CloudFormation
 * stack's outputs (`cdk deploy --outputs-file outputs.json`: node addresses, ports, the PCR0s the release
 * names, the key ARNs) and the release's pcrs.json (written by build-eif.sh, or better by the client's own
 * rebuild: `npm run eif:verify`). The trust section names the AWS Nitro root only and the image's PCRs; a
 * client still uses it only on `--trust-cluster-file` (docs/client-trust.md), so a file handed over by the
 * operator gives addresses, and the client pins its own PCR0.
 *
 * During a roll (the stack outputs Pcr0Next) the file must trust both images, so the next image's pcrs.json
 * is required: a client pinned to one of them would be refused by the nodes already moved.
 */
import { isIP } from 'node:net';
import type { ClusterFile } from '../../client/cluster.ts';
import { AWS_NITRO_ROOT_PEM } from '../../verifier/index.ts';

export class ClusterFileError extends Error {
  readonly code = 'BAD_DEPLOYMENT';
}

export interface ImagePcrs {
  PCR0: string;
  PCR1?: string;
  PCR2?: string;
  KmsKeyArn?: string;
  Replicas?: number;
}

export interface ClusterFromStack {
  /** The JSON `cdk deploy --outputs-file` writes: { "<stack>": { "<output>": "<value>" } }. */
  outputs: unknown;
  stackName?: string;
  pcrs: ImagePcrs;
  /** The next image's pcrs.json, required while the stack is mid-roll (it outputs Pcr0Next). */
  nextPcrs?: ImagePcrs;
  /** Which address clients reach the nodes at (default private: clients inside the VPC or peered). */
  address?: 'private' | 'public';
  /** The ring id, as `ekv status` shows it once the ring is founded (recommended). */
  ringId?: string;
}

const pcrRe = /^[0-9a-f]{96}$/;
export const stackNodesMax = 64;

function stackOutputs(outputs: unknown, stackName: string | undefined): Record<string, string> {
  if (typeof outputs !== 'object' || outputs === null) throw new ClusterFileError('outputs: not a JSON object');
  const stacks = Object.entries(outputs as Record<string, unknown>).filter(([, v]) => typeof v === 'object' && v !== null && 'Node0PrivateIp' in v);
  const chosen = stackName ? stacks.filter(([k]) => k === stackName) : stacks;
  if (chosen.length !== 1) {
    throw new ClusterFileError(stackName ? `outputs: no ring stack named ${stackName}` : `outputs: ${chosen.length} ring stacks; name one with --stack`);
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(chosen[0]?.[1] as Record<string, unknown>)) if (typeof v === 'string') out[k] = v;
  return out;
}

function port(o: Record<string, string>, key: string): number {
  const n = Number(o[key]);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new ClusterFileError(`outputs: ${key} is not a port`);
  return n;
}

function pcr(v: string | undefined, what: string): string {
  const s = (v ?? '').toLowerCase();
  if (!pcrRe.test(s) || /^0+$/.test(s)) throw new ClusterFileError(`${what}: 96 hex digits, not all zero`);
  return s;
}

export function clusterFromStack(i: ClusterFromStack): ClusterFile {
  const o = stackOutputs(i.outputs, i.stackName);
  if (o.SealingKeyArn !== undefined && o.PinnedKmsKeyArn !== undefined && o.SealingKeyArn !== o.PinnedKmsKeyArn) {
    throw new ClusterFileError(`the stack's key ${o.SealingKeyArn} is not the one its image pins (${o.PinnedKmsKeyArn}): the enclaves cannot start`);
  }
  const current = pcr(i.pcrs.PCR0, 'pcrs.json PCR0');
  if (pcr(o.Pcr0, 'outputs Pcr0') !== current) throw new ClusterFileError(`the stack runs PCR0 ${o.Pcr0}, not this pcrs.json's ${current}`);
  const next = o.Pcr0Next !== undefined ? pcr(o.Pcr0Next, 'outputs Pcr0Next') : null;
  if (next !== null && (!i.nextPcrs || pcr(i.nextPcrs.PCR0, 'next pcrs.json PCR0') !== next)) {
    throw new ClusterFileError(`the stack is rolling to PCR0 ${next}: give that image's pcrs.json (--next-pcrs), so that clients trust both`);
  }
  if (next === null && i.nextPcrs) throw new ClusterFileError('the stack is not rolling (no Pcr0Next output): drop --next-pcrs');
  const count = Number(o.NodeCount ?? Object.keys(o).filter((k) => /^Node\d+PrivateIp$/.test(k)).length);
  if (!Number.isInteger(count) || count < 1 || count > stackNodesMax) throw new ClusterFileError('outputs: NodeCount is not 1..64');
  const clientPort = port(o, 'ClientPort');
  const httpPort = port(o, 'HttpPort');
  const key = i.address === 'public' ? 'PublicIp' : 'PrivateIp';
  const nodes = Array.from({ length: count }, (_, n) => {
    const ip = o[`Node${n}${key}`] ?? '';
    if (isIP(ip) !== 4) throw new ClusterFileError(`outputs: Node${n}${key} is not an IPv4 address`);
    return { addr: `${ip}:${clientPort}`, http: `http://${ip}:${httpPort}` };
  });
  // One image: all three PCRs. Two (a roll): PCR0 alone, which measures the whole image, for each.
  const pcrs: Record<string, string | string[]> = next !== null
    ? { '0': [current, next] }
    : { '0': current, ...(i.pcrs.PCR1 ? { '1': pcr(i.pcrs.PCR1, 'pcrs.json PCR1') } : {}), ...(i.pcrs.PCR2 ? { '2': pcr(i.pcrs.PCR2, 'pcrs.json PCR2') } : {}) };
  if (i.ringId !== undefined && !/^[0-9a-f]{64}$/.test(i.ringId)) throw new ClusterFileError('ring id: 64 lowercase hex digits');
  return {
    version: 1,
    nodes,
    trust: { roots: [AWS_NITRO_ROOT_PEM], pcrs, ...(i.ringId ? { ringId: i.ringId } : {}) },
    ...(i.pcrs.Replicas ? { replicas: i.pcrs.Replicas } : {}),
  };
}
