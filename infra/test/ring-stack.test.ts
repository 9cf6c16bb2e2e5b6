// The ring stack, synthesized offline and checked with aws-cdk-lib/assertions: what the issue
// requires of enclaves, the key policy, the security groups, the role and the user data.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Match, type Template } from 'aws-cdk-lib/assertions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attestationConditionKey } from '../lib/key-policy.ts';
import { actions, adminRoleArn, covers, pcr0, pcr0Previous, pcrsFile, nextPcrsFile, pinnedKeyArn, removeTempFiles, type Statement, synth, userDataText } from './helpers.ts';

afterAll(removeTempFiles);

const cryptoActions = ['kms:Decrypt', 'kms:GenerateDataKey', 'kms:GenerateDataKeyWithoutPlaintext', 'kms:Encrypt',
  'kms:ReEncryptFrom', 'kms:ReEncryptTo', 'kms:CreateGrant', 'kms:GenerateDataKeyPair', 'kms:DeriveSharedSecret'];

function keyStatements(t: Template): Statement[] {
  const keys = Object.values(t.findResources('AWS::KMS::Key'));
  expect(keys).toHaveLength(1);
  return (keys[0] as { Properties: { KeyPolicy: { Statement: Statement[] } } }).Properties.KeyPolicy.Statement;
}

function roleLogicalId(t: Template): string {
  const roles = Object.keys(t.findResources('AWS::IAM::Role'));
  expect(roles).toHaveLength(1);
  return roles[0] as string;
}

describe('ring stack (default 3 nodes)', () => {
  let t: Template;
  beforeAll(() => {
    t = synth();
  });

  it('launches nodeCount instances of the chosen type with Nitro Enclaves enabled and IMDSv2', () => {
    t.resourceCountIs('AWS::EC2::Instance', 3);
    t.allResourcesProperties('AWS::EC2::Instance', {
      EnclaveOptions: { Enabled: true },
      InstanceType: 'c6i.xlarge',
      ImageId: 'ami-0123456789abcdef0',
    });
    t.allResourcesProperties('AWS::EC2::LaunchTemplate', {
      LaunchTemplateData: { MetadataOptions: { HttpTokens: 'required' } },
    });
  });

  it('lets the instance role use the key only with an attestation whose PCR0 is the one in the PCRs file', () => {
    const role = roleLogicalId(t);
    const allows = keyStatements(t).filter((s) => s.Effect === 'Allow');
    const crypto = allows.filter((s) => actions(s).some((a) => cryptoActions.some((c) => covers(a, c))));
    expect(crypto).toHaveLength(1);
    const use = crypto[0] as Statement;
    expect(use.Principal).toEqual({ AWS: { 'Fn::GetAtt': [role, 'Arn'] } });
    expect(actions(use).sort()).toEqual(['kms:Decrypt', 'kms:GenerateDataKey']);
    // The only condition: this exact PCR0, nothing broader (no wildcard, no second value).
    expect(use.Condition).toEqual({ StringEqualsIgnoreCase: { [attestationConditionKey]: [pcr0] } });
  });

  it('gives administration, without cryptographic use or grants, to the named admin role', () => {
    const admin = keyStatements(t).find((s) => s.Sid === 'KeyAdministration') as Statement;
    const principals = (admin.Principal as { AWS: unknown[] }).AWS;
    expect(principals).toContain(adminRoleArn);
    for (const a of actions(admin)) {
      expect(a).not.toContain('*');
      for (const c of cryptoActions) expect(covers(a, c), `${a} covers ${c}`).toBe(false);
    }
  });

  it('has no statement for the account root or for everyone, except the deny', () => {
    for (const s of keyStatements(t)) {
      const text = JSON.stringify(s.Principal);
      expect(text).not.toMatch(/:root"/);
      if (s.Effect === 'Allow') expect(text).not.toContain('"*"');
    }
  });

  it('denies Decrypt and data keys to everyone when no attestation document is present', () => {
    const deny = keyStatements(t).find((s) => s.Effect === 'Deny') as Statement;
    expect(deny.Principal).toEqual({ AWS: '*' });
    for (const a of ['kms:Decrypt', 'kms:GenerateDataKey', 'kms:ReEncryptFrom']) {
      expect(actions(deny).some((p) => covers(p, a)), a).toBe(true);
    }
    expect(deny.Condition).toEqual({ Null: { [attestationConditionKey]: 'true' } });
  });

  it('gives the role no KMS permission of its own: Decrypt is possible only through the conditioned key policy', () => {
    const role = roleLogicalId(t);
    const policies = t.findResources('AWS::IAM::Policy', { Properties: { Roles: Match.arrayWith([{ Ref: role }]) } });
    for (const p of Object.values(policies)) {
      const statements = (p as { Properties: { PolicyDocument: { Statement: Statement[] } } }).Properties.PolicyDocument.Statement;
      for (const s of statements) {
        for (const a of actions(s)) expect(covers(a, 'kms:Decrypt') || a.startsWith('kms:'), a).toBe(false);
      }
    }
    const managed = JSON.stringify(t.toJSON().Resources[role].Properties.ManagedPolicyArns);
    expect(managed).toContain('AmazonSSMManagedInstanceCore');
    expect(managed).not.toMatch(/KMS|PowerUser|Administrator/i);
  });

  it('opens the ring port only to the ring security group and nothing to 0.0.0.0/0', () => {
    const json = t.toJSON();
    const rules: Record<string, unknown>[] = [];
    for (const r of Object.values(json.Resources) as { Type: string; Properties: Record<string, unknown> }[]) {
      if (r.Type === 'AWS::EC2::SecurityGroupIngress') rules.push(r.Properties);
      if (r.Type === 'AWS::EC2::SecurityGroup') rules.push(...((r.Properties.SecurityGroupIngress ?? []) as Record<string, unknown>[]));
    }
    expect(rules.length).toBeGreaterThanOrEqual(3);
    for (const rule of rules) {
      expect(rule.CidrIp).not.toBe('0.0.0.0/0');
      expect(rule.CidrIpv6).not.toBe('::/0');
    }
    const ring = rules.filter((r) => r.FromPort === 7001);
    expect(ring).toHaveLength(1);
    const sg = Object.keys(t.findResources('AWS::EC2::SecurityGroup'))[0] as string;
    expect(ring[0]).toMatchObject({ SourceSecurityGroupId: { 'Fn::GetAtt': [sg, 'GroupId'] }, ToPort: 7001 });
    expect(ring[0]?.CidrIp).toBeUndefined();
    expect(rules.find((r) => r.FromPort === 7000)).toMatchObject({ CidrIp: '10.0.0.0/8' });
    expect(rules.find((r) => r.FromPort === 8080)).toMatchObject({ CidrIp: '10.0.0.0/8' });
  });

  it('user data installs the Nitro CLI and starts the allocator, KMS proxy, bridges, then the host that launches the enclave', () => {
    const instances = Object.values(t.findResources('AWS::EC2::Instance')) as { Properties: { UserData: unknown } }[];
    const text = userDataText(instances[0]?.Properties.UserData);
    expect(text).toContain('dnf install -y aws-nitro-enclaves-cli');
    for (const unit of ['nitro-enclaves-allocator.service', 'ekv-vsock-proxy.service', 'ekv-host.service',
      'ekv-bridge-host@8000.service', 'ekv-bridge-host@8001.service', 'ekv-bridge-enclave.service']) {
      expect(text).toContain(`systemctl enable --now ${unit}`);
    }
    expect(text.indexOf('enable --now ekv-bridge-host@8001.service')).toBeLessThan(text.indexOf('enable --now ekv-host.service'));
    expect(text).toContain('cat > /opt/ekv/bin/run-enclave.sh');
    expect(text).toMatch(/ExecStart=\/usr\/bin\/node \/opt\/ekv\/app\/bin\/ekv.js host --vsock-dir \$\{EKV_VSOCK_DIR\} --listen/);
    expect(text).not.toMatch(/--debug-mode|--attach-console/);
    // No image in the user data: a release changes the SSM parameter, not the instances.
    expect(text).not.toContain(pcr0);
    expect(text).not.toContain('ekv-release-test');
    expect(text).toContain('EKV_RELEASE_PARAM=/ekv/EnclaveKvRing/release');
    expect(text).toContain('memory_mib: 3072\ncpu_count: 2');
    // The vsock-proxy allowlist holds the regional KMS endpoint and nothing else.
    expect(text).toMatch(/allowlist:\n- \{address: kms\.eu-west-1\.amazonaws\.com, port: 443\}\nEKV_EOF/);
  });

  it('joins each node through the ones before it (no cycle between instances)', () => {
    const ids = Object.keys(t.findResources('AWS::EC2::Instance')).sort();
    const byName = (n: number) => ids.find((id) => id.startsWith(`Node${n}`)) as string;
    const ud = (n: number) => userDataText(t.toJSON().Resources[byName(n)].Properties.UserData);
    expect(ud(0)).toContain('EKV_SEEDS=\n');
    expect(ud(1)).toContain(`EKV_SEEDS={"Fn::GetAtt":["${byName(0)}","PrivateIp"]}:7001\n`);
    expect(ud(2)).toContain(`{"Fn::GetAtt":["${byName(1)}","PrivateIp"]}:7001\n`);
    expect(ud(2)).toContain('EKV_REPLICATION_FACTOR=3');
  });

  it('hands a joining node the ring-secret from its join node\'s host (docs/membership.md)', () => {
    const instances = Object.values(t.findResources('AWS::EC2::Instance')) as { Properties: { UserData: unknown } }[];
    const text = userDataText(instances[1]?.Properties.UserData);
    expect(text).toContain('EKV_RING_SECRET_URL=http://$join_ip:8080/v1/ring-secret');
    expect(text).toMatch(/ekv\.js host .*--join=\$\{EKV_JOIN\} --ring-secret=\$\{EKV_RING_SECRET_URL\}/);
    const http = t.findResources('AWS::EC2::SecurityGroupIngress', { Properties: { FromPort: 8080 } });
    expect(Object.values(http).map((r) => (r as { Properties: Record<string, unknown> }).Properties.CidrIp)).toEqual([undefined]);
  });
});

describe('releases and rolling upgrades', () => {
  const releaseOf = (t: Template) => {
    const params = Object.values(t.findResources('AWS::SSM::Parameter')) as Array<{ Properties: { Name: string; Value: string } }>;
    expect(params).toHaveLength(1);
    return { name: params[0]?.Properties.Name, value: JSON.parse(params[0]?.Properties.Value as string) as unknown };
  };
  const userData = (t: Template) => (Object.values(t.findResources('AWS::EC2::Instance')) as Array<{ Properties: { UserData: unknown } }>)
    .map((i) => userDataText(i.Properties.UserData));

  it('names the current image and its artifacts in the release parameter, which the role may read', () => {
    const t = synth();
    expect(releaseOf(t)).toEqual({ name: '/ekv/EnclaveKvRing/release', value: { version: 1, current: { pcr0, artifactsUri: 's3://ekv-release-test/v1' } } });
    const policies = JSON.stringify(t.findResources('AWS::IAM::Policy'));
    expect(policies).toContain('ssm:GetParameter');
    expect(policies).toContain(':s3:::ekv-release-test/v1/*');
  });

  it('during a roll: both PCR0s in the key policy and the release, both artifact prefixes readable, and the same user data', () => {
    const before = synth();
    const t = synth({ nextPcrsFile: nextPcrsFile(), nextArtifactsUri: 's3://ekv-release-test/v2' });
    const use = keyStatements(t).find((s) => s.Sid === 'EnclaveUseWithAttestation') as Statement;
    expect(use.Condition).toEqual({ StringEqualsIgnoreCase: { [attestationConditionKey]: [pcr0, pcr0Previous] } });
    expect(releaseOf(t).value).toEqual({ version: 1, current: { pcr0, artifactsUri: 's3://ekv-release-test/v1' }, next: { pcr0: pcr0Previous, artifactsUri: 's3://ekv-release-test/v2' } });
    expect(JSON.stringify(t.findResources('AWS::IAM::Policy'))).toContain('ekv-release-test/v2/*');
    // CloudFormation replaces or restarts no instance: their user data is byte for byte the same.
    expect(userData(t)).toEqual(userData(before));
    expect(t.findOutputs('Pcr0Next')['Pcr0Next']?.Value).toBe(pcr0Previous);
  });

  it('refuses a roll to the same image, to another key, or without its artifacts; previousPcr0 is gone', () => {
    expect(() => synth({ nextPcrsFile: pcrsFile(), nextArtifactsUri: 's3://ekv-release-test/v2' })).toThrow(/current image/);
    const otherKey = pcrsFile({ PCR0: pcr0Previous, PCR1: 'c3'.repeat(48), PCR2: 'd4'.repeat(48), KmsKeyArn: pinnedKeyArn.replace('1234abcd', '9999abcd') });
    expect(() => synth({ nextPcrsFile: otherKey, nextArtifactsUri: 's3://ekv-release-test/v2' })).toThrow(/another KMS key/);
    expect(() => synth({ nextPcrsFile: nextPcrsFile() })).toThrow(/nextArtifactsUri/);
    expect(() => synth({ previousPcr0: pcr0Previous })).toThrow(/previousPcr0 is gone/);
  });
});

describe('stack outputs', () => {
  it('are the ones `ekv cluster init` reads, with the fixture its test uses', () => {
    const t = synth();
    const fixture = JSON.parse(readFileSync(join(import.meta.dirname, '..', '..', 'test', 'fixtures', 'deploy', 'stack-outputs.json'), 'utf8')) as { EnclaveKvRing: Record<string, string> };
    expect(Object.keys(t.findOutputs('*')).sort()).toEqual(Object.keys(fixture.EnclaveKvRing).sort());
  });
});

describe('data safety', () => {
  it('retains the sealing key on stack deletion and replacement, and keeps the nodes\' volumes on termination', () => {
    const t = synth();
    const key = Object.values(t.findResources('AWS::KMS::Key'))[0] as Record<string, unknown>;
    expect([key.DeletionPolicy, key.UpdateReplacePolicy]).toEqual(['Retain', 'Retain']);
    const devices = (Object.values(t.findResources('AWS::EC2::Instance')) as Array<{ Properties: { BlockDeviceMappings: Array<{ Ebs: Record<string, unknown> }> } }>)
      .flatMap((i) => i.Properties.BlockDeviceMappings);
    expect(devices).toHaveLength(3);
    for (const d of devices) expect(d.Ebs).toMatchObject({ DeleteOnTermination: false, Encrypted: true });
    const keyOnly = synth({ keyOnly: 'true', pcrsFile: '/nonexistent/pcrs.json' });
    expect((Object.values(keyOnly.findResources('AWS::KMS::Key'))[0] as Record<string, unknown>).DeletionPolicy).toBe('Retain');
  });

  it('pins the CDK CLI, so `npx cdk` runs the version the stack was tested with', () => {
    const pkg = JSON.parse(readFileSync(join(import.meta.dirname, '..', 'package.json'), 'utf8')) as { devDependencies: Record<string, string> };
    expect(pkg.devDependencies['aws-cdk']).toMatch(/^\d+\.\d+\.\d+$/);
  });
});

describe('ring stack parameters', () => {

  it('honours instance type, node count, replication factor and ports', () => {
    const t = synth({ instanceType: 'm5.2xlarge', nodeCount: '5', replicationFactor: '2', clientPort: 9000, clientCidr: '192.168.0.0/16' });
    t.resourceCountIs('AWS::EC2::Instance', 5);
    t.allResourcesProperties('AWS::EC2::Instance', { InstanceType: 'm5.2xlarge' });
    const ud = userDataText((Object.values(t.findResources('AWS::EC2::Instance'))[4] as { Properties: { UserData: unknown } }).Properties.UserData);
    expect(ud).toContain('EKV_REPLICATION_FACTOR=2');
    expect(ud).toContain('EKV_CLIENT_PORT=9000');
    t.hasResourceProperties('AWS::EC2::SecurityGroup', {
      SecurityGroupIngress: Match.arrayWith([Match.objectLike({ FromPort: 9000, CidrIp: '192.168.0.0/16' })]),
    });
  });

  it('uses an existing VPC by id without creating one', () => {
    const t = synth({ vpcId: 'vpc-0abc', subnetIds: 'subnet-01,subnet-02', availabilityZones: 'eu-west-1a,eu-west-1b' });
    t.resourceCountIs('AWS::EC2::VPC', 0);
    const subnets = Object.values(t.findResources('AWS::EC2::Instance')).map((i) => (i as { Properties: { SubnetId: string } }).Properties.SubnetId);
    expect(subnets).toEqual(['subnet-01', 'subnet-02', 'subnet-01']);
    t.hasResourceProperties('AWS::EC2::SecurityGroup', { VpcId: 'vpc-0abc' });
  });

  it('refuses settings that would weaken or break the ring', () => {
    expect(() => synth({ clientCidr: '0.0.0.0/0' })).toThrow(/whole internet/);
    expect(() => synth({ clientCidr: '10.0.0.0/8,0.0.0.0/0' })).toThrow(/whole internet/);
    expect(() => synth({ clientCidr: '172.31.0.1/16' })).toThrow(/host bits/);
    expect(() => synth({ clientCidr: '10.0.0.256/32' })).toThrow(/not an IPv4 CIDR/);
    expect(() => synth({ clientCidr: '10.0.0.0/33' })).toThrow(/not an IPv4 CIDR/);
    expect(() => synth({ httpCidr: '0.0.0.0/0' })).toThrow(/whole internet/);
    expect(() => synth({ replicationFactor: 4 })).toThrow(/replicationFactor/);
    expect(() => synth({ nodeCount: 0 })).toThrow(/nodeCount/);
    expect(() => synth({ instanceType: 't3.xlarge' })).toThrow(/does not support Nitro Enclaves/);
    expect(() => synth({ instanceType: 'c6i.large' })).toThrow(/at least 4 vCPUs/);
    expect(() => synth({ enclaveCpuCount: 3 })).toThrow(/whole cores/);
    expect(() => synth({ artifactsUri: 'https://example.com/x' })).toThrow(/artifactsUri/);
    expect(() => synth({ clientPort: 7001 })).toThrow(/must differ/);
  });

  it('opens the client and HTTP ports to the private ranges by default, the AWS default VPC (172.31.0.0/16) included', () => {
    const t = synth({ clientCidr: undefined, httpCidr: undefined });
    for (const port of [7000, 8080]) {
      const rules = Object.values(t.findResources('AWS::EC2::SecurityGroup'))
        .flatMap((g) => (g as { Properties: { SecurityGroupIngress?: Array<{ FromPort: number; CidrIp?: string }> } }).Properties.SecurityGroupIngress ?? [])
        .filter((r) => r.FromPort === port).map((r) => r.CidrIp);
      expect(rules.sort()).toEqual(['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16']);
    }
  });

  it('opens the client port to the world only when asked to explicitly, and never the ring port', () => {
    const t = synth({ clientCidr: '0.0.0.0/0', allowWorldClients: 'true' });
    const json = JSON.stringify(t.toJSON());
    expect(json).toContain('"CidrIp":"0.0.0.0/0","Description":"client port","FromPort":7000');
    const ring = t.findResources('AWS::EC2::SecurityGroupIngress', { Properties: { FromPort: 7001 } });
    expect(Object.values(ring).map((r) => (r as { Properties: Record<string, unknown> }).Properties.CidrIp)).toEqual([undefined]);
  });
});

describe('the image pins the sealing key by ARN (issue 10, item 1)', () => {
  it('a keyOnly deploy creates the key, usable by nobody yet, and outputs its ARN for the image build', () => {
    const t = synth({ keyOnly: 'true', pcrsFile: '/nonexistent/pcrs.json', artifactsUri: undefined });
    t.resourceCountIs('AWS::EC2::Instance', 0);
    t.resourceCountIs('AWS::SSM::Parameter', 0);
    t.resourceCountIs('AWS::KMS::Key', 1);
    const statements = keyStatements(t);
    expect(statements.filter((s) => s.Effect === 'Allow' && actions(s).some((a) => cryptoActions.some((c) => covers(a, c))))).toEqual([]);
    expect(statements.some((s) => s.Sid === 'DenyUseWithoutAttestation')).toBe(true);
    expect(Object.keys(t.findOutputs('SealingKeyArn'))).toEqual(['SealingKeyArn']);
  });

  it('a full deploy needs the key ARN the image pins, in the ring\'s region, and outputs it beside the key\'s', () => {
    const t = synth();
    expect(t.findOutputs('PinnedKmsKeyArn')['PinnedKmsKeyArn']?.Value).toBe(pinnedKeyArn);
    const noKey = pcrsFile({ PCR0: pcr0, PCR1: 'c3'.repeat(48), PCR2: 'd4'.repeat(48) });
    expect(() => synth({ pcrsFile: noKey })).toThrow(/names no KmsKeyArn/);
    const alias = pcrsFile({ PCR0: pcr0, PCR1: 'c3'.repeat(48), PCR2: 'd4'.repeat(48), KmsKeyArn: 'arn:aws:kms:eu-west-1:111122223333:alias/ekv' });
    expect(() => synth({ pcrsFile: alias })).toThrow(/not an alias/);
    const otherRegion = pcrsFile({ PCR0: pcr0, PCR1: 'c3'.repeat(48), PCR2: 'd4'.repeat(48), KmsKeyArn: pinnedKeyArn.replace('eu-west-1', 'us-east-1') });
    expect(() => synth({ pcrsFile: otherRegion })).toThrow(/in us-east-1, the ring in eu-west-1/);
  });

  it('takes R from the image: replicationFactor defaults to pcrs.json Replicas and may not differ', () => {
    const r2 = pcrsFile({ PCR0: pcr0, PCR1: 'c3'.repeat(48), PCR2: 'd4'.repeat(48), KmsKeyArn: pinnedKeyArn, Replicas: 2 } as unknown as Record<string, string>);
    expect(userDataText(Object.values(synth({ pcrsFile: r2 }).findResources('AWS::EC2::Instance'))[0]?.Properties.UserData)).toContain('EKV_REPLICATION_FACTOR=2');
    expect(() => synth({ pcrsFile: r2, replicationFactor: 3 })).toThrow(/differs from the image's R=2/);
  });
});
