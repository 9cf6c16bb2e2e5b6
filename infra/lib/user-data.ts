/**
 * The parent instance's first-boot script: install the Nitro CLI, socat and Node, fetch the host app of the
 * release's current image, write the allocator and vsock-proxy configuration and the systemd units from
 * infra/host/, then start the KMS proxy, the bridges and the host, which launches the enclave and is its
 * watchdog (infra/host/run-enclave.sh).
 *
 * Nothing here names an image: the PCR0 to run and the artifacts to fetch are in the release parameter
 * (SSM), read at every enclave launch, so a release never changes the user data (a change that
 * CloudFormation would apply by stopping every instance at once, and that would not even re-run).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import type { RingConfig } from './config.ts';

export const hostDir = join(import.meta.dirname, '..', 'host');

/** Files copied verbatim from infra/host/ to the instance. */
export const hostFiles: Record<string, { path: string; mode: string }> = {
  'ekv-host.service': { path: '/etc/systemd/system/ekv-host.service', mode: '0644' },
  'ekv-bridge-enclave.service': { path: '/etc/systemd/system/ekv-bridge-enclave.service', mode: '0644' },
  'ekv-bridge-metrics.service': { path: '/etc/systemd/system/ekv-bridge-metrics.service', mode: '0644' },
  'ekv-bridge-host@.service': { path: '/etc/systemd/system/ekv-bridge-host@.service', mode: '0644' },
  'ekv-ring-listener.service': { path: '/etc/systemd/system/ekv-ring-listener.service', mode: '0644' },
  'ekv-vsock-proxy.service': { path: '/etc/systemd/system/ekv-vsock-proxy.service', mode: '0644' },
  'ekv-enclave-logs.service': { path: '/etc/systemd/system/ekv-enclave-logs.service', mode: '0644' },
  'ekv-tmpfiles.conf': { path: '/etc/tmpfiles.d/ekv.conf', mode: '0644' },
  'check-eif.sh': { path: '/opt/ekv/bin/check-eif.sh', mode: '0755' },
  'run-enclave.sh': { path: '/opt/ekv/bin/run-enclave.sh', mode: '0755' },
};

/** Units enabled and started, in this order. */
export const startedUnits = [
  'nitro-enclaves-allocator.service',
  'ekv-vsock-proxy.service',
  'ekv-bridge-host@8000.service',
  'ekv-bridge-host@8001.service',
  'ekv-enclave-logs.service',
  'ekv-bridge-enclave.service',
  'ekv-bridge-metrics.service',
  'ekv-ring-listener.service',
  // Last: it launches the enclave (run-enclave.sh) once everything the enclave connects to is there.
  'ekv-host.service',
];

export interface NodeUserData {
  config: RingConfig;
  /** The SSM parameter holding the release record (host/release.ts). */
  releaseParameter: string;
  nodeIndex: number;
  /** host:port of the nodes started before this one (tokens); empty for the first node. */
  seeds: string[];
}

function heredoc(path: string, body: string, mode: string): string[] {
  const tag = 'EKV_EOF';
  if (body.includes(tag)) throw new Error(`${path} contains the heredoc tag`);
  return [`install -d -m 0755 "$(dirname ${path})"`, `cat > ${path} <<'${tag}'\n${body.trimEnd()}\n${tag}`, `chmod ${mode} ${path}`];
}

export function envFile({ config: c, releaseParameter, nodeIndex, seeds }: NodeUserData): string {
  return [
    `AWS_REGION=${c.region}`,
    `EKV_NSM=libnsm`,
    `EKV_NODE_INDEX=${nodeIndex}`,
    `EKV_SEEDS=${seeds.join(',')}`,
    // What the host passes to its enclave (as node-config.json, see enclave/host-config.ts):
    // the ring member to join through (node 0 founds the ring); EKV_SELF_ADDR is appended at boot from IMDS.
    `EKV_JOIN=${seeds[0] ?? ''}`,
    `EKV_REPLICATION_FACTOR=${c.replicationFactor}`,
    `EKV_RELEASE_PARAM=${releaseParameter}`,
    `EKV_STATE_DIR=/var/lib/ekv`,
    `EKV_CLIENT_PORT=${c.clientPort}`,
    `EKV_RING_PORT=${c.ringPort}`,
    `EKV_HTTP_PORT=${c.httpPort}`,
    `EKV_VSOCK_DIR=/run/ekv/vsock`,
    `EKV_ENCLAVE_CID=${c.enclaveCid}`,
    `EKV_ENCLAVE_CPU_COUNT=${c.enclaveCpuCount}`,
    `EKV_ENCLAVE_MEMORY_MIB=${c.enclaveMemoryMib}`,
  ].join('\n');
}

export function allocatorYaml(c: RingConfig): string {
  return ['---', `# Resources reserved for the enclave at boot (ekv-enclave.service uses all of them).`,
    `memory_mib: ${c.enclaveMemoryMib}`, `cpu_count: ${c.enclaveCpuCount}`].join('\n');
}

export function vsockProxyYaml(c: RingConfig): string {
  return ['allowlist:', `- {address: kms.${c.region}.amazonaws.com, port: 443}`].join('\n');
}

export function nodeUserData(input: NodeUserData): ec2.UserData {
  const c = input.config;
  const ud = ec2.UserData.forLinux();
  ud.addCommands(
    'set -euo pipefail',
    'dnf install -y aws-nitro-enclaves-cli aws-nitro-enclaves-cli-devel socat jq nodejs20',
    'command -v node >/dev/null || ln -s "$(command -v node-20)" /usr/bin/node',
    'id ekv >/dev/null 2>&1 || useradd --system --home-dir /var/lib/ekv --shell /sbin/nologin ekv',
    'usermod -aG ne ekv',
    'install -d -m 0755 /opt/ekv /opt/ekv/bin /opt/ekv/app /etc/ekv',
    // The host app of the release's current image (the enclave image itself is fetched by run-enclave.sh).
    `release=$(aws ssm get-parameter --region ${c.region} --name ${input.releaseParameter} --query Parameter.Value --output text)`,
    `aws s3 cp --region ${c.region} "$(echo "$release" | jq -r .current.artifactsUri)/ekv-host.tgz" /tmp/ekv-host.tgz`,
    'tar -xzf /tmp/ekv-host.tgz -C /opt/ekv/app --no-same-owner && rm /tmp/ekv-host.tgz',
    ...heredoc('/etc/ekv/ekv.env', envFile(input), '0644'),
    // This instance's own address is only known at boot (IMDSv2).
    'imds_token=$(curl -sS -X PUT http://169.254.169.254/latest/api/token -H "X-aws-ec2-metadata-token-ttl-seconds: 300")',
    `echo "EKV_SELF_ADDR=$(curl -sS -H "X-aws-ec2-metadata-token: $imds_token" http://169.254.169.254/latest/meta-data/local-ipv4):${c.ringPort}" >> /etc/ekv/ekv.env`,
    // A joining node's host fetches the ring's ring-secret (KMS ciphertext, not secret; docs/membership.md)
    // from the host of the node it joins through; node 0 founds the ring and has none to fetch.
    `join_ip=$(grep '^EKV_JOIN=' /etc/ekv/ekv.env | cut -d= -f2 | cut -d: -f1)`,
    `if [ -n "$join_ip" ]; then echo "EKV_RING_SECRET_URL=http://$join_ip:${c.httpPort}/v1/ring-secret" >> /etc/ekv/ekv.env; else echo "EKV_RING_SECRET_URL=" >> /etc/ekv/ekv.env; fi`,
    ...heredoc('/etc/nitro_enclaves/allocator.yaml', allocatorYaml(c), '0644'),
    ...heredoc('/etc/nitro_enclaves/vsock-proxy.yaml', vsockProxyYaml(c), '0644'),
  );
  for (const [name, file] of Object.entries(hostFiles)) {
    ud.addCommands(...heredoc(file.path, readFileSync(join(hostDir, name), 'utf8'), file.mode));
  }
  ud.addCommands(
    'systemd-tmpfiles --create /etc/tmpfiles.d/ekv.conf',
    'systemctl daemon-reload',
    ...startedUnits.map((u) => `systemctl enable --now ${u}`),
  );
  return ud;
}
