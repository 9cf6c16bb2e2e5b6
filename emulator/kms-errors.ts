// A KMS-shaped failure: the `__type` the SDK maps to its exception classes, and the HTTP status KMS uses.
export type KmsFaultType =
  | 'AccessDeniedException'
  | 'ValidationException'
  | 'InvalidCiphertextException'
  | 'IncorrectKeyException'
  | 'NotFoundException'
  | 'KMSInvalidStateException'
  | 'DisabledException'
  | 'UnsupportedOperationException'
  | 'UnknownOperationException'
  | 'SerializationException'
  | 'KMSInternalException'
  | 'MissingAuthenticationTokenException'
  | 'IncompleteSignatureException'
  | 'UnrecognizedClientException'
  | 'ExpiredTokenException';

export class KmsFault extends Error {
  readonly type: KmsFaultType;
  readonly status: number;
  constructor(type: KmsFaultType, message: string, status = type === 'KMSInternalException' ? 500 : type === 'MissingAuthenticationTokenException' ? 403 : 400) {
    super(message);
    this.name = 'KmsFault';
    this.type = type;
    this.status = status;
  }
}
