"""cowboy_ws: Erlang Cowboy's WebSocket handler model for Python.

Write a handler with ``init`` / ``websocket_init`` / ``websocket_handle`` /
``websocket_info`` / ``terminate`` exactly as with Cowboy's ``cowboy_websocket``,
route it, and serve it::

    import cowboy_ws
    server = cowboy_ws.Server([("/ws", MyHandler, initial_state)], port=8080)
    server.serve_forever()
"""

__version__ = "0.1.0"

from .client import ConnectionClosed, InvalidHandshake, InvalidStatus
from .options import WebSocketOptions
from .process import (
    Pid,
    broadcast,
    cancel_timer,
    join,
    leave,
    local_members,
    members,
    node,
    nodes,
    self,
    send_after,
    which_groups,
)
from .req import Req
from .router import Router
from .server import Server, backend

__all__ = [
    "ConnectionClosed", "InvalidHandshake", "InvalidStatus",
    "Pid", "Req", "Router", "Server", "WebSocketOptions", "backend", "broadcast", "cancel_timer",
    "join", "leave", "local_members", "members", "node", "nodes", "self", "send_after", "which_groups",
    "__version__",
]
