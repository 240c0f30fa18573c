# slow_work.py: slow work off the loop, and no more reading while 4 jobs are running.
import time
from concurrent.futures import ThreadPoolExecutor

import cowboy_ws

MAX_IN_FLIGHT = 4
pool = ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT)


def shout(text):  # stands for a database query, an HTTP call, a computation...
    time.sleep(0.05)
    return text.upper()


def init(req, state):
    return ("cowboy_websocket", req, 0)  # the state: jobs in flight


def websocket_handle(frame, in_flight):
    if frame[0] != "text":
        return ("ok", in_flight)
    me = cowboy_ws.self()  # a Pid may be used from any thread
    job = pool.submit(shout, frame[1].decode("utf-8"))
    job.add_done_callback(lambda job: me.send(("done", job)))
    if in_flight + 1 >= MAX_IN_FLIGHT:
        return ([("active", False)], in_flight + 1)  # stop reading the socket
    return ("ok", in_flight + 1)


def websocket_info(info, in_flight):
    if isinstance(info, tuple) and info[0] == "done":
        job = info[1]
        reply = ("text", job.result()) if job.exception() is None else ("close", 1011, "job failed")
        return ([reply, ("active", True)], in_flight - 1)  # read again
    return ("ok", in_flight)
