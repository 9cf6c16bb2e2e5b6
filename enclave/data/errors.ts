// The data core's one error class: a setting it refuses. Broken invariants are
// programmer errors and crash through assert.

export type DataErrorCode = 'BAD_CONFIG';

export class DataError extends Error {
  readonly code: DataErrorCode;
  constructor(code: DataErrorCode, message: string) {
    super(`${code}: ${message}`);
    this.name = 'DataError';
    this.code = code;
  }
}
