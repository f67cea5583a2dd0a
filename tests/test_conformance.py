"""One conformance suite for every echo server kind: reactor, iterative, fork, thread (tier 4).

Each test runs against each server as a subprocess on 127.0.0.1, port 0, so
a benchmark of these servers compares the same behaviour, byte for byte.
"""

import os
import selectors
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import DEADLINE, ROOT, recv_all, recv_exactly, reset

KINDS = ["servers.echo_select", "servers.echo_iterative", "servers.echo_fork",
         "servers.echo_thread"]


def exchange(sock, payload, chunk=65536):
    """Send ``payload`` while reading the echo, then half-close and read to EOF; return the echo.

    Sending and reading at once is what a correct client does: a server that
    blocks in write (the iterative, fork and thread ones) would otherwise
    deadlock with a client blocked in send.
    """
    sock.setblocking(False)
    received = bytearray()
    sent = 0
    end = time.monotonic() + DEADLINE
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        while True:
            assert time.monotonic() < end, f"stuck after {sent} sent, {len(received)} back"
            for _key, mask in sel.select(1.0):
                if mask & selectors.EVENT_WRITE:
                    try:
                        sent += sock.send(payload[sent:sent + chunk])
                    except BlockingIOError:
                        pass
                    if sent == len(payload):
                        sock.shutdown(socket.SHUT_WR)
                        sel.modify(sock, selectors.EVENT_READ)
                if mask & selectors.EVENT_READ:
                    data = sock.recv(1 << 20)
                    if not data:
                        sock.settimeout(DEADLINE)
                        return bytes(received)
                    received += data


@pytest.fixture(params=KINDS, ids=lambda m: m.split(".")[1])
def server(request, start_server):
    return start_server(request.param)


def test_every_byte_value_comes_back_in_order_then_eof(server):
    """2 MiB holding every byte value comes back exactly, and after the client's half-close
    the rest of the echo, then the server's FIN."""
    payload = bytes(range(256)) * 8192
    with socket.create_connection(server.address, timeout=DEADLINE) as c:
        assert exchange(c, payload) == payload


def test_a_half_closed_client_gets_its_echo_then_eof(server):
    """UNP's str_cli at end of input: shutdown(SHUT_WR) still gets every echoed byte, then EOF."""
    with socket.create_connection(server.address, timeout=DEADLINE) as c:
        c.sendall(b"last line\n")
        c.shutdown(socket.SHUT_WR)
        assert recv_all(c) == b"last line\n"


def test_clients_one_after_another_are_each_served(server):
    """Many clients in turn each get their own bytes back, none of another's."""
    for i in range(20):
        with socket.create_connection(server.address, timeout=DEADLINE) as c:
            message = f"client {i}\n".encode()
            c.sendall(message)
            assert recv_exactly(c, len(message)) == message


def test_a_client_that_resets_mid_echo_hurts_nobody(server):
    """A client that resets with echo in flight ends only its own connection: the server
    lives, and the next client is served normally."""
    for _ in range(5):
        c = socket.create_connection(server.address, timeout=DEADLINE)
        c.sendall(os.urandom(200_000))
        reset(c)
    with socket.create_connection(server.address, timeout=DEADLINE) as c:
        assert exchange(c, b"after the resets\n") == b"after the resets\n"
    assert server.proc.poll() is None
    assert "Traceback" not in server.log()


def test_sigterm_with_a_client_connected_stops_within_the_grace_period(start_server, request):
    """SIGTERM stops accepting, lets a connected client finish for --grace seconds, then ends
    it and exits 0, for every kind."""
    for kind in KINDS:
        server = start_server(kind, "--grace", "0.5")
        with socket.create_connection(server.address, timeout=DEADLINE) as c:
            c.sendall(b"x")
            assert recv_exactly(c, 1) == b"x"
            server.signal(signal.SIGTERM)
            assert server.wait() == 0, (kind, server.log())
            assert recv_all(c) == b"", kind       # the server's end, not a hang
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(server.address, timeout=DEADLINE)


@pytest.mark.parametrize("kind", KINDS)
def test_sigusr1_logs_the_counters_and_the_server_goes_on(start_server, kind):
    """SIGUSR1 logs a stats line that counts the client just served, and the server serves on,
    for every kind: the classic designs run on the same loop and service as the reactor
    servers, so an operator asks them all the same way (before, SIGUSR1's default action
    killed the iterative and fork servers)."""
    server = start_server(kind, "-q")
    with socket.create_connection(server.address, timeout=DEADLINE) as c:
        c.sendall(b"x")
        assert recv_exactly(c, 1) == b"x"
    done = "closed=1" if kind == "servers.echo_select" else "completed=1"
    # A fork child's end reaches the parent with SIGCHLD, a thread's through the loop: ask
    # until the count is in (each SIGUSR1 logs one line).
    line = ""
    for _ in range(50):
        line = server.stats_line()
        if done in line.split():
            break
    assert done in line.split(), line
    with socket.create_connection(server.address, timeout=DEADLINE) as c:
        c.sendall(b"y")
        assert recv_exactly(c, 1) == b"y"
    server.signal(signal.SIGTERM)
    assert server.wait() == 0, server.log()


@pytest.mark.parametrize("kind", KINDS)
def test_grace_0_stops_at_once_with_status_0(start_server, kind):
    """--grace 0 drops the clients as soon as SIGTERM comes, and that is still a clean stop
    (exit 0): the client sees its connection end, not a hang."""
    server = start_server(kind, "--grace", "0", "-q")
    with socket.create_connection(server.address, timeout=DEADLINE) as c:
        c.sendall(b"x")
        assert recv_exactly(c, 1) == b"x"
        server.signal(signal.SIGTERM)
        assert server.wait() == 0, server.log()
        try:
            assert recv_all(c) == b""
        except ConnectionResetError:
            pass        # dropped: a reset is as good an end as a FIN here


@pytest.mark.parametrize("option, value", [("--backlog", "0"), ("--backlog", "-1"),
                                           ("--grace", "-1"), ("--grace", "nan"),
                                           ("--grace", "inf")])
def test_a_value_no_server_can_use_is_one_line_on_stderr(option, value):
    """A backlog below 1 or a grace period that is negative, not a number or infinite is
    refused before anything starts: one line naming the option, exit status 2."""
    proc = subprocess.run([sys.executable, "-m", "servers.echo_select", option, value, "0"],
                          capture_output=True, cwd=ROOT, timeout=DEADLINE)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and err.count("\n") == 1 and option in err, err


@pytest.mark.parametrize("kind", KINDS)
def test_an_address_in_use_is_one_line_on_stderr(kind):
    """Every kind reports a busy port the same way: one line, what to do, exit 1."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", kind, "-b", "127.0.0.1", str(port)],
                              cwd=ROOT, capture_output=True, timeout=DEADLINE)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err.count("\n") == 1 and "address already in use" in err, err


@pytest.mark.parametrize("kind", KINDS)
def test_help_works_for_every_kind(kind):
    """--help exits 0 and describes the server."""
    proc = subprocess.run([sys.executable, "-m", kind, "--help"], cwd=ROOT,
                          capture_output=True, timeout=DEADLINE)
    assert proc.returncode == 0
    assert "'listening on HOST:PORT'" in " ".join(proc.stdout.decode().split())
