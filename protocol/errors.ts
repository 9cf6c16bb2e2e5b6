/**
 * The error every client-facing operation raises: a stable `code` from a closed
 * set, a human message, and for attestation refusals the verifier's own code
 * in `reason`. CLI prints `CODE: message` on stderr and exits 1.
 */
export type EkvErrorCode =
  | 'NOT_FOUND' // the key has no value
  | 'UNATTESTED' // the node's attestation document was refused (see `reason`)
  | 'TAMPERED' // a frame failed authentication, or arrived out of sequence
  | 'PROTOCOL' // a malformed frame or message
  | 'FRAME_TOO_LARGE' // a length prefix above the limit
  | 'CLOSED' // the connection closed before the answer arrived
  | 'TIMEOUT' // no answer in time
  | 'KEY_TOO_LARGE'
  | 'VALUE_TOO_LARGE'
  | 'BAD_REQUEST'
  | 'FORBIDDEN'
  | 'UNAVAILABLE' // no node able to serve the request could be reached
  | 'CONFLICT' // a compare-and-set lost (`version` is the key's current version), or a replica holds another write
  | 'EXPIRED' // a retried write whose request id the node no longer remembers: its outcome is unknown, it was not applied again
  | 'STALE' // the node's data is older than what the ring acknowledged
  | 'WRONG_RING' // the node belongs to another ring (deployment) than the one expected
  | 'RING_RECOVERED' // the expected ring was stopped and reopened by its recovery members under a new ring id
  | 'INTERNAL';

export const ekvErrorCodes: ReadonlySet<string> = new Set<EkvErrorCode>([
  'NOT_FOUND', 'UNATTESTED', 'TAMPERED', 'PROTOCOL', 'FRAME_TOO_LARGE', 'CLOSED', 'TIMEOUT',
  'KEY_TOO_LARGE', 'VALUE_TOO_LARGE', 'BAD_REQUEST', 'FORBIDDEN', 'UNAVAILABLE', 'CONFLICT', 'EXPIRED', 'STALE', 'WRONG_RING', 'RING_RECOVERED', 'INTERNAL',
]);

export class EkvError extends Error {
  readonly code: EkvErrorCode;
  /** For UNATTESTED: the verifier's code (PCR_MISMATCH, UNTRUSTED_ROOT, ...). */
  readonly reason: string | undefined;
  /** For CONFLICT from a compare-and-set: the key's current version (0 = absent). */
  readonly version: number | undefined;
  /**
   * For a CONFLICT on a key without a value: the version of its delete (its tombstone's; 0: never written), which
   * the client's floor checks (a rolled-back "no value" is STALE). Absent from nodes that do not say.
   */
  readonly absentAt: number | undefined;

  constructor(code: EkvErrorCode, message: string, options?: { reason?: string; cause?: unknown; version?: number; absentAt?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'EkvError';
    this.code = code;
    this.reason = options?.reason;
    this.version = options?.version;
    this.absentAt = options?.absentAt;
  }
}

export function isEkvErrorCode(x: unknown): x is EkvErrorCode {
  return typeof x === 'string' && ekvErrorCodes.has(x);
}
