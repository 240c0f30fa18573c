"""The event loop's selector: its leaner select() answers what the stdlib's does."""

from __future__ import annotations

import selectors
import socket
import time

import pytest

from cowboy_ws.loop import Loop

R, W = selectors.EVENT_READ, selectors.EVENT_WRITE


def _ready(selector: selectors.BaseSelector, timeout: float | None = 0) -> dict:
    return {key.fileobj: mask for key, mask in selector.select(timeout)}


@pytest.fixture
def selectors_pair():
    """The loop's selector and a stdlib DefaultSelector, to register the same sockets with."""
    loop = Loop()
    ref = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    try:
        yield loop.selector, ref, socks
    finally:
        ref.close()
        loop.close()
        for s in socks:
            s.close()


def _register(pair, sock: socket.socket, events: int) -> None:
    ours, ref, socks = pair
    ours.register(sock, events, "ours")
    ref.register(sock, events, "ref")
    socks.append(sock)


def test_masks_match_the_stdlib_selector(selectors_pair):
    ours, ref, socks = selectors_pair
    idle_a, idle_b = socket.socketpair()          # writable only
    data_a, data_b = socket.socketpair()          # readable and writable
    data_b.send(b"x")
    read_only, read_peer = socket.socketpair()    # readable, registered for reading only
    read_peer.send(b"x")
    write_only, _w_peer = socket.socketpair()     # writable, registered for writing only
    hup_a, hup_b = socket.socketpair()            # the peer is gone: hang-up sets both bits
    hup_b.close()
    socks += [idle_b, data_b, read_peer, _w_peer]
    for sock, events in ((idle_a, R | W), (data_a, R | W), (read_only, R), (write_only, W), (hup_a, R)):
        _register(selectors_pair, sock, events)
    got, want = _ready(ours), _ready(ref)
    assert got == want
    assert got[idle_a] == W and got[data_a] == R | W and got[read_only] == R and got[write_only] == W
    assert got[hup_a] == R
    assert all(key.data == "ours" for key, _ in ours.select(0))


def test_nothing_ready_and_timeouts(selectors_pair):
    ours, _ref, socks = selectors_pair
    a, b = socket.socketpair()
    socks.append(b)
    _register(selectors_pair, a, R)
    assert ours.select(0) == [] and ours.select(-1.0) == []
    start = time.monotonic()
    assert ours.select(0.0301) == []  # rounded up to whole milliseconds, never down to 0
    assert time.monotonic() - start >= 0.03
    b.send(b"x")
    assert [(key.fileobj, mask) for key, mask in ours.select(None)] == [(a, R)]


def test_unregistered_and_modified_sockets(selectors_pair):
    ours, _ref, socks = selectors_pair
    a, b = socket.socketpair()
    socks.append(b)
    _register(selectors_pair, a, R)
    b.send(b"x")
    ours.modify(a, W, "ours")
    assert _ready(ours) == {a: W}
    ours.unregister(a)
    assert ours.select(0) == []
