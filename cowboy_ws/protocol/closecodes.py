"""Close status codes: the IANA registry and the one place that maps errors to codes.

RFC 6455 §7.4.1 defines the codes, §7.4.2 reserves the ranges, and the IANA
"WebSocket Close Code Number Registry" (RFC 6455 §11.7) lists what has been
registered since (1012-1015).
"""

from __future__ import annotations

NORMAL = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
UNSUPPORTED_DATA = 1003
NO_STATUS_RCVD = 1005
ABNORMAL_CLOSURE = 1006
INVALID_PAYLOAD = 1007
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
MANDATORY_EXTENSION = 1010
INTERNAL_ERROR = 1011
SERVICE_RESTART = 1012
TRY_AGAIN_LATER = 1013
BAD_GATEWAY = 1014
TLS_HANDSHAKE = 1015

#: The IANA registry of close codes (RFC 6455 §11.7), code -> name.
IANA: dict[int, str] = {
    1000: "Normal Closure",
    1001: "Going Away",
    1002: "Protocol error",
    1003: "Unsupported Data",
    1004: "Reserved",
    1005: "No Status Rcvd",
    1006: "Abnormal Closure",
    1007: "Invalid frame payload data",
    1008: "Policy Violation",
    1009: "Message Too Big",
    1010: "Mandatory Ext.",
    1011: "Internal Error",
    1012: "Service Restart",
    1013: "Try Again Later",
    1014: "Bad Gateway",
    1015: "TLS handshake",
}

#: Codes that must never appear in a Close frame on the wire (RFC 6455 §7.4.1):
#: 1004 is reserved, 1005/1006/1015 are for local reporting only.
_NEVER_ON_WIRE = frozenset({1004, 1005, 1006, 1015})

#: Reason atoms used in terminate reasons ``("error", atom)`` and the code each
#: one closes with.  This is the single place deciding the code of an error.
ERROR_CODES: dict[str, int] = {
    "badframe": PROTOCOL_ERROR,
    "badencoding": INVALID_PAYLOAD,
    "badsize": MESSAGE_TOO_BIG,
}

#: Every close the runtime decides on its own, cause -> (code, reason on the wire).  With
#: ERROR_CODES (protocol errors) and the peer's own code (echoed, RFC 6455 §5.5.1) this is
#: every code a cowboy_ws server sends; a handler's ``("close", code, reason)`` sends its own.
RUNTIME_CLOSES: dict[str, tuple[int, bytes]] = {
    "stop": (NORMAL, b""),                       # ("stop", state), or a "close" frame without a code
    "idle_timeout": (NORMAL, b""),               # nothing received within idle_timeout (as Cowboy)
    "keepalive_timeout": (INTERNAL_ERROR, b"keepalive ping timeout"),  # as websockets says it
    "crash": (INTERNAL_ERROR, b""),              # a callback raised or returned a bad result (no text sent)
    "send_buffer_overflow": (POLICY_VIOLATION, b""),  # the peer reads nothing and max_send_buffer is passed
    "shutdown": (GOING_AWAY, b""),               # the server stops (RFC 6455 §7.4.1)
}


def is_valid_on_wire(code: int) -> bool:
    """True if ``code`` may be sent or accepted in a Close frame (RFC 6455 §7.4).

    1000-1003 and 1007-1014 are registered for use on the wire; 3000-3999 are
    registered for libraries and frameworks, 4000-4999 are private use.  Codes
    below 1000, in 1016-2999, and 5000 or more are invalid, as are 1004, 1005,
    1006 and 1015.
    """
    if 1000 <= code <= 1014:
        return code not in _NEVER_ON_WIRE
    return 3000 <= code <= 4999


def name(code: int) -> str:
    """Human-readable name of a close code, for logs."""
    if code in IANA:
        return IANA[code]
    if 3000 <= code <= 3999:
        return "Registered"
    if 4000 <= code <= 4999:
        return "Private use"
    return "Invalid"
