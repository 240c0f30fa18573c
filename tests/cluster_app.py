"""The handler the worker and Redis tests serve (``python -m cowboy_ws cluster_app:Node``).

The path names the group a connection joins (``/g/<group>``; ``/`` joins none).
Text commands, each answered on the connection (replies are text):

* ``who`` -> ``worker=<worker id> pid=<os pid> node=<node id>``
* ``count`` / ``local``: how many members the group has on every node / on this one
* ``say <text>``: ``broadcast`` ``<text>`` to the group (the sender too); no reply of its own
* ``send <text>``: ``pid.send(("say", <text>))`` to every other member (``websocket_info`` replies
  ``<text>``); answers ``sent <n>``
* ``sendto <hex pickled pid> <text>``: ``pid.send(("say", <text>))`` to that Pid; answers ``sent``
* ``me``: the hex of ``pickle.dumps(self())`` (a Pid travels in any message)
* ``nodes``: how many other nodes are known
"""

from __future__ import annotations

import os
import pickle

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
        elif cmd == "sendto":
            hexpid, _, text_ = arg.partition(" ")
            pickle.loads(bytes.fromhex(hexpid)).send(("say", text_))
            text = "sent"
        elif cmd == "me":
            text = pickle.dumps(cowboy_ws.self()).hex()
        elif cmd == "nodes":
            text = str(len(process.nodes()))
        else:
            text = f"? {cmd}"
        return ("reply", ("text", text), state)

    @staticmethod
    def websocket_info(info, state):
        if isinstance(info, tuple) and len(info) == 2 and info[0] == "say":
            return ("reply", ("text", info[1]), state)
        return ("ok", state)
