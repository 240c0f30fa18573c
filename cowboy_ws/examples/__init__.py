"""Example handlers, each a module with Cowboy's callbacks and its Erlang original in the docstring.

- :mod:`~cowboy_ws.examples.echo`: echoes every message (what ``python -m cowboy_ws`` serves);
- :mod:`~cowboy_ws.examples.chat`: chat rooms with process groups (``join`` / ``broadcast``);
- :mod:`~cowboy_ws.examples.clock`: pushes the time with ``send_after`` timers;
- :mod:`~cowboy_ws.examples.subprotocol`: picks a subprotocol in ``init`` or refuses with 400.

Serve one with ``python -m cowboy_ws cowboy_ws.examples.chat``.
"""
