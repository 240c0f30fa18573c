/* C mirror of the cowboy_ws kernels: see speedups.h for the contracts.
 *
 * The pure-Python modules cowboy_ws/protocol/{mask,utf8,parse}.py are the
 * reference; tests/test_speedups.py checks this file against them
 * differentially, and _speedups/valgrind.sh runs those tests under valgrind.
 */
#include <string.h>

#ifndef _WIN32
#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>
#endif

#include "speedups.h"

/* ---- masking (RFC 6455 §5.3) ------------------------------------------------------------ */

/* A word loop: gcc -O3 (and clang -O2) vectorize it, with a runtime check that
 * lets dst == src (in place) take the vector path.  On x86-64 with glibc the
 * kernel is compiled twice, for AVX2 and for baseline SSE2, and the loader's
 * ifunc resolver picks one for the CPU at load time (target_clones).
 * -DCW_NO_DISPATCH turns the dispatch off. */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__GLIBC__) && !defined(CW_NO_DISPATCH) \
    && ((defined(__clang__) && __clang_major__ >= 14) || (!defined(__clang__) && __GNUC__ >= 8))
#define CW_DISPATCH __attribute__((target_clones("avx2", "default")))
#else
#define CW_DISPATCH
#endif

/* dst[i] = src[i] ^ kk[i % 8] where kk, the key written twice, is k8's bytes. */
CW_DISPATCH
void cw_mask_kernel(unsigned char *dst, const unsigned char *src, size_t n, uint64_t k8)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, 8);
        w ^= k8;
        memcpy(dst + i, &w, 8);
    }
    if (i < n) {
        unsigned char kk[8];
        memcpy(kk, &k8, 8);
        for (; i < n; i++)
            dst[i] = src[i] ^ kk[i & 7];
    }
}

void cw_mask(char *dst, const char *src, size_t n, const char *key)
{
    unsigned char kk[8];
    uint64_t k8;
    memcpy(kk, key, 4);
    memcpy(kk + 4, key, 4);
    memcpy(&k8, kk, 8); /* byte order independent: memory order is kept */
    cw_mask_kernel((unsigned char *)dst, (const unsigned char *)src, n, k8);
}

void cw_unmask_at(char *dst, const char *base, size_t offset, size_t n)
{
    cw_mask(dst, base + offset, n, base + offset - 4);
}

void cw_unmask_join(char *dst, const char *head, size_t offset, size_t n_head, const char *tail,
                    size_t n_tail)
{
    const char *key = head + offset - 4;
    char rotated[4];
    size_t i;

    cw_mask(dst, head + offset, n_head, key);
    for (i = 0; i < 4; i++)
        rotated[i] = key[(n_head + i) & 3];
    cw_mask(dst + n_head, tail, n_tail, rotated);
}

/* ---- UTF-8 (RFC 3629 §4, RFC 6455 §8.1) ---------------------------------------------------
 *
 * A DFA over the RFC 3629 §4 grammar with 9 states, in the "shift" layout: a
 * state is a bit offset (a multiple of 6) and utf8_rows[b] packs, for every
 * state s, the next state at bits s..s+5, so one step is
 *     st = utf8_rows[b] >> (st & 63)
 * and the only dependency from byte to byte is one shift.
 *
 *   0  ACCEPT  on a character boundary
 *   6  REJECT  (absorbing)
 *  12  one continuation byte (80..BF) to go
 *  18  two to go
 *  24  after E0: A0..BF, then one     (no overlong 3-byte forms)
 *  30  after ED: 80..9F, then one     (no surrogates D800..DFFF)
 *  36  after F1..F3: three to go
 *  42  after F0: 90..BF, then two     (no overlong 4-byte forms)
 *  48  after F4: 80..8F, then two     (nothing above U+10FFFF)
 *
 * Leads C0, C1 and F5..FF, and continuation bytes where a character starts,
 * go to REJECT.  The table was generated from that list (one row per byte). */

#define U_ACCEPT 0
#define U_REJECT 6

static const uint64_t utf8_rows[256] = {
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 00..03 */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 04..07 */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 08..0B */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 0C..0F */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 10..13 */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 14..17 */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 18..1B */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 1C..1F */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 20..23 */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 24..27 */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 28..2B */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 2C..2F */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 30..33 */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 34..37 */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 38..3B */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 3C..3F */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 40..43 */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 44..47 */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 48..4B */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 4C..4F */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 50..53 */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 54..57 */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 58..5B */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 5C..5F */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 60..63 */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 64..67 */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 68..6B */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 6C..6F */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 70..73 */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 74..77 */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 78..7B */
    0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull, 0x06186186186180ull,  /* 7C..7F */
    0x12192306300186ull, 0x12192306300186ull, 0x12192306300186ull, 0x12192306300186ull,  /* 80..83 */
    0x12192306300186ull, 0x12192306300186ull, 0x12192306300186ull, 0x12192306300186ull,  /* 84..87 */
    0x12192306300186ull, 0x12192306300186ull, 0x12192306300186ull, 0x12192306300186ull,  /* 88..8B */
    0x12192306300186ull, 0x12192306300186ull, 0x12192306300186ull, 0x12192306300186ull,  /* 8C..8F */
    0x06492306300186ull, 0x06492306300186ull, 0x06492306300186ull, 0x06492306300186ull,  /* 90..93 */
    0x06492306300186ull, 0x06492306300186ull, 0x06492306300186ull, 0x06492306300186ull,  /* 94..97 */
    0x06492306300186ull, 0x06492306300186ull, 0x06492306300186ull, 0x06492306300186ull,  /* 98..9B */
    0x06492306300186ull, 0x06492306300186ull, 0x06492306300186ull, 0x06492306300186ull,  /* 9C..9F */
    0x0649218c300186ull, 0x0649218c300186ull, 0x0649218c300186ull, 0x0649218c300186ull,  /* A0..A3 */
    0x0649218c300186ull, 0x0649218c300186ull, 0x0649218c300186ull, 0x0649218c300186ull,  /* A4..A7 */
    0x0649218c300186ull, 0x0649218c300186ull, 0x0649218c300186ull, 0x0649218c300186ull,  /* A8..AB */
    0x0649218c300186ull, 0x0649218c300186ull, 0x0649218c300186ull, 0x0649218c300186ull,  /* AC..AF */
    0x0649218c300186ull, 0x0649218c300186ull, 0x0649218c300186ull, 0x0649218c300186ull,  /* B0..B3 */
    0x0649218c300186ull, 0x0649218c300186ull, 0x0649218c300186ull, 0x0649218c300186ull,  /* B4..B7 */
    0x0649218c300186ull, 0x0649218c300186ull, 0x0649218c300186ull, 0x0649218c300186ull,  /* B8..BB */
    0x0649218c300186ull, 0x0649218c300186ull, 0x0649218c300186ull, 0x0649218c300186ull,  /* BC..BF */
    0x06186186186186ull, 0x06186186186186ull, 0x0618618618618cull, 0x0618618618618cull,  /* C0..C3 */
    0x0618618618618cull, 0x0618618618618cull, 0x0618618618618cull, 0x0618618618618cull,  /* C4..C7 */
    0x0618618618618cull, 0x0618618618618cull, 0x0618618618618cull, 0x0618618618618cull,  /* C8..CB */
    0x0618618618618cull, 0x0618618618618cull, 0x0618618618618cull, 0x0618618618618cull,  /* CC..CF */
    0x0618618618618cull, 0x0618618618618cull, 0x0618618618618cull, 0x0618618618618cull,  /* D0..D3 */
    0x0618618618618cull, 0x0618618618618cull, 0x0618618618618cull, 0x0618618618618cull,  /* D4..D7 */
    0x0618618618618cull, 0x0618618618618cull, 0x0618618618618cull, 0x0618618618618cull,  /* D8..DB */
    0x0618618618618cull, 0x0618618618618cull, 0x0618618618618cull, 0x0618618618618cull,  /* DC..DF */
    0x06186186186198ull, 0x06186186186192ull, 0x06186186186192ull, 0x06186186186192ull,  /* E0..E3 */
    0x06186186186192ull, 0x06186186186192ull, 0x06186186186192ull, 0x06186186186192ull,  /* E4..E7 */
    0x06186186186192ull, 0x06186186186192ull, 0x06186186186192ull, 0x06186186186192ull,  /* E8..EB */
    0x06186186186192ull, 0x0618618618619eull, 0x06186186186192ull, 0x06186186186192ull,  /* EC..EF */
    0x061861861861aaull, 0x061861861861a4ull, 0x061861861861a4ull, 0x061861861861a4ull,  /* F0..F3 */
    0x061861861861b0ull, 0x06186186186186ull, 0x06186186186186ull, 0x06186186186186ull,  /* F4..F7 */
    0x06186186186186ull, 0x06186186186186ull, 0x06186186186186ull, 0x06186186186186ull,  /* F8..FB */
    0x06186186186186ull, 0x06186186186186ull, 0x06186186186186ull, 0x06186186186186ull,  /* FC..FF */
};

#define U_STEP(st, b) (utf8_rows[(b)] >> ((st) & 63))
#define U_ERROR(i, inside) (-(int64_t)(2 + 2 * (uint64_t)(i) + ((inside) ? 1 : 0)))

/* The DFA one byte at a time over p[a..b) from *st, stopping on the first bad
 * byte: returns 0 (and the new state in *st) or U_ERROR of that byte. */
static int64_t utf8_exact(const unsigned char *p, size_t a, size_t b, uint64_t *st)
{
    uint64_t s = *st & 63;
    size_t i;
    for (i = a; i < b; i++) {
        uint64_t prev = s;
        s = (utf8_rows[p[i]] >> prev) & 63;
        if (s == U_REJECT)
            return U_ERROR(i, prev != U_ACCEPT);
    }
    *st = s;
    return 0;
}

/* The ASCII run skip, one branch per block.  Plain C on purpose: in
 * cw_utf8_feed's clones gcc turns the byte OR into 32-byte (AVX2) or 16-byte
 * (SSE2) loads and ORs, then one horizontal OR per block, which is why long
 * runs go 256 bytes a block (64 KiB of ASCII: 1.19 us at 64 a block, 0.58 at
 * 256, AVX2).  Returns the start of the first 64-byte block from i holding a
 * byte >= 0x80, or of the last < 64 bytes. */
#define U_BLOCK 64

static inline int utf8_ascii_block(const unsigned char *q, size_t len)
{
    unsigned char acc = 0;
    size_t k;
    for (k = 0; k < len; k++)
        acc |= q[k];
    return !(acc & 0x80);
}

static inline size_t utf8_skip_ascii(const unsigned char *p, size_t i, size_t n)
{
    while (n - i >= 4 * U_BLOCK && utf8_ascii_block(p + i, 4 * U_BLOCK))
        i += 4 * U_BLOCK;
    while (n - i >= U_BLOCK && utf8_ascii_block(p + i, U_BLOCK))
        i += U_BLOCK;
    return i;
}

/* Non-ASCII text, U_BLOCK bytes at once, branch-free (gcc vectorizes it in
 * cw_utf8_feed's clones).  q[k] for k in 0..63 is checked against q[k-1..k-3],
 * which must be readable (the bytes before, or zeros at a message start).  With
 * c = q[k] and c1, c2, c3 the bytes 1, 2, 3 before it, RFC 3629 §4 is:
 *   - c is a continuation (80..BF) iff c1 >= C0, or c2 >= E0, or c3 >= F0
 *     (that many bytes before it, a lead still wants one; nothing else may be);
 *   - c is none of C0, C1, F5..FF;
 *   - after E0, c >= A0; after ED, c <= 9F; after F0, c >= 90; after F4, c <= 8F.
 * Those are the local rules of the DFA above (each non-continuation byte is a
 * character boundary), so on a block run from a character boundary, U_BAD not
 * set means the DFA rejects no byte of it; U_BAD means one or more bad bytes
 * (the caller reruns the exact DFA for the offset and the message).  U_ASCII:
 * no byte >= 0x80 (the ASCII skip is faster there).  Checked against the DFA
 * on every string of 7 bytes drawn from the 14 byte classes those rules see,
 * at the block's end and straddling its start. */
#define U_ASCII 1
#define U_BAD 2
/* x's unsigned order as a signed one: vector ISAs compare signed bytes in one op */
#define U_S(x) ((signed char)((x) ^ 0x80))

static inline unsigned utf8_block_check(const unsigned char *q)
{
    unsigned char acc = 0;
    int k;
    for (k = 0; k < U_BLOCK; k++) {
        unsigned char c = q[k], c1 = q[k - 1], c2 = q[k - 2], c3 = q[k - 3];
        signed char sc = U_S(c);
        unsigned char cont = (signed char)c < (signed char)0xC0; /* 80..BF */
        unsigned char need = (U_S(c1) > U_S(0xBF)) | (U_S(c2) > U_S(0xDF)) | (U_S(c3) > U_S(0xEF));
        unsigned char never = ((c & 0xFE) == 0xC0) | (sc > U_S(0xF4));
        /* E0 and F0 want c >= A0, >= 90; ED and F4 c <= 9F, <= 8F: one compare, as F0 and F4
         * have bit 4 set and E0, ED not (c is a continuation here, or cont ^ need is set) */
        unsigned char ge = sc > (signed char)(U_S(0x9F) - (c1 & 0x10));
        unsigned char low = ((c1 & 0xEF) == 0xE0) & !ge;
        unsigned char high = ((c1 == 0xED) | (c1 == 0xF4)) & ge;
        /* bit 0: a bad byte; bit 7: a non-ASCII one */
        acc |= (unsigned char)(cont ^ need) | never | low | high | (c & 0x80);
    }
    return (acc & 1) ? U_BAD : (acc & 0x80) ? 0 : U_ASCII;
}

/* From i, a character boundary with n - i >= U_BLOCK, the blocks of U_BLOCK
 * bytes that utf8_block_check passes, up to the first bad or all-ASCII one;
 * returns the last character boundary in them, the start of the last character
 * begun there (complete or not: it is checked again, and whatever follows it
 * is not checked yet).  That is a non-continuation byte (one is among any 4
 * bytes of valid text).  Returns i itself when the first block does not pass. */
static inline size_t utf8_blocks(const unsigned char *p, size_t i, size_t n)
{
    size_t j = i;
    if (i < 3) {
        /* a message or piece starts on a boundary: zeros (ASCII) stand for the bytes before it */
        unsigned char first[3 + U_BLOCK] = {0};
        memcpy(first + 3, p + i, U_BLOCK);
        if (utf8_block_check(first + 3) & U_BAD)
            return i;
        j += U_BLOCK;
    }
    while (n - j >= U_BLOCK && !utf8_block_check(p + j))
        j += U_BLOCK;
    if (j == i)
        return i;
    do /* back to the last character start: at most 3 continuation bytes */
        j--;
    while ((p[j] & 0xC0) == 0x80);
    return p[j] < 0x80 ? j + 1 : j;
}

/* Incremental UTF-8 validation, RFC 3629 §4 as RFC 6455 §8.1 requires of every
 * text message: the contract is in speedups.h.  Compiled twice (CW_DISPATCH,
 * as the masking kernel) so that the block loops above run on AVX2 where there
 * is one.  Every error is reported by utf8_exact (or the one-byte step), so the
 * offset and kind do not depend on which fast path doubted the block. */
CW_DISPATCH
int64_t cw_utf8_feed(const char *data, size_t n, int64_t state)
{
    const unsigned char *p = (const unsigned char *)data;
    uint64_t st = (uint64_t)state & 63;
    size_t pending = (size_t)((uint64_t)state >> 8);
    size_t i = 0;

    while (i < n) {
        size_t start, end;
        uint64_t saved;
        if (st != U_ACCEPT) {
            /* inside a character: at most 3 more bytes, one at a time */
            uint64_t prev = st;
            st = (utf8_rows[p[i]] >> prev) & 63;
            if (st == U_REJECT)
                return U_ERROR(i, 1);
            i++;
            continue;
        }
        /* ASCII runs 256 and 64 bytes at a time */
        i = utf8_skip_ascii(p, i, n);
        if (n - i >= U_BLOCK) {
            /* non-ASCII bytes in the next block: validate whole blocks while they pass */
            size_t j = utf8_blocks(p, i, n);
            if (j != i) {
                i = j; /* a character boundary: st stays U_ACCEPT */
                continue;
            }
            /* a bad byte in this block: found (offset, kind) by the 16-byte steps below */
        }
        /* the last < 64 bytes, or a bad block: ASCII 16 bytes at a time, then the DFA */
        while (n - i >= 16) {
            uint64_t a, b;
            memcpy(&a, p + i, 8);
            memcpy(&b, p + i + 8, 8);
            if ((a | b) & 0x8080808080808080ull)
                break;
            i += 16;
        }
        if (i == n)
            break;
        /* a block of at most 16 bytes; REJECT is absorbing, so one check is enough */
        start = i;
        end = n - i > 16 ? i + 16 : n;
        saved = st;
        for (; i < end; i++)
            st = U_STEP(st, p[i]);
        st &= 63;
        if (st == U_REJECT) {
            int64_t r;
            st = saved;
            r = utf8_exact(p, start, end, &st);
            if (r)
                return r;
        }
    }
    if (st == U_ACCEPT)
        return 0;
    {
        /* the unfinished character: its lead is the last byte that is not a
         * continuation byte, if this piece holds it */
        size_t k = 0;
        while (k < n && (p[n - 1 - k] & 0xC0) == 0x80)
            k++;
        pending = k < n ? k + 1 : pending + n;
    }
    return (int64_t)((pending << 8) | st);
}

/* ---- frames (RFC 6455 §5.2) --------------------------------------------------------------- */

static uint64_t load_be64(const unsigned char *p)
{
    uint64_t v = 0;
    int k;
    for (k = 0; k < 8; k++)
        v = (v << 8) | p[k];
    return v;
}

int64_t cw_parse_frames(const char *csrc, char *dst, size_t n, size_t pos, int flags, int64_t limit,
                        int64_t *rec, size_t cap)
{
    const unsigned char *buf = (const unsigned char *)csrc;
    int64_t *out = rec + 4;
    size_t count = 0;
    int err = 0;
    int64_t detail = 0;
    unsigned mask_bit = (flags & CW_MASK_REQUIRED) ? 0x80 : 0;

    while (n - pos >= 2 && count < cap) {
        unsigned b0 = buf[pos], b1 = buf[pos + 1];
        unsigned opcode = b0 & 0x0F;
        uint64_t length;
        size_t start, end;
        if (b0 & 0x70) {
            if (b0 & 0x30) { err = CW_E_RSV23; break; }
            if (!(flags & CW_RSV1_ALLOWED)) { err = CW_E_RSV1; break; }
            if (opcode != 0x1 && opcode != 0x2) { err = CW_E_RSV1_CTRL; break; }
        }
        if ((opcode > 0x2 && opcode < 0x8) || opcode > 0xA) {
            err = CW_E_OPCODE;
            detail = opcode;
            break;
        }
        length = b1 & 0x7F;
        if ((opcode & 0x8) && (length > 125 || !(b0 & 0x80))) {
            err = (b0 & 0x80) ? CW_E_CTRL_LONG : CW_E_CTRL_FRAG;
            detail = opcode;
            break;
        }
        if ((b1 & 0x80) != mask_bit) {
            err = mask_bit ? CW_E_UNMASKED : CW_E_MASKED;
            break;
        }
        start = pos + 2;
        if (length >= 126) {
            if (length == 126) {
                if (n - start < 2)
                    break;
                length = ((uint64_t)buf[start] << 8) | buf[start + 1];
                start += 2;
                if (length < 126) { err = CW_E_LEN16; break; }
            } else {
                if (n - start < 8)
                    break;
                length = load_be64(buf + start);
                start += 8;
                if (length >> 63) { err = CW_E_LEN64_TOP; break; }
                if (length < 65536) { err = CW_E_LEN64; break; }
            }
        }
        if ((flags & CW_HAS_LIMIT) && (int64_t)length > limit) {
            err = CW_E_TOO_BIG;
            detail = (int64_t)length;
            break;
        }
        if (mask_bit) {
            if (n - start < 4 || (uint64_t)(n - start - 4) < length)
                break;
            start += 4;
            end = start + (size_t)length;
            if (length && !((flags & CW_LEAVE_LARGE) && length >= CW_LARGE_PAYLOAD))
                cw_mask(dst + start, csrc + start, (size_t)length, csrc + start - 4);
        } else {
            if ((uint64_t)(n - start) < length)
                break;
            end = start + (size_t)length;
        }
        out[0] = opcode;
        out[1] = b0 & 0x80;
        out[2] = b0 & 0x40;
        out[3] = (int64_t)start;
        out[4] = (int64_t)end;
        out += 5;
        count++;
        pos = end;
    }
    rec[0] = (int64_t)pos;
    rec[1] = (int64_t)count;
    rec[2] = err;
    rec[3] = detail;
    return (int64_t)count;
}

int64_t cw_parse_simple(const char *csrc, char *dst, size_t n, size_t pos, int flags, int64_t limit,
                        int64_t *rec, size_t cap)
{
    const unsigned char *buf = (const unsigned char *)csrc;
    int64_t *out = rec + 4;
    size_t count = 0, texts = 0;
    uint64_t text_bytes = 0, binary_bytes = 0;
    uint64_t max = CW_LARGE_PAYLOAD - 1;

    if ((flags & CW_HAS_LIMIT) && limit < (int64_t)max)
        max = limit < 0 ? 0 : (uint64_t)limit;
    while (n - pos >= 6 && count < cap) {
        unsigned b0 = buf[pos], b1 = buf[pos + 1];
        size_t start = pos + 2;
        uint64_t length = b1 & 0x7F;
        /* FIN, no RSV bit, text or binary; masked (every other header stops the run) */
        if ((b0 != 0x81 && b0 != 0x82) || !(b1 & 0x80))
            break;
        if (length == 126) {
            if (n - start < 2)
                break;
            length = ((uint64_t)buf[start] << 8) | buf[start + 1];
            start += 2;
            if (length < 126)
                break;
        } else if (length == 127) {
            break; /* 64-bit lengths are >= 65536: large */
        }
        if (length > max || n - start < 4 || (uint64_t)(n - start - 4) < length)
            break;
        start += 4;
        cw_mask(dst + start, csrc + start, (size_t)length, csrc + start - 4);
        if ((flags & CW_CHECK_UTF8) && b0 == 0x81 && cw_utf8_feed(dst + start, (size_t)length, 0) != 0)
            break;
        out[0] = b0 & 0x0F;
        out[1] = (int64_t)start;
        out[2] = (int64_t)(start + length);
        out += 3;
        count++;
        if (b0 == 0x81) {
            texts++;
            text_bytes += length;
        } else {
            binary_bytes += length;
        }
        pos = start + (size_t)length;
    }
    rec[0] = (int64_t)pos;
    rec[1] = (int64_t)texts;
    rec[2] = (int64_t)text_bytes;
    rec[3] = (int64_t)binary_bytes;
    return (int64_t)count;
}

/* ---- a broadcast's writes ------------------------------------------------------------------ */

int64_t cw_send_many(const int *fds, size_t n, const char *buf, size_t len, int64_t *out)
{
#ifdef _WIN32
    size_t i;
    for (i = 0; i < n; i++)
        out[i] = -1; /* not here: the caller writes each itself */
    return 0;
#else
    size_t i;
    int64_t all = 0;
    for (i = 0; i < n; i++) {
        ssize_t r;
        do {
            r = send(fds[i], buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        } while (r < 0 && errno == EINTR);
        out[i] = r >= 0 ? (int64_t)r : (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -(int64_t)errno;
        if ((size_t)out[i] == len)
            all++;
    }
    return all;
#endif
}
