"""The listener: IPv6 loopback and the echo example over it (RFC 6455 §4.1 Host with an IPv6 literal)."""

from __future__ import annotations

import socket

import pytest
from websockets.sync.client import connect

import cowboy_ws
from cowboy_ws.examples import echo


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_echo():
    """A server bound to ::1 upgrades and echoes; the URL brackets the address."""
    server = cowboy_ws.Server([("_", echo, None)], host="::1", port=0).start()
    try:
        assert server.url.startswith("ws://[::1]:")
        with connect(server.url + "/any", open_timeout=5, close_timeout=5) as ws:
            ws.send("over v6")
            assert ws.recv(timeout=5) == "over v6"
    finally:
        server.shutdown(grace=1)


def test_ipv4_ephemeral_port_and_url():
    """port=0 picks a free port; .port and .url report it."""
    server = cowboy_ws.Server([("_", echo, None)], port=0).start()
    try:
        assert server.port > 0 and server.url == f"ws://127.0.0.1:{server.port}"
        with connect(server.url, open_timeout=5, close_timeout=5) as ws:
            ws.send(b"\x00\x01")
            assert ws.recv(timeout=5) == b"\x00\x01"
    finally:
        server.shutdown(grace=1)
