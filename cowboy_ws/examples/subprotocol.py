"""Subprotocol selection in ``init`` (RFC 6455 §1.9, §4.2.2), as in Cowboy's WebSocket guide.

The server speaks ``v2.chat`` (preferred) and ``v1.chat``.  A client that offers
one of them gets it in ``Sec-WebSocket-Protocol``; a client that offers only
others is refused with 400; a client that offers none is upgraded without a
subprotocol.  Each text message is echoed prefixed with the protocol in use
(``v2.chat`` answers JSON).

The Cowboy original, side by side:

.. code-block:: text

    init(Req0, State) ->                                     def init(req, state):
      case cowboy_req:parse_header(                              offered = req.parse_header("sec-websocket-protocol")
          <<"sec-websocket-protocol">>, Req0) of                 if offered is None:
        undefined ->                                                 return ("cowboy_websocket", req, None)
          {cowboy_websocket, Req0, State};                       for proto in ("v2.chat", "v1.chat"):
        Subprotocols ->                                              if proto in offered:
          case lists:member(<<"v2.chat">>, Subprotocols) of              req.set_resp_header("sec-websocket-protocol", proto)
            true ->                                                      return ("cowboy_websocket", req, proto)
              Req = cowboy_req:set_resp_header(                      req.reply(400, {}, b"no acceptable subprotocol")
                <<"sec-websocket-protocol">>, <<"v2.chat">>, Req0),  return ("ok", req, state)
              {cowboy_websocket, Req, State};
            false ->
              Req = cowboy_req:reply(400, Req0),
              {ok, Req, State}
          end
      end.
"""

from __future__ import annotations

import json

#: The subprotocols this server speaks, most preferred first.
SUPPORTED = ("v2.chat", "v1.chat")


def init(req, state):
    offered = req.parse_header("sec-websocket-protocol")  # list[str] or None
    if offered is None:
        return ("cowboy_websocket", req, None)
    for proto in SUPPORTED:  # the server's preference decides, not the client's order
        if proto in offered:
            req.set_resp_header("sec-websocket-protocol", proto)
            return ("cowboy_websocket", req, proto)
    req.reply(400, {"content-type": "text/plain; charset=utf-8"},
              f"no acceptable subprotocol; this server speaks {', '.join(SUPPORTED)}\n")
    return ("ok", req, state)


def websocket_handle(frame, state):
    if frame[0] != "text":
        return ("ok", state)
    text = frame[1].decode("utf-8")
    if state == "v2.chat":
        return ("reply", ("text", json.dumps({"protocol": state, "text": text})), state)
    if state == "v1.chat":
        return ("reply", ("text", f"v1.chat: {text}"), state)
    return ("reply", ("text", text), state)


def websocket_info(_info, state):
    return ("ok", state)
