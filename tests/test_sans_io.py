"""Module boundaries: the sans-IO core does no I/O, and reactor/ has no asyncio or threads (tier 1)."""

import ast
import pathlib

import pytest

REACTOR = pathlib.Path(__file__).resolve().parent.parent / "reactor"
ROOT = REACTOR.parent
WIRE = ROOT / "wire"


def imported_modules(path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", ["reactor/states.py", "reactor/timers.py", "wire/framing.py",
                                  "wire/streamio.py", "wire/services.py", "wire/hello.py"])
def test_sans_io_modules_import_no_socket_or_selector(path):
    """Framing, state and session code can be tested with bytes alone and reused by any kind
    of I/O; both models of the Hello server share one session that never touches a socket."""
    found = imported_modules(ROOT / path) & {"socket", "selectors", "select", "ssl"}
    assert not found, f"{path} imports {found}"


@pytest.mark.parametrize("path", sorted((ROOT / "clients").glob("*.py")) + sorted(WIRE.glob("*.py")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_clients_and_the_wire_import_no_server_and_no_loop(path):
    """A client loads no server code and no event loop: what it shares with the servers
    (ports, framing, the Hello session, the TIME codec) lives in wire/."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    bad = {m for m in modules if m.split(".")[0] == "servers" or m in (
        "reactor.loop", "reactor.server", "reactor.listener", "reactor.connection")}
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", sorted(REACTOR.glob("*.py")), ids=lambda p: p.name)
def test_reactor_uses_neither_asyncio_nor_threads(path):
    """The reactor is one thread on selectors: the thing being taught, not a wrapper over asyncio."""
    found = imported_modules(path) & {"asyncio", "threading", "_thread", "concurrent",
                                      "multiprocessing", "asyncore"}
    assert not found, f"{path.name} imports {found}"
