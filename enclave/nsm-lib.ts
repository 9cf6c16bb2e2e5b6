/**
 * The production NSM: AWS's `libnsm` (the nsm-lib crate of aws-nitro-enclaves-nsm-api, built into
 * the enclave image) called through koffi. It implements the same `Nsm` interface as the emulator's
 * stream NSM, so nothing above this file changes between a laptop and a Nitro enclave.
 *
 * The C ABI used (nsm-lib/src/lib.rs, v0.5.1):
 *   int32_t nsm_lib_init(void);                         // fd of /dev/nsm, or < 0
 *   ErrorCode nsm_get_attestation_doc(int32_t fd,
 *       const uint8_t *user_data, uint32_t user_data_len,   // NULL = field absent
 *       const uint8_t *nonce, uint32_t nonce_len,
 *       const uint8_t *public_key, uint32_t public_key_len,
 *       uint8_t *att_doc, uint32_t *att_doc_len);            // capacity in, length out
 *   void nsm_lib_exit(int32_t fd);
 * ErrorCode is a C enum (int-sized), numbered in the order of the Rust `ErrorCode` variants; errors are
 * the same `NsmError` codes the stream NSM raises.
 *
 * The library is opened once per path and cached for the process: reopening it per request leaked
 * descriptors in another project. Calls run on koffi's worker threads (`.async`) so the ioctl never
 * blocks the event loop, and one at a time, because they share one descriptor.
 */
import { createRequire } from 'node:module';
import { type AttestationRequest, type Nsm, type NsmErrorCode, NsmError, nsmFieldBytesMax, nsmPendingMax } from './nsm.ts';

export const libnsmPathDefault = '/usr/lib/libnsm.so';
/** Capacity of the document buffer; real documents are about 4.5 KiB. */
export const nsmDocumentBytesMax = 16 * 1024;

/** libnsm's ErrorCode values (index = the C enum value; 0 is Success) in our codes. */
const statusCodes: readonly NsmErrorCode[] = [
  'INTERNAL_ERROR', // 0 is Success; never mapped
  'INVALID_ARGUMENT',
  'INVALID_INDEX',
  'INVALID_RESPONSE',
  'READ_ONLY_INDEX',
  'INVALID_OPERATION',
  'BUFFER_TOO_SMALL',
  'INPUT_TOO_LARGE',
  'INTERNAL_ERROR',
];

/** Maps a libnsm status to our code; a value outside the enum is a malformed response. */
export function libNsmStatusCode(status: number): NsmErrorCode {
  if (!Number.isInteger(status) || status <= 0 || status >= statusCodes.length) return 'MALFORMED_RESPONSE';
  return statusCodes[status] as NsmErrorCode;
}

type AsyncCall = (...args: unknown[]) => void;
interface Bindings {
  init: () => number;
  exit: (fd: number) => void;
  getDocAsync: AsyncCall;
}

const bindingsByPath = new Map<string, Bindings>();

function loadBindings(libraryPath: string): Bindings {
  const cached = bindingsByPath.get(libraryPath);
  if (cached !== undefined) return cached;
  let bindings: Bindings;
  try {
    // koffi is loaded lazily: emulator runs of the enclave never need the native add-on.
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    const lib = koffi.load(libraryPath);
    const getDoc = lib.func(
      'int32_t nsm_get_attestation_doc(int32_t fd, const uint8_t *user_data, uint32_t user_data_len, ' +
        'const uint8_t *nonce, uint32_t nonce_len, const uint8_t *pub_key, uint32_t pub_key_len, ' +
        'uint8_t *att_doc, _Inout_ uint32_t *att_doc_len)',
    );
    bindings = {
      init: lib.func('int32_t nsm_lib_init()') as () => number,
      exit: lib.func('void nsm_lib_exit(int32_t fd)') as (fd: number) => void,
      getDocAsync: getDoc.async as AsyncCall,
    };
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw new NsmError('UNAVAILABLE', `cannot load libnsm from ${libraryPath}: ${reason}`);
  }
  bindingsByPath.set(libraryPath, bindings);
  return bindings;
}

function field(name: string, value: Uint8Array | undefined): [Uint8Array | null, number] {
  if (value === undefined) return [null, 0];
  if (value.byteLength > nsmFieldBytesMax) {
    throw new NsmError('INPUT_TOO_LARGE', `${name} is ${value.byteLength} bytes, above ${nsmFieldBytesMax}`);
  }
  // koffi passes an empty buffer as NULL, which libnsm reads as "absent"; a 1-byte buffer with
  // length 0 keeps an empty field present (the NSM then encodes an empty byte string).
  return [value.byteLength === 0 ? new Uint8Array(1) : value, value.byteLength];
}

export class LibNsm implements Nsm {
  private readonly bindings: Bindings;
  private readonly fd: number;
  private closed = false;
  /** Tail of the call queue: calls share one descriptor, so they run one after another. */
  private tail: Promise<unknown> = Promise.resolve();
  /** Calls queued or running; bounded like StreamNsm's, so a flood of hellos cannot grow the queue without end. */
  private pending = 0;
  private readonly pendingMax: number;

  constructor(libraryPath: string = process.env.EKV_LIBNSM ?? libnsmPathDefault, init: { pendingMax?: number } = {}) {
    this.pendingMax = init.pendingMax ?? nsmPendingMax;
    this.bindings = loadBindings(libraryPath);
    const fd = this.bindings.init();
    if (!Number.isInteger(fd) || fd < 0) {
      throw new NsmError('UNAVAILABLE', `nsm_lib_init returned ${fd}: no NSM device (is this a Nitro enclave?)`);
    }
    this.fd = fd;
  }

  attest(req: AttestationRequest): Promise<Uint8Array> {
    if (this.closed) return Promise.reject(new NsmError('CLOSED', 'the NSM was closed'));
    let args: [Uint8Array | null, number][];
    try {
      args = [field('user_data', req.userData), field('nonce', req.nonce), field('public_key', req.publicKey)];
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.pending >= this.pendingMax) {
      return Promise.reject(new NsmError('BUSY', `${this.pending} NSM requests already pending`));
    }
    this.pending++;
    const run = this.tail.then(() => this.call(args)).finally(() => this.pending--);
    this.tail = run.catch(() => undefined);
    return run;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    // Let a call in flight finish on the descriptor before it is closed.
    void this.tail.then(() => this.bindings.exit(this.fd));
  }

  private call(args: [Uint8Array | null, number][]): Promise<Uint8Array> {
    const out = Buffer.alloc(nsmDocumentBytesMax);
    const length = [nsmDocumentBytesMax];
    const flat = args.flat();
    return new Promise((resolve, reject) => {
      this.bindings.getDocAsync(this.fd, ...flat, out, length, (err: unknown, status: number) => {
        if (err) return reject(new NsmError('INTERNAL_ERROR', `the libnsm call failed: ${String(err)}`));
        if (status !== 0) {
          const code = libNsmStatusCode(status);
          return reject(new NsmError(code, `nsm_get_attestation_doc returned status ${status} (${code})`));
        }
        const n = length[0];
        if (typeof n !== 'number' || !Number.isInteger(n) || n <= 0 || n > nsmDocumentBytesMax) {
          return reject(new NsmError('MALFORMED_RESPONSE', `libnsm reported a document of ${String(n)} bytes`));
        }
        resolve(new Uint8Array(out.subarray(0, n)));
      });
    });
  }
}
