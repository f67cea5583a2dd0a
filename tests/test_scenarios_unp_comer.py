"""UNP ch. 5's programs that scenarios X2 and X21 run (``bench.scenarios.texts_unp``), and the
helpers of X2, X20 and X21: each behaves as the scenario's transcript says it does."""

import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from bench.process import Child, children, parse_listening, stat
from bench.scenarios import observe, unp
from conftest import DEADLINE, wait_until


@pytest.fixture
def texts_unp():
    """Start ``python -m bench.scenarios.texts_unp ARGS``; it and its children are killed by pid
    at teardown."""
    started = []

    def start(*args):
        child = Child([sys.executable, "-m", "bench.scenarios.texts_unp", *map(str, args)],
                      stderr=subprocess.STDOUT)
        started.append(child)
        return child
    yield start
    for child in started:
        child.kill()
        child.close()


def wait_line(child, pattern):
    """The first line of ``child`` matching ``pattern``, waited for; AssertionError if none."""
    regex = re.compile(pattern)

    def found():
        return next(filter(None, map(regex.search, child.stdout.lines())), None)
    match = child.stdout.wait(found, DEADLINE)
    assert match, f"no line matching {pattern!r}; output: {child.stdout.lines()}"
    return match


def server_port(child):
    where = parse_listening(child.first_line(DEADLINE))
    assert where is not None and where.host == "127.0.0.1", child.stdout.lines()
    return where.port


def server_side(port):
    """The states of the sockets whose local port is the server's, but for the listener."""
    return [r.state for r in observe.tcp_sockets(port) if r.local[1] == port
            and r.state != "LISTEN"]


def the_child(server):
    pids = wait_until(lambda: [s.pid for s in children(server.pid)], "the server forked")
    server.remember_family()
    assert len(pids) == 1
    return pids[0]


def test_tcpserv01_pause_point_holds_the_connection_half_closed_until_sigusr1(texts_unp):
    """tcpserv01 --pause-at-eof echoes; when the client closes, its child says read returned 0
    and keeps its socket in CLOSE_WAIT until SIGUSR1; then it exits, its socket goes, and with no
    SIGCHLD handler it stays a zombie (X2's steps 3 to 7)."""
    server = texts_unp("tcpserv01", "--pause-at-eof", 0)
    port = server_port(server)
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(b"hello, world\n")
        assert sock.recv(100) == b"hello, world\n"
        child = the_child(server)
    wait_line(server, rf"^child {child}: read returned 0; waiting for SIGUSR1 before exit\(0\)$")
    assert server_side(port) == ["CLOSE_WAIT"]
    assert not stat(child).zombie
    os.kill(child, signal.SIGUSR1)
    wait_until(lambda: stat(child).zombie, "the child became a zombie")
    wait_until(lambda: not server_side(port), "the child's socket went")
    assert server.running(), "the parent goes on accepting"


def test_tcpserv01_without_the_pause_point_ends_its_child_at_once(texts_unp):
    """Without --pause-at-eof, tcpserv01's child exits as soon as read returns 0, as UNP's does,
    and says nothing; it stays a zombie."""
    server = texts_unp("tcpserv01", 0)
    port = server_port(server)
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(b"x\n")
        assert sock.recv(100) == b"x\n"
        child = the_child(server)
    wait_until(lambda: stat(child).zombie, "the child became a zombie")
    assert server.stdout.lines()[1:] == []


@pytest.fixture
def full_listener():
    """A listener on 127.0.0.1 whose accept queue is full (listen(1) and two connections never
    accepted), so that the next connect waits in SYN_SENT; closed at teardown."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    queued = [socket.create_connection(listener.getsockname(), timeout=DEADLINE)
              for _ in range(2)]
    yield listener
    for sock in queued:
        sock.close()
    listener.close()


def accept_and_echo(listener):
    """Take the two queued connections away, then accept the next one and echo its line."""
    listener.settimeout(DEADLINE)
    for _ in range(2):
        listener.accept()[0].close()
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(DEADLINE)
        line = conn.recv(100)
        conn.sendall(line)
    return line


@pytest.mark.parametrize("args, after", [
    (["--on-eintr", "again"],
     [r"^connect error: Interrupted system call \(EINTR\); the socket, local port \d+, is in "
      r"SYN_SENT$", r"^connect again: returned 0"]),
    (["--on-eintr", "select"],
     [r"^connect error: Interrupted system call \(EINTR\); the socket, local port \d+, is in "
      r"SYN_SENT$",
      r"^connect again \(O_NONBLOCK\): -1, errno EALREADY \(Operation already in progress\), "
      r"at once$", r"^select: writable; getsockopt\(SO_ERROR\) = 0 \(connected\)$"]),
    (["--handler", "return"], [r"^connect returned 0"]),
], ids=["again", "select", "handler-returns"])
def test_connect_intr_is_interrupted_then_connects_once_the_server_accepts(
        texts_unp, full_listener, args, after):
    """connect_intr, asleep in connect to a full accept queue, catches SIGALRM: with the handler
    raising, connect fails with EINTR while the socket stays in SYN_SENT, and connecting again
    (blocking) or select + SO_ERROR then completes; with the handler returning, CPython's connect
    does not fail.  Once the server accepts, each sends hello and prints its echo."""
    client = texts_unp("connect_intr", *args, "127.0.0.1", full_listener.getsockname()[1])
    wait_line(client, r"^connect to 127\.0\.0\.1:\d+ \.\.\.$")
    wait_until(lambda: stat(client.pid).state == "S", "the client asleep in connect")
    client.popen.send_signal(signal.SIGALRM)
    wait_line(client, "^SIGALRM caught$")
    assert accept_and_echo(full_listener) == b"hello\n"
    assert client.wait(DEADLINE) == 0, client.stdout.lines()
    for pattern in after:
        wait_line(client, pattern)
    assert client.stdout.lines()[-1] == "echo: hello"
    if "return" in args:
        assert not any(line.startswith("connect error") for line in client.stdout.lines())


def test_connect_intr_connects_to_loopback_only(texts_unp):
    """connect_intr refuses any host but 127.0.0.1, with a usage error (exit status 2)."""
    client = texts_unp("connect_intr", "192.0.2.1", "9")
    assert client.wait(DEADLINE) == 2


def test_listen_overflows_counts_a_syn_dropped_at_a_full_accept_queue(full_listener):
    """X21's ListenOverflows reading rises when a SYN finds the accept queue full, and the
    connect it came from is pending (SYN_SENT, no error), neither refused nor connected: the
    host-wide counter alone could have been moved by another connection."""
    before = observe.netstat_counter("ListenOverflows")
    with socket.socket() as sock:
        sock.setblocking(False)
        sock.connect_ex(full_listener.getsockname())
        wait_until(lambda: observe.netstat_counter("ListenOverflows") > before,
                   "ListenOverflows rose")
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
        assert observe.TCP_STATES.get(state) == "SYN_SENT"
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0


@pytest.mark.parametrize("wchan, polling", [
    ("poll_schedule_timeout.constprop.0", True), ("poll_schedule_timeout", True),
    ("wait_woken", False), (None, False)])
def test_polling_names_where_poll_and_select_sleep(wchan, polling):
    """X21 tells a client waiting in poll or select (CPython's own wait for a connection) from
    one asleep in connect by the WCHAN they sleep in."""
    assert unp._polling(wchan) is polling
