/* C mirror of the cowboy_ws kernels (RFC 6455 §5.2, §5.3, §8.1).
 *
 * Plain C99, no Python API: the cffi module cowboy_ws._speedups (built by
 * build.py, API mode, out-of-line) wraps these functions and the thin Python
 * layer cowboy_ws/protocol/_ckernels.py gives them the contracts of the pure
 * Python reference (cowboy_ws/protocol/mask.py, utf8.py, parse.py).
 *
 * Buffers are `char *` so that cffi passes a `bytes` object without a copy.
 * Keep the prototypes here and the cdef in build.py in step.
 */
#ifndef COWBOY_WS_SPEEDUPS_H
#define COWBOY_WS_SPEEDUPS_H

#include <stddef.h>
#include <stdint.h>

/* Masking (RFC 6455 §5.3): dst[i] = src[i] ^ key[i % 4] for i < n.
 * dst == src (in place) is allowed; other overlaps are not. */
void cw_mask(char *dst, const char *src, size_t n, const char *key);

/* The masked payload at base + offset (n bytes, its key the 4 bytes before it), unmasked
 * into dst: cw_mask with the pointers worked out here, not as two cffi pointer objects. */
void cw_unmask_at(char *dst, const char *base, size_t offset, size_t n);

/* A masked payload received in two pieces, unmasked into dst (n_head + n_tail bytes): its
 * first n_head bytes at head + offset (the key the 4 bytes before them), the rest at tail.
 * The key's phase carries over the seam (§5.3: octet i uses key octet i % 4). */
void cw_unmask_join(char *dst, const char *head, size_t offset, size_t n_head, const char *tail,
                    size_t n_tail);

/* Incremental UTF-8 validation (RFC 3629 §4, RFC 6455 §8.1).
 *
 * `state` is 0 for the start of a message, else the value a previous call
 * returned.  A return value r >= 0 means data[0..n) continues the text
 * validly; r is the new state: (r & 0xff) == 0 iff the text ends on a character
 * boundary, and r >> 8 is the number of bytes of the unfinished character (0..3).
 * A return value r < 0 means data[i] is the first byte no valid text can have
 * there, i = (-r - 2) >> 1, and (-r - 2) & 1 is 0 when that byte stood where a
 * character starts ("invalid start byte"), 1 inside one ("invalid continuation
 * byte"). */
int64_t cw_utf8_feed(const char *data, size_t n, int64_t state);

/* Batch frame parsing (RFC 6455 §5.2): mirror of parse.parse_frames (FrameParser._parse).
 *
 * Parses the complete frames of src[pos..n), at most `cap`, checking every
 * per-frame rule in the reference's order.  flags: CW_MASK_REQUIRED,
 * CW_RSV1_ALLOWED, CW_HAS_LIMIT (then payload lengths above `limit` fail),
 * CW_LEAVE_LARGE (see CW_LARGE_PAYLOAD below).
 * Masked payloads are written unmasked to dst at the same offsets (dst == src:
 * in place; dst is not used for unmasked frames, whose payloads stay in src).
 * rec[0] = position after the last complete frame parsed, rec[1] = frames
 * recorded, rec[2] = error code (CW_E_*, 0 for none; parsing stopped at
 * rec[0] on the bad frame), rec[3] = the error's detail (opcode or length);
 * then 5 int64 per frame: opcode, fin (0x80 or 0), rsv1 (0x40 or 0), payload
 * start, payload end (offsets into src/dst).  Returns the number of frames. */
int64_t cw_parse_frames(const char *src, char *dst, size_t n, size_t pos, int flags, int64_t limit,
                        int64_t *rec, size_t cap);

/* The small-message fast path of a server's read (RFC 6455 §5.2, §5.3, §8.1): parse the masked frames
 * of src[pos..n) while each is a whole data message that needs nothing more, that is FIN set, RSV1-3
 * clear, opcode text or binary, masked, a minimally encoded payload length under CW_LARGE_PAYLOAD
 * (and `limit` when CW_HAS_LIMIT is in flags) and, with CW_CHECK_UTF8, a text payload that is valid
 * UTF-8 as a whole.  It stops, without an error, before the first frame that is anything else
 * (broken, incomplete, a control or a fragment, large, invalid text, or the cap-th): the caller
 * hands the rest to cw_parse_frames and the connection's general path, which raise the errors.
 * Payloads are unmasked into dst (never src) at the same offsets.  rec[0] = the position after
 * the last frame taken, rec[1] = how many of them are text, rec[2] = their payload bytes, rec[3] =
 * the binary ones' payload bytes (for the metrics); then 3 int64 per frame: opcode, payload start,
 * payload end.  Returns the number of frames taken. */
int64_t cw_parse_simple(const char *src, char *dst, size_t n, size_t pos, int flags, int64_t limit,
                        int64_t *rec, size_t cap);

#define CW_CHECK_UTF8 16

/* A broadcast's writes (POSIX): send(fds[i], buf, len, MSG_NOSIGNAL | MSG_DONTWAIT) for each of the
 * n sockets, retried on EINTR; out[i] = the bytes the kernel took (0 when it would block), or
 * -errno.  Returns how many took all len bytes.  (Windows: every out[i] = -1, nothing sent.) */
int64_t cw_send_many(const int *fds, size_t n, const char *buf, size_t len, int64_t *out);

#define CW_MASK_REQUIRED 1
#define CW_RSV1_ALLOWED 2
#define CW_HAS_LIMIT 4
#define CW_LEAVE_LARGE 8
/* With CW_LEAVE_LARGE, masked payloads of at least this many bytes are left masked in `src`
 * (not written to `dst`): the caller unmasks each straight into its own result buffer. */
#define CW_LARGE_PAYLOAD 8192

/* Error codes of cw_parse_frames: the ids E_* of cowboy_ws/protocol/frame_errors.py, whose table
 * gives each its exception class and message (keep in step; tests/test_speedups.py checks). */
#define CW_E_RSV23 1        /* RSV2/RSV3 set */
#define CW_E_RSV1 2         /* RSV1 set, not negotiated */
#define CW_E_RSV1_CTRL 3    /* RSV1 on a control or continuation frame */
#define CW_E_OPCODE 4       /* reserved opcode (detail: opcode) */
#define CW_E_CTRL_FRAG 5    /* fragmented control frame (detail: opcode) */
#define CW_E_CTRL_LONG 6    /* control frame over 125 bytes (detail: opcode) */
#define CW_E_UNMASKED 7     /* unmasked frame from a client */
#define CW_E_MASKED 8       /* masked frame from a server */
#define CW_E_LEN16 9        /* 16-bit length not minimal */
#define CW_E_LEN64_TOP 10   /* 64-bit length with the top bit set */
#define CW_E_LEN64 11       /* 64-bit length not minimal */
#define CW_E_TOO_BIG 12     /* payload over the limit (detail: length) */

#endif
