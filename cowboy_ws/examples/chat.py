"""A chat room built on process groups: every text message goes to everyone in the room.

Route it as ``("/chat/:room", chat, None)``; clients of ``/chat/lobby`` talk to
each other and to nobody else.  Served by the CLI (``python -m cowboy_ws
cowboy_ws.examples.chat``, route ``"_"``), the room is the request path instead.
A plain ``GET`` gets a small HTML page that joins the room.

Any code may also speak in a room from any thread::

    for pid in cowboy_ws.members(("room", "lobby")):
        pid.send(("chat", "server restarting in 5 minutes"))

The Cowboy original (``pg`` is Erlang's process groups), side by side:

.. code-block:: text

    init(Req, _) ->                                      def init(req, state):
        Room = cowboy_req:binding(room, Req),                room = req.binding("room")
        {cowboy_websocket, Req, #{room => Room}}.            return ("cowboy_websocket", req, {"room": room})

    websocket_init(State = #{room := Room}) ->           def websocket_init(state):
        ok = pg:join({room, Room}, self()),                  cowboy_ws.join(("room", state["room"]))
        {ok, State}.                                         return ("ok", state)

    websocket_handle({text, Msg}, State) ->              def websocket_handle(frame, state):
        Room = maps:get(room, State),                        if frame[0] == "text":
        [Pid ! {chat, Msg}                                       cowboy_ws.broadcast(("room", state["room"]),
            || Pid <- pg:get_members({room, Room})],                                 ("text", frame[1]))
        {ok, State};                                         return ("ok", state)
    websocket_handle(_Frame, State) ->
        {ok, State}.

    websocket_info({chat, Msg}, State) ->                def websocket_info(info, state):
        {reply, {text, Msg}, State};                         if isinstance(info, tuple) and info[0] == "chat":
    websocket_info(_Info, State) ->                              return ("reply", ("text", info[1]), state)
        {ok, State}.                                         return ("ok", state)

    terminate(_Reason, _Req, #{room := Room}) ->         def terminate(reason, req, state):
        pg:leave({room, Room}, self()), ok.                  cowboy_ws.leave(("room", state["room"]))

:func:`cowboy_ws.broadcast` is the fast form of the ``Pid ! {chat, Msg}`` list
comprehension: the frame is serialized once and the same bytes are queued on
every member, where each ``pid.send`` would run ``websocket_info`` once per
member.  Both are shown: a text frame from a client is broadcast, a
``("chat", msg)`` message goes through ``websocket_info``.
"""

from __future__ import annotations

import cowboy_ws

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>cowboy_ws chat</title></head>
<body>
<h1>cowboy_ws chat: <span id="room"></span></h1>
<form id="f"><input id="msg" size="40" autofocus> <button>Say</button></form>
<pre id="log"></pre>
<script>
document.getElementById("room").textContent = location.pathname;
const log = (s) => { document.getElementById("log").textContent += s + "\\n"; };
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + location.pathname);
ws.onopen = () => log("joined");
ws.onmessage = (e) => log(e.data);
ws.onclose = (e) => log("left (" + e.code + ")");
document.getElementById("f").onsubmit = (e) => {
  e.preventDefault(); const m = document.getElementById("msg"); ws.send(m.value); m.value = "";
};
</script>
</body></html>
"""


def group(room: str) -> tuple[str, str]:
    """The process group of a room."""
    return ("room", room)


def init(req, state):
    if (req.header("upgrade") or "").lower() != "websocket" and req.method == "GET":
        req.reply(200, {"content-type": "text/html; charset=utf-8"}, PAGE)
        return ("ok", req, state)
    room = req.binding("room")
    if room is None:  # served on "_" (the CLI): the path names the room
        room = req.path.strip("/") or "lobby"
    return ("cowboy_websocket", req, {"room": room, "joined": False})


def websocket_init(state):
    cowboy_ws.join(group(state["room"]))
    return ("ok", {**state, "joined": True})


def websocket_handle(frame, state):
    if frame[0] == "text":
        cowboy_ws.broadcast(group(state["room"]), ("text", frame[1]))
    return ("ok", state)


def websocket_info(info, state):
    if isinstance(info, tuple) and len(info) == 2 and info[0] == "chat":
        return ("reply", ("text", info[1]), state)
    return ("ok", state)


def terminate(_reason, _req, state):
    # The runtime already removed the process from every group when it exited
    # (like pg, which watches the process); leaving explicitly is harmless.
    if isinstance(state, dict) and state.get("joined"):
        cowboy_ws.leave(group(state["room"]))
