"""A clock: pushes the current time (UTC, ISO 8601) to the client every second.

The timer is ``cowboy_ws.send_after(ms, cowboy_ws.self(), "tick")``, re-armed on
every tick, exactly like ``erlang:send_after/3`` in Cowboy's examples.  The
interval is part of the state: route ``("/clock", clock, {"interval": 50})`` for
a tick every 50 ms (the default, with a ``None`` state, is 1000 ms).  A client
may change it by sending the text ``interval <ms>``.

The Cowboy original, side by side:

.. code-block:: text

    init(Req, State) ->                                  def init(req, state):
        {cowboy_websocket, Req, State}.                      return ("cowboy_websocket", req, {"interval": 1000, ...})

    websocket_init(State) ->                             def websocket_init(state):
        erlang:send_after(1000, self(), tick),               ref = cowboy_ws.send_after(state["interval"], cowboy_ws.self(), "tick")
        {ok, State}.                                         return ("ok", {**state, "timer": ref})

    websocket_info(tick, State) ->                       def websocket_info(info, state):
        erlang:send_after(1000, self(), tick),               if info == "tick":
        Now = calendar:system_time_to_rfc3339(                   ref = cowboy_ws.send_after(state["interval"], cowboy_ws.self(), "tick")
            erlang:system_time(second)),                         now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        {reply, {text, Now}, State};                             return ("reply", ("text", now), {**state, "timer": ref})
    websocket_info(_Info, State) ->                          return ("ok", state)
        {ok, State}.
"""

from __future__ import annotations

from datetime import datetime, timezone

import cowboy_ws

DEFAULT_INTERVAL = 1000  # ms


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def init(req, state):
    if isinstance(state, dict):
        interval = state.get("interval", DEFAULT_INTERVAL)
    elif isinstance(state, int) and not isinstance(state, bool):
        interval = state
    else:
        interval = DEFAULT_INTERVAL
    return ("cowboy_websocket", req, {"interval": interval, "timer": None})


def _arm(state):
    ref = cowboy_ws.send_after(state["interval"], cowboy_ws.self(), "tick")
    return {**state, "timer": ref}


def websocket_init(state):
    return ("ok", _arm(state))


def websocket_handle(frame, state):
    if frame[0] == "text":
        cmd, _, arg = frame[1].decode("utf-8", "replace").partition(" ")
        if cmd == "interval" and arg.strip().isdigit() and int(arg) > 0:
            if state["timer"] is not None:
                cowboy_ws.cancel_timer(state["timer"])
            return ("reply", ("text", f"interval {int(arg)}"), _arm({**state, "interval": int(arg)}))
    return ("ok", state)


def websocket_info(info, state):
    if info == "tick":
        return ("reply", ("text", _now()), _arm(state))
    return ("ok", state)


def terminate(_reason, _req, state):
    if isinstance(state, dict) and state.get("timer") is not None:
        cowboy_ws.cancel_timer(state["timer"])
