"""Default limits, decided in one place.

``MAX_FRAME_SIZE`` mirrors Cowboy 2.18's ``max_frame_size`` default; it bounds a
frame's payload length, the inflated payload and the reassembled message.
The handshake limits bound what an HTTP/1.1 upgrade request may hold before it
is refused (RFC 6455 §4.2.1 leaves the figures to the server; these match what
common HTTP servers allow).
"""

MAX_FRAME_SIZE = 1_000_000
MAX_CONTROL_PAYLOAD = 125          # RFC 6455 §5.5
MAX_REQUEST_LINE = 8192            # bytes in "GET /path HTTP/1.1"; longer -> 414
MAX_HEADER_LINE = 8192             # bytes in one header line; longer -> 431
MAX_HEADERS = 100                  # header lines; more -> 431
MAX_HEAD_SIZE = 65536              # the whole request head; larger -> 431
