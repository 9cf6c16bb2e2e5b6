/**
 * One enclave-kv ring: N fixed EC2 instances (Nitro Enclaves enabled), each running the enclave, the
 * host proxy and the bridges; security groups that open the ring port only to the ring itself; an
 * instance role with no KMS permission of its own; and the sealing key whose policy lets that role
 * use it only through an attested enclave with an allowed PCR0.
 *
 * Fixed instances rather than an Auto Scaling group: each node's sealed state lives on its own root
 * volume, and a group that replaces instances on its own would discard it behind the ring's back.
 * Nodes are added and removed by changing nodeCount, one at a time (docs/deploy.md).
 */
import { Annotations, CfnOutput, DefaultStackSynthesizer, Fn, RemovalPolicy, Stack, type StackProps } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as ssm from 'aws-cdk-lib/aws-ssm';
import type { Construct } from 'constructs';
import type { RingConfig } from './config.ts';
import { sealingKeyPolicy } from './key-policy.ts';
import type { Pcrs } from './pcrs.ts';
import { nodeUserData } from './user-data.ts';

export interface RingStackProps extends StackProps {
  config: RingConfig;
  /** AMI id to pin (strongly advised: a new AMI replaces every instance at once). */
  amiId?: string;
}

export class RingStack extends Stack {
  readonly key: kms.CfnKey;
  readonly role: iam.Role;
  readonly securityGroup: ec2.SecurityGroup;
  readonly instances: ec2.Instance[] = [];
  /** The release record (host/release.ts): the images nodes may run now; absent in a keyOnly deploy. */
  release: ssm.StringParameter | null = null;

  constructor(scope: Construct, id: string, props: RingStackProps) {
    super(scope, id, props);
    const c = props.config;
    const vpc = this.vpc(c);
    this.securityGroup = this.ringSecurityGroup(vpc, c);
    this.role = this.instanceRole(c);
    this.key = this.sealingKey(c);
    if (c.pcrs === null) {
      // keyOnly: the key (and its alias) now, so that the image can be built to pin its ARN.
      new CfnOutput(this, 'SealingKeyArn', { value: this.key.attrArn, description: 'build the image with EKV_PINNED_KMS_KEY set to this' });
      return;
    }
    const pcrs = c.pcrs;
    this.release = this.releaseParameter(c, pcrs);
    const image = props.amiId
      ? ec2.MachineImage.genericLinux({ [c.region]: props.amiId })
      : ec2.MachineImage.latestAmazonLinux2023();
    if (!props.amiId) {
      Annotations.of(this).addWarningV2('ekv:ami-unpinned',
        'No amiId: every deploy after a new Amazon Linux release replaces all instances at once. Pin amiId.');
    }
    const subnets = vpc.selectSubnets(c.vpcId ? { subnets: this.existingSubnets(c) } : { subnetType: ec2.SubnetType.PUBLIC });
    for (let i = 0; i < c.nodeCount; i++) {
      // Each node joins through the nodes created before it, so there is no cycle between instances.
      const seeds = this.instances.map((n) => `${n.instancePrivateIp}:${c.ringPort}`);
      const subnet = subnets.subnets[i % subnets.subnets.length] as ec2.ISubnet;
      this.instances.push(new ec2.Instance(this, `Node${i}`, {
        vpc,
        vpcSubnets: { subnets: [subnet] },
        instanceType: new ec2.InstanceType(c.instanceType),
        machineImage: image,
        role: this.role,
        securityGroup: this.securityGroup,
        enclaveEnabled: true,
        requireImdsv2: true,
        detailedMonitoring: true,
        // No image in the user data: a release changes the SSM parameter, never the instances (docs/deploy.md).
        userData: nodeUserData({ config: c, releaseParameter: this.releaseParameterName, nodeIndex: i, seeds }),
        // The node's sealed state lives on this volume: an instance replaced or terminated by mistake leaves it
        // behind (to be attached to a new node or deleted by hand once the ring has re-replicated).
        blockDevices: [{ deviceName: '/dev/xvda', volume: ec2.BlockDeviceVolume.ebs(30, {
          encrypted: true, volumeType: ec2.EbsDeviceVolumeType.GP3, deleteOnTermination: false }) }],
      }));
      // The name is a plain string in the user data (no token, so it never changes); the order is explicit.
      (this.instances[i] as ec2.Instance).node.addDependency(this.release);
    }
    this.outputs(c, pcrs);
  }

  private vpc(c: RingConfig): ec2.IVpc {
    if (c.vpcId) {
      return ec2.Vpc.fromVpcAttributes(this, 'Vpc', {
        vpcId: c.vpcId,
        availabilityZones: c.availabilityZones,
        publicSubnetIds: c.subnetIds,
      });
    }
    return new ec2.Vpc(this, 'Vpc', {
      maxAzs: 2,
      natGateways: 0,
      subnetConfiguration: [{ name: 'ring', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 }],
    });
  }

  private existingSubnets(c: RingConfig): ec2.ISubnet[] {
    return c.subnetIds.map((id, i) => ec2.Subnet.fromSubnetAttributes(this, `Subnet${i}`, {
      subnetId: id, availabilityZone: c.availabilityZones[i] as string }));
  }

  private ringSecurityGroup(vpc: ec2.IVpc, c: RingConfig): ec2.SecurityGroup {
    const sg = new ec2.SecurityGroup(this, 'RingSecurityGroup', {
      vpc,
      description: 'enclave-kv ring nodes',
      allowAllOutbound: true, // KMS and package repositories over the internet; inbound is what matters
    });
    sg.addIngressRule(sg, ec2.Port.tcp(c.ringPort), 'ring port: peers only');
    for (const cidr of c.clientCidr) sg.addIngressRule(ec2.Peer.ipv4(cidr), ec2.Port.tcp(c.clientPort), 'client port');
    for (const cidr of c.httpCidr) sg.addIngressRule(ec2.Peer.ipv4(cidr), ec2.Port.tcp(c.httpPort), 'attestation, health, metrics');
    // A joining node's host fetches the ring-secret ciphertext from a member's host (docs/membership.md).
    sg.addIngressRule(sg, ec2.Port.tcp(c.httpPort), 'ring-secret between ring nodes');
    return sg;
  }

  private instanceRole(c: RingConfig): iam.Role {
    const role = new iam.Role(this, 'InstanceRole', {
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      description: 'enclave-kv parent instances: read the release, be managed by SSM. KMS use is granted by the key policy only.',
      managedPolicies: [iam.ManagedPolicy.fromAwsManagedPolicyName('AmazonSSMManagedInstanceCore')],
    });
    // The artifacts of the images the release names: the current one and, during a roll, the next one.
    const uris = [c.artifactsUri, ...(c.next ? [c.next.artifactsUri] : [])];
    role.addToPolicy(new iam.PolicyStatement({
      sid: 'ReadRelease',
      actions: ['s3:GetObject'],
      resources: [...new Set(uris.map((u) => `arn:${this.partition}:s3:::${u.bucket}/${u.prefix ? `${u.prefix}/` : ''}*`))],
    }));
    return role;
  }

  private sealingKey(c: RingConfig): kms.CfnKey {
    const deployRole = c.deployRoleArn ?? this.cfnExecutionRoleArn();
    const allowedPcr0 = c.pcrs ? [c.pcrs.PCR0, ...(c.next ? [c.next.pcrs.PCR0] : [])] : [];
    const key = new kms.CfnKey(this, 'SealingKey', {
      description: 'enclave-kv sealing key: usable only by attested enclaves with an allowed PCR0',
      enableKeyRotation: true,
      pendingWindowInDays: 30,
      keyPolicy: sealingKeyPolicy({
        adminRoleArns: [c.adminRoleArn, deployRole],
        instanceRoleArn: this.role.roleArn,
        allowedPcr0,
        enclaveUse: c.pcrs !== null,
      }),
    });
    // Every sealed byte of the ring is encrypted under this key: `cdk destroy`, a replacement or a stack
    // deletion must never schedule it for deletion. Removing it is a deliberate, manual act.
    key.applyRemovalPolicy(RemovalPolicy.RETAIN);
    // For humans only: the image pins the key ARN (an alias can be repointed with UpdateAlias).
    new kms.CfnAlias(this, 'SealingKeyAlias', { aliasName: `alias/${this.stackName}-sealing`, targetKeyId: key.ref });
    return key;
  }

  /**
   * The release record, read by each node's run-enclave.sh at every launch: changing it (a roll, its end)
   * changes no instance. CloudFormation updates it in the same deploy as the key policy, so the policy never
   * lags the images the nodes are told to run.
   */
  get releaseParameterName(): string {
    return `/ekv/${this.stackName}/release`;
  }

  private releaseParameter(c: RingConfig, pcrs: Pcrs): ssm.StringParameter {
    const uri = (u: { bucket: string; prefix: string }) => `s3://${u.bucket}${u.prefix ? `/${u.prefix}` : ''}`;
    const release = {
      version: 1,
      current: { pcr0: pcrs.PCR0, artifactsUri: uri(c.artifactsUri) },
      ...(c.next ? { next: { pcr0: c.next.pcrs.PCR0, artifactsUri: uri(c.next.artifactsUri) } } : {}),
    };
    const param = new ssm.StringParameter(this, 'Release', {
      parameterName: this.releaseParameterName,
      description: 'enclave-kv release: the images nodes may run (host/release.ts)',
      stringValue: JSON.stringify(release),
    });
    param.grantRead(this.role);
    return param;
  }

  private cfnExecutionRoleArn(): string {
    // The synthesizer's ARN carries ${AWS::AccountId}-style placeholders, resolved by Fn::Sub.
    if (this.synthesizer instanceof DefaultStackSynthesizer) return Fn.sub(this.synthesizer.cloudFormationExecutionRoleArn);
    throw new Error('set context deployRoleArn: the stack synthesizer has no CloudFormation execution role');
  }

  private outputs(c: RingConfig, pcrs: Pcrs): void {
    new CfnOutput(this, 'SealingKeyArn', { value: this.key.attrArn, description: 'must equal PinnedKmsKeyArn' });
    new CfnOutput(this, 'PinnedKmsKeyArn', { value: pcrs.KmsKeyArn as string, description: 'the key ARN compiled into the image (pcrs.json)' });
    new CfnOutput(this, 'Pcr0', { value: pcrs.PCR0 });
    if (c.next) new CfnOutput(this, 'Pcr0Next', { value: c.next.pcrs.PCR0, description: 'the image being rolled out' });
    new CfnOutput(this, 'ReleaseParameterName', { value: this.releaseParameterName });
    new CfnOutput(this, 'ClientPort', { value: String(c.clientPort) });
    new CfnOutput(this, 'HttpPort', { value: String(c.httpPort) });
    new CfnOutput(this, 'NodeCount', { value: String(c.nodeCount) });
    this.instances.forEach((n, i) => {
      new CfnOutput(this, `Node${i}PrivateIp`, { value: n.instancePrivateIp,
        description: `node ${i}: client port ${c.clientPort}, ring port ${c.ringPort}, HTTP ${c.httpPort}` });
      new CfnOutput(this, `Node${i}PublicIp`, { value: n.instancePublicIp });
      new CfnOutput(this, `Node${i}InstanceId`, { value: n.instanceId });
    });
  }
}
