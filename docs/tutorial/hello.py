# hello.py: a page for the browser, a WebSocket that answers every text message,
# pushes the time every second, and says goodbye in the server's log.
import time

import cowboy_ws

PAGE = b"""<!doctype html>
<meta charset="utf-8"><title>hello</title>
<input id="msg" value="Hello!"> <button id="send">Send</button>
<pre id="log"></pre>
<script>
const log = (s) => { document.getElementById("log").textContent += s + "\\n"; };
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + location.pathname);
ws.onopen = () => log("connected");
ws.onmessage = (e) => log(e.data);
ws.onclose = (e) => log("closed " + e.code);
document.getElementById("send").onclick = () => ws.send(document.getElementById("msg").value);
</script>
"""


def init(req, state):
    if req.header("upgrade", "").lower() != "websocket":
        # A plain GET (the browser loading the page): answer it, no upgrade.
        req.reply(200, {"content-type": "text/html; charset=utf-8"}, PAGE)
        return ("ok", req, state)
    return ("cowboy_websocket", req, {"count": 0})


def websocket_init(state):
    cowboy_ws.send_after(1000, cowboy_ws.self(), "tick")
    return ("ok", state)


def websocket_handle(frame, state):
    if frame[0] == "text":
        count = state["count"] + 1
        text = frame[1].decode("utf-8")
        return ("reply", ("text", f"#{count}: you said {text}"), {"count": count})
    return ("ok", state)


def websocket_info(info, state):
    if info == "tick":
        cowboy_ws.send_after(1000, cowboy_ws.self(), "tick")
        return ("reply", ("text", time.strftime("%H:%M:%S")), state)
    return ("ok", state)


def terminate(reason, partial_req, state):
    if isinstance(state, dict):  # a WebSocket (a plain GET keeps the route's state)
        print(f"{partial_req['peer'][0]} left after {state['count']} message(s): {reason!r}")
