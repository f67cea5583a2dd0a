"""The quick guide's server scenarios' own parts: the translated iterative and fork servers behave
as the guide's C does (one client at a time, exit(1) on any error, SIGPIPE's default action, a
child per client reaped by the kernel), and the helpers read what the kernel shows."""

import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

from conftest import DEADLINE, wait_until
from bench.scenarios import guide_servers, observe

pytestmark = pytest.mark.timeout(60)


def echo(sock, data):
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(4096)
        assert chunk, f"EOF after {got!r}"
        got += chunk
    return got


def stuck_writer(port, server_pid):
    """A client that sends and never reads, once some process of the server sleeps writing to it."""
    bad = socket.socket()
    bad.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    bad.connect(("127.0.0.1", port))
    bad.setblocking(False)
    end = time.monotonic() + DEADLINE
    while not any(p.stat == "S" and observe.syscall(p.pid) == "write"
                  for p in observe.family([server_pid])):
        assert time.monotonic() < end, "the server never blocked writing"
        try:
            bad.send(b"x" * 65536)
        except BlockingIOError:
            time.sleep(0.01)
    return bad


def reset(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize("program", ["iterative", "fork"])
def test_the_guide_servers_keep_sigpipe_default_as_a_c_program(texts_guide, program):
    """Unlike a CPython program, the translated servers do not ignore SIGPIPE (a C program's
    default action kills on a write to a broken connection); the fork server ignores SIGCHLD,
    as the guide's sigaction does, and the iterative one does not."""
    proc, _port = texts_guide(program)
    assert not guide_servers._ignores(proc.pid, signal.SIGPIPE)
    assert guide_servers._ignores(proc.pid, signal.SIGCHLD) == (program == "fork")


def test_the_iterative_server_serves_one_client_at_a_time(texts_guide):
    """The 10th task's server echoes a client, and a second one only once the first has closed."""
    _proc, port = texts_guide("iterative")
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as first, \
            socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as second:
        assert echo(first, b"one\n") == b"one\n"
        second.sendall(b"two\n")
        second.settimeout(0.3)
        with pytest.raises(TimeoutError):
            second.recv(10)
        first.close()
        second.settimeout(DEADLINE)
        assert second.recv(10) == b"two\n"


def test_the_iterative_server_exits_1_when_its_write_fails(texts_guide):
    """A client that resets while the server's write to it sleeps makes the write fail with
    ECONNRESET; the server says so and takes that exit(1), and the client queued behind it is
    reset."""
    proc, port = texts_guide("iterative")
    bad = stuck_writer(port, proc.pid)
    queued = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    reset(bad)
    assert proc.wait(DEADLINE) == 1
    assert proc.stdout.read().decode().splitlines() == [
        "write: -1, errno ECONNRESET (Connection reset by peer): exit(1)"]
    with pytest.raises(ConnectionResetError):
        queued.sendall(b"x")
        queued.recv(10)
    queued.close()


def test_the_fork_server_loses_only_the_bad_clients_child(texts_guide):
    """In the 12th task's server the bad client's child takes the exit(1), and nothing is left of
    it (the kernel reaps it: SIGCHLD ignored); the parent and the other clients' children go on."""
    proc, port = texts_guide("fork")
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as good:
        assert echo(good, b"hello\n") == b"hello\n"
        wait_until(lambda: len(observe.children_of(proc.pid)) == 1)
        bad = stuck_writer(port, proc.pid)
        wait_until(lambda: len(observe.children_of(proc.pid)) == 2)
        reset(bad)
        wait_until(lambda: len(observe.children_of(proc.pid)) == 1)
        assert echo(good, b"again\n") == b"again\n"
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as new:
            assert echo(new, b"new\n") == b"new\n"
    assert proc.poll() is None
    proc.kill()
    proc.wait(DEADLINE)
    assert b"write: -1, errno ECONNRESET (Connection reset by peer): exit(1)" in proc.stdout.read()


def test_syscall_names_what_a_process_is_blocked_in():
    """The system call a sleeping process waits in is read from /proc/PID/syscall by name."""
    child = subprocess.Popen([sys.executable, "-c", "import os; os.read(0, 1)"],
                             stdin=subprocess.PIPE)
    try:
        wait_until(lambda: observe.syscall(child.pid) is not None)
        assert observe.syscall(child.pid) == "read"
    finally:
        child.kill()
        child.wait(DEADLINE)
        child.stdin.close()


class _NoCleanup:
    """In place of a scenario's Run, which would close the socket at its end: the test does."""

    def keep(self, sock):
        return sock


def test_a_connect_to_a_full_accept_queue_is_pending_and_counted():
    """With the accept queue full (backlog 0 holds one connection), the next connect stays in
    SYN_SENT, unrefused, and the host's ListenOverflows counter rises."""
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        address = listener.getsockname()
        with socket.create_connection(address, timeout=DEADLINE):
            before = observe.netstat_counter("ListenOverflows")
            pending = guide_servers._connect_nowait(_NoCleanup(), address)
            try:
                wait_until(lambda: observe.netstat_counter("ListenOverflows") > before)
                assert guide_servers._tcp_state_name(pending) == "SYN_SENT"
                assert pending.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
            finally:
                pending.close()
