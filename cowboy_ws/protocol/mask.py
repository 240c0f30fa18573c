"""Payload masking (RFC 6455 §5.3), pure Python.

Every frame a client sends is masked: octet ``i`` of the payload is XORed with
octet ``i % 4`` of the 32-bit masking key (RFC 6455 §5.3). Masking and unmasking
are the same operation, so :func:`mask` does both.

:func:`unmask_join` unmasks a payload that arrived in two pieces.

Two pure-Python forms are used, whichever measured faster for the size:

* small payloads: one big-integer XOR,
  ``int.from_bytes(data) ^ int.from_bytes(key * k)``, then ``to_bytes``;
* large payloads: ``bytes.translate`` on the four strided slices
  ``data[i::4]`` with a precomputed "XOR with k" table per key octet.
"""

from __future__ import annotations

__all__ = ["mask", "unmask_join"]

#: ``_TABLES[k]`` is the 256-byte translate table of ``b -> b ^ k``.
_TABLES: tuple[bytes, ...] = tuple(bytes(b ^ k for b in range(256)) for k in range(256))

#: Payloads of at least this many bytes take the translate path: from about there on it
#: beats the big-integer XOR (``python bench/bench_kernels.py crossover``; bench/README.md).
TRANSLATE_THRESHOLD = 416

_from_bytes = int.from_bytes


def mask(data: bytes | bytearray | memoryview, key: bytes | bytearray) -> bytes:
    """XOR ``data`` with the 4-byte ``key`` cycled over it (RFC 6455 §5.3).

    Masking and unmasking are the same operation. Any bytes-like ``data`` is
    accepted (a memoryview of any format counts its bytes); the result is a new
    ``bytes``. Raises :class:`ValueError` if ``key`` is not 4 bytes long.
    """
    if len(key) != 4:
        raise ValueError(f"masking key must be 4 bytes, not {len(key)}")
    n = data.nbytes if type(data) is memoryview else len(data)
    if n < TRANSLATE_THRESHOLD:
        return (
            _from_bytes(data, "little") ^ _from_bytes((key * ((n >> 2) + 1))[:n], "little")
        ).to_bytes(n, "little")
    tables = _TABLES
    out = bytearray(data)
    out[0::4] = out[0::4].translate(tables[key[0]])
    out[1::4] = out[1::4].translate(tables[key[1]])
    out[2::4] = out[2::4].translate(tables[key[2]])
    out[3::4] = out[3::4].translate(tables[key[3]])
    return bytes(out)


def unmask_join(head: bytearray | bytes, offset: int, tail: bytes | bytearray | memoryview) -> bytes:
    """A masked payload received in two pieces, unmasked (RFC 6455 §5.3): ``head[offset:]`` then ``tail``.

    The masking key is ``head[offset - 4:offset]`` (the end of the frame header)
    and its phase runs on across the seam, as if the pieces were one buffer.
    Raises :class:`ValueError` if ``offset`` is not in ``4..len(head)``.
    """
    if not 4 <= offset <= len(head):
        raise ValueError(f"offset {offset} out of range 4..{len(head)}")
    return mask(bytes(head[offset:]) + bytes(tail), bytes(head[offset - 4:offset]))
