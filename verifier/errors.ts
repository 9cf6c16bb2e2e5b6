// The verifier's one error class. Every failed check maps to exactly one code, so callers
// (and the CLI's exit status) can tell a forged document from an expired or mis-configured one.

export type AttestationErrorCode =
  | 'MALFORMED'
  | 'UNTRUSTED_ROOT'
  | 'BAD_CHAIN'
  | 'EXPIRED'
  | 'BAD_SIGNATURE'
  | 'DEBUG_MODE'
  | 'PCR_MISMATCH'
  | 'NONCE_MISMATCH'
  | 'TOO_OLD';

export const attestationErrorCodes: readonly AttestationErrorCode[] = [
  'MALFORMED',
  'UNTRUSTED_ROOT',
  'BAD_CHAIN',
  'EXPIRED',
  'BAD_SIGNATURE',
  'DEBUG_MODE',
  'PCR_MISMATCH',
  'NONCE_MISMATCH',
  'TOO_OLD',
];

export class AttestationError extends Error {
  readonly code: AttestationErrorCode;

  constructor(code: AttestationErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AttestationError';
    this.code = code;
  }
}

export function malformed(message: string, cause?: unknown): AttestationError {
  return new AttestationError('MALFORMED', message, cause === undefined ? undefined : { cause });
}
