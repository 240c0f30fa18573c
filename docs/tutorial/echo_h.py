# echo_h.py
def init(req, state):
    return ("cowboy_websocket", req, state)


def websocket_handle(frame, state):
    if frame[0] == "text":
        return ("reply", ("text", b"echo: " + frame[1]), state)
    return ("ok", state)


def websocket_info(info, state):
    return ("ok", state)
