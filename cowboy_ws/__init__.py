"""cowboy_ws: Erlang Cowboy's WebSocket handler model for Python."""

__version__ = "0.1.0"
