/**
 * The sealing key's policy. There is deliberately no statement for the account root: with one, any
 * IAM administrator could grant Decrypt without attestation, and the PCR0 condition would be
 * decoration. Administration goes to the named admin role (and the deploying role); cryptographic
 * use goes to the instances' role only, and only when KMS itself has checked a Nitro attestation
 * document whose PCR0 (ImageSha384) is one of the allowed images.
 */
import * as iam from 'aws-cdk-lib/aws-iam';

export const attestationConditionKey = 'kms:RecipientAttestation:ImageSha384';

/** What the enclave needs: unwrap sealed data keys, make new ones. Both accept `Recipient`. */
export const enclaveKeyActions = ['kms:Decrypt', 'kms:GenerateDataKey'];

/** Key administration without any cryptographic use and without CreateGrant (a grant bypasses the condition). */
export const keyAdminActions = [
  'kms:DescribeKey',
  'kms:GetKeyPolicy',
  'kms:PutKeyPolicy',
  'kms:GetKeyRotationStatus',
  'kms:EnableKeyRotation',
  'kms:DisableKeyRotation',
  'kms:ListResourceTags',
  'kms:ListGrants',
  'kms:RevokeGrant',
  'kms:ListKeyPolicies',
  'kms:TagResource',
  'kms:UntagResource',
  'kms:UpdateKeyDescription',
  'kms:EnableKey',
  'kms:DisableKey',
  'kms:ScheduleKeyDeletion',
  'kms:CancelKeyDeletion',
  'kms:CreateAlias',
  'kms:UpdateAlias',
  'kms:DeleteAlias',
];

export interface KeyPolicyInput {
  adminRoleArns: string[];
  instanceRoleArn: string;
  /** Allowed PCR0 values: the current image, plus the other one during a roll. Lowercase hex. */
  allowedPcr0: string[];
  /** false: the key exists before any image (keyOnly deploy), and nobody may use it yet. */
  enclaveUse?: boolean;
}

export function sealingKeyPolicy(input: KeyPolicyInput): iam.PolicyDocument {
  const use = input.enclaveUse ?? true;
  if (use && input.allowedPcr0.length === 0) throw new Error('at least one PCR0 is required');
  return new iam.PolicyDocument({
    statements: [
      new iam.PolicyStatement({
        sid: 'KeyAdministration',
        principals: input.adminRoleArns.map((arn) => new iam.ArnPrincipal(arn)),
        actions: keyAdminActions,
        resources: ['*'],
      }),
      ...(use ? [new iam.PolicyStatement({
        sid: 'EnclaveUseWithAttestation',
        principals: [new iam.ArnPrincipal(input.instanceRoleArn)],
        actions: enclaveKeyActions,
        resources: ['*'],
        conditions: { StringEqualsIgnoreCase: { [attestationConditionKey]: input.allowedPcr0 } },
      })] : []),
      // Defense in depth: whatever else is ever added, no one decrypts or makes data keys
      // without an attestation document (the condition key is absent without `Recipient`).
      new iam.PolicyStatement({
        sid: 'DenyUseWithoutAttestation',
        effect: iam.Effect.DENY,
        principals: [new iam.AnyPrincipal()],
        actions: ['kms:Decrypt', 'kms:GenerateDataKey*', 'kms:ReEncrypt*'],
        resources: ['*'],
        conditions: { Null: { [attestationConditionKey]: 'true' } },
      }),
    ],
  });
}
