"""The client side: WebSocket connections with the server's handler model (Cowboy's sibling gun).

Two APIs over one runtime (the server's loop, kernels, limits and handler state machine, with
the client role of RFC 6455: masked frames, the server closes TCP first):

* blocking, for scripts, tests and threads::

      with cowboy_ws.client.connect("ws://127.0.0.1:8080/ws") as ws:
          ws.send(("text", "hello"))
          print(ws.recv())                  # ("text", b"hello"): the InFrame websocket_handle gets

  :func:`connect_forever` yields a new connection after each loss.

* a handler, gun-style: :func:`start` ``(url, handler, state, opts) -> Pid``, with the same
  callbacks (``websocket_init`` / ``websocket_handle`` / ``websocket_info`` / ``terminate``), call
  results and commands as a server handler, ``retry`` / ``retry_timeout`` reconnection with
  ``websocket_info(("down", reason), state)``, and ``pid.send`` from anywhere.

``python -m cowboy_ws.client URL`` is an interactive client.  Errors: :class:`ConnectionClosed`,
:class:`InvalidHandshake`, :class:`InvalidStatus` (all exported from :mod:`cowboy_ws` too).
"""

from __future__ import annotations

from .blocking import ClientConnection, connect, connect_forever
from .errors import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI, OpenTimeout, ProxyError
from .options import ENV_PROXY, ClientOptions
from .session import info, start, stop

__all__ = ["ClientConnection", "ClientOptions", "ConnectionClosed", "ENV_PROXY", "InvalidHandshake",
           "InvalidStatus", "InvalidURI", "OpenTimeout", "ProxyError", "connect", "connect_forever", "info",
           "start", "stop"]
