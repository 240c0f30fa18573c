"""permessage-deflate (RFC 7692): negotiation and the per-message codec.

Sans-IO: the functions here take already-parsed ``Sec-WebSocket-Extensions``
values (a list of ``(name, [(param, value_or_None), ...])``, names lower-cased,
quoted values unquoted) and return header values as strings; the codec turns a
message into a compressed payload and compressed frame payloads back into
bytes. Framing (RSV1, fragmentation) belongs to the connection state machine.

* RFC 7692 §5 / §7.1: :func:`negotiate_server`, :func:`client_offer`,
  :func:`negotiate_client`.
* RFC 7692 §6 / §7.2: :class:`PerMessageDeflate` (``compress`` is §7.2.1,
  ``decompress`` is §7.2.2).

Window bits (see DESIGN.md): zlib and zlib-ng refuse to *deflate* a raw stream
with an 8-bit window, so this module never agrees to compress with 8 bits and
never silently compresses with 9 when 8 was agreed. Inflation uses the window
the peer agreed to (at least 9 bits: a larger inflate window decodes any
smaller one, and a peer told 8 may deflate with 9).
"""

from __future__ import annotations

import dataclasses
import zlib as _stdlib_zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Checked against the stdlib's API, which zlib-ng's mirrors (its own stub declares ``error``
    # as an instance, not a class, so that ``except zlib.error`` would not type-check).
    import zlib

    #: ``shared_deflaters``: (level, window bits, memory level, strategy) -> a compressobj.
    SharedDeflaters = dict[tuple[int, int, int, int], zlib._Compress]
else:
    try:  # zlib-ng is the intended backend; the stdlib module is a drop-in fallback.
        from zlib_ng import zlib_ng as zlib
    except ImportError:  # pragma: no cover - exercised only without zlib-ng
        import zlib

from .errors import FrameError, HandshakeError, MessageTooBig, UsageError

__all__ = [
    "DEFAULT_LEVEL",
    "EXTENSION_NAME",
    "DeflateOptions",
    "DeflateParams",
    "PerMessageDeflate",
    "client_offer",
    "negotiate_client",
    "negotiate_server",
]

#: zlib compression level used unless configured: level 1 is several times
#: faster than Cowboy's 9 for a small loss of ratio on typical messages.
DEFAULT_LEVEL = 1

#: The extension token (RFC 7692 §7).
EXTENSION_NAME = "permessage-deflate"

#: RFC 7692 §7.2.1: the empty stored block ending every sync-flushed message,
#: removed by the sender and appended again by the receiver (§7.2.2).
_TAIL = b"\x00\x00\xff\xff"

#: A deflater kept with its connection (context takeover) is the stdlib's zlib: zlib-ng's hash table is
#: 128 KiB whatever ``server_max_window_bits`` and ``mem_level`` ask for, the stdlib's shrinks with them
#: (per connection, after 8 KiB of JSON: zlib-ng 216 KiB at window 15, 142 at 10; stdlib 116 KiB at
#: window 15 memory level 8, 37 at 12 and 5, 25 at 10 and 5; docs/howto/compression.md).
_TAKEOVER_ZLIB = _stdlib_zlib

#: First output chunk of a bounded inflate; later chunks double (see _inflate).
_FIRST_CHUNK = 256 * 1024

#: While a connection has inflated at most this many bytes in all, the codec
#: keeps a copy of them (the whole LZ77 window, RFC 7692 §7.2.2), so that
#: ``release()`` can drop the decompressor under context takeover and rebuild
#: it with ``zdict=`` later.  The bound keeps the copy well below the size of the
#: inflater it replaces, and small for an awake connection, which holds both
#: (measurements: bench/README.md).
#: Past the bound tracking stops (one ``is not None`` test per message).
_HISTORY_LIMIT = 4 * 1024

_SERVER_NO_TAKEOVER = "server_no_context_takeover"
_CLIENT_NO_TAKEOVER = "client_no_context_takeover"
_SERVER_MAX_BITS = "server_max_window_bits"
_CLIENT_MAX_BITS = "client_max_window_bits"
_KNOWN_PARAMS = frozenset((_SERVER_NO_TAKEOVER, _CLIENT_NO_TAKEOVER, _SERVER_MAX_BITS, _CLIENT_MAX_BITS))

#: RFC 7692 §7.1.2.1: the value is a decimal integer 8..15 "without leading
#: zeros"; nothing else (signs, spaces, "08", "") is accepted.
_WINDOW_BITS_VALUES = {str(n): n for n in range(8, 16)}

Offers = list[tuple[str, list[tuple[str, "str | None"]]]]


#: Cowboy's (Erlang zlib's) names for levels and strategies, accepted next to the numbers.
_LEVELS = {"none": 0, "default": -1, "best_speed": 1, "best_compression": 9}
_STRATEGIES = {"default": 0, "filtered": 1, "huffman_only": 2, "rle": 3, "fixed": 4}
#: Cowboy's ``takeover | no_takeover`` for the two context-takeover settings.
_TAKEOVER = {"takeover": True, "no_takeover": False, True: True, False: False}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class DeflateOptions:
    """Local configuration of permessage-deflate (Cowboy's ``deflate_opts``).

    ``level``, ``mem_level`` and ``strategy`` are zlib's. The window bits and
    context-takeover fields bound what this endpoint agrees to (RFC 7692 §7.1):
    as a server, ``server_*`` limit our compressor and ``client_*`` what we ask
    of the client; as a client they are what :func:`client_offer` offers.
    Messages shorter than ``min_size`` are sent uncompressed (RSV1 unset),
    which RFC 7692 §6 allows for any message.

    Cowboy's spellings are accepted and normalized: ``level`` ``"none"``,
    ``"default"``, ``"best_speed"``, ``"best_compression"`` or -1..9;
    ``strategy`` ``"default"``, ``"filtered"``, ``"huffman_only"``, ``"rle"``,
    ``"fixed"`` or 0..4; ``server_context_takeover`` / ``client_context_takeover``
    ``"takeover"`` / ``"no_takeover"`` (or True / False); window bits 8..15;
    ``mem_level`` 1..9. Anything else raises ``UsageError`` naming the key
    and the accepted values.

    With context takeover our deflater lives as long as the connection, so it
    is the stdlib's zlib, whose memory follows ``*_max_window_bits`` and
    ``mem_level`` (zlib-ng's does not go below ~140 KiB); without it one
    zlib-ng deflater per loop serves every connection.
    """

    level: int = DEFAULT_LEVEL
    mem_level: int = 8
    strategy: int = 0  # zlib Z_DEFAULT_STRATEGY
    server_max_window_bits: int = 15
    client_max_window_bits: int = 15
    server_context_takeover: bool = True
    client_context_takeover: bool = True
    min_size: int = 0

    def __post_init__(self) -> None:
        fix = object.__setattr__  # frozen: normalize Cowboy's names once, here
        level = _LEVELS.get(self.level, self.level) if isinstance(self.level, str) else self.level
        if not (_is_int(level) and -1 <= level <= 9):
            raise UsageError(f"deflate_opts level: expected -1..9 or one of {', '.join(map(repr, _LEVELS))}, "
                             f"not {self.level!r}")
        fix(self, "level", level)
        if not (_is_int(self.mem_level) and 1 <= self.mem_level <= 9):
            raise UsageError(f"deflate_opts mem_level: expected 1..9, not {self.mem_level!r}")
        strategy = _STRATEGIES.get(self.strategy, self.strategy) if isinstance(self.strategy, str) else self.strategy
        if not (_is_int(strategy) and 0 <= strategy <= 4):
            raise UsageError(f"deflate_opts strategy: expected 0..4 or one of {', '.join(map(repr, _STRATEGIES))}, "
                             f"not {self.strategy!r}")
        fix(self, "strategy", strategy)
        for name in ("server_context_takeover", "client_context_takeover"):
            value = getattr(self, name)
            if not isinstance(value, (str, bool)) or value not in _TAKEOVER:
                raise UsageError(f"deflate_opts {name}: expected 'takeover' or 'no_takeover' (or True / False), "
                                 f"not {value!r}")
            fix(self, name, _TAKEOVER[value])
        for name in (_SERVER_MAX_BITS, _CLIENT_MAX_BITS):
            bits = getattr(self, name)
            if not (_is_int(bits) and 8 <= bits <= 15):
                raise UsageError(f"deflate_opts {name}: expected 8..15, not {bits!r}")
        if not (_is_int(self.min_size) and self.min_size >= 0):
            raise UsageError(f"deflate_opts min_size: expected an int >= 0, not {self.min_size!r}")

    def updated(self, changes: Mapping[str, Any]) -> DeflateOptions:
        """These options with ``changes`` (a Cowboy ``deflate_opts`` map) applied.

        An unknown key raises :class:`UsageError` listing the known ones; a bad
        value one naming the key and what it accepts (see the class).
        """
        if not isinstance(changes, Mapping):
            raise UsageError(f"deflate_opts: expected a dict of deflate settings, not {changes!r}")
        known = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(str(k) for k in changes if k not in known)
        if unknown:
            raise UsageError(f"deflate_opts: unknown key(s) {', '.join(unknown)} (known: {', '.join(known)})")
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class DeflateParams:
    """The agreed parameters of RFC 7692 §7.1 ("agreed parameters").

    A window-bits field of 15 means the parameter was absent (the default).
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = 15
    client_max_window_bits: int = 15


# --------------------------------------------------------------------------
# Negotiation (RFC 7692 §5, §7.1)
# --------------------------------------------------------------------------


def _format(params: list[tuple[str, str | None]]) -> str:
    """Format one extension element: ``permessage-deflate; a; b=10`` (RFC 6455 §9.1)."""
    parts = [EXTENSION_NAME]
    for name, value in params:
        parts.append(name if value is None else f"{name}={value}")
    return "; ".join(parts)


def _parse_params(params: list[tuple[str, str | None]]) -> dict[str, str | None] | str:
    """Check the syntax of a permessage-deflate parameter list (RFC 7692 §7.1).

    Returns the parameters as a dict, or a string saying what is wrong: an
    unknown or duplicated parameter, a value on a ``*_no_context_takeover``
    (§7.1.1), a missing or malformed window-bits value (§7.1.2). A
    ``client_max_window_bits`` without value is returned as ``None``; whether
    that is allowed depends on the direction and is checked by the caller.
    """
    seen: dict[str, str | None] = {}
    for raw_name, value in params:
        name = raw_name.lower()
        if name not in _KNOWN_PARAMS:
            return f"unknown parameter {raw_name!r}"
        if name in seen:
            return f"duplicated parameter {name!r}"
        if name in (_SERVER_NO_TAKEOVER, _CLIENT_NO_TAKEOVER):
            if value is not None:
                return f"{name} takes no value, got {value!r}"
        elif value is None:
            if name == _SERVER_MAX_BITS:
                return f"{name} needs a value"
        elif value not in _WINDOW_BITS_VALUES:
            return f"{name} must be a decimal 8..15 without leading zeros, got {value!r}"
        seen[name] = value
    return seen


def negotiate_server(
    offers: Offers, options: DeflateOptions = DeflateOptions(), *, shared_deflaters: SharedDeflaters | None = None
) -> tuple[str, PerMessageDeflate] | None:
    """Accept the first acceptable permessage-deflate offer (RFC 7692 §5.1, §7.1).

    ``offers`` is the parsed ``Sec-WebSocket-Extensions`` request header, in
    order. Other extensions are ignored; a permessage-deflate offer that is
    invalid (unknown or duplicated parameter, bad value) or that we cannot
    honour (``server_max_window_bits=8``: zlib cannot deflate with an 8-bit
    window) is declined and the next one tried. Returns the response
    extension element and the server-side codec, or ``None`` if no offer
    was acceptable.

    The response contains (RFC 7692 §7.1.1, §7.1.2):

    * ``server_no_context_takeover`` if offered or if
      ``options.server_context_takeover`` is False;
    * ``client_no_context_takeover`` if offered or if
      ``options.client_context_takeover`` is False;
    * ``server_max_window_bits=N`` if offered (N = min(offer, ours)) or if
      ours is below 15; ours is ``options.server_max_window_bits`` raised to
      9, the smallest window zlib deflates with;
    * ``client_max_window_bits=N`` only if the client offered that parameter
      (N = min(offered value or 15, ``options.client_max_window_bits``));
      otherwise the client's window cannot be limited (§7.1.2.2).
    """
    our_server_bits = max(9, options.server_max_window_bits)
    for name, params in offers:
        if name.lower() != EXTENSION_NAME:
            continue
        parsed = _parse_params(params)
        if isinstance(parsed, str):
            continue  # §5.1: decline this offer, try the next one
        response: list[tuple[str, str | None]] = []
        server_no_takeover = _SERVER_NO_TAKEOVER in parsed or not options.server_context_takeover
        client_no_takeover = _CLIENT_NO_TAKEOVER in parsed or not options.client_context_takeover
        if server_no_takeover:
            response.append((_SERVER_NO_TAKEOVER, None))
        if client_no_takeover:
            response.append((_CLIENT_NO_TAKEOVER, None))

        server_bits = 15
        offered_server = parsed.get(_SERVER_MAX_BITS)
        if offered_server is not None:
            wanted = _WINDOW_BITS_VALUES[offered_server]
            if wanted < 9:
                continue  # DESIGN.md: never answer 8 with a 9-bit compressor
            server_bits = min(wanted, our_server_bits)
            response.append((_SERVER_MAX_BITS, str(server_bits)))
        elif our_server_bits < 15:
            server_bits = our_server_bits
            response.append((_SERVER_MAX_BITS, str(server_bits)))

        client_bits = 15
        if _CLIENT_MAX_BITS in parsed:
            offered_client = parsed[_CLIENT_MAX_BITS]
            limit = 15 if offered_client is None else _WINDOW_BITS_VALUES[offered_client]
            client_bits = min(limit, options.client_max_window_bits)
            response.append((_CLIENT_MAX_BITS, str(client_bits)))

        agreed = DeflateParams(
            server_no_context_takeover=server_no_takeover,
            client_no_context_takeover=client_no_takeover,
            server_max_window_bits=server_bits,
            client_max_window_bits=client_bits,
        )
        return _format(response), PerMessageDeflate(True, agreed, options, shared_deflaters=shared_deflaters)
    return None


def _offer_params(options: DeflateOptions) -> list[tuple[str, str | None]]:
    """The parameters :func:`client_offer` sends for ``options`` (RFC 7692 §7.1)."""
    params: list[tuple[str, str | None]] = []
    if not options.server_context_takeover:
        params.append((_SERVER_NO_TAKEOVER, None))
    if not options.client_context_takeover:
        params.append((_CLIENT_NO_TAKEOVER, None))
    if options.server_max_window_bits < 15:
        # 8 is raised to 9: servers that follow DESIGN.md decline 8 (and we
        # inflate with a 15-bit window anyway, so asking for 8 saves nothing).
        params.append((_SERVER_MAX_BITS, str(max(9, options.server_max_window_bits))))
    if options.client_max_window_bits < 15:
        params.append((_CLIENT_MAX_BITS, str(max(9, options.client_max_window_bits))))
    else:
        params.append((_CLIENT_MAX_BITS, None))
    return params


def client_offer(options: DeflateOptions = DeflateOptions()) -> str:
    """The client's ``Sec-WebSocket-Extensions`` offer (RFC 7692 §5, §7.1).

    ``client_max_window_bits`` is always offered (we can limit our
    compressor, §7.1.2.2), with a value when ``options`` limit it. E.g. the
    defaults give ``permessage-deflate; client_max_window_bits``.
    """
    return _format(_offer_params(options))


def negotiate_client(
    response: Offers, options: DeflateOptions = DeflateOptions()
) -> PerMessageDeflate | None:
    """Check the server's answer to :func:`client_offer` (RFC 7692 §5.2, §7.1).

    Returns ``None`` if the response holds no permessage-deflate element
    (the server declined). Raises :class:`HandshakeError` (status 400: the
    client must _Fail the WebSocket Connection_) if the element is repeated,
    has an unknown or duplicated parameter or a malformed value, omits
    ``server_no_context_takeover`` or ``server_max_window_bits`` that we
    offered (§7.1.1.1, §7.1.2.1), answers a larger window than we offered,
    or holds ``client_max_window_bits`` we did not offer or without a value
    (§7.1.2.2).

    If the server sets ``client_max_window_bits=8`` the codec never
    compresses (zlib cannot deflate with an 8-bit window; RFC 7692 §6 lets
    any message go uncompressed).
    """
    elements = [params for name, params in response if name.lower() == EXTENSION_NAME]
    if not elements:
        return None
    if len(elements) > 1:
        raise HandshakeError(400, "permessage-deflate appears more than once in the response")
    parsed = _parse_params(elements[0])
    if isinstance(parsed, str):
        raise HandshakeError(400, f"invalid permessage-deflate response: {parsed}")
    offered = dict(_offer_params(options))

    if _SERVER_NO_TAKEOVER in offered and _SERVER_NO_TAKEOVER not in parsed:
        raise HandshakeError(400, "permessage-deflate response lacks the offered server_no_context_takeover")

    server_bits = 15
    if _SERVER_MAX_BITS in parsed:
        server_bits = _WINDOW_BITS_VALUES[parsed[_SERVER_MAX_BITS]]  # type: ignore[index]
    if _SERVER_MAX_BITS in offered:
        if _SERVER_MAX_BITS not in parsed:
            raise HandshakeError(400, "permessage-deflate response lacks the offered server_max_window_bits")
        limit = int(offered[_SERVER_MAX_BITS])  # type: ignore[arg-type]
        if server_bits > limit:
            raise HandshakeError(
                400, f"permessage-deflate server_max_window_bits={server_bits} exceeds the offered {limit}"
            )

    client_bits = 15
    if _CLIENT_MAX_BITS in parsed:
        if _CLIENT_MAX_BITS not in offered:
            raise HandshakeError(400, "permessage-deflate response has client_max_window_bits we did not offer")
        value = parsed[_CLIENT_MAX_BITS]
        if value is None:
            raise HandshakeError(400, "permessage-deflate response has client_max_window_bits without a value")
        client_bits = _WINDOW_BITS_VALUES[value]
        offered_value = offered[_CLIENT_MAX_BITS]
        if offered_value is not None and client_bits > int(offered_value):
            raise HandshakeError(
                400,
                f"permessage-deflate client_max_window_bits={client_bits} exceeds the offered {offered_value}",
            )

    agreed = DeflateParams(
        server_no_context_takeover=_SERVER_NO_TAKEOVER in parsed,
        client_no_context_takeover=_CLIENT_NO_TAKEOVER in parsed,
        server_max_window_bits=server_bits,
        client_max_window_bits=client_bits,
    )
    return PerMessageDeflate(False, agreed, options)


# --------------------------------------------------------------------------
# The codec (RFC 7692 §6, §7.2)
# --------------------------------------------------------------------------


class PerMessageDeflate:
    """Compress outgoing and decompress incoming messages (RFC 7692 §6, §7.2).

    ``is_server`` picks which half of the agreed ``params`` is ours: a server
    compresses under the ``server_*`` parameters and inflates what the
    client compressed under ``client_*``; a client the reverse.

    zlib objects are created lazily. Our compressor is dropped after every
    message when our direction has no context takeover (agreed, or chosen
    locally through ``options``); the decompressor is dropped after each
    message when the peer agreed not to take over context. With context
    takeover, between messages the decompressor's whole state is its sliding
    window (RFC 7692 §7.2.2: every message ends on the byte-aligned empty
    stored block ``00 00 ff ff``), i.e. the last 32 KiB of inflated output; so
    while the connection has inflated at most ``_HISTORY_LIMIT`` bytes in all
    the codec keeps a copy of them, and :meth:`release` swaps the
    decompressor for that copy (rebuilt with ``zdict=``). Compression with
    an agreed window of 8 bits is impossible with zlib: a server refuses to
    be built that way (:class:`UsageError`, negotiation never agrees to it),
    a client simply never compresses (:meth:`should_compress` is False).
    """

    def __init__(self, is_server: bool, params: DeflateParams, options: DeflateOptions = DeflateOptions(),
                 *, shared_deflaters: SharedDeflaters | None = None) -> None:
        self.is_server = is_server
        #: Without context takeover our messages are independent, so one deflater can serve many
        #: connections (flushed with Z_FULL_FLUSH, which drops all history): ``shared_deflaters``
        #: is a dict owned by the caller (one per thread), settings -> compressobj.  Saves creating
        #: a deflater per message (measured: bench/README.md).
        self._shared = shared_deflaters
        self.params = params
        self.options = options
        if is_server:
            agreed_bits = params.server_max_window_bits
            own_bits = options.server_max_window_bits
            peer_bits = params.client_max_window_bits
            self._send_no_takeover = params.server_no_context_takeover or not options.server_context_takeover
            self._recv_no_takeover = params.client_no_context_takeover
        else:
            agreed_bits = params.client_max_window_bits
            own_bits = options.client_max_window_bits
            peer_bits = params.server_max_window_bits
            self._send_no_takeover = params.client_no_context_takeover or not options.client_context_takeover
            self._recv_no_takeover = params.server_no_context_takeover
        if not 8 <= agreed_bits <= 15:
            raise UsageError(f"agreed window bits must be 8..15, got {agreed_bits!r}")
        self._can_compress = agreed_bits > 8
        if not self._can_compress and is_server:
            raise UsageError("zlib cannot deflate with an 8-bit window; negotiation must not agree to it")
        # Never compress with a larger window than agreed (RFC 7692 §7.1.2);
        # a smaller one (our own limit, at least 9) is always fine.
        self._send_wbits = -min(agreed_bits, max(9, own_bits))
        # RFC 7692 §7.1.2: the peer's window is at most what it agreed to; 9 for 8 (zlib deflates 8 as 9).
        self._inflate_wbits = -max(9, min(15, peer_bits))
        self._shared_key = (options.level, self._send_wbits, options.mem_level, options.strategy)
        self._deflater: zlib._Compress | None = None
        self._inflater: zlib._Decompress | None = None
        #: All output of the current inflate stream while it is at most _HISTORY_LIMIT bytes (the
        #: inflater's window, RFC 7692 §7.2.2); None once past the bound or without context takeover.
        self._history: bytearray | None = None if self._recv_no_takeover else bytearray()
        self._in_message = False  # a compressed message is being received
        self._ended = False  # its DEFLATE stream ended with BFINAL (§7.2.3.5)

    # -- sending (§7.2.1) --------------------------------------------------

    def should_compress(self, size: int) -> bool:
        """Whether to compress a message of ``size`` bytes (RFC 7692 §6).

        False below ``options.min_size`` and when compression is impossible
        (an agreed 8-bit window); the message is then sent with RSV1 unset.
        """
        return self._can_compress and size >= self.options.min_size

    def standalone_key(self) -> tuple[int, int, int, int, int] | None:
        """A key shared by the codecs whose compressed messages stand alone (RFC 7692 §7.2.1), else None.

        Without context takeover on our side a compressed message refers to no
        earlier one, so codecs with equal settings (level, window bits within
        what each peer agreed, memory level, strategy, ``min_size``) can all send
        the *same* payload: a broadcast compresses once per key, not once per
        receiver. None with context takeover (each peer has its own window) or
        when compression is impossible.
        """
        if self._send_no_takeover and self._can_compress:
            return self._shared_key + (self.options.min_size,)
        return None

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        """Compress one whole message into a frame payload (RFC 7692 §7.2.1).

        Deflates ``data``, flushes with ``Z_SYNC_FLUSH`` and strips the
        trailing ``00 00 ff ff``. An empty message gives ``b"\\x00"``
        (§7.2.3.6). The payload may be split into fragments by the caller
        (§7.2.3.3); RSV1 goes on the first one only (§6.1).
        """
        if not self._can_compress:
            raise UsageError("cannot compress: the agreed window (8 bits) is below what zlib can deflate with")
        o = self.options
        if self._send_no_takeover and self._shared is not None:
            key = self._shared_key
            deflater = self._shared.get(key)
            if deflater is None:
                deflater = self._shared[key] = zlib.compressobj(o.level, zlib.DEFLATED, *key[1:])
            body = deflater.compress(data)
            tail = deflater.flush(zlib.Z_FULL_FLUSH)  # no back-reference survives: the next message stands alone
        else:
            deflater = self._deflater
            if deflater is None:
                lib = zlib if self._send_no_takeover else _TAKEOVER_ZLIB  # kept: the smaller one
                deflater = lib.compressobj(o.level, zlib.DEFLATED, self._send_wbits, o.mem_level, o.strategy)
            body = deflater.compress(data)
            tail = deflater.flush(zlib.Z_SYNC_FLUSH)
            # §7.2.1: no context takeover -> the next message starts with an empty window.
            self._deflater = None if self._send_no_takeover else deflater
        if len(tail) >= 4:
            if not body:
                return tail[:-4]
            return b"".join((body, memoryview(tail)[:-4]))
        return (body + tail)[:-4]  # pragma: no cover - the marker is never split by zlib

    # -- receiving (§7.2.2) ------------------------------------------------

    def decompress(self, data: bytes | bytearray | memoryview, final: bool, max_size: int | None) -> bytes:
        """Inflate one frame's payload of a compressed message (RFC 7692 §7.2.2).

        Called for every frame of a message whose first frame had RSV1 set,
        ``final`` being that frame's FIN. On the final frame ``00 00 ff ff``
        is appended before inflating. ``max_size`` is how many inflated
        bytes this message may still produce (``None``: no limit); the
        output never exceeds it and no more than about ``max_size`` bytes
        are allocated before :class:`MessageTooBig` (close 1009) is raised.
        Corrupt DEFLATE data raises :class:`FrameError` (close 1002).

        A stream ending with a BFINAL block (§7.2.3.5) is accepted; what
        follows the final block in the message is ignored, and the next
        message starts with an empty window (a finished zlib stream keeps
        no context).

        If :meth:`release` dropped the decompressor under context takeover,
        it is rebuilt with the kept output as ``zdict``: a raw inflater
        primed with the last output equals the one that produced it, since
        between messages the window is all its state (§7.2.2).
        """
        inflater = self._inflater
        if inflater is None:
            history = self._history
            if history:
                inflater = self._inflater = zlib.decompressobj(self._inflate_wbits, zdict=history)
            else:
                inflater = self._inflater = zlib.decompressobj(self._inflate_wbits)
        self._in_message = not final
        try:
            if self._ended:
                out = b""
            else:
                if final:  # one zlib call with the tail appended (a frame is small next to its output)
                    data = data + _TAIL if type(data) is bytes else b"".join((data, _TAIL))
                if max_size is None:
                    out = inflater.decompress(data)
                else:  # the first bounded call inline: a message usually fits in it
                    limit = max(max_size, 0)
                    want = min(limit + 1, _FIRST_CHUNK)
                    out = inflater.decompress(data, want)
                    if len(out) > limit:
                        raise MessageTooBig(f"permessage-deflate: inflated message exceeds {limit} bytes")
                    if len(out) == want and not inflater.eof:  # input or output left in zlib
                        pieces = [out]
                        self._inflate(inflater, inflater.unconsumed_tail, limit, pieces, len(out))
                        out = b"".join(pieces)
                self._ended = inflater.eof
        except zlib.error as exc:
            self._reset_inflater()
            raise FrameError(f"permessage-deflate: invalid compressed data ({exc})") from None
        except MessageTooBig:
            self._reset_inflater()
            raise
        history = self._history
        if history is not None:  # None from the bound on: no further cost
            if len(history) + len(out) <= _HISTORY_LIMIT:
                history += out
            else:
                self._history = None  # the window is worth keeping as is from now on
        if final:
            if self._ended:  # §7.2.3.5: a finished stream keeps no context, nor its output
                self._reset_inflater()
            elif self._recv_no_takeover:
                self._inflater = None  # §7.2.2: next message starts with an empty window
        return out

    def _reset_inflater(self) -> None:
        self._inflater = None
        self._history = None if self._recv_no_takeover else bytearray()
        self._in_message = False
        self._ended = False

    @staticmethod
    def _inflate(
        inflater: zlib._Decompress,
        data: bytes | bytearray | memoryview,
        limit: int,
        pieces: list[bytes],
        produced: int,
    ) -> int:
        """Inflate the rest of a message into ``pieces``; return the message's output so far.

        Bounded: each call asks zlib for at most one byte more than allowed
        (``max_length``), in chunks that start at 256 KiB and double (so
        the unconsumed input is copied O(log n) times), and raises
        :class:`MessageTooBig` as soon as the limit is passed, before any
        join. Memory stays near ``limit`` whatever the compression ratio.
        """
        chunk = _FIRST_CHUNK
        buf = data
        while True:
            want = min(limit - produced + 1, chunk)
            out = inflater.decompress(buf, want)
            produced += len(out)
            if produced > limit:
                raise MessageTooBig(f"permessage-deflate: inflated message exceeds {limit} bytes")
            if out:
                pieces.append(out)
            # Output below ``want`` means the input is used up; a full buffer
            # may leave input (unconsumed_tail) or pending output in zlib.
            if len(out) < want or inflater.eof:
                return produced
            buf = inflater.unconsumed_tail
            chunk *= 2

    # -- hibernation -------------------------------------------------------

    def release(self) -> None:
        """Drop the zlib objects that hold no context, or little (used on ``hibernate``).

        With context takeover the LZ77 window must survive between messages
        (RFC 7692 §7.2.1, §7.2.2). Our compressor is kept then (its state is
        more than its window), and dropped without it. The decompressor is
        kept while a message is half received; otherwise it is dropped
        without context takeover, and with it too while the connection has
        inflated at most ``_HISTORY_LIMIT`` bytes in all: between messages
        its state is just its window, which is then exactly the kept output
        (§7.2.2: messages end on a byte-aligned empty stored block), so
        :meth:`decompress` rebuilds an equivalent one with ``zdict=``. Past
        the bound the decompressor is kept. All are recreated lazily. (A
        peer whose messages do not end so, against §7.2.1, may see a later
        message decode differently after a release than without one.)
        """
        if self._send_no_takeover:
            self._deflater = None
        if self._inflater is not None and not self._in_message and (
            self._recv_no_takeover or self._ended or self._history is not None
        ):
            self._inflater = None

    def memory_estimate(self) -> int:
        """Rough bytes held by the zlib objects (their allocation sizes) and the kept output."""
        total = 0
        if self._deflater is not None:  # the stdlib's: window, prev and head, pending buffer, state
            total += (4 << -self._send_wbits) + (512 << self.options.mem_level) + 6 * 1024
        if self._inflater is not None:
            total += (1 << -self._inflate_wbits) + 10 * 1024
        elif self._history:
            total += len(self._history)
        return total

    def __repr__(self) -> str:
        role = "server" if self.is_server else "client"
        return f"PerMessageDeflate({role}, {self.params!r})"
