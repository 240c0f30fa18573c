"""The built-in echo handler: what ``python -m cowboy_ws`` serves with no handler given.

Any WebSocket upgrade, on any path, echoes text and binary messages.  A plain
``GET`` gets a small HTML page whose script connects back and shows the echo.
The Cowboy original::

    init(Req, State) -> {cowboy_websocket, Req, State}.
    websocket_handle({text, Msg}, State) -> {reply, {text, Msg}, State};
    websocket_handle({binary, Msg}, State) -> {reply, {binary, Msg}, State};
    websocket_handle(_Frame, State) -> {ok, State}.
    websocket_info(_Info, State) -> {ok, State}.
"""

from __future__ import annotations

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>cowboy_ws echo</title></head>
<body>
<h1>cowboy_ws echo</h1>
<form id="f"><input id="msg" value="Hello, cowboy_ws!" size="40"> <button>Send</button></form>
<pre id="log"></pre>
<script>
const log = (s) => { document.getElementById("log").textContent += s + "\\n"; };
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + location.pathname);
ws.onopen = () => log("connected");
ws.onmessage = (e) => log("echo: " + e.data);
ws.onclose = (e) => log("closed " + e.code);
document.getElementById("f").onsubmit = (e) => {
  e.preventDefault(); const m = document.getElementById("msg").value; ws.send(m); log("sent: " + m);
};
</script>
</body></html>
"""


def init(req, state):
    if (req.header("upgrade") or "").lower() != "websocket" and req.method == "GET":
        req.reply(200, {"content-type": "text/html; charset=utf-8"}, PAGE)
        return ("ok", req, state)
    return ("cowboy_websocket", req, state)


def websocket_handle(frame, state):
    if frame[0] in ("text", "binary"):
        return ("reply", frame, state)
    return ("ok", state)


def websocket_info(_info, state):
    return ("ok", state)
