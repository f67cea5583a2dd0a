"""The helpers of ``bench.scenarios.worksheet_changes``: what the E11/E12, E14 and X22 scenarios
rely on.  The worksheet's server they run, ``texts_worksheet serverfork``, is tested in
``test_scenarios_worksheet``."""

import io
import socket

import pytest

from bench.scenarios import observe, worksheet_changes as wc
from bench.scenarios.texts_worksheet import HELLO
from bench.scenarios.harness import Run, Scenario, ScenarioError, recv_to_eof, reset
from conftest import DEADLINE

pytestmark = pytest.mark.timeout(60)


def test_unread_and_unacked_count_what_the_kernel_holds():
    """_unread is the bytes waiting to be read; _unacked drops to 0 once the peer's TCP has them."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname(), timeout=DEADLINE) as a:
            b, _ = listener.accept()
            with b:
                a.sendall(b"12345")
                run = _run()
                wc._wait_acked(run, a, "five bytes")
                assert wc._unacked(a) == 0 and wc._unread(b) == 5
                b.recv(2)
                assert wc._unread(b) == 3


def test_reset_sends_rst_not_fin():
    """The harness's reset closes with SO_LINGER 0: the peer's next recv fails with ECONNRESET,
    not EOF."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname(), timeout=DEADLINE)
        b, _ = listener.accept()
        with b:
            reset(a)
            b.settimeout(DEADLINE)
            with pytest.raises(ConnectionResetError):
                b.recv(10)


def _run(limit=30.0):
    sc = Scenario("test", "test", "a test run", "nowhere", '"nothing"', lambda r: None, limit)
    return Run(sc, io.StringIO())


def test_held_stops_the_process_and_lets_it_go_even_when_the_block_fails():
    """Run.held (E14's and X22's hold on the server) leaves the process stopped (STAT T) inside
    the block and running after it, also when the block raises."""
    run = _run()
    try:
        server = run.server("bench.scenarios.texts_worksheet", "serverfork", "0",
                            label="serverFork", loopback=False)
        with pytest.raises(ScenarioError):
            with run.held(server):
                assert observe.process(server.pid).stat == "T"
                raise ScenarioError("the block failed")
        assert run.until(lambda: observe.process(server.pid).stat != "T", timeout=DEADLINE)
        with socket.create_connection(server.address, timeout=DEADLINE) as sock:
            sock.sendall(b"quit")
            assert recv_to_eof(sock) == (HELLO, "EOF")
    finally:
        run.cleanup()
