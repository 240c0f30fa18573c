"""Sans-IO RFC 6455 + RFC 7692 core: bytes in, events out; frames in, bytes out.

Nothing in this package touches sockets, threads or clocks.
"""
