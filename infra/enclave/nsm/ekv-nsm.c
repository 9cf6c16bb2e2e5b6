/*
 * ekv-nsm: the enclave's whole native surface to the Nitro Security Module, in place of AWS's Rust libnsm
 * (whose crate graph would need a Cargo.lock resolved on a machine that reaches crates.io). It moves bytes and
 * nothing else: the NSM request is CBOR encoded, and the response decoded, in TypeScript (enclave/nsm.ts, the
 * strict decoder), exactly as for the emulator's NSM stream. Built in infra/enclave/Dockerfile with the gcc of
 * the pinned base image's dated Debian snapshot; loaded by enclave/nsm-lib.ts through koffi.
 *
 * The device interface (Linux include/uapi/linux/nsm.h, drivers/misc/nsm.c; the same layout and ioctl number
 * as the older out-of-tree driver, whose message was two `struct iovec`s, and as aws-nitro-enclaves-nsm-api's
 * driver module):
 *   struct nsm_iovec { __u64 addr; __u64 len; };
 *   struct nsm_raw   { struct nsm_iovec request; struct nsm_iovec response; };    32 bytes
 *   NSM_IOCTL_RAW = _IOWR(0x0A, 0, struct nsm_raw) = 0xC0200A00
 *   request at most NSM_REQUEST_MAX_SIZE (0x1000) bytes, response buffer NSM_RESPONSE_MAX_SIZE (0x3000);
 *   on return response.len holds the length of the device's response (which may exceed the buffer given:
 *   only the buffer's length was copied).
 *
 * ABI (all functions return a negative errno on failure, never touch memory beyond the lengths given):
 *   uint32_t ekv_nsm_abi(void);                 EKV_NSM_ABI; the binding refuses another
 *   uint32_t ekv_nsm_ioctl_request(void);       the ioctl number used (tests compare it with the uapi value)
 *   int32_t  ekv_nsm_open(const char *path);    NULL: /dev/nsm. A descriptor, or -errno
 *   int32_t  ekv_nsm_call(int32_t fd, const uint8_t *request, uint32_t request_len,
 *                         uint8_t *response, uint32_t *response_len);
 *            request_len 1..0x1000; *response_len: capacity in (1..0x3000), length out. 0, or -EINVAL
 *            (arguments), -ENOBUFS (the response did not fit: *response_len is the device's length), or the
 *            ioctl's -errno (EMSGSIZE: the device refused the request's size)
 *   int32_t  ekv_nsm_close(int32_t fd);         0 or -errno
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define EKV_NSM_ABI 1u
#define EKV_NSM_DEVICE "/dev/nsm"
#define EKV_NSM_MAGIC 0x0A
#define EKV_NSM_REQUEST_MAX 0x1000u
#define EKV_NSM_RESPONSE_MAX 0x3000u
/* An interrupted ioctl is retried (an attestation request has no side effect), a bounded number of times. */
#define EKV_NSM_EINTR_RETRIES 8

struct ekv_nsm_iovec {
    uint64_t addr;
    uint64_t len;
};

struct ekv_nsm_raw {
    struct ekv_nsm_iovec request;
    struct ekv_nsm_iovec response;
};

#define EKV_NSM_IOCTL_RAW _IOWR(EKV_NSM_MAGIC, 0x0, struct ekv_nsm_raw)

_Static_assert(sizeof(struct ekv_nsm_iovec) == 16, "nsm_iovec is two __u64");
_Static_assert(sizeof(struct ekv_nsm_raw) == 32, "nsm_raw is 32 bytes");
_Static_assert(offsetof(struct ekv_nsm_raw, response) == 16, "response follows request");
_Static_assert(EKV_NSM_IOCTL_RAW == 0xC0200A00u, "NSM_IOCTL_RAW is _IOWR(0x0A, 0, 32 bytes)");

#define EKV_EXPORT __attribute__((visibility("default")))

EKV_EXPORT uint32_t ekv_nsm_abi(void) { return EKV_NSM_ABI; }

EKV_EXPORT uint32_t ekv_nsm_ioctl_request(void) { return (uint32_t)EKV_NSM_IOCTL_RAW; }

EKV_EXPORT int32_t ekv_nsm_open(const char *path) {
    int fd = open(path != NULL ? path : EKV_NSM_DEVICE, O_RDWR | O_CLOEXEC);
    return fd >= 0 ? fd : -errno;
}

EKV_EXPORT int32_t ekv_nsm_call(int32_t fd, const uint8_t *request, uint32_t request_len, uint8_t *response,
                                uint32_t *response_len) {
    if (fd < 0 || request == NULL || response == NULL || response_len == NULL) return -EINVAL;
    if (request_len == 0 || request_len > EKV_NSM_REQUEST_MAX) return -EINVAL;
    uint32_t capacity = *response_len;
    if (capacity == 0 || capacity > EKV_NSM_RESPONSE_MAX) return -EINVAL;
    struct ekv_nsm_raw raw = {
        .request = { .addr = (uint64_t)(uintptr_t)request, .len = request_len },
        .response = { .addr = (uint64_t)(uintptr_t)response, .len = capacity },
    };
    int rc;
    int tries = 0;
    do {
        rc = ioctl(fd, EKV_NSM_IOCTL_RAW, &raw);
    } while (rc < 0 && errno == EINTR && ++tries < EKV_NSM_EINTR_RETRIES);
    if (rc < 0) return -errno;
    if (raw.response.len > capacity) {
        *response_len = raw.response.len > UINT32_MAX ? UINT32_MAX : (uint32_t)raw.response.len;
        return -ENOBUFS;
    }
    *response_len = (uint32_t)raw.response.len;
    return 0;
}

EKV_EXPORT int32_t ekv_nsm_close(int32_t fd) {
    if (fd < 0) return -EBADF;
    return close(fd) == 0 ? 0 : -errno;
}
