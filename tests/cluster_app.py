"""The handler the worker and Redis tests serve (``python -m cowboy_ws cluster_app:Node``).

The path names the group a connection joins (``/g/<group>``; ``/`` joins none).
Text commands, each answered on the connection (replies are text):

* ``who`` -> ``worker=<worker id> pid=<os pid> node=<node id>``
* ``count`` / ``local``: how many members the group has on every node / on this one
* ``say <text>``: ``broadcast`` ``<text>`` to the group (the sender too); no reply of its own
* ``send <text>``: ``pid.send(("say", <text>))`` to every other member (``websocket_info`` replies
  ``<text>``); answers ``sent <n>``
* ``sendto <node> <number> <text>``: ``pid.send(("say", <text>))`` to that Pid; answers ``sent``
* ``me``: ``<node> <number>`` of ``self()`` (a Pid named so can be used from any node)
* ``nodes``: how many other nodes are known
* ``stats``: JSON ``{"rejected": {reason: count}, "dropped": n}`` of the messaging backend
* ``carry <text>``: ``pid.send(("say", <text>, <a message of every type the bus carries>))`` to every other
  member, whose ``websocket_info`` replies ``<text> whole from local|remote`` if it arrived equal
  (types included); answers ``sent <n>``
"""

from __future__ import annotations

import json
import os

import cowboy_ws
from cowboy_ws import process, workers


class Node:
    @staticmethod
    def init(req, _state):
        path = req.path.strip("/")
        group = path[2:] if path.startswith("g/") else None
        return ("cowboy_websocket", req, {"group": group}, {"idle_timeout": "infinity"})

    @staticmethod
    def websocket_init(state):
        if state["group"] is not None:
            cowboy_ws.join(state["group"])
        return ("ok", state)

    @staticmethod
    def websocket_handle(frame, state):
        if frame[0] != "text":
            return ("ok", state)
        cmd, _, arg = frame[1].decode().partition(" ")
        group = state["group"]
        if cmd == "who":
            text = f"worker={workers.worker_id()} pid={os.getpid()} node={process.node()}"
        elif cmd == "count":
            text = str(len(cowboy_ws.members(group)))
        elif cmd == "local":
            text = str(len(process.local_members(group)))
        elif cmd == "say":
            cowboy_ws.broadcast(group, ("text", arg))
            return ("ok", state)
        elif cmd == "send":
            me = cowboy_ws.self()
            targets = [pid for pid in cowboy_ws.members(group) if pid != me]
            for pid in targets:
                pid.send(("say", arg))
            text = f"sent {len(targets)}"
        elif cmd == "carry":
            me = cowboy_ws.self()
            targets = [pid for pid in cowboy_ws.members(group) if pid != me]
            for pid in targets:
                pid.send(("say", arg, carried(me)))
            text = f"sent {len(targets)}"
        elif cmd == "sendto":
            node, number, text_ = (arg.split(" ", 2) + [""])[:3]
            process.pid_from_ref(node, int(number)).send(("say", text_))
            text = "sent"
        elif cmd == "me":
            node, number = process.pid_ref(cowboy_ws.self())
            text = f"{node} {number}"
        elif cmd == "nodes":
            text = str(len(process.nodes()))
        elif cmd == "stats":
            backend = process.current_backend()
            text = json.dumps({"rejected": dict(getattr(backend, "rejected", {})),
                               "dropped": getattr(backend, "dropped", 0)})
        else:
            text = f"? {cmd}"
        return ("reply", ("text", text), state)

    @staticmethod
    def websocket_info(info, state):
        if isinstance(info, tuple) and len(info) == 2 and info[0] == "say":
            return ("reply", ("text", info[1]), state)
        if isinstance(info, tuple) and len(info) == 3 and info[0] == "say":
            sender = info[2]["pid"]
            whole = "whole" if info[2] == carried(sender) else f"CHANGED {info[2]!r}"
            return ("reply", ("text", f"{info[1]} {whole} from {'local' if sender.local else 'remote'}"), state)
        return ("ok", state)


def carried(pid):
    """A message with every type the bus carries (``carry``), the sender's Pid in it."""
    return {"none": None, "bools": [True, False], "ints": (0, -1, 2**63, -2**80), "float": 1.5, "str": "é",
            "bytes": b"\x00\xff", ("tuple", 1): [(), [()], {"nested": ("a", [1, (2,)])}], 7: "int key",
            "pid": pid}
