"""The worksheet's server as ``bench.scenarios.texts_worksheet`` translates it, and the helpers of
``bench.scenarios.worksheet_changes``: what the E11/E12, E14 and X22 scenarios rely on."""

import io
import re
import signal
import socket
import subprocess
import sys

import pytest

from bench import process
from bench.scenarios import observe, texts_worksheet, worksheet_changes as wc
from bench.scenarios.harness import Run, Scenario, ScenarioError, recv_to_eof, recv_until
from conftest import DEADLINE

pytestmark = pytest.mark.timeout(60)

HELLO = b"Hello, World!\n"


@pytest.fixture
def serverfork():
    """Start the worksheet's server (``texts_worksheet serverfork ARGS 0``); ended by pid."""
    started = []

    def start(*args):
        child = process.Child([sys.executable, "-m", "bench.scenarios.texts_worksheet",
                               "serverfork", *args, "0"], stderr=subprocess.STDOUT,
                              env=process.python_env(), new_session=True)
        started.append(child)
        where = process.parse_listening(child.first_line(DEADLINE))
        assert where is not None, child.stdout.text()
        child.port = where.port
        return child

    yield start
    for child in started:
        child.kill()
        child.close()


def lines_matching(child, pattern, n):
    """Wait until ``child`` has printed ``n`` lines matching ``pattern``; return them."""
    regex = re.compile(pattern)

    def found():
        got = [line for line in child.stdout.lines() if regex.search(line)]
        return got if len(got) >= n else None
    got = child.stdout.wait(found, DEADLINE)
    assert got, f"fewer than {n} lines matching {pattern!r}:\n{child.stdout.text()}"
    return got


def connect(child):
    return socket.create_connection(("127.0.0.1", child.port), timeout=DEADLINE)


def test_each_recv_is_answered_and_quit_alone_ends_the_child(serverfork):
    """Every recv gets 'Hello, World!' (quit's too), the child ends after exactly 'quit', and with
    --status the parent prints its exit code, 0."""
    server = serverfork("--status")
    with connect(server) as sock:
        sock.sendall(b"hello")
        assert recv_until(sock, lambda d: len(d) >= 14) == HELLO
        sock.sendall(b"quit")
        assert recv_to_eof(sock) == (HELLO, "EOF")
    assert lines_matching(server, r"^Server: child \d+ ", 1)[0].endswith("exit status 0")
    out = server.stdout.lines()
    assert "Server: got connection from 127.0.0.1" in out
    assert "Message received: hello" in out and "Message received: quit" in out


def test_maxdatasize_20_takes_a_message_19_bytes_at_a_time(serverfork):
    """--maxdatasize 20: a 40-byte message is three recvs (19, 19, 2), three replies."""
    server = serverfork("--maxdatasize", "20")
    message = b"this message is longer than twenty bytes"
    with connect(server) as sock:
        sock.sendall(message)
        assert recv_until(sock, lambda d: len(d) >= 3 * 14) == HELLO * 3
        sock.sendall(b"quit")
        recv_to_eof(sock)
    got = lines_matching(server, r"^Message received: ", 4)
    assert [line[len("Message received: "):] for line in got] == [
        message[:19].decode(), message[19:38].decode(), message[38:].decode(), "quit"]


def test_a_reset_ends_the_child_with_the_recv_error_and_exit_1_and_the_next_client_is_served(
        serverfork):
    """A client that resets while the child waits in recv: 'Server recv: Connection reset by
    peer', exit status 1 read by the parent; the next client is served."""
    server = serverfork("--status")
    sock = connect(server)
    lines_matching(server, r"^Server: got connection", 1)
    wc._reset(sock)
    assert lines_matching(server, r"^Server: child \d+ ", 1)[0].endswith("exit status 1")
    assert "Server recv: Connection reset by peer" in server.stdout.lines()
    with connect(server) as sock:
        sock.sendall(b"quit")
        assert recv_to_eof(sock) == (HELLO, "EOF")
    assert lines_matching(server, r"^Server: child \d+ ", 2)[1].endswith("exit status 0")


def test_a_client_that_leaves_without_quit_gets_the_child_killed_by_sigpipe(serverfork):
    """recv's 0 is taken for an empty message and answered, and the send after the client's
    reset is SIGPIPE's default action (as in C): killed by signal 13, no 'Server send' line."""
    server = serverfork("--status")
    with connect(server) as sock:
        sock.sendall(b"hello")
        recv_until(sock, lambda d: len(d) >= 14)
    ended = lines_matching(server, r"^Server: child \d+ ", 1)[0]
    assert ended.endswith(f"killed by signal {int(signal.SIGPIPE)}")
    out = server.stdout.lines()
    assert "Message received: " in out
    assert not any(line.startswith("Server send") for line in out)


def test_without_status_the_exit_code_is_thrown_away_but_the_child_is_reaped(serverfork):
    """The worksheet's handler as written, wait( NULL): nothing printed, and no zombie left."""
    server = serverfork()
    with connect(server) as sock:
        sock.sendall(b"quit")
        recv_to_eof(sock)
    lines_matching(server, r"^Message received: quit$", 1)
    assert _run().until(lambda: not observe.children_of(server.pid), timeout=DEADLINE), \
        "the finished child is still there (a zombie?)"
    assert not any(line.startswith("Server: child") for line in server.stdout.lines())


@pytest.mark.parametrize("value", ["1", "0", "x"])
def test_maxdatasize_below_2_is_refused(value, capsys):
    """MAXDATASIZE leaves a byte for the NUL: 0 and 1 (and not-a-number) are usage errors."""
    with pytest.raises(SystemExit) as exc:
        texts_worksheet.build_parser().parse_args(["serverfork", "--maxdatasize", value, "0"])
    assert exc.value.code == 2


def test_queued_and_unacked_count_what_the_kernel_holds():
    """_queued is the bytes waiting to be read; _unacked drops to 0 once the peer's TCP has them."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname(), timeout=DEADLINE) as a:
            b, _ = listener.accept()
            with b:
                a.sendall(b"12345")
                run = _run()
                wc._wait_acked(run, a, "five bytes")
                assert wc._unacked(a) == 0 and wc._queued(b) == 5
                b.recv(2)
                assert wc._queued(b) == 3


def test_reset_sends_rst_not_fin():
    """_reset closes with SO_LINGER 0: the peer's next recv fails with ECONNRESET instead of EOF."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname(), timeout=DEADLINE)
        b, _ = listener.accept()
        with b:
            wc._reset(a)
            b.settimeout(DEADLINE)
            with pytest.raises(ConnectionResetError):
                b.recv(10)


def _run(limit=30.0):
    sc = Scenario("test", "test", "a test run", "nowhere", '"nothing"', lambda r: None, limit)
    return Run(sc, io.StringIO())


def test_held_stops_the_process_and_lets_it_go_even_when_the_block_fails():
    """_held leaves the process stopped (STAT T) inside the block and running after it, also when
    the block raises."""
    run = _run()
    try:
        server = run.server("bench.scenarios.texts_worksheet", "serverfork", "0",
                            label="serverFork", loopback=False)
        with pytest.raises(ScenarioError):
            with wc._held(run, server):
                assert observe.process(server.pid).stat == "T"
                raise ScenarioError("the block failed")
        assert run.until(lambda: observe.process(server.pid).stat != "T", timeout=DEADLINE)
        with socket.create_connection(server.address, timeout=DEADLINE) as sock:
            sock.sendall(b"quit")
            assert recv_to_eof(sock) == (HELLO, "EOF")
    finally:
        run.cleanup()
