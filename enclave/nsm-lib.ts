/**
 * The production NSM: the NSM driver's ioctl on /dev/nsm, through the C shim infra/enclave/nsm/ekv-nsm.c
 * (built into the enclave image as /usr/lib/libekv-nsm.so) called with koffi. It implements the same `Nsm`
 * interface as the emulator's stream NSM, and speaks the same messages: the request is encoded and the
 * response decoded here, in TypeScript (enclave/nsm.ts: encodeNsmRequest, decodeNsmResponse, the strict CBOR
 * decoder), so the shim only moves bounded byte buffers and nothing above this file changes between a laptop
 * and a Nitro enclave. (It replaced AWS's Rust libnsm, whose crate graph could not be locked reproducibly.)
 *
 * The shim's C ABI (ekv-nsm.c; negative errno on failure):
 *   uint32_t ekv_nsm_abi(void);                           // 1
 *   uint32_t ekv_nsm_ioctl_request(void);                 // 0xC0200A00, NSM_IOCTL_RAW
 *   int32_t  ekv_nsm_open(const char *path);              // NULL = /dev/nsm; the descriptor
 *   int32_t  ekv_nsm_call(int32_t fd, const uint8_t *request, uint32_t request_len,
 *                         uint8_t *response, uint32_t *response_len);   // capacity in, length out
 *   int32_t  ekv_nsm_close(int32_t fd);
 *
 * The library is opened once per path and cached for the process: reopening it per request leaked
 * descriptors in another project. Calls run on koffi's worker threads (`.async`) so the ioctl never
 * blocks the event loop, and one at a time, because they share one descriptor.
 */
import { createRequire } from 'node:module';
import {
  type AttestationRequest, type Nsm, type NsmErrorCode, NsmError, decodeNsmResponse, encodeNsmRequest, nsmPendingMax,
  nsmRequestBytesMax, nsmResponseBytesMax,
} from './nsm.ts';

export const libnsmPathDefault = '/usr/lib/libekv-nsm.so';
export const nsmDevicePathDefault = '/dev/nsm';
/** The shim's ABI version this binding speaks (ekv_nsm_abi). */
export const nsmShimAbi = 1;
/** NSM_IOCTL_RAW (include/uapi/linux/nsm.h): _IOWR(0x0A, 0, struct nsm_raw), the struct being 4 u64s. */
export const nsmIoctlRaw = ((3 << 30) | (32 << 16) | (0x0a << 8) | 0) >>> 0;

// errno values (Linux, every architecture Nitro runs on) the shim returns negated.
const EINVAL = 22;
const ENOBUFS = 105;
const EMSGSIZE = 90;

/** A negative errno from ekv_nsm_call, as our code (a value that is not a negative integer: MALFORMED_RESPONSE). */
export function shimErrorCode(rc: number): NsmErrorCode {
  if (!Number.isInteger(rc) || rc >= 0 || rc < -4095) return 'MALFORMED_RESPONSE';
  switch (-rc) {
    case EINVAL: return 'INVALID_ARGUMENT';
    case EMSGSIZE: return 'INPUT_TOO_LARGE'; // the driver refused the request's size
    case ENOBUFS: return 'RESPONSE_TOO_LARGE'; // the response did not fit the driver's buffer
    default: return 'INTERNAL_ERROR';
  }
}

type AsyncCall = (...args: unknown[]) => void;
interface Bindings {
  open: (path: string | null) => number;
  close: (fd: number) => number;
  callAsync: AsyncCall;
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
    const abi = (lib.func('uint32_t ekv_nsm_abi()') as () => number)();
    if (abi !== nsmShimAbi) throw new Error(`the shim speaks ABI ${abi}, this binding ${nsmShimAbi}`);
    const ioctl = (lib.func('uint32_t ekv_nsm_ioctl_request()') as () => number)();
    if (ioctl !== nsmIoctlRaw) throw new Error(`the shim's ioctl is 0x${ioctl.toString(16)}, not NSM_IOCTL_RAW 0x${nsmIoctlRaw.toString(16)}`);
    const call = lib.func(
      'int32_t ekv_nsm_call(int32_t fd, const uint8_t *request, uint32_t request_len, uint8_t *response, _Inout_ uint32_t *response_len)',
    );
    bindings = {
      open: lib.func('int32_t ekv_nsm_open(const char *path)') as (path: string | null) => number,
      close: lib.func('int32_t ekv_nsm_close(int32_t fd)') as (fd: number) => number,
      callAsync: call.async as AsyncCall,
    };
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw new NsmError('UNAVAILABLE', `cannot load the NSM shim from ${libraryPath}: ${reason}`);
  }
  bindingsByPath.set(libraryPath, bindings);
  return bindings;
}

export interface LibNsmInit {
  pendingMax?: number;
  /** The NSM device (default /dev/nsm; tests give a stand-in). */
  device?: string;
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

  constructor(libraryPath: string = process.env.EKV_LIBNSM ?? libnsmPathDefault, init: LibNsmInit = {}) {
    this.pendingMax = init.pendingMax ?? nsmPendingMax;
    this.bindings = loadBindings(libraryPath);
    const device = init.device ?? nsmDevicePathDefault;
    const fd = this.bindings.open(device);
    if (!Number.isInteger(fd) || fd < 0) {
      throw new NsmError('UNAVAILABLE', `ekv_nsm_open(${device}) returned ${fd}: no NSM device (is this a Nitro enclave?)`);
    }
    this.fd = fd;
  }

  attest(req: AttestationRequest): Promise<Uint8Array> {
    if (this.closed) return Promise.reject(new NsmError('CLOSED', 'the NSM was closed'));
    let request: Uint8Array;
    try {
      request = encodeNsmRequest(req);
    } catch (err) {
      return Promise.reject(err);
    }
    if (request.length > nsmRequestBytesMax) {
      return Promise.reject(new NsmError('INPUT_TOO_LARGE', `NSM request of ${request.length} bytes, above ${nsmRequestBytesMax}`));
    }
    if (this.pending >= this.pendingMax) {
      return Promise.reject(new NsmError('BUSY', `${this.pending} NSM requests already pending`));
    }
    this.pending++;
    const run = this.tail.then(() => this.call(request)).finally(() => this.pending--);
    this.tail = run.catch(() => undefined);
    return run;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    // Let a call in flight finish on the descriptor before it is closed.
    void this.tail.then(() => this.bindings.close(this.fd));
  }

  private call(request: Uint8Array): Promise<Uint8Array> {
    const out = Buffer.alloc(nsmResponseBytesMax);
    const length = [nsmResponseBytesMax];
    return new Promise((resolve, reject) => {
      this.bindings.callAsync(this.fd, request, request.length, out, length, (err: unknown, rc: number) => {
        if (err) return reject(new NsmError('INTERNAL_ERROR', `the NSM shim call failed: ${String(err)}`));
        if (rc !== 0) {
          const code = shimErrorCode(rc);
          return reject(new NsmError(code, `ekv_nsm_call returned ${rc} (${code})`));
        }
        const n = length[0];
        if (typeof n !== 'number' || !Number.isInteger(n) || n <= 0 || n > nsmResponseBytesMax) {
          return reject(new NsmError('MALFORMED_RESPONSE', `the NSM device reported a response of ${String(n)} bytes`));
        }
        try {
          resolve(decodeNsmResponse(out.subarray(0, n)));
        } catch (e) {
          reject(e);
        }
      });
    });
  }
}
