"""Incremental UTF-8 validation of text messages (RFC 6455 §8.1, RFC 3629 §4).

RFC 6455 §8.1 says an endpoint that receives invalid UTF-8 in a text message
(or a close reason) must fail the connection with 1007; the Autobahn suite
(cases 6.x) also checks that it fails *fast*, on the fragment holding the first
bad byte, not at the end of the message.

The bulk of the work is CPython's own strict decoder
(``codecs.utf_8_decode(buf, "strict", False)``), preceded by a ``isascii()``
fast path. Non-final decoding leaves an incomplete character at the end of the
buffer unconsumed without checking it fully (it lets ``ED A0``, a surrogate
prefix, through), so that tail of at most 3 bytes is checked here against
RFC 3629 §4 and kept until the next fragment completes it.

The only state between calls is that pending tail (plus a byte count used for
error messages), so a C mirror can take "state in, state out".
"""

from __future__ import annotations

from codecs import utf_8_decode
from typing import NoReturn

from .errors import InvalidUtf8

__all__ = ["Utf8Validator", "validate_utf8"]


def _lead_table() -> tuple[tuple[int, int, int] | None, ...]:
    """Per lead octet: (sequence length, lowest and highest second octet), RFC 3629 §4.

    ``None`` for octets that never start a multi-octet sequence: ASCII,
    continuation octets 80..BF, the overlong leads C0 C1, and F5..FF.
    """
    table: list[tuple[int, int, int] | None] = [None] * 256
    for b in range(0xC2, 0xE0):
        table[b] = (2, 0x80, 0xBF)
    for b in range(0xE0, 0xF0):
        table[b] = (3, 0x80, 0xBF)
    for b in range(0xF0, 0xF5):
        table[b] = (4, 0x80, 0xBF)
    table[0xE0] = (3, 0xA0, 0xBF)  # no overlong 3-octet forms
    table[0xED] = (3, 0x80, 0x9F)  # no surrogates U+D800..U+DFFF
    table[0xF0] = (4, 0x90, 0xBF)  # no overlong 4-octet forms
    table[0xF4] = (4, 0x80, 0x8F)  # nothing above U+10FFFF
    return tuple(table)


_LEADS = _lead_table()


def _first_bad(seq: bytes) -> int:
    """Index of the first octet of ``seq`` that makes it an impossible UTF-8 prefix, or -1.

    ``seq`` is at most one character: a lead octet and up to 3 more (RFC 3629 §4).
    """
    lead = _LEADS[seq[0]]
    if lead is None:
        return 0
    n = len(seq)
    if n > 1 and not lead[1] <= seq[1] <= lead[2]:
        return 1
    for i in range(2, n):
        if not 0x80 <= seq[i] <= 0xBF:
            return i
    return -1


def _flat(view: memoryview) -> bytes | memoryview:
    """A 1-D byte view of any memoryview (multi-byte formats, several dimensions, strides)."""
    return view.cast("B") if view.c_contiguous else view.tobytes()


class Utf8Validator:
    """Incremental UTF-8 validator (RFC 6455 §8.1, RFC 3629 §4) that fails fast.

    Feed a text message's fragments in order; :class:`InvalidUtf8` (close code
    1007) is raised by the call whose data holds the first octet that no valid
    UTF-8 text could have at that place, an impossible prefix at the very end
    of a fragment included. A valid but incomplete character at the end of a
    fragment is kept for the next call.
    """

    __slots__ = ("_tail", "_offset")

    def __init__(self) -> None:
        self._tail = b""  # the pending incomplete character, always a valid prefix
        self._offset = 0  # bytes fed since the last reset, for error messages

    def reset(self) -> None:
        """Forget any pending partial character and start a new message."""
        self._tail = b""
        self._offset = 0

    def feed(self, data: bytes | bytearray | memoryview, final: bool = False) -> None:
        """Validate the next piece of the message (RFC 6455 §8.1).

        Raises :class:`InvalidUtf8` as soon as ``data`` makes the message
        invalid, or, when ``final`` is true, if the message ends inside a
        character. After ``final`` (or an error) the validator is reset.
        """
        if type(data) is memoryview and (data.ndim != 1 or data.itemsize != 1 or not data.c_contiguous):
            data = _flat(data)
        start = self._offset  # message offset of data[0]
        self._offset = start + len(data)
        if self._tail:
            tail = self._tail
            need = _LEADS[tail[0]][0]  # type: ignore[index]  # a kept tail has a valid lead
            seq = tail + bytes(data[: need - len(tail)])
            self._check(seq, start - len(tail))
            if len(seq) < need:
                self._tail = seq
                if final:
                    self._fail(start - len(tail), "incomplete character at end of message")
                return
            self._tail = b""
            data = data[need - len(tail) :]
            start += need - len(tail)
        # (nothing left after a tail: skip, an empty slice of a strided view cannot be decoded)
        if data and (type(data) is memoryview or not data.isascii()):
            try:
                used = utf_8_decode(data, "strict", False)[1]
            except UnicodeDecodeError as exc:
                # For a bad continuation byte, CPython's ``end`` is that byte's index.
                bad = exc.end if exc.reason == "invalid continuation byte" else exc.start
                self._fail(start + bad, exc.reason)
            if used != len(data):
                tail = bytes(data[used:])
                self._check(tail, start + used)
                self._tail = tail
        if final:
            if self._tail:
                self._fail(self._offset - len(self._tail), "incomplete character at end of message")
            self._offset = 0

    def _check(self, seq: bytes, offset: int) -> None:
        """Raise unless ``seq``, found at message ``offset``, is a valid (partial) character."""
        bad = _first_bad(seq)
        if bad >= 0:
            self._fail(offset + bad, "invalid start byte" if bad == 0 else "invalid continuation byte")

    def _fail(self, offset: int, why: str) -> NoReturn:
        self.reset()
        raise InvalidUtf8(f"invalid UTF-8 at message offset {offset}: {why}")


def validate_utf8(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` is, as a whole, valid UTF-8 (RFC 3629 §4, RFC 6455 §8.1)."""
    if type(data) is memoryview:
        if data.ndim != 1 or data.itemsize != 1 or not data.c_contiguous:
            data = _flat(data)
    elif data.isascii():
        return True
    try:
        utf_8_decode(data, "strict", True)
    except UnicodeDecodeError:
        return False
    return True
