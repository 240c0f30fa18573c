# hello.py: a page for the browser, and a WebSocket that answers every text message.
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


def websocket_handle(frame, state):
    if frame[0] == "text":
        count = state["count"] + 1
        text = frame[1].decode("utf-8")
        return ("reply", ("text", f"#{count}: you said {text}"), {"count": count})
    return ("ok", state)


def websocket_info(info, state):
    return ("ok", state)
