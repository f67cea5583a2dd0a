"""Module boundaries: the sans-IO core does no I/O, and reactor/ has no asyncio or threads (tier 1)."""

import ast
import pathlib

import pytest

REACTOR = pathlib.Path(__file__).resolve().parent.parent / "reactor"
SERVERS = REACTOR.parent / "servers"


def imported_modules(path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", ["framing", "states", "timers", "streamio"])
def test_sans_io_modules_import_no_socket_or_selector(module):
    """Framing and state code can be tested with bytes alone and reused by any kind of I/O."""
    found = imported_modules(REACTOR / f"{module}.py") & {"socket", "selectors", "select", "ssl"}
    assert not found, f"reactor/{module}.py imports {found}"


def test_the_hello_session_is_sans_io():
    """Both models of the Hello server share one session that never touches a socket."""
    found = imported_modules(SERVERS / "hello_session.py") & {"socket", "selectors", "select"}
    assert not found


@pytest.mark.parametrize("path", sorted(REACTOR.glob("*.py")), ids=lambda p: p.name)
def test_reactor_uses_neither_asyncio_nor_threads(path):
    """The reactor is one thread on selectors: the thing being taught, not a wrapper over asyncio."""
    found = imported_modules(path) & {"asyncio", "threading", "_thread", "concurrent",
                                      "multiprocessing", "asyncore"}
    assert not found, f"{path.name} imports {found}"
