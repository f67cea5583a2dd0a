"""Admission control on whole servers: ``busy\\n`` at capacity, no slot leaks,
running out of descriptors, idle timeouts, counters.

Each server is a subprocess on 127.0.0.1, port 0; the counters are read
through SIGUSR1, as a user would.
"""

import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import (
    DEADLINE, ROOT, ThreadedServer, fd_limit_setter, recv_all, recv_exactly, reset,
)
from reactor.protocols import Protocol

BUSY = b"busy\n"


def connect(address):
    return socket.create_connection(address, timeout=DEADLINE)


def sort_out(socks, rejected_expected):
    """Wait until ``rejected_expected`` of ``socks`` have read up to EOF.

    Returns (replies of the sockets that reached EOF, sockets that did not).
    A reset instead of EOF fails the test: it is what destroys ``busy\\n``.
    """
    received = {s: bytearray() for s in socks}
    ended = []
    end = time.monotonic() + DEADLINE
    with selectors.DefaultSelector() as sel:
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        while len(ended) < rejected_expected:
            assert time.monotonic() < end, (
                f"only {len(ended)} of {rejected_expected} clients were closed")
            for key, _ in sel.select(0.1):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except ConnectionResetError:
                    pytest.fail(f"a client read a reset after {bytes(received[s])!r}, "
                                f"not a clean end of stream")
                if data:
                    received[s] += data
                else:
                    sel.unregister(s)
                    ended.append(s)
    for s in socks:
        s.settimeout(DEADLINE)
    waiting = [s for s in socks if s not in ended]
    assert all(not received[s] for s in waiting), "a served client read something unasked"
    return [bytes(received[s]) for s in ended], waiting


def assert_echoes(socks, message=b"still here\n"):
    for s in socks:
        s.sendall(message)
    for s in socks:
        assert recv_exactly(s, len(message)) == message


def test_capacity_10_serves_exactly_10_of_30_and_rejects_20_with_busy_then_fin(start_server):
    """At capacity N, exactly N clients are served; every other one reads b"busy\\n" and then
    a clean end of stream (FIN, never a reset)."""
    server = start_server("servers.busy_select", "--max-clients", "10")
    clients = [connect(server.address) for _ in range(30)]
    try:
        replies, served = sort_out(clients, rejected_expected=20)
        assert replies == [BUSY] * 20
        assert len(served) == 10
        assert_echoes(served)
        stats = server.stats()
        assert (stats["accepted"], stats["rejected_busy"], stats["active"]) == (10, 20, 10)
    finally:
        for s in clients:
            s.close()


def test_rejected_clients_that_sent_64k_first_still_read_busy(start_server):
    """A client that writes 64 KiB before reading still gets the whole b"busy\\n" and a FIN
    (the server reads and discards its input instead of resetting it) -- 1,000 of them,
    50 at a time, while the served client is echoed throughout."""
    server = start_server("servers.busy_select", "-q")
    served = connect(server.address)
    assert_echoes([served])
    payload = bytes(range(256)) * 256       # 64 KiB
    replies = []
    for _batch in range(20):
        batch = [connect(server.address) for _ in range(50)]
        try:
            for s in batch:
                s.sendall(payload)
            for s in batch:
                try:
                    replies.append(recv_all(s))
                except ConnectionResetError:
                    replies.append(b"<reset>")
        finally:
            for s in batch:
                s.close()
        assert_echoes([served])
    assert len(replies) == 1000
    assert replies.count(BUSY) == 1000, {r: replies.count(r) for r in set(replies)}
    served.close()


def _abrupt_client(address, mode, payload):
    """One served client that ends abruptly; returns how many times it was turned away first."""
    give_up = time.monotonic() + DEADLINE
    turned_away = 0
    while True:
        s = connect(address)
        s.sendall(b"ping")
        if recv_exactly(s, 4) == b"ping":
            break
        # b"busy": the previous client's slot was not free yet (the server
        # may still be echoing what that client sent before it left).  A
        # rejection takes a fraction of a millisecond, so the number of
        # tries says nothing; only the time does.
        recv_all(s)
        s.close()
        turned_away += 1
        if time.monotonic() > give_up:
            raise AssertionError(f"never served in {DEADLINE} s ({turned_away} times busy)")
    if mode == 0:               # reset
        reset(s)
    elif mode == 1:             # FIN in the middle of an echo
        s.sendall(payload)
        s.close()
    elif mode == 2:             # half-close in the middle of an echo, then go
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        s.close()
    else:                       # half-close, read the rest, close: the polite ending
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == payload
        s.close()
    return turned_away


def test_2000_abrupt_clients_leave_no_slot_taken(start_server):
    """After 2,000 served clients end abruptly (reset, FIN mid-echo, half-close), every slot
    is free again: the server serves its full capacity, and only then says busy."""
    capacity = 10
    server = start_server("servers.busy_select", "-v", "--max-clients", str(capacity))
    payload = b"x" * 32768
    errors = []

    def worker(first):
        try:
            for i in range(first, 2000, capacity):
                _abrupt_client(server.address, i % 4, payload)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(capacity)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "clients still running"
    assert not errors, errors[0]

    server.wait_for_log(lambda log: log.count(" closed (") >= 2000, "2,000 closed clients")
    stats = server.stats()
    assert stats["active"] == 0, f"slots still taken: {stats}"
    assert stats["accepted"] == stats["closed"] == 2000

    clients = [connect(server.address) for _ in range(capacity + 1)]
    try:
        replies, served = sort_out(clients, rejected_expected=1)
        assert replies == [BUSY]
        assert len(served) == capacity
        assert_echoes(served)
    finally:
        for s in clients:
            s.close()


def test_out_of_descriptors_neither_spins_nor_dies_and_recovers(start_server):
    """With too few descriptors for its clients, the server keeps serving the ones it has,
    does not spin on the readable listener, and serves a waiting client once others leave."""
    server = start_server("servers.echo_select", "--max-clients", "1000", "-v", fd_limit=64)
    clients = [connect(server.address) for _ in range(80)]
    try:
        for s in clients:
            s.sendall(b"x")
        server.wait_for_log("accept: EMFILE")
        stats = server.stats()
        served = _echoed(clients, stats["active"])
        waiting = [s for s in clients if s not in served]
        assert 30 <= len(served) < 80

        before, cpu_before, t0 = server.stats(), server.cpu_seconds(), time.monotonic()
        retries = server.log().count("accept: EMFILE")
        # Two more retries of accept (logged at debug level): about two seconds out of
        # descriptors, measured by the server's own clock rather than a sleep here.
        server.wait_for_log(lambda log: log.count("accept: EMFILE") >= retries + 2,
                            "two more accept retries")
        after, cpu_after, t1 = server.stats(), server.cpu_seconds(), time.monotonic()
        turns = after["eventloop_cycles"] - before["eventloop_cycles"]
        # A spinning loop turns tens of thousands of times a second; this one
        # should wake about once per second to retry accept, plus the SIGUSR1s.
        assert turns < 50, f"{turns} loop turns in {t1 - t0:.1f} s while out of descriptors"
        assert after["emfile_events"] - before["emfile_events"] <= 5
        assert cpu_after - cpu_before < 0.5 * (t1 - t0)
        assert server.proc.poll() is None

        assert_echoes(served)
        for s in served[:5]:
            s.close()
        ready = _first_echo(waiting)
        assert ready is not None, "no waiting client was served after five left"
        assert_echoes(served[5:])
        assert server.proc.poll() is None
    finally:
        for s in clients:
            s.close()


def _echoed(socks, count):
    """The ``count`` sockets of ``socks`` that get their b"x" back (fails if fewer do)."""
    echoed = []
    end = time.monotonic() + DEADLINE
    with selectors.DefaultSelector() as sel:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        while len(echoed) < count:
            assert time.monotonic() < end, f"{len(echoed)} of {count} served clients echoed"
            for key, _ in sel.select(0.1):
                assert key.fileobj.recv(1) == b"x"
                sel.unregister(key.fileobj)
                echoed.append(key.fileobj)
    return echoed


def _first_echo(socks):
    with selectors.DefaultSelector() as sel:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        for key, _ in sel.select(DEADLINE):
            if key.fileobj.recv(1) == b"x":
                return key.fileobj
    return None


def test_idle_timeout_closes_the_idle_client_not_the_active_one(start_server):
    """--idle-timeout closes a client that sent nothing for that long, and never one that
    keeps talking, however long it stays."""
    server = start_server("servers.echo_select", "-v", "--idle-timeout", "1")
    idle, active = connect(server.address), connect(server.address)
    try:
        assert_echoes([idle, active])
        # The active client talks every 0.1 s until the idle one is closed: both
        # timers were armed together, so the active one has outlived its period.
        end = time.monotonic() + DEADLINE
        while not select.select([idle], [], [], 0.1)[0]:
            assert time.monotonic() < end, "the idle client was never closed"
            assert_echoes([active], b"tick")
        assert recv_all(idle) == b""        # the server's FIN, no reset
        idle.close()
        server.wait_for_log("closed (idle timeout")
        stats = server.stats()
        assert (stats["idle_timeouts"], stats["active"]) == (1, 1)
        assert_echoes([active])
        assert "idle for 1 s: closing" in server.log()
    finally:
        idle.close()
        active.close()


class Ticker(Protocol):
    """Sends a line every 0.1 s and never reads: a server that talks on its own."""

    def __init__(self, reactor):
        self.reactor = reactor

    def connection_made(self, conn):
        self.tick(conn)

    def tick(self, conn):
        conn.write(b"tick\n")
        self.timer = self.reactor.call_later(0.1, self.tick, conn)

    def connection_lost(self, conn, reason):
        self.timer.cancel()


def test_idle_timeout_counts_output_as_activity():
    """A client that only receives (a feed, a download) is not idle while bytes reach it."""
    server = ThreadedServer(lambda: Ticker(server.reactor), idle_timeout=0.5)
    try:
        with connect(server.address) as client:
            assert recv_exactly(client, 5 * 20) == b"tick\n" * 20     # 2 s, four idle periods
        assert server.server.stats.idle_timeouts == 0
    finally:
        server.stop()


def test_echo_select_default_capacity_is_the_descriptor_limit_minus_32(start_server):
    """Without --max-clients, echo_select serves as many clients as its descriptor limit
    allows minus 32 kept back (Redis's rule), and says so; one more reads busy."""
    server = start_server("servers.echo_select", fd_limit=64)
    # The log comes through a pipe read by a thread: wait for the line, do not peek.
    server.wait_for_log("serving at most 32 clients at once (open-file limit 64")
    clients = [connect(server.address) for _ in range(33)]
    try:
        replies, served = sort_out(clients, rejected_expected=1)
        assert replies == [BUSY]
        assert len(served) == 32
        assert_echoes(served)
    finally:
        for s in clients:
            s.close()


def test_a_descriptor_limit_too_low_for_any_client_is_one_clear_error():
    """If the descriptor limit leaves nothing for clients, the server says so in one line and
    what to do, and exits non-zero, instead of starting unable to serve."""
    proc = subprocess.run([sys.executable, "-m", "servers.echo_select", "0"], cwd=ROOT,
                          capture_output=True, timeout=DEADLINE,
                          preexec_fn=fd_limit_setter(30))
    assert proc.returncode == 1
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and "open-file limit (30)" in lines[0] and "ulimit -n" in lines[0]
    assert proc.stdout == b""


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_bad_max_clients_is_a_usage_error(value):
    """--max-clients takes a whole number from 1 up; anything else is a one-line usage error."""
    proc = subprocess.run([sys.executable, "-m", "servers.busy_select", "--max-clients", value],
                          cwd=ROOT, capture_output=True, timeout=DEADLINE)
    assert proc.returncode == 2
    assert proc.stderr.decode().count("\n") == 1 and "--max-clients" in proc.stderr.decode()


def test_stats_are_logged_periodically_and_on_sigusr1_even_when_quiet(start_server):
    """--stats SECS logs the counters on a timer and SIGUSR1 at any time, even with -q:
    asking for them is asking to see them."""
    server = start_server("servers.echo_select", "-q", "--stats", "0.2")
    with connect(server.address) as c:
        assert_echoes([c], b"12345")
        server.wait_for_log(lambda log: log.count(" stats: ") >= 2, "two periodic stats lines")
        stats = server.stats()
    assert list(stats) == ["accepted", "rejected_busy", "active", "closed", "idle_timeouts",
                           "protocol_errors", "output_limit_disconnections", "emfile_events",
                           "accept_errors", "bytes_in", "bytes_out", "eventloop_cycles",
                           "callback_errors", "log_lines_dropped"]
    assert (stats["accepted"], stats["active"], stats["bytes_in"], stats["bytes_out"]) == (1, 1, 5, 5)
    assert "serving at most" not in server.log()    # -q still hides the INFO lines


def test_a_storm_of_sigusr1_neither_hides_sigterm_nor_kills_the_server(start_server):
    """However many SIGUSR1s arrive, a SIGTERM among them still stops the server gracefully
    (exit 0), and one arriving while it exits does not kill it."""
    server = start_server("servers.echo_select")
    pid = server.proc.pid

    def running():      # without reaping it, so that the pid cannot be reused meanwhile
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None

    sent = 0
    end = time.monotonic() + DEADLINE
    while running() and time.monotonic() < end and sent < 200_000:
        os.kill(pid, signal.SIGUSR1)
        sent += 1
        if sent == 5000:
            os.kill(pid, signal.SIGTERM)
    assert sent > 5000, "the server exited before SIGTERM"
    assert server.wait() == 0, server.log()[-500:]
    assert "SIGTERM: shutting down" in server.log()


def test_busy_select_reproduces_the_guides_session(start_server):
    """The guide's capacity-1 session: the first client is echoed, a second reads busy and
    is closed, and once the first leaves a new one is echoed. --trace shows the listener's
    IDLE/BUSY transitions alongside the connections'."""
    server = start_server("servers.busy_select", "--trace")
    first = connect(server.address)
    assert_echoes([first], b"hello\n")
    with connect(server.address) as second:
        second.sendall(b"hi\n")
        assert recv_all(second) == BUSY
    first.close()
    server.wait_for_log(" closed (")
    with connect(server.address) as third:
        assert_echoes([third], b"again\n")
    transitions = ["listener IDLE --connection--> IDLE (0/1)",
                   "listener IDLE --full--> BUSY (1/1)",
                   "listener BUSY --connection--> BUSY (1/1)",
                   "listener BUSY --slot_freed--> IDLE (0/1)"]
    # The log comes through a pipe and a reader thread: the echo can be back first.
    log = server.wait_for_log(lambda log: all(t in log for t in transitions) and log,
                              "the listener's four transitions")
    positions = [log.index(t) for t in transitions]
    assert positions == sorted(positions)
    assert "IDLE --close--> DRAINING" in log      # the rejected connection's own machine
    assert server.proc.poll() is None
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
