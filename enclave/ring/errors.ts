// The ring core's one error class. Hostile input (a malformed message, an
// invalid config from the operator) gets a RingError with a stable code;
// broken invariants are programmer errors and crash through assert.

export type RingErrorCode =
  | 'MALFORMED' // not an object, missing or wrong-typed field
  | 'UNKNOWN_TYPE' // a message type the core does not speak
  | 'BAD_ID' // an identifier that is not a 256-bit value / 32-byte string
  | 'TOO_LONG' // a list or string over its limit
  | 'BAD_CONFIG'; // validateConfig refused a setting

export class RingError extends Error {
  readonly code: RingErrorCode;
  constructor(code: RingErrorCode, message: string) {
    super(`${code}: ${message}`);
    this.name = 'RingError';
    this.code = code;
  }
}
