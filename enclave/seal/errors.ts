/**
 * The sealing layer's errors. `SealError` is raised for anything the host (the
 * blob store) does wrong or hostile; `KmsError` for KMS refusals and malformed
 * KMS answers. Both carry a stable `code` from a closed set.
 */
export type SealErrorCode =
  | 'SEAL_CORRUPT' // a blob or record failed authentication, or is malformed
  | 'SEAL_TRUNCATED' // a blob ends in the middle of a record
  | 'SEAL_FOREIGN' // a blob sealed for another node (store id) was served
  | 'SEAL_GAP' // a record sequence number is missing (a dropped record or segment)
  | 'SEAL_REORDERED' // records out of order, or a segment under another segment's name
  | 'SEAL_REPLAYED' // a genuine record from another history (hash chain broken, duplicate sequence)
  | 'SEAL_ROLLBACK' // the recovered state is older than the caller knows was acknowledged
  | 'SEAL_IO' // the blob store failed, refused, or answered out of bounds
  | 'SEAL_CLOSED'; // the store was closed or broken by an earlier write failure

export class SealError extends Error {
  readonly code: SealErrorCode;
  constructor(code: SealErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'SealError';
    this.code = code;
  }
}

export type KmsErrorCode =
  | 'KMS_DENIED' // AccessDeniedException: the key policy refused this enclave (another image, no Recipient)
  | 'KMS_INVALID_CIPHERTEXT' // the stored CiphertextBlob is not one KMS accepts (tampered, other context)
  | 'KMS_NOT_FOUND' // the key does not exist
  | 'KMS_BAD_RESPONSE' // KMS (or a relay pretending to be it) answered something we cannot open
  | 'KMS_UNAVAILABLE' // transport failure or any other service error
  | 'KMS_ATTESTATION' // the NSM did not give us a document
  | 'KMS_CREDENTIALS' // no usable AWS credentials from the host, or KMS refused them (unknown, expired)
  | 'KMS_WRONG_KEY'; // KMS answered for a key other than the image's pinned key ARN

export class KmsError extends Error {
  readonly code: KmsErrorCode;
  constructor(code: KmsErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'KmsError';
    this.code = code;
  }
}
