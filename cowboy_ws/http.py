"""The HTTP/1.1 side of a connection: read the request, route it, call ``init``, upgrade or reply.

Sans-IO parsing comes from :mod:`cowboy_ws.protocol.handshake`; this module owns
the socket until the request is answered (plain HTTP) or upgraded (RFC 6455
§4.2).  Bytes that arrive after the request head in the same read are kept and
handed to the WebSocket connection: they may already hold frames.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
from typing import Any

from .handler import HandlerError, describe, is_websocket_handler
from .lifecycle import crash_class
from .options import LINGER_TIMEOUT, MAX_LINGERING, WebSocketOptions
from .outframes import BadResult, short
from .process import _set_self
from .protocol import handshake
from .protocol.connection import Connection
from .protocol.deflate import negotiate_server
from .protocol.errors import HandshakeError
from .req import Req, default_req_filter
from .sendbuffer import WOULD_BLOCK
from .websocket import READ_SIZE, WebSocketProcess

log = logging.getLogger(__name__)


class HttpConnection:
    """One accepted socket until it is upgraded or answered.

    Every path ends in :meth:`close` within bounded time: the handshake deadline
    (``Server.handshake_timeout``, counted from accept, never extended by the
    bytes that trickle in) covers the TLS handshake and the request head; an
    answer (any 4xx/5xx, or ``init``'s own reply) is followed by a lingering
    close bounded by :data:`~cowboy_ws.options.LINGER_TIMEOUT`: we send FIN and
    discard what the client still sends until it closes, so closing with unread
    input cannot reset the connection before the client has read the answer.
    """

    def __init__(self, server: Any, sock: socket.socket, peer: tuple, cid: str,
                 refuse: int | None = None) -> None:
        self.server = server
        self.loop = server.loop
        self.sock = sock
        self.peer = peer
        self.cid = cid
        self.buf = bytearray()
        self.out = b""
        self.done = False
        self.refuse = refuse              # answer this status as soon as possible (max_connections)
        self.counted = refuse is None     # counted against max_connections
        self.lingering = False
        self.handshaking = isinstance(sock, ssl.SSLSocket)
        self._registered = 0
        self._timer = self.loop.call_later(server.handshake_timeout, self._on_timeout)

    def __repr__(self) -> str:
        return f"<HttpConnection {self.cid}>"

    def start(self) -> None:
        if self.handshaking:
            self._tls_handshake()
        elif self.refuse:
            self._refuse_now()
        else:
            self._interest(selectors.EVENT_READ)

    def _interest(self, events: int) -> None:
        if self.done or events == self._registered:
            return
        if self._registered:
            self.loop.selector.modify(self.sock, events, self._on_ready)
        else:
            self.loop.selector.register(self.sock, events, self._on_ready)
        self._registered = events

    def _unregister(self) -> None:
        if self._registered:
            try:
                self.loop.selector.unregister(self.sock)
            except (KeyError, ValueError):
                pass
            self._registered = 0

    def _on_ready(self, _mask: int) -> None:
        if self.handshaking:
            self._tls_handshake()
        elif self.out:
            self._write()
        elif self.lingering:
            self._discard()
        else:
            self._read()

    def _tls_handshake(self) -> None:
        try:
            self.sock.do_handshake()  # type: ignore[attr-defined]
        except ssl.SSLWantReadError:
            self._interest(selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._interest(selectors.EVENT_WRITE)
            return
        except (ssl.SSLError, OSError, ValueError) as exc:
            log.info("[%s] TLS handshake failed: %s", self.cid, exc)
            self.close()
            return
        self.handshaking = False
        if self.refuse:
            self._refuse_now()
            return
        self._interest(selectors.EVENT_READ)
        if self.sock.pending():  # type: ignore[attr-defined]
            self._read()

    def _refuse_now(self) -> None:
        """Over max_connections: a minimal answer, then close (the request is not read)."""
        self._answer_refusal(self.refuse or 503, body=b"server busy\n")

    def _on_timeout(self) -> None:
        if self.done:
            return
        if self.out or self.lingering:  # the answer or the lingering close ran out of time
            self.close()
            return
        log.info("[%s] no complete request within %.1fs (%d bytes received%s), closing", self.cid,
                 self.server.handshake_timeout, len(self.buf), ", in TLS handshake" if self.handshaking else "")
        if self.handshaking or not self.buf:
            self.close()
        else:
            self._answer_refusal(408)

    def _read(self) -> None:
        try:
            data = self.sock.recv(READ_SIZE)
        except WOULD_BLOCK:
            return
        except OSError as exc:
            log.debug("[%s] closed during the request: %s", self.cid, exc)
            self.close()
            return
        if not data:
            if self.buf:  # half-closed mid-request: the head can no longer complete
                log.info("[%s] peer closed after %d bytes of an incomplete request", self.cid, len(self.buf))
                self._refuse(HandshakeError(400, "incomplete request head"))
            else:
                self.close()
            return
        self.buf += data
        try:
            parsed = handshake.parse_request_head(self.buf)
        except HandshakeError as exc:
            self._refuse(exc)
            return
        if parsed is None:
            return
        request, used = parsed
        rest = bytes(self.buf[used:])
        self.buf = bytearray()
        try:
            self._handle(request, rest)
        except KeyboardInterrupt:
            raise
        except BaseException:  # a bug (or a route constraint's exit) must cost this request only, with an answer
            log.exception("[%s] error handling the request", self.cid)
            if not self.done and not self.out and not self.lingering:
                self._answer_refusal(500)

    def _refuse(self, exc: HandshakeError) -> None:
        log.info("[%s] refused %d: %s", self.cid, exc.status, exc)
        self._answer_refusal(exc.status, list(exc.headers), str(exc).encode() + b"\n")

    def _answer_refusal(self, status: int, headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> None:
        """Answer an error status (with our Server header), counted for the metrics, then close (lingering)."""
        if self.server.stats is not None:
            self.server.stats.refused(status)
        headers = (headers or []) + [("server", self.server.server_header)]
        self._respond(handshake.build_refusal(status, headers=headers, body=body))

    def _respond(self, data: bytes) -> None:
        """Send a final HTTP response, then close (lingering), all within LINGER_TIMEOUT."""
        self.out = data
        self._timer.cancel()
        self._timer = self.loop.call_later(LINGER_TIMEOUT, self._on_timeout)
        self._write()

    def _write(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except WOULD_BLOCK:
            sent = 0
        except OSError:
            self.close()
            return
        self.out = self.out[sent:]
        if self.out:
            self._interest(selectors.EVENT_WRITE)
        else:
            self._linger()

    def _linger(self) -> None:
        """The answer is written: send FIN, then discard input until the client closes (bounded)."""
        if self.server._lingering >= MAX_LINGERING:
            self.close()
            return
        try:
            socket.socket.shutdown(self.sock, socket.SHUT_WR)  # TCP FIN (no TLS close_notify)
        except OSError:
            self.close()
            return
        self.lingering = True
        self.server._lingering += 1
        self._interest(selectors.EVENT_READ)

    def _discard(self) -> None:
        for _ in range(16):
            try:
                data = self.sock.recv(READ_SIZE)
            except WOULD_BLOCK:
                return
            except (OSError, ValueError):
                break
            if not data:
                break
        else:
            return
        self.close()

    def close(self) -> None:
        if self.done:
            return
        self.done = True
        if self.lingering:
            self.lingering = False
            self.server._lingering -= 1
        self._timer.cancel()
        self._unregister()
        try:
            self.sock.close()
        except OSError:
            pass
        self.buf = bytearray()
        self.out = b""
        self.server._forget(self)

    # -- the request ---------------------------------------------------------------

    def _handle(self, request: handshake.Request, rest: bytes) -> None:
        server = self.server
        try:
            req = Req.from_request(request, scheme="https" if server.ssl_context else "http",
                                   peer=self.peer, sockname=self.sock.getsockname())
            match = server.router.match(req.path, req.host)
            if match is None:
                raise HandshakeError(404, f"no route for {req.path}")
            req.bindings = dict(match.bindings)
            req.path_info = match.path_info
            upgrade = handshake.is_upgrade_request(request)
            key = handshake.validate_upgrade(request) if upgrade else None
            if key is not None and server.allowed_origins is not None:
                origin = req.header("origin")
                if (origin.lower().rstrip("/") if origin is not None else None) not in server.allowed_origins:
                    raise HandshakeError(403, f"origin {origin!r} is not allowed")
        except HandshakeError as exc:
            self._refuse(exc)
            return
        handler, state = match.handler, match.state
        try:
            result = handler.init(req, state)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            log.exception("[%s] init crashed", self.cid)
            # cowboy_handler: terminate({crash, Class, Reason}, Req, State) when init raises
            self._fail_request(handler, ("crash", crash_class(exc), exc), req, state)
            return
        if not isinstance(result, tuple) or len(result) not in (3, 4) or \
                result[0] not in ("cowboy_websocket", "ok") or (result[0] == "ok" and len(result) != 3):
            bad = BadResult(f"init returned {short(result)}: expected ('cowboy_websocket', req, state[, opts]) "
                            "or ('ok', req, state)")
            log.error("[%s] %s", self.cid, bad)
            self._fail_request(handler, ("crash", "error", bad), req, state)
            return
        req, state = result[1], result[2]
        if result[0] == "ok":
            self._reply(req)
            _terminate(handler, "normal", default_req_filter(req), state, self.cid)
            return
        if key is None:
            self._refuse(HandshakeError(426, "this resource needs a WebSocket upgrade (RFC 6455 §4.2.1)",
                                        [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                         ("Sec-WebSocket-Version", "13")]))
            _terminate(handler, "normal", default_req_filter(req), state, self.cid)
            return
        if not is_websocket_handler(handler):
            missing = HandlerError(f"{describe(handler)} asked for a WebSocket upgrade but has no "
                                   "websocket_handle/websocket_info")
            log.error("[%s] %s", self.cid, missing)
            self._fail_request(handler, ("crash", "error", missing), req, state)
            return
        try:
            opts = server.ws_options.merged(match.opts).merged(result[3] if len(result) == 4 else None)
        except (TypeError, ValueError) as exc:
            log.error("[%s] bad websocket options from init: %s", self.cid, exc)
            self._fail_request(handler, ("crash", "error", exc), req, state)
            return
        try:
            partial = (opts.req_filter or default_req_filter)(req)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            log.exception("[%s] req_filter crashed", self.cid)
            self._fail_request(handler, ("crash", crash_class(exc), exc), req, state)
            return
        self._upgrade(req, key, handler, state, opts, rest, partial)

    def _fail_request(self, handler: Any, reason: Any, req: Any, state: Any) -> None:
        """The request cannot go on (init crashed or misbehaved): answer 500, then ``terminate`` once."""
        if self.server.stats is not None:
            self.server.stats.crashes += 1
        self._answer_refusal(500)
        partial = default_req_filter(req) if isinstance(req, Req) else {}
        _terminate(handler, reason, partial, state, self.cid)

    def _reply(self, req: Req) -> None:
        status = req.resp_status if req.resp_status is not None else 204
        headers = [(k, v) for k, v in req.resp_headers.items()]
        if "server" not in req.resp_headers:
            headers.append(("server", self.server.server_header))
        self._respond(handshake.build_http_response(int(str(status).split()[0]), headers,
                                                    req.resp_body if status != 204 else b""))

    def _upgrade(self, req: Req, key: str, handler: Any, state: Any, opts: WebSocketOptions,
                 rest: bytes, partial: dict) -> None:
        """Answer 101 (RFC 6455 §4.2.2) and hand the socket to a WebSocketProcess."""
        deflate = None
        extensions = None
        if opts.compress:
            try:
                offers = req.parse_header("sec-websocket-extensions") or []
            except HandshakeError as exc:
                self._refuse(exc)
                _terminate(handler, ("error", "badhandshake"), partial, state, self.cid)
                return
            negotiated = negotiate_server(offers, opts.deflate_opts, shared_deflaters=self.loop.deflaters)
            if negotiated is not None:
                extensions, deflate = negotiated
        resp_headers = dict(req.resp_headers)
        protocol = resp_headers.pop("sec-websocket-protocol", None)
        resp_headers.setdefault("server", self.server.server_header)
        response = handshake.build_response(key, protocol=protocol, extensions=extensions,
                                            headers=list(resp_headers.items()))
        conn = Connection("server", max_frame_size=opts.max_frame_size, validate_utf8=opts.validate_utf8,
                          deflate=deflate)
        self.done = True
        self._timer.cancel()
        self._unregister()
        process = WebSocketProcess(self.server, self.sock, handler, state, partial, opts, conn, self.cid)
        self.server._adopt(self, process)
        log.debug("[%s] upgraded %s (deflate: %s)", self.cid, req.path, extensions)
        process.start(rest, response)


def _terminate(handler: Any, reason: Any, partial: dict, state: Any, cid: str) -> None:
    terminate = getattr(handler, "terminate", None)
    if terminate is None:
        return
    _set_self(None)
    try:
        terminate(reason, partial, state)
    except KeyboardInterrupt:
        raise
    except BaseException:
        log.exception("[%s] terminate raised", cid)
