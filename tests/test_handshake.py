"""Tests of the opening handshake (RFC 6455 §4, RFC 7230 §3)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cowboy_ws.protocol import limits
from cowboy_ws.protocol.errors import HandshakeError, UsageError
from cowboy_ws.protocol.handshake import (
    Request,
    Response,
    accept_key,
    build_http_response,
    build_refusal,
    build_request,
    build_response,
    format_extension,
    is_upgrade_request,
    make_key,
    parse_extensions_header,
    parse_protocol_header,
    parse_request_head,
    parse_response_head,
    validate_response,
    validate_upgrade,
)

SAMPLE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3
SAMPLE_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
VERSION_13 = ("Sec-WebSocket-Version", "13")


def head(*lines: str, request_line: str = "GET /chat HTTP/1.1") -> bytes:
    return ("\r\n".join([request_line, *lines]) + "\r\n\r\n").encode("latin-1")


def upgrade_head(*extra: str, drop: tuple[str, ...] = (), request_line: str = "GET /chat HTTP/1.1") -> bytes:
    """The RFC 6455 §1.2 sample request, minus ``drop`` header names, plus ``extra`` lines."""
    base = [
        "Host: server.example.com",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {SAMPLE_KEY}",
        "Origin: http://example.com",
        "Sec-WebSocket-Protocol: chat, superchat",
        "Sec-WebSocket-Version: 13",
    ]
    kept = [line for line in base if line.split(":")[0].lower() not in drop]
    return head(*kept, *extra, request_line=request_line)


def parse(data: bytes) -> Request:
    result = parse_request_head(data)
    assert result is not None
    req, consumed = result
    assert consumed == len(data)
    return req


def refusal(data: bytes) -> HandshakeError:
    with pytest.raises(HandshakeError) as info:
        validate_upgrade(parse(data))
    return info.value


# -- accept key, full round trip ------------------------------------------------


def test_accept_key_rfc_example() -> None:
    """RFC 6455 §1.3 / §4.2.2: the sample nonce's accept value."""
    assert accept_key(SAMPLE_KEY) == SAMPLE_ACCEPT


def test_valid_request_round_trip() -> None:
    """RFC 6455 §4.2.1 accepted, §4.2.2 answered with 101 and the accept key."""
    req = parse(upgrade_head())
    assert (req.method, req.target, req.version) == ("GET", "/chat", "HTTP/1.1")
    assert req.get("HOST") == "server.example.com"
    assert req.get("x-missing") is None and req.get("x-missing", "d") == "d"
    assert is_upgrade_request(req)
    key = validate_upgrade(req)
    assert key == SAMPLE_KEY
    assert parse_protocol_header(req.get_all("sec-websocket-protocol")) == ["chat", "superchat"]
    out = build_response(key, protocol="chat", extensions="permessage-deflate", headers=[("X-A", "1")])
    assert out.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert out.endswith(b"\r\n\r\n")
    resp, consumed = parse_response_head(out)
    assert consumed == len(out)
    assert resp.status == 101
    assert resp.get("sec-websocket-accept") == SAMPLE_ACCEPT
    assert resp.get("upgrade") == "websocket" and resp.get("connection") == "Upgrade"
    assert resp.get("sec-websocket-protocol") == "chat"
    assert resp.get("sec-websocket-extensions") == "permessage-deflate"
    assert resp.get("x-a") == "1"


def test_headers_lowercased_stripped_ordered_duplicates_kept() -> None:
    """RFC 7230 §3.2: names are case-insensitive, OWS around values is not part of them."""
    req = parse(head("X-Dup: \t one \t", "x-dup:two", "Other: 3"))
    assert req.headers == [("x-dup", "one"), ("x-dup", "two"), ("other", "3")]
    assert req.get("X-DUP") == "one"
    assert req.get_all("x-Dup") == ["one", "two"]
    assert req.get_all("nope") == []


def test_response_builder_defaults_omit_optional_headers() -> None:
    """RFC 6455 §4.2.2: Sec-WebSocket-Protocol/Extensions only when selected."""
    out = build_response(SAMPLE_KEY)
    assert b"Sec-WebSocket-Protocol" not in out and b"Sec-WebSocket-Extensions" not in out
    assert b"Sec-WebSocket-Accept: " + SAMPLE_ACCEPT.encode() + b"\r\n" in out


# -- refusals ------------------------------------------------------------------------


def test_plain_get_is_426() -> None:
    """RFC 6455 §4.2.1 items 3-4 / §4.4: a plain GET is told to upgrade."""
    err = refusal(head("Host: a"))
    assert err.status == 426
    assert ("Upgrade", "websocket") in err.headers
    assert ("Connection", "Upgrade") in err.headers
    assert VERSION_13 in err.headers
    assert not is_upgrade_request(parse(head("Host: a")))


@pytest.mark.parametrize("drop", ["upgrade", "connection"])
def test_missing_upgrade_or_connection_is_426(drop: str) -> None:
    """RFC 6455 §4.2.1 items 3-4."""
    assert refusal(upgrade_head(drop=(drop,))).status == 426


def test_connection_without_upgrade_token_is_426() -> None:
    """RFC 6455 §4.2.1 item 4: the Connection list must contain "Upgrade"."""
    assert refusal(upgrade_head("Connection: keep-alive", drop=("connection",))).status == 426
    assert refusal(upgrade_head("Upgrade: h2c", drop=("upgrade",))).status == 426


@pytest.mark.parametrize(
    "key",
    [
        "not base64!!",  # not base64
        "dGhlIHNhbXBsZSBub25j",  # 15 bytes
        "dGhlIHNhbXBsZSBub25jZTEy",  # 18 bytes
        "dGhlIHNhbXBsZSBub25jZQ",  # missing padding
        "dGhlIHNhbXBsZSBub25jZQ==x",  # trailing garbage
        "",
        "dGhlIHNhbXBsZSBub25jZQ==, dGhlIHNhbXBsZSBub25jZQ==",
        "dGhlIHNhbXBsZSBub25jZ\xe9==",  # non-ASCII
    ],
)
def test_bad_key_is_400(key: str) -> None:
    """RFC 6455 §4.2.1 item 5: the key decodes to exactly 16 bytes."""
    err = refusal(upgrade_head(f"Sec-WebSocket-Key: {key}", drop=("sec-websocket-key",)))
    assert err.status == 400
    assert VERSION_13 in err.headers


def test_key_of_17_bytes_is_400() -> None:
    """RFC 6455 §4.2.1 item 5."""
    import base64

    key = base64.b64encode(b"x" * 17).decode()
    assert refusal(upgrade_head(f"Sec-WebSocket-Key: {key}", drop=("sec-websocket-key",))).status == 400


def test_missing_or_duplicated_key_is_400() -> None:
    """RFC 6455 §4.2.1 item 5: exactly one Sec-WebSocket-Key."""
    err = refusal(upgrade_head(drop=("sec-websocket-key",)))
    assert err.status == 400 and VERSION_13 in err.headers
    err = refusal(upgrade_head(f"Sec-WebSocket-Key: {SAMPLE_KEY}"))
    assert err.status == 400 and VERSION_13 in err.headers


@pytest.mark.parametrize("lines", [["Sec-WebSocket-Version: 8"], [], ["Sec-WebSocket-Version: 13, 8"],
                                   ["Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 13"]])
def test_bad_version_is_400_advertising_13(lines: list[str]) -> None:
    """RFC 6455 §4.2.1 item 6 and §4.4: answer with Sec-WebSocket-Version: 13."""
    err = refusal(upgrade_head(*lines, drop=("sec-websocket-version",)))
    assert err.status == 400
    assert err.headers == [VERSION_13]


def test_post_is_405() -> None:
    """RFC 6455 §4.2.1 item 1: the method MUST be GET."""
    err = refusal(upgrade_head(request_line="POST /chat HTTP/1.1"))
    assert err.status == 405
    assert err.headers == [("Allow", "GET")]


@pytest.mark.parametrize("version,ok", [("HTTP/1.0", False), ("HTTP/2.0", False), ("HTTP/0.9", False),
                                        ("HTTP/1.1", True), ("HTTP/1.2", True)])
def test_http_version(version: str, ok: bool) -> None:
    """RFC 6455 §4.2.1 item 1: HTTP/1.1 or higher (HTTP/1.x framing)."""
    data = upgrade_head(request_line=f"GET /chat {version}")
    if ok:
        assert validate_upgrade(parse(data)) == SAMPLE_KEY
    else:
        assert refusal(data).status == 400


@pytest.mark.parametrize("hosts", [[], ["Host: a", "Host: b"], ["Host:"]])
def test_missing_or_duplicate_host_is_400(hosts: list[str]) -> None:
    """RFC 6455 §4.2.1 item 2; RFC 7230 §5.4."""
    assert refusal(upgrade_head(*hosts, drop=("host",))).status == 400


def test_refusal_response_bytes() -> None:
    """RFC 7230 §3: a refusal is a complete response that closes the connection."""
    try:
        validate_upgrade(parse(head("Host: a")))
    except HandshakeError as err:
        out = build_refusal(err.status, headers=err.headers, body=b"upgrade please")
    resp, consumed = parse_response_head(out)
    assert consumed == len(out) - len(b"upgrade please")
    assert (resp.status, resp.reason) == (426, "Upgrade Required")
    assert resp.get("content-length") == "14"
    assert resp.get("connection") == "close"
    assert resp.get("sec-websocket-version") == "13"
    assert out.endswith(b"\r\n\r\nupgrade please")
    assert build_refusal(400, reason="Nope").startswith(b"HTTP/1.1 400 Nope\r\n")


def test_build_http_response() -> None:
    """RFC 7230 §3.3.2: Content-Length is ours; keep-alive leaves Connection alone."""
    out = build_http_response(200, [("Content-Length", "999"), ("Content-Type", "text/plain")], b"hi",
                              keep_alive=True)
    assert out == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
    assert b"Content-Length" not in build_http_response(204)
    with pytest.raises(UsageError):
        build_http_response(200, [("X", "a\r\nInjected: 1")])
    with pytest.raises(UsageError):
        build_http_response(200, [("Bad Name", "a")])
    with pytest.raises(UsageError):
        build_http_response(304, body=b"x")


# -- case-insensitivity and lists ----------------------------------------------------------


def test_case_insensitive_headers_and_tokens() -> None:
    """RFC 6455 §4.2.1: Upgrade/Connection tokens compare case-insensitively; RFC 7230 §7 lists."""
    data = upgrade_head("UPGRADE: WebSocket", "CONNECTION: keep-alive, Upgrade", drop=("upgrade", "connection"))
    assert validate_upgrade(parse(data)) == SAMPLE_KEY
    data = upgrade_head("Connection: keep-alive", "connection: upgrade", drop=("connection",))
    assert validate_upgrade(parse(data)) == SAMPLE_KEY
    data = upgrade_head("Upgrade: h2c, , websocket", "Connection: ,upgrade,", drop=("upgrade", "connection"))
    assert validate_upgrade(parse(data)) == SAMPLE_KEY


# -- incremental parsing ------------------------------------------------------------------------


def test_incremental_one_byte_at_a_time() -> None:
    """RFC 7230 §3: the head ends at the empty line; what follows is kept for the frame layer."""
    data = upgrade_head()
    trailing = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"  # RFC 6455 §5.7 masked "Hello"
    stream = data + trailing
    for i in range(len(data)):
        assert parse_request_head(stream[:i]) is None
    req, consumed = parse_request_head(bytearray(stream))
    assert consumed == len(data)
    assert stream[consumed:] == trailing
    assert validate_upgrade(req) == SAMPLE_KEY


def test_bare_lf_and_leading_empty_lines() -> None:
    """RFC 7230 §3.5: accept LF line endings; ignore empty lines before the request line."""
    data = b"\r\n\nGET / HTTP/1.1\nHost: a\r\nX: y\n\nrest"
    req, consumed = parse_request_head(data)
    assert data[consumed:] == b"rest"
    assert req.target == "/" and req.get("host") == "a" and req.get("x") == "y"
    assert parse_request_head(b"GET / HTTP/1.1\nHost: a\n") is None
    assert parse_request_head(b"GET / HTTP/1.1\nHost: a\n\r") is None


# -- malformed heads and limits -------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"GET /\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1 x\r\n\r\n",
        b"G(T / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/11\r\n\r\n",
        b"GET / http/1.1\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET / HTTP/1.1\r\n: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nX\xe9: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
    ],
)
def test_malformed_head_is_400(data: bytes) -> None:
    """RFC 7230 §3.1.1 request line, §3.2 header fields, §3.2.4 no whitespace before colon / obs-fold."""
    with pytest.raises(HandshakeError) as info:
        parse_request_head(data)
    assert info.value.status == 400


def test_obs_text_value_is_kept_as_latin1() -> None:
    """RFC 7230 §3.2.6: obs-text is allowed in field values."""
    assert parse(head("X: caf\xe9")).get("x") == "caf\xe9"


def _raises(status: int, data: bytes, **limits_: int) -> None:
    with pytest.raises(HandshakeError) as info:
        parse_request_head(data, **limits_)
    assert info.value.status == status


def test_request_line_limit_414() -> None:
    """RFC 7230 §3.1.1: a too long request-target is answered 414, even before the line ends."""
    target = "/" + "a" * 40
    line = f"GET {target} HTTP/1.1".encode()
    _raises(414, line + b"\r\n\r\n", max_request_line=len(line) - 1)
    _raises(414, line, max_request_line=len(line) - 3)  # incomplete, already too long
    assert parse_request_head(line + b"\r\n\r\n", max_request_line=len(line)) is not None
    assert parse_request_head(line + b"\r", max_request_line=len(line)) is None
    _raises(414, b"GET /" + b"a" * (limits.MAX_REQUEST_LINE + 2))


def test_header_limits_431() -> None:
    """RFC 6585 §5: 431 for a too long header line, too many headers, a too large head."""
    _raises(431, head("X: " + "v" * 50), max_header_line=52)
    assert parse_request_head(head("X: " + "v" * 50), max_header_line=53) is not None
    _raises(431, b"GET / HTTP/1.1\r\nX: " + b"v" * 60, max_header_line=50)  # incomplete line
    _raises(431, head(*["X: 1"] * 4), max_headers=3)
    assert parse_request_head(head(*["X: 1"] * 3), max_headers=3) is not None
    _raises(431, b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 4, max_headers=3)  # incomplete head
    _raises(431, head(*["X: 1"] * 10), max_head_size=50)
    _raises(431, b"GET / HTTP/1.1\r\nX: 1\r\nY: 2", max_head_size=20)  # incomplete, already too big
    _raises(431, b"\r\n" * 20, max_head_size=20)
    data = head("X: 1")
    assert parse_request_head(data, max_head_size=len(data)) is not None
    _raises(431, data, max_head_size=len(data) - 1)
    big = b"GET / HTTP/1.1\r\n" + b"X: 1234567890\r\n" * (limits.MAX_HEAD_SIZE // 15)
    _raises(431, big)


# -- Sec-WebSocket-Extensions / -Protocol ------------------------------------------------------


def test_extensions_rfc7692_offer() -> None:
    """RFC 6455 §9.1: two offers of one extension, parameters with and without values."""
    assert parse_extensions_header(
        ["permessage-deflate; client_max_window_bits, permessage-deflate; server_max_window_bits=10"]
    ) == [
        ("permessage-deflate", [("client_max_window_bits", None)]),
        ("permessage-deflate", [("server_max_window_bits", "10")]),
    ]


def test_extensions_quoted_ows_case_and_several_lines() -> None:
    """RFC 6455 §9.1 quoted values, RFC 7230 §3.2.6 quoted-pair, §7 empty elements, OWS."""
    assert parse_extensions_header(['foo; x="10"; y="a\\b"']) == [("foo", [("x", "10"), ("y", "ab")])]
    assert parse_extensions_header(["Foo ;\tX = 1 , , bar", "", " , baz;q"]) == [
        ("foo", [("x", "1")]),
        ("bar", []),
        ("baz", [("q", None)]),
    ]
    assert parse_extensions_header([]) == []


@pytest.mark.parametrize(
    "value",
    ["foo;;", "foo; ;x", "=10", "foo; =10", 'foo; a="1 0"', 'foo; a="10', "foo; a=", 'foo; a=""',
     "foo bar", "foo; a=1 2", "foo; a=\"1\"x", "fo\xe9", "foo;", "foo; a=\"\\", "foo; a=1=2", '"foo"',
     'x="10"'],
)
def test_extensions_malformed_is_400(value: str) -> None:
    """RFC 6455 §9.1: anything outside the extension-list ABNF is a bad request."""
    with pytest.raises(HandshakeError) as info:
        parse_extensions_header([value])
    assert info.value.status == 400


def test_format_extension_round_trip() -> None:
    """RFC 6455 §9.1: serialization parses back to the same value."""
    params = [("server_no_context_takeover", None), ("client_max_window_bits", "10")]
    text = format_extension("permessage-deflate", params)
    assert text == "permessage-deflate; server_no_context_takeover; client_max_window_bits=10"
    assert parse_extensions_header([text]) == [("permessage-deflate", params)]
    assert format_extension("x", [("a", "b c")]) == 'x; a="b c"'
    with pytest.raises(UsageError):
        format_extension("bad name", [])


def test_protocol_header() -> None:
    """RFC 6455 §11.3.4: 1#token over several lines, case kept."""
    assert parse_protocol_header(["chat, SuperChat", " ,v2.bin ,"]) == ["chat", "SuperChat", "v2.bin"]
    assert parse_protocol_header([]) == []
    for bad in ["chat superchat", "chat;x", "\"chat\"", "ch/at", "chat, a b"]:
        with pytest.raises(HandshakeError) as info:
            parse_protocol_header([bad])
        assert info.value.status == 400


# -- client side ------------------------------------------------------------------------------------


def test_make_key() -> None:
    """RFC 6455 §4.1 item 7: base64 of 16 random bytes."""
    assert make_key(b"the sample nonce") == SAMPLE_KEY
    assert len(make_key()) == 24 and make_key() != make_key()
    with pytest.raises(UsageError):
        make_key(b"short")


def test_client_round_trip() -> None:
    """RFC 6455 §4.1: the client request is accepted, the server answer validated."""
    key = make_key()
    data = build_request("example.com:8080", "/ws?a=1", key, protocols=["chat", "v2"],
                         extensions="permessage-deflate; client_max_window_bits", headers=[("Origin", "x")])
    req = parse(data)
    assert req.target == "/ws?a=1" and req.get("host") == "example.com:8080" and req.get("origin") == "x"
    assert validate_upgrade(req) == key
    offered = parse_extensions_header(req.get_all("sec-websocket-extensions"))
    assert offered == [("permessage-deflate", [("client_max_window_bits", None)])]
    answer = build_response(key, protocol="v2", extensions="permessage-deflate; client_max_window_bits=10")
    resp, consumed = parse_response_head(answer + b"\x81\x00")
    assert consumed == len(answer)
    protocol, extensions = validate_response(resp, key, protocols=["chat", "v2"],
                                             offered_extensions="permessage-deflate")
    assert protocol == "v2"
    assert extensions == [("permessage-deflate", [("client_max_window_bits", "10")])]
    assert validate_response(parse_response_head(build_response(key))[0], key) == (None, [])


def _bad_answer(answer: bytes, key: str = SAMPLE_KEY, **kw) -> HandshakeError:
    resp, _ = parse_response_head(answer)
    with pytest.raises(HandshakeError) as info:
        validate_response(resp, key, **kw)
    return info.value


def test_client_rejects_bad_answers() -> None:
    """RFC 6455 §4.1: the client fails the connection on any wrong answer."""
    assert _bad_answer(build_response(make_key())).status == 502  # wrong accept key
    ok = build_response(SAMPLE_KEY)
    assert _bad_answer(ok.replace(b"Upgrade: websocket", b"Upgrade: h2c")).status == 502
    assert _bad_answer(ok.replace(b"Connection: Upgrade", b"Connection: close")).status == 502
    assert _bad_answer(build_response(SAMPLE_KEY, protocol="other"), protocols=["chat"]).status == 502
    assert _bad_answer(build_response(SAMPLE_KEY, protocol="chat")).status == 502  # nothing offered
    assert _bad_answer(build_response(SAMPLE_KEY, extensions="x;;")).status == 502
    assert _bad_answer(build_response(SAMPLE_KEY, extensions="x"), offered_extensions="y").status == 502
    refused = _bad_answer(build_refusal(403))
    assert refused.status == 403


def test_response_head_parsing() -> None:
    """RFC 7230 §3.1.2: status line; a malformed answer is a 502 for the client."""
    resp, _ = parse_response_head(b"HTTP/1.1 101\r\n\r\n")
    assert (resp.status, resp.reason, resp.version) == (101, "", "HTTP/1.1")
    resp, _ = parse_response_head(b"HTTP/1.1 404 Not  Found\n\n")
    assert resp.reason == "Not  Found"
    assert parse_response_head(b"HTTP/1.1 101 Switching") is None
    for bad in [b"HTTP/1.1 1O1 x\r\n\r\n", b"HTTP/1.1\r\n\r\n", b"HTP/1.1 101 x\r\n\r\n",
                b"HTTP/1.1 101 x\r\nbad\r\n\r\n"]:
        with pytest.raises(HandshakeError) as info:
            parse_response_head(bad)
        assert info.value.status == 502
    assert Response(200, "OK", headers=[("X-A", "b")]).get("x-a") == "b"


def test_build_request_rejects_bad_input() -> None:
    """RFC 7230 §3.1.1 / §3.2: nothing that would break the request head."""
    for target in ["", "/a b", "/\n", "/caf\xe9"]:
        with pytest.raises(UsageError):
            build_request("h", target, SAMPLE_KEY)
    with pytest.raises(UsageError):
        build_request("h\r\nX: y", "/", SAMPLE_KEY)
    with pytest.raises(UsageError):
        build_request("h", "/", SAMPLE_KEY, protocols=["a b"])


# -- properties -----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.builds(lambda a, b: a + b"\r\n\r\n" + b, st.binary(max_size=200), st.binary(max_size=20)))
def test_parser_only_raises_handshake_error(data: bytes) -> None:
    """RFC 7230 §3: arbitrary bytes are a request, None, or a HandshakeError; nothing else."""
    for small in (False, True):
        kw = dict(max_request_line=20, max_header_line=20, max_headers=3, max_head_size=100) if small else {}
        try:
            result = parse_request_head(data, **kw)
        except HandshakeError as err:
            assert err.status in (400, 414, 431)
            continue
        if result is not None:
            req, consumed = result
            assert 0 < consumed <= len(data)
            try:
                validate_upgrade(req)
            except HandshakeError:
                pass
        try:
            parse_response_head(data, **({"max_status_line": 20} if small else {}))
        except HandshakeError as err:
            assert err.status == 502


_PCHAR = st.text(alphabet="abcXYZ019-._~!$&'()*+,;=:@%/?", max_size=40)
_LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(
    path=_PCHAR,
    host=st.lists(_LABEL, min_size=1, max_size=4).map(".".join) | st.just("[::1]"),
    port=st.none() | st.integers(1, 65535),
    nonce=st.binary(min_size=16, max_size=16),
    protocols=st.lists(st.text(alphabet="abcdefgh.-_0123456789", min_size=1, max_size=8), max_size=3),
)
def test_client_request_round_trips(path: str, host: str, port: int | None, nonce: bytes,
                                    protocols: list[str]) -> None:
    """RFC 6455 §4.1 requests built by the client pass §4.2.1 validation unchanged."""
    target = "/" + path
    host_value = host if port is None else f"{host}:{port}"
    key = make_key(nonce)
    req = parse(build_request(host_value, target, key, protocols=protocols))
    assert (req.method, req.target, req.version) == ("GET", target, "HTTP/1.1")
    assert req.get("host") == host_value
    assert validate_upgrade(req) == key
    assert parse_protocol_header(req.get_all("sec-websocket-protocol")) == protocols
    resp, _ = parse_response_head(build_response(key, protocol=protocols[0] if protocols else None))
    assert validate_response(resp, key, protocols=protocols) == ((protocols[0] if protocols else None), [])


def test_limits_exactly_met_never_fail_early() -> None:
    """RFC 7230 §3: a head exactly at every limit parses, and none of its prefixes is refused."""
    for eol in ("\r\n", "\n"):
        lines = ["GET /" + "a" * 15 + " HTTP/1.1", "X: " + "v" * 17, "Y: 1", "Z: 2"]
        data = (eol.join(lines) + eol + eol).encode()
        kw = dict(max_request_line=len(lines[0]), max_header_line=len(lines[1]), max_headers=3,
                  max_head_size=len(data))
        for i in range(len(data)):
            assert parse_request_head(data[:i], **kw) is None
        assert parse_request_head(data + b"more", **kw)[1] == len(data)
