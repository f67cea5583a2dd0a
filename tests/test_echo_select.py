"""`python -m servers.echo_select` end to end, on loopback port 0 (tier 4)."""

import os
import random
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import (
    DEADLINE, ROOT, needs_descriptors, recv_all, recv_exactly, reset, slow_reader, stuff,
)
import cli
from reactor.connection import RECV_SIZE
from reactor.states import HIGH_WATER
from servers import echo_select


def payload(seed):
    """Every byte value, in a random order, plus random bytes of random length."""
    rng = random.Random(seed)
    values = list(range(256))
    rng.shuffle(values)
    return bytes(values) + rng.randbytes(rng.randrange(4096))


# The server serves its limit minus 32; this process holds the 1,000 client sockets.
@needs_descriptors(1100, "1,000 clients at once")
def test_byte_exact_echo_over_1000_concurrent_connections(start_server):
    """1,000 clients connected at once each get back exactly their own bytes, all 256 values."""
    server = start_server("servers.echo_select", "-q")
    clients = [socket.create_connection(server.address, timeout=DEADLINE) for _ in range(1000)]
    expected = {sock: payload(i) for i, sock in enumerate(clients)}
    received = {sock: bytearray() for sock in clients}
    try:
        with selectors.DefaultSelector() as sel:
            for sock, data in expected.items():
                half = len(data) // 2
                sock.sendall(data[:half])      # two sends: the server sees arbitrary pieces
                sock.sendall(data[half:])
                sock.setblocking(False)
                sel.register(sock, selectors.EVENT_READ)
            pending = len(clients)
            end = time.monotonic() + DEADLINE
            while pending and time.monotonic() < end:
                for key, _ in sel.select(1.0):
                    sock = key.fileobj
                    data = sock.recv(65536)
                    assert data, "server closed a connection early"
                    received[sock] += data
                    if len(received[sock]) >= len(expected[sock]):
                        sel.unregister(sock)
                        pending -= 1
        assert pending == 0, f"{pending} connections still waiting for their echo"
        assert all(bytes(received[s]) == expected[s] for s in clients)
    finally:
        for sock in clients:
            sock.close()
    assert "Traceback" not in server.log()


def test_a_client_that_never_reads_cannot_grow_server_memory(threaded_echo):
    """A client that floods without reading costs at most the high-water mark plus one read; others keep their echoes."""
    srv = threaded_echo()
    hog = socket.create_connection(srv.address)
    try:
        sent = stuff(hog, 64 * 1024 * 1024)
        assert len(sent) < 64 * 1024 * 1024, "the server never stopped reading"

        other = socket.create_connection(srv.address)
        with other:
            for i in range(100):
                message = f"ping {i}\n".encode()
                other.sendall(message)
                assert recv_exactly(other, len(message)) == message

        # The hog is PAUSED, never read from again: what it has buffered now is its most.
        peak = max(c.buffered for c in list(srv.server.connections))
        assert 0 < peak <= HIGH_WATER + RECV_SIZE
    finally:
        hog.close()


def test_half_close_returns_every_byte_then_eof(start_server):
    """UNP's str_cli at end of input: send N bytes, shut down writing, read exactly N bytes, then EOF."""
    server = start_server()
    data = os.urandom(1024 * 1024) + bytes(range(256))
    sock = socket.create_connection(server.address)
    with sock:
        def send():
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        echoed = recv_all(sock)
        sender.join()
    assert echoed == data


def test_a_peer_reset_mid_write_is_a_quiet_normal_event(start_server):
    """A client that resets while the server is writing to it: no traceback, no error, others unaffected."""
    server = start_server("servers.echo_select", "-v")
    hog = socket.create_connection(server.address)
    stuff(hog, 64 * 1024 * 1024)          # the server now has output pending for it
    reset(hog)
    other = socket.create_connection(server.address)
    with other:
        other.sendall(b"still here\n")
        assert recv_exactly(other, 11) == b"still here\n"
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    log = server.log()
    assert "Traceback" not in log and " ERROR " not in log and " WARNING " not in log
    assert re.search(r"#1 127\.0\.0\.1:\d+ closed \((ECONNRESET|EPIPE)", log), log


def test_sigterm_on_an_idle_server_exits_0(start_server):
    """SIGTERM stops an idle server cleanly and at once: exit status 0, no traceback."""
    server = start_server()
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert "SIGTERM: shutting down: 0 client(s)" in server.log()
    assert "Traceback" not in server.log()


def test_sigterm_delivers_pending_output_before_exiting(start_server):
    """On SIGTERM, a client still gets every byte the server had for it, then a clean EOF (not a reset)."""
    server = start_server("servers.echo_select", "-v")
    sock = slow_reader(server.address)
    with sock:
        sent = stuff(sock, 64 * 1024 * 1024)   # jammed: the server holds output it cannot send
        server.signal(signal.SIGTERM)
        received = recv_all(sock)              # raises ConnectionResetError on a reset
    assert server.wait() == 0
    log = server.log()
    pending = int(re.search(r"shutting down: 1 client\(s\), (\d+) byte\(s\) pending", log)[1])
    out = int(re.search(r"closed \([^)]*\): in \d+ B, out (\d+) B", log)[1])
    assert pending > 0
    assert len(received) == out and received == sent[:out]


def test_a_second_signal_stops_at_once(start_server):
    """When a client will not take its output, a second SIGTERM ends the server without waiting for the grace period."""
    server = start_server("servers.echo_select", "--grace", "600")
    sock = slow_reader(server.address)
    with sock:
        stuff(sock, 64 * 1024 * 1024)
        server.signal(signal.SIGTERM)
        server.wait_for_log("shutting down")
        server.signal(signal.SIGTERM)
        assert server.wait() == 1
    assert "SIGTERM again: stopping now, dropping 1 client(s)" in server.log()


@pytest.mark.parametrize("behaviour", ["idle", "never reads"])
def test_clients_that_outlive_the_grace_period_are_dropped_cleanly(start_server, behaviour):
    """A client that ignores the shutdown is dropped when the grace period ends: exit 0, no traceback."""
    server = start_server("servers.echo_select", "--grace", "0.3")
    sock = slow_reader(server.address)
    with sock:
        if behaviour == "never reads":
            stuff(sock, 64 * 1024 * 1024)
        else:
            sock.sendall(b"x")
            assert recv_exactly(sock, 1) == b"x"
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
    log = server.log()
    assert "grace period over: dropping 1 connection(s)" in log
    assert "Traceback" not in log and " ERROR " not in log


@pytest.mark.skipif(not socket.has_dualstack_ipv6(), reason="no IPv6 on this host")
def test_default_bind_serves_ipv4_and_ipv6(start_server):
    """With no -b, `nc 127.0.0.1` and `nc ::1` both reach the server (one dual-stack socket)."""
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("::1 is not configured here")
    server = start_server(bind=None)
    assert server.host == "::"
    for host in ("127.0.0.1", "::1"):
        with socket.create_connection((host, server.port), timeout=DEADLINE) as sock:
            sock.sendall(b"hi\n")
            assert recv_exactly(sock, 3) == b"hi\n"


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "servers.echo_select", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=DEADLINE)


@pytest.mark.parametrize("port", ["abc", "70000", "-1"])
def test_a_bad_port_is_one_line_on_stderr(port):
    """A typo in the port gets one line saying what is wrong, exit status 2, no traceback."""
    result = run_cli("-b", "127.0.0.1", port)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "invalid port" in result.stderr
    assert result.stdout == ""


def test_an_address_in_use_is_one_line_on_stderr():
    """Starting a second server on a busy port says so and how to fix it, without a traceback."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli("-b", "127.0.0.1", str(port))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_bind_host_is_one_line_on_stderr(monkeypatch, capsys):
    """`-b nosuchhost` is refused with one line (the lookup is faked: tests send nothing off loopback)."""
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(SystemExit) as exit_info:
        cli.run(echo_select.main, ["-b", "nosuchhost", "0"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "cannot resolve bind address 'nosuchhost': Name or service not known" in err


def test_help_describes_the_command():
    """`--help` works and names the defaults a student needs."""
    result = run_cli("--help")
    assert result.returncode == 0
    assert "9877" in result.stdout and "--bind" in result.stdout and "--trace" in result.stdout


def test_trace_shows_both_state_machines(start_server):
    """--trace logs the listener's and each connection's transitions, with the peer."""
    server = start_server("servers.echo_select", "--trace")
    with socket.create_connection(server.address) as sock:
        sock.sendall(b"x")
        assert recv_exactly(sock, 1) == b"x"
    # Our FIN first, then the stop: the loop runs a signal before the turn's reads.
    server.wait_for_log(" closed (")
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    log = server.log()
    assert "listener IDLE --connection--> IDLE" in log
    assert re.search(r"#1 127\.0\.0\.1:\d+ IDLE --peer_eof--> CLOSED", log), log
    assert "listener IDLE --shutdown--> CLOSED" in log


@pytest.mark.parametrize("selector", ["select", "poll", "epoll"])
def test_every_selector_serves_the_same_echo(start_server, selector):
    """--selector select|poll|epoll: the same server on each system call, byte for byte; only
    the epoll one holds an epoll instance, so the option is not ignored."""
    server = start_server("servers.echo_select", "--selector", selector)
    server.wait_for_log("serving at most")
    fds = os.listdir(f"/proc/{server.proc.pid}/fd")
    epolls = [fd for fd in fds
              if os.readlink(f"/proc/{server.proc.pid}/fd/{fd}") == "anon_inode:[eventpoll]"]
    assert bool(epolls) == (selector == "epoll"), epolls
    clients = [socket.create_connection(server.address, timeout=DEADLINE) for _ in range(20)]
    try:
        for i, sock in enumerate(clients):
            sock.sendall(payload(i))
        for i, sock in enumerate(clients):
            assert recv_exactly(sock, len(payload(i))) == payload(i)
    finally:
        for sock in clients:
            sock.close()


def test_select_keeps_the_descriptor_limit_within_fd_setsize(start_server):
    """With --selector select the server lowers its own open-file limit to 1024, so no client
    ever gets a descriptor select() cannot watch; by default it serves 1024 - 32 clients."""
    server = start_server("servers.echo_select", "--selector", "select")
    with socket.create_connection(server.address, timeout=DEADLINE) as sock:
        sock.sendall(b"x\n")
        assert recv_exactly(sock, 2) == b"x\n"
    with open(f"/proc/{server.proc.pid}/limits") as f:
        limits = f.read()
    assert re.search(r"Max open files\s+1024\s", limits), limits
    server.wait_for_log("select() cannot watch")
    log = server.log()
    assert "serving at most 992 clients" in log
    assert "select() cannot watch descriptors past 1023" in log


@needs_descriptors(1100, "a descriptor numbered 1050")
def test_the_loop_refuses_a_descriptor_select_cannot_watch():
    """Registering fd 1024 or more on select() fails at once with a message naming the fix,
    instead of making every later select() call fail for all clients."""
    import resource
    from reactor.loop import Reactor
    from reactor.selection import make_selector

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1100), hard))
    reactor = Reactor(make_selector("select"))
    a, b = socket.socketpair()
    high = os.dup2(a.fileno(), 1050)
    try:
        with pytest.raises(ValueError, match="past what select.. can watch.*poll or epoll"):
            reactor.register(high, selectors.EVENT_READ, None)
        reactor.register(b, selectors.EVENT_READ, None)      # a low one is fine
        reactor.run_once(0)                                  # and select() still works
    finally:
        os.close(high)
        a.close()
        reactor.unregister(b)
        b.close()
        reactor.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_an_unknown_selector_is_a_usage_error():
    """--selector kqueue on Linux: one line naming the choices, exit 2."""
    proc = subprocess.run([sys.executable, "-m", "servers.echo_select", "--selector", "kqueue"],
                          cwd=ROOT, capture_output=True, timeout=DEADLINE)
    assert proc.returncode == 2
    assert proc.stderr.decode().count("\n") == 1 and "'epoll', 'poll', 'select'" in \
        proc.stderr.decode()
