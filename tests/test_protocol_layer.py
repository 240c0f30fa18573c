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


def protocol_imports() -> dict[str, set[str]]:
    """module -> the modules of cowboy_ws/protocol it imports, at module level or inside functions."""
    modules = {path.stem for path in PROTOCOL.glob("*.py")} - {"__init__"}
    graph: dict[str, set[str]] = {}
    for name in modules:
        found = set()
        for node in ast.walk(ast.parse((PROTOCOL / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1:
                    base = node.module or ""
                elif node.level == 0 and (node.module or "").startswith("cowboy_ws.protocol."):
                    base = node.module.removeprefix("cowboy_ws.protocol.")
                else:
                    continue
                if base:
                    found.add(base.split(".")[0])
                else:  # from . import x: x is a module
                    found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.Import):
                found |= {alias.name.split(".")[2] for alias in node.names
                          if alias.name.startswith("cowboy_ws.protocol.")}
        graph[name] = found & modules
    return graph


def test_protocol_imports_have_no_cycle():
    """No module of cowboy_ws/protocol imports one that imports it back, directly or transitively."""
    graph = protocol_imports()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            pytest.fail("import cycle: " + " -> ".join(path[path.index(name):] + [name]))
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, path + [name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_kernels_alone_picks_the_backend():
    """Only kernels imports the C wrapper; the reference parser and the leaves import no kernel choice."""
    graph = protocol_imports()
    assert {name for name, deps in graph.items() if "_ckernels" in deps} == {"kernels"}
    assert graph["parse"] <= {"errors", "frame_errors", "limits", "mask", "opcodes"}
    for leaf in ("closecodes", "limits", "mask", "opcodes"):
        assert graph[leaf] == set(), leaf


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
