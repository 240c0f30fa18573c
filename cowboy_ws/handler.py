"""What a handler is, checked once when routes are compiled (not when the first message arrives).

A handler is a module, a class or an instance whose attributes are the callbacks of
Cowboy's ``cowboy_websocket`` behaviour:

====================  ======================================================================
callback              required
====================  ======================================================================
``init``              always (``init(req, state)``)
``websocket_handle``  when the handler has any ``websocket_*`` callback (Cowboy: required)
``websocket_info``    likewise (Cowboy: required; a message to the Pid of a handler without
                      it would otherwise crash the connection)
``websocket_init``    optional
``terminate``         optional
====================  ======================================================================

A handler with ``init`` alone is a plain HTTP handler (Cowboy's ``cowboy_handler``):
its ``init`` answers with ``("ok", req, state)``; if it asks for an upgrade anyway the
request gets 500 and ``terminate`` a crash reason.

A class is used as it is: its callbacks are called on the class (functions without
``self``, ``@staticmethod`` or ``@classmethod``).  A class whose callbacks are
instance methods (they take ``self``) is refused with a message that says to pass an
instance.  Every callback present must accept the arguments it is called with.
"""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import Any

__all__ = ["CALLBACKS", "HandlerError", "check_handler", "describe", "is_websocket_handler"]

CALLBACKS = ("init", "websocket_init", "websocket_handle", "websocket_info", "terminate")
WEBSOCKET_REQUIRED = ("websocket_handle", "websocket_info")


class HandlerError(TypeError):
    """A route's handler cannot serve: a callback is missing, not callable, or an unbound method."""


def describe(handler: Any) -> str:
    """The handler's name for messages: module, class or ``Class instance``."""
    if isinstance(handler, ModuleType):
        return f"module {handler.__name__}"
    if isinstance(handler, type):
        return f"class {handler.__module__}.{handler.__qualname__}"
    cls = type(handler)
    return f"{cls.__module__}.{cls.__qualname__} instance"


def is_websocket_handler(handler: Any) -> bool:
    """Whether the handler has the WebSocket callbacks (else it only answers plain HTTP)."""
    return all(callable(getattr(handler, name, None)) for name in WEBSOCKET_REQUIRED)


#: How many positional arguments each callback is called with.
ARITY = {"init": 2, "websocket_init": 1, "websocket_handle": 2, "websocket_info": 2, "terminate": 3}


def _accepts(func: Any, count: int) -> bool | None:
    """Whether ``func`` can be called with ``count`` positional arguments (None: cannot tell)."""
    try:
        inspect.signature(func).bind(*range(count))
    except TypeError:
        return False
    except ValueError:  # no signature (some builtins and C callables)
        return None
    return True


def check_handler(handler: Any) -> Any:
    """Return ``handler`` if it can serve, else raise :class:`HandlerError` naming it and the callback."""
    name = describe(handler)
    if not callable(getattr(handler, "init", None)):
        raise HandlerError(f"{name} is not a handler: it has no callable init(req, state)")
    present = [cb for cb in CALLBACKS if getattr(handler, cb, None) is not None]
    for callback in present:
        func = getattr(handler, callback)
        if not callable(func):
            raise HandlerError(f"{name}: {callback} is not callable ({type(func).__name__})")
        arity = ARITY[callback]
        if _accepts(func, arity) is False:
            if isinstance(handler, type) and _accepts(func, arity + 1):
                raise HandlerError(
                    f"{name}: {callback} is an instance method, but the class itself was given as the "
                    f"handler; pass an instance ({handler.__qualname__}()) or make the callbacks "
                    "@staticmethod")
            raise HandlerError(f"{name}: {callback} cannot be called with {arity} argument(s)")
    if any(cb.startswith("websocket_") for cb in present):
        missing = [cb for cb in WEBSOCKET_REQUIRED if cb not in present]
        if missing:
            raise HandlerError(f"{name} has no {' or '.join(missing)}: a WebSocket handler needs "
                               "websocket_handle(frame, state) and websocket_info(info, state)")
    return handler
