/**
 * The deployment's settings, read from CDK context (`cdk deploy -c key=value` or cdk.json) and checked
 * before any construct is built: a wrong value fails synth with a message, never a half-built template.
 */
import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { kmsKeyArnPattern, parsePcrs, type Pcrs } from './pcrs.ts';

export interface RingConfig {
  region: string;
  instanceType: string;
  nodeCount: number;
  replicationFactor: number;
  /**
   * Only the sealing key (and the role its policy names), no instances: the first deploy of a ring,
   * whose SealingKeyArn output the image is then built to pin (docs/deploy.md).
   */
  keyOnly: boolean;
  /** The current image's measurements and pinned key ARN (infra/pcrs.json, written by enclave/build-eif.sh); null when keyOnly. */
  pcrs: Pcrs | null;
  /**
   * During an image roll: the next image's measurements (nextPcrsFile) and artifacts (nextArtifactsUri). The key
   * policy and the release parameter then name both images; nodes move to the next one by one (docs/deploy.md).
   */
  next: { pcrs: Pcrs; artifactsUri: { bucket: string; prefix: string } } | null;
  /** Role allowed to administer (not use) the KMS key. */
  adminRoleArn: string;
  /** Role CloudFormation deploys with; needs key administration to create and update the key. */
  deployRoleArn: string | undefined;
  /** s3://bucket/prefix holding ekv.eif and ekv-host.tgz of the current image (unused by a keyOnly deploy). */
  artifactsUri: { bucket: string; prefix: string };
  clientPort: number;
  ringPort: number;
  httpPort: number;
  /** Who may reach the client port: IPv4 CIDRs (comma-separated in context). */
  clientCidr: string[];
  /** Who may reach the HTTP port (attestation, health, metrics). */
  httpCidr: string[];
  vpcId: string | undefined;
  subnetIds: string[];
  availabilityZones: string[];
  enclaveCpuCount: number;
  enclaveMemoryMib: number;
  enclaveCid: number;
}

export const nodeCountMax = 64;
export const enclaveCidMin = 4; // 0-2 are reserved, 3 is the parent
export const enclaveCidMax = 0xffffffff - 1;

type Context = (key: string) => unknown;

function str(ctx: Context, key: string, fallback?: string): string {
  const v = ctx(key) ?? fallback;
  if (typeof v !== 'string' || v.length === 0) throw new Error(`context ${key}: a non-empty string is required`);
  return v;
}

function int(ctx: Context, key: string, fallback: number, min: number, max: number): number {
  const raw = ctx(key) ?? fallback;
  const v = typeof raw === 'string' ? Number(raw) : raw;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new Error(`context ${key}: an integer in [${min}, ${max}] is required, got ${String(raw)}`);
  }
  return v;
}

function list(ctx: Context, key: string): string[] {
  const v = ctx(key);
  if (v === undefined) return [];
  if (Array.isArray(v)) return v.map(String);
  return String(v).split(',').map((s) => s.trim()).filter((s) => s.length > 0);
}

/**
 * Private ranges (RFC 1918): a new CDK VPC (10.0.0.0/16), the AWS default VPC (172.31.0.0/16) and peered networks.
 * The default for the client and HTTP ports: reachable from inside private networks only.
 */
export const privateCidrs = ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16'];

/**
 * IPv4 CIDRs, each checked as an address and a prefix (not a string pattern): octets 0..255, prefix 0..32, no
 * host bits set. None may be the whole internet unless asked: the ports they open reach only clients you chose.
 */
export function checkCidr(key: string, cidrs: string, allowWorld: boolean): string[] {
  const out = cidrs.split(',').map((c) => c.trim()).filter((c) => c.length > 0);
  if (out.length === 0) throw new Error(`context ${key}: at least one CIDR is required`);
  for (const cidr of out) {
    const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(cidr);
    const octets = m ? m.slice(1, 5).map(Number) : [];
    const prefix = m ? Number(m[5]) : -1;
    if (!m || octets.some((o) => o > 255) || prefix > 32) throw new Error(`context ${key}: ${cidr} is not an IPv4 CIDR`);
    const address = octets.reduce((a, o) => a * 256 + o, 0);
    const hostBits = 2 ** (32 - prefix);
    if (address % hostBits !== 0) throw new Error(`context ${key}: ${cidr} has host bits set (did you mean the network address?)`);
    if (prefix === 0 && !allowWorld) {
      throw new Error(`context ${key}: ${cidr} opens the port to the whole internet; set allowWorldClients=true to mean it`);
    }
  }
  return out;
}

function s3Uri(uri: string): { bucket: string; prefix: string } {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*?))?\/?$/.exec(uri);
  if (!m) throw new Error(`context artifactsUri: ${uri} is not s3://bucket/prefix`);
  return { bucket: m[1] as string, prefix: m[2] ?? '' };
}

export function readConfig(ctx: Context, baseDir: string): RingConfig {
  const keyOnly = ctx('keyOnly') === true || ctx('keyOnly') === 'true';
  const pcrsFile = str(ctx, 'pcrsFile', 'pcrs.json');
  const pcrsPath = isAbsolute(pcrsFile) ? pcrsFile : resolve(baseDir, pcrsFile);
  const pcrs = keyOnly ? null : parsePcrs(readFileSync(pcrsPath, 'utf8'), pcrsPath);
  if (ctx('previousPcr0') !== undefined) {
    throw new Error('context previousPcr0 is gone: a roll names the next image with nextPcrsFile and nextArtifactsUri (docs/deploy.md section 6)');
  }
  const nextFile = ctx('nextPcrsFile');
  const next = keyOnly || nextFile === undefined ? null : {
    pcrs: parsePcrs(readFileSync(isAbsolute(String(nextFile)) ? String(nextFile) : resolve(baseDir, String(nextFile)), 'utf8'), String(nextFile)),
    artifactsUri: s3Uri(str(ctx, 'nextArtifactsUri')),
  };
  if (next === null && ctx('nextArtifactsUri') !== undefined && !keyOnly) throw new Error('context nextArtifactsUri needs nextPcrsFile');
  const allowWorld = ctx('allowWorldClients') === true || ctx('allowWorldClients') === 'true';
  const nodeCount = int(ctx, 'nodeCount', 3, 1, nodeCountMax);
  const config: RingConfig = {
    region: str(ctx, 'region', process.env.CDK_DEFAULT_REGION ?? 'us-east-1'),
    instanceType: str(ctx, 'instanceType', 'c6i.xlarge'),
    nodeCount,
    keyOnly,
    replicationFactor: int(ctx, 'replicationFactor', pcrs?.Replicas ?? Math.min(3, nodeCount), 1, nodeCount),
    pcrs,
    next,
    adminRoleArn: str(ctx, 'adminRoleArn'),
    deployRoleArn: ctx('deployRoleArn') === undefined ? undefined : str(ctx, 'deployRoleArn'),
    // A keyOnly deploy comes before any release: no artifacts yet.
    artifactsUri: keyOnly && ctx('artifactsUri') === undefined ? { bucket: 'unused', prefix: '' } : s3Uri(str(ctx, 'artifactsUri')),
    clientPort: int(ctx, 'clientPort', 7000, 1024, 65535),
    ringPort: int(ctx, 'ringPort', 7001, 1024, 65535),
    httpPort: int(ctx, 'httpPort', 8080, 1024, 65535),
    clientCidr: checkCidr('clientCidr', str(ctx, 'clientCidr', privateCidrs.join(',')), allowWorld),
    httpCidr: checkCidr('httpCidr', str(ctx, 'httpCidr', privateCidrs.join(',')), allowWorld),
    vpcId: ctx('vpcId') === undefined ? undefined : str(ctx, 'vpcId'),
    subnetIds: list(ctx, 'subnetIds'),
    availabilityZones: list(ctx, 'availabilityZones'),
    enclaveCpuCount: int(ctx, 'enclaveCpuCount', 2, 2, 64),
    enclaveMemoryMib: int(ctx, 'enclaveMemoryMib', 3072, 1024, 512 * 1024),
    enclaveCid: int(ctx, 'enclaveCid', 16, enclaveCidMin, enclaveCidMax),
  };
  return validate(config);
}

/**
 * Nitro Enclaves need a Nitro instance with at least 4 vCPUs (xlarge and up), not bare metal, and
 * not the burstable or Mac families. A rough check that catches the usual slips at synth time.
 */
export function checkEnclaveInstanceType(type: string): string {
  const m = /^([a-z]+[0-9]+[a-z-]*)\.([0-9]*xlarge|metal[-0-9a-z]*|nano|micro|small|medium|large)$/.exec(type);
  if (!m) throw new Error(`instanceType ${type}: not an EC2 instance type`);
  const [family, size] = [m[1] as string, m[2] as string];
  if (/^(t|mac|a1)/.test(family)) throw new Error(`instanceType ${type}: the ${family} family does not support Nitro Enclaves`);
  if (!size.endsWith('xlarge')) throw new Error(`instanceType ${type}: enclaves need at least 4 vCPUs (xlarge or larger, not metal)`);
  return type;
}

function validate(c: RingConfig): RingConfig {
  checkEnclaveInstanceType(c.instanceType);
  const ports = new Set([c.clientPort, c.ringPort, c.httpPort]);
  if (ports.size !== 3) throw new Error('clientPort, ringPort and httpPort must differ');
  if (c.enclaveCpuCount % 2 !== 0) throw new Error('enclaveCpuCount must be even: enclaves take whole cores');
  if (c.vpcId !== undefined && c.subnetIds.length === 0) throw new Error('vpcId needs subnetIds (comma-separated)');
  if (c.vpcId !== undefined && c.availabilityZones.length !== c.subnetIds.length) {
    throw new Error('availabilityZones must list the zone of each of subnetIds, in the same order');
  }
  if (c.pcrs === null) return c;
  checkImage(c, c.pcrs, 'pcrs.json');
  if (c.next) {
    if (c.next.pcrs.PCR0 === c.pcrs.PCR0) throw new Error('nextPcrsFile is the current image (same PCR0)');
    checkImage(c, c.next.pcrs, 'nextPcrsFile');
    // Both images must seal under the same key, or the next one could not open the current one's data.
    if (c.next.pcrs.KmsKeyArn !== c.pcrs.KmsKeyArn) throw new Error('nextPcrsFile pins another KMS key than pcrs.json: an upgrade keeps the key');
  }
  return c;
}

function checkImage(c: RingConfig, pcrs: Pcrs, name: string): void {
  // The image seals only under the key ARN compiled into it; a ring deployed with another key could not start.
  const arn = pcrs.KmsKeyArn === undefined ? null : kmsKeyArnPattern.exec(pcrs.KmsKeyArn);
  if (arn === null) {
    throw new Error(`${name} names no KmsKeyArn: deploy with -c keyOnly=true first, then build the image with EKV_PINNED_KMS_KEY=<its SealingKeyArn output>`);
  }
  if (arn[1] !== c.region) throw new Error(`${name} KmsKeyArn is in ${arn[1]}, the ring in ${c.region}`);
  // R is the image's (EKV_PINNED_REPLICAS); the context only describes it, so it must say the same.
  if (pcrs.Replicas !== undefined && pcrs.Replicas !== c.replicationFactor) {
    throw new Error(`replicationFactor ${c.replicationFactor} differs from the image's R=${pcrs.Replicas} (${name} Replicas)`);
  }
}
