"""Layer rules of the sans-IO core and the close-code registry (RFC 6455 §7.4, §11.7)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cowboy_ws.protocol import closecodes

PROTOCOL = Path(__file__).resolve().parents[1] / "cowboy_ws" / "protocol"
FORBIDDEN = {"socket", "selectors", "threading", "asyncio", "time"}


@pytest.mark.parametrize("path", sorted(PROTOCOL.glob("*.py")), ids=lambda p: p.name)
def test_protocol_modules_do_no_io(path):
    """cowboy_ws/protocol is sans-IO: it imports no socket, selectors, threading, asyncio or time."""
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN


def test_protocol_does_not_import_runtime():
    """Nothing in the core imports upward into the runtime; the only way up is the C kernels' extension."""
    allowed = {"cowboy_ws._speedups"}
    for path in PROTOCOL.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = ("." * node.level) + (node.module or "")
                if node.level >= 2 or (node.level == 0 and target.startswith("cowboy_ws")
                                       and not target.startswith("cowboy_ws.protocol")
                                       and target not in allowed):
                    pytest.fail(f"{path.name} imports from the runtime: {target}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("cowboy_ws") and not alias.name.startswith("cowboy_ws.protocol") \
                            and alias.name not in allowed:
                        pytest.fail(f"{path.name} imports from the runtime: {alias.name}")


def test_close_code_registry():
    """§7.4.1/§11.7: registered names; §7.4.2 ranges."""
    assert closecodes.name(1000) == "Normal Closure"
    assert closecodes.name(1015) == "TLS handshake"
    assert closecodes.name(3001) == "Registered"
    assert closecodes.name(4001) == "Private use"
    assert closecodes.name(2000) == "Invalid"
    valid = [c for c in range(0, 6000) if closecodes.is_valid_on_wire(c)]
    assert valid == [1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)]


def test_error_codes_in_one_place():
    """Every protocol error reason maps to its close code in closecodes.ERROR_CODES."""
    from cowboy_ws.protocol.errors import FrameError, InvalidUtf8, MessageTooBig
    assert [FrameError("x").code, InvalidUtf8("x").code, MessageTooBig("x").code] == [1002, 1007, 1009]
    assert closecodes.ERROR_CODES == {"badframe": 1002, "badencoding": 1007, "badsize": 1009}
