"""Frame opcodes (RFC 6455 §5.2, registered in §11.8) and their names.

A leaf module (it imports nothing) so that the parsers, the error table and
:mod:`.frames`, which re-exports these names, can all use it without an
import cycle.
"""

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

#: The opcodes RFC 6455 defines, with their names; every other one is reserved (§5.2).
OPCODE_NAMES = {
    OP_CONT: "continuation",
    OP_TEXT: "text",
    OP_BINARY: "binary",
    OP_CLOSE: "close",
    OP_PING: "ping",
    OP_PONG: "pong",
}
