// The data core's one error class: a setting it refuses, or a message that fails validation. Broken invariants are
// programmer errors and crash through assert.

export type DataErrorCode =
  | 'BAD_CONFIG' // validateDataConfig refused a setting
  | 'MALFORMED' // not an object, missing or wrong-typed field (codec.ts)
  | 'TOO_LONG' // a string or list over its limit
  | 'UNKNOWN_TYPE'; // a message type or request kind the core does not speak

export class DataError extends Error {
  readonly code: DataErrorCode;
  constructor(code: DataErrorCode, message: string) {
    super(`${code}: ${message}`);
    this.name = 'DataError';
    this.code = code;
  }
}
