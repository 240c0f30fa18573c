"""Parsers for the list-valued header fields of the opening handshake.

RFC 7230 §3.2.6 defines ``token`` and ``quoted-string``, §7 the ``#rule`` list
syntax (elements separated by commas with optional whitespace; a recipient
accepts empty elements). RFC 6455 §9.1 builds ``Sec-WebSocket-Extensions`` from
them and §11.3.4 ``Sec-WebSocket-Protocol``.

Every syntax error raises :class:`~cowboy_ws.protocol.errors.HandshakeError`
with status 400: a server answers a malformed offer with Bad Request.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import HandshakeError, UsageError

#: RFC 7230 §3.2.6: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-"
#: / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
TCHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789"
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_OWS = " \t"

Extension = tuple[str, list[tuple[str, "str | None"]]]


def is_token(value: str) -> bool:
    """Whether ``value`` is a non-empty RFC 7230 §3.2.6 ``token``."""
    return bool(value) and all(c in TCHARS for c in value)


def split_list(values: Iterable[str]) -> list[str]:
    """Split ``#element`` header lines into their elements (RFC 7230 §7).

    Lenient, for headers whose elements we only compare (``Connection``,
    ``Upgrade``): elements are stripped of OWS, empty ones are dropped.
    Several header lines are equivalent to one comma-joined line (§3.2.2).
    """
    out = []
    for value in values:
        for element in value.split(","):
            element = element.strip(_OWS)
            if element:
                out.append(element)
    return out


class _Scanner:
    """A cursor over one header value; every failure is a 400."""

    __slots__ = ("text", "pos")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> HandshakeError:
        return HandshakeError(400, f"expected {what} at offset {self.pos} in {self.text!r}")

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def skip_ows(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos] in _OWS:
            pos += 1
        self.pos = pos

    def token(self, what: str) -> str:
        text, start = self.text, self.pos
        pos = start
        while pos < len(text) and text[pos] in TCHARS:
            pos += 1
        if pos == start:
            raise self.fail(what)
        self.pos = pos
        return text[start:pos]

    def quoted_string(self) -> str:
        """RFC 7230 §3.2.6: DQUOTE *( qdtext / quoted-pair ) DQUOTE, unescaped."""
        text, pos = self.text, self.pos + 1  # past the opening DQUOTE
        out: list[str] = []
        while pos < len(text):
            c = text[pos]
            if c == '"':
                self.pos = pos + 1
                return "".join(out)
            if c == "\\":
                pos += 1
                if pos == len(text):
                    break
                c = text[pos]
            if (c < " " and c != "\t") or c == "\x7f":
                self.pos = pos
                raise self.fail("quoted-string text")
            out.append(c)
            pos += 1
        self.pos = pos
        raise self.fail("closing quote")

    def element_end(self) -> bool:
        """Consume OWS and one ``,``; True when the value is exhausted."""
        self.skip_ows()
        if self.at_end():
            return True
        if self.peek() != ",":
            raise self.fail('"," or end of value')
        self.pos += 1
        return False


def _elements(values: Iterable[str]) -> Iterable[_Scanner]:
    """Yield a scanner positioned on each non-empty list element (RFC 7230 §7)."""
    for value in values:
        sc = _Scanner(value)
        while True:
            sc.skip_ows()
            if sc.at_end():
                break
            if sc.peek() == ",":  # empty element, tolerated
                sc.pos += 1
                continue
            yield sc  # the consumer parses the element, then calls element_end()
            if sc.element_end():
                break


def parse_protocol_header(values: Iterable[str]) -> list[str]:
    """Parse ``Sec-WebSocket-Protocol`` lines into subprotocol names, in order.

    RFC 6455 §11.3.4: ``1#token`` over any number of header lines. Names are
    case-sensitive and kept as sent. A non-token element raises a 400.
    """
    return [sc.token("subprotocol token") for sc in _elements(values)]


def parse_extensions_header(values: Iterable[str]) -> list[Extension]:
    """Parse ``Sec-WebSocket-Extensions`` lines (RFC 6455 §9.1)::

        extension-list  = 1#extension
        extension       = extension-token *( ";" extension-param )
        extension-param = token [ "=" (token | quoted-string) ]

    Returns ``[(name, [(param, value_or_None), ...]), ...]`` in offer order,
    with extension and parameter names lower-cased and quoted values unescaped.
    §9.1 requires a quoted value to be a token once unquoted. OWS is allowed
    around ``,``, ``;`` and ``=``; empty list elements are skipped (RFC 7230
    §7). Anything else raises a 400.
    """
    result: list[Extension] = []
    for sc in _elements(values):
        name = sc.token("extension token").lower()
        params: list[tuple[str, str | None]] = []
        sc.skip_ows()
        while sc.peek() == ";":
            sc.pos += 1
            sc.skip_ows()
            param = sc.token("extension parameter").lower()
            value: str | None = None
            sc.skip_ows()
            if sc.peek() == "=":
                sc.pos += 1
                sc.skip_ows()
                if sc.peek() == '"':
                    start = sc.pos
                    value = sc.quoted_string()
                    if not is_token(value):
                        sc.pos = start
                        raise sc.fail("a token inside the quoted parameter value")
                else:
                    value = sc.token("parameter value")
                sc.skip_ows()
            params.append((param, value))
        result.append((name, params))
    return result


def format_extension(name: str, params: Iterable[tuple[str, str | None]]) -> str:
    """Serialize one extension for ``Sec-WebSocket-Extensions`` (RFC 6455 §9.1).

    ``format_extension("permessage-deflate", [("client_max_window_bits", "10")])``
    gives ``"permessage-deflate; client_max_window_bits=10"``. Values that are
    not tokens are sent as a quoted-string (RFC 7230 §3.2.6).
    """
    if not is_token(name):
        raise UsageError(f"extension name is not a token: {name!r}")
    parts = [name]
    for param, value in params:
        if not is_token(param):
            raise UsageError(f"extension parameter is not a token: {param!r}")
        if value is None:
            parts.append(param)
        elif is_token(value):
            parts.append(f"{param}={value}")
        else:
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'{param}="{escaped}"')
    return "; ".join(parts)
