"""Behaviour of cowboy_ws.req.Req (the cowboy_req part)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from cowboy_ws.protocol.errors import HandshakeError
from cowboy_ws.req import DEFAULT_REQ_FILTER_FIELDS, Req, default_req_filter

try:  # the real parsed request, when protocol.handshake is there
    from cowboy_ws.protocol.handshake import Request as _RealRequest
except ImportError:  # pragma: no cover
    _RealRequest = None


@dataclass
class _StandIn:
    """Same attributes as protocol.handshake.Request."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]] = field(default_factory=list)


def make_request(target="/", headers=(("host", "example.com"),), method="GET", version="HTTP/1.1"):
    headers = [(k.lower(), v) for k, v in headers]
    if _RealRequest is not None:
        try:
            return _RealRequest(method=method, target=target, version=version, headers=headers)
        except TypeError:  # different constructor: the attributes are the contract
            pass
    return _StandIn(method, target, version, headers)


def make_req(target="/", headers=(("host", "example.com"),), *, scheme="http", **kw):
    return Req.from_request(make_request(target, headers, **kw), scheme=scheme, peer=("10.0.0.1", 5555))


# -- host / port / scheme -------------------------------------------------------


@pytest.mark.parametrize(
    "host, scheme, expected",
    [
        ("example.com", "http", ("example.com", 80)),
        ("example.com", "https", ("example.com", 443)),
        ("example.com", "ws", ("example.com", 80)),
        ("example.com", "wss", ("example.com", 443)),
        ("Example.COM:8080", "http", ("example.com", 8080)),
        ("example.com:", "https", ("example.com", 443)),
        ("[::1]:8080", "http", ("[::1]", 8080)),
        ("[::1]", "https", ("[::1]", 443)),
        ("[FE80::A]:1", "http", ("[fe80::a]", 1)),
        ("127.0.0.1:9000", "http", ("127.0.0.1", 9000)),
    ],
)
def test_host_and_port(host, scheme, expected):
    req = make_req(headers=[("host", host)], scheme=scheme)
    assert (req.host, req.port) == expected
    assert req.scheme == scheme


@pytest.mark.parametrize("host", ["example.com:http", "example.com:70000", "[::1", "[::1]x", "exa mple.com", "a/b"])
def test_invalid_host_is_400(host):
    with pytest.raises(HandshakeError) as e:
        make_req(headers=[("host", host)])
    assert e.value.status == 400


def test_missing_or_repeated_host():
    with pytest.raises(HandshakeError) as e:
        make_req(headers=[])
    assert e.value.status == 400
    with pytest.raises(HandshakeError):
        make_req(headers=[("host", "a"), ("host", "b")])
    req = make_req(headers=[], version="HTTP/1.0")
    assert (req.host, req.port, req.version) == ("", 80, "HTTP/1.0")


def test_absolute_form_authority_wins():
    req = make_req("http://Other.org:81/p/a?x=1#frag", headers=[("host", "example.com")])
    assert (req.host, req.port, req.path, req.qs) == ("other.org", 81, "/p/a", "x=1")
    req = make_req("http://other.org?x", headers=[("host", "example.com")])
    assert (req.path, req.qs) == ("/", "x")


def test_bad_target():
    with pytest.raises(HandshakeError):
        make_req("chat")


# -- path / qs / headers ----------------------------------------------------------


def test_path_is_raw_and_qs_split():
    req = make_req("/chat%20room/a%2Fb?x=%20y&z")
    assert req.path == "/chat%20room/a%2Fb"
    assert req.qs == "x=%20y&z"
    assert make_req("/p").qs == ""
    assert make_req("/p#f").path == "/p"
    assert req.method == "GET" and req.version == "HTTP/1.1"
    assert req.peer == ("10.0.0.1", 5555)


def test_duplicate_headers_joined():
    req = make_req(
        headers=[
            ("host", "h"),
            ("Sec-WebSocket-Protocol", "chat"),
            ("x-a", "1"),
            ("sec-websocket-protocol", "superchat, v2"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
        ]
    )
    assert req.headers["sec-websocket-protocol"] == "chat, superchat, v2"
    assert req.headers["cookie"] == "a=1; b=2"
    assert req.header("X-A") == "1"
    assert req.header("missing") is None
    assert req.header("missing", "dflt") == "dflt"


def test_parse_qs_edge_cases():
    req = make_req("/?a=1&b&c=%20+x")
    assert req.parse_qs() == [("a", "1"), ("b", True), ("c", "  x")]
    cases = {
        "": [],
        "&": [],
        "a&&b&": [("a", True), ("b", True)],
        "a=": [("a", "")],
        "a=b=c": [("a", "b=c")],
        "+=+": [(" ", " ")],
        "%25%26%3D=%2B": [("%&=", "+")],
        "k=1&k=2": [("k", "1"), ("k", "2")],
        "n=%C3%A9": [("n", "é")],
    }
    for qs, expected in cases.items():
        assert Req(qs=qs).parse_qs() == expected, qs
    for bad in ("=", "=b", "a=%zz", "a=%2"):
        with pytest.raises(ValueError):
            Req(qs=bad).parse_qs()


def test_parse_header():
    req = make_req(
        headers=[
            ("host", "h"),
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
            ("sec-websocket-protocol", "chat, superchat"),
            ("sec-websocket-protocol", "v3"),
            ("sec-websocket-extensions", "permessage-deflate; client_max_window_bits, x-foo"),
            ("sec-websocket-version", "13"),
        ]
    )
    assert req.parse_header("sec-websocket-protocol") == ["chat", "superchat", "v3"]
    assert req.parse_header("connection") == ["keep-alive", "upgrade"]
    assert req.parse_header("Upgrade") == ["websocket"]
    assert req.parse_header("sec-websocket-version") == 13
    exts = req.parse_header("sec-websocket-extensions")
    assert [name for name, _ in exts] == ["permessage-deflate", "x-foo"]
    assert exts[0][1] == [("client_max_window_bits", None)]
    assert exts[1][1] == []
    bare = make_req()
    assert bare.parse_header("sec-websocket-protocol") is None
    assert bare.parse_header("sec-websocket-extensions", []) == []
    with pytest.raises(ValueError, match="sec-websocket-protocol"):
        req.parse_header("accept")


# -- bindings / response ------------------------------------------------------------


def test_bindings_from_router():
    req = Req.from_request(
        make_request("/chat/lobby/a/b"),
        scheme="http",
        peer=("::1", 1),
        sockname=("::1", 8080),
        bindings={"room": "lobby"},
        path_info=["a", "b"],
    )
    assert req.binding("room") == "lobby"
    assert req.binding("nope") is None and req.binding("nope", 7) == 7
    assert req.path_info == ["a", "b"]
    assert req.sock == ("::1", 8080)


def test_set_resp_header_and_reply():
    req = make_req()
    assert not req.has_reply
    req.set_resp_header("Sec-WebSocket-Protocol", "chat")
    req.set_resp_header("X-Keep", "1")
    assert req.resp_headers == {"sec-websocket-protocol": "chat", "x-keep": "1"}
    assert req.has_resp_header("x-keep") and req.resp_header("X-KEEP") == "1"
    req.delete_resp_header("sec-websocket-protocol")
    req.reply(403, {"Content-Type": "text/plain", "x-keep": "2"}, ["no ", b"entry"])
    assert req.has_reply
    assert req.resp_status == 403
    assert req.resp_headers == {"x-keep": "2", "content-type": "text/plain"}
    assert req.resp_body == b"no entry"
    with pytest.raises(RuntimeError):
        req.reply(500)


def test_reply_defaults():
    req = make_req()
    req.reply(400)
    assert (req.resp_status, req.resp_body, req.resp_headers) == (400, b"", {})


def test_uri():
    assert make_req("/a/b?x=1").uri() == "http://example.com/a/b?x=1"
    req = make_req("/p", headers=[("host", "[::1]:8443")], scheme="https")
    assert req.uri() == "https://[::1]:8443/p"
    assert req.uri(scheme=None, qs=None) == "//[::1]:8443/p"
    assert req.uri(port=443, fragment="f") == "https://[::1]/p#f"


def test_req_filter():
    req = make_req("/chat?x=1")
    req.bindings["room"] = "r"
    partial = default_req_filter(req)
    assert set(partial) == set(DEFAULT_REQ_FILTER_FIELDS)
    assert partial == {
        "method": "GET",
        "version": "HTTP/1.1",
        "scheme": "http",
        "host": "example.com",
        "port": 80,
        "path": "/chat",
        "qs": "x=1",
        "peer": ("10.0.0.1", 5555),
    }
    custom = req.to_partial(["headers", "bindings"])
    assert custom["bindings"] == {"room": "r"}
    custom["bindings"]["room"] = "changed"
    assert req.binding("room") == "r"
    with pytest.raises(ValueError):
        req.to_partial(["nope"])


def test_slots():
    req = make_req()
    with pytest.raises(AttributeError):
        req.something_else = 1


def test_parse_header_malformed_is_400():
    req = make_req(headers=[("host", "h"), ("sec-websocket-version", "thirteen"), ("sec-websocket-protocol", "a b")])
    for name in ("sec-websocket-version", "sec-websocket-protocol"):
        with pytest.raises(HandshakeError) as e:
            req.parse_header(name)
        assert e.value.status == 400
