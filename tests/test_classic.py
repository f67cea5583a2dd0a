"""The classic designs' own behaviour: fork reaping and zombies, thread cleanup, iterative
queueing (tier 4).  The process table is read from /proc, as `ps` would show it."""

import errno
import os
import select
import signal
import socket
import threading
import time

import pytest

from bench import process
from conftest import DEADLINE, recv_all, recv_exactly, reset, wait_exited


def children_of(pid):
    """{child pid: state letter} for the processes whose parent is ``pid``."""
    return {child.pid: child.state for child in process.children(pid)}


def zombies(pid):
    return [child for child, state in children_of(pid).items() if state == "Z"]


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def status_field(pid, name):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise KeyError(name)


# pidfd_open's flag for a thread's own descriptor (Linux 6.9): readable once that thread ends.
PIDFD_THREAD = os.O_EXCL


def wait_for_threads(pid, count):
    """Wait until ``pid`` runs ``count`` threads: the others' ends, on a pidfd each.

    A thread's exit, after it has logged its last line, shows nowhere but
    in the kernel; a thread's pidfd is readable once it has exited.  Kernels
    before 6.9 have no thread pidfds: there, /proc is read until it agrees.
    """
    end = time.monotonic() + DEADLINE
    while len(tids := os.listdir(f"/proc/{pid}/task")) > count:
        assert time.monotonic() < end, f"{len(tids)} threads, not {count}"
        fds = []
        try:
            for tid in tids:
                if int(tid) != pid:
                    try:
                        fds.append(os.pidfd_open(int(tid), PIDFD_THREAD))
                    except ProcessLookupError:
                        pass        # gone already
            waiting = set(fds)
            while len(waiting) + 1 > count and time.monotonic() < end:
                ready, _, _ = select.select(list(waiting), [], [], end - time.monotonic())
                waiting -= set(ready)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            time.sleep(0.01)        # no thread pidfds on this kernel
        finally:
            for fd in fds:
                os.close(fd)


def served_clients(address, n):
    """``n`` connected clients, each having had one echo (so each has its own child/thread)."""
    clients = [socket.create_connection(address, timeout=DEADLINE) for _ in range(n)]
    for c in clients:
        c.sendall(b"hi")
    for c in clients:
        assert recv_exactly(c, 2) == b"hi"
    return clients


# --- fork ---------------------------------------------------------------------

def test_fork_100_clients_closing_at_once_leave_no_zombie(start_server):
    """With the default reaping (waitpid in a loop, UNP tcpserv04), 100 children that end
    together are all reaped, though their SIGCHLDs merge; the parent's descriptors return to
    their count before the clients."""
    server = start_server("servers.echo_fork")
    pid = server.proc.pid
    baseline = open_fds(pid)
    clients = served_clients(server.address, 100)
    kids = children_of(pid)
    assert len(kids) == 100
    for c in clients:
        c.close()
    # How fast is for the benchmark (about 50 ms here), not for a test.
    wait_exited(kids)
    server.wait_for_log(lambda log: log.count("terminated (exit 0)") == 100, "100 exits")
    assert children_of(pid) == {} and zombies(pid) == []
    assert open_fds(pid) == baseline


def test_fork_reap_none_leaves_zombies_like_tcpserv01(start_server):
    """--reap none reproduces tcpserv01: every finished child stays a zombie (<defunct>),
    until the parent exits and they are reaped."""
    server = start_server("servers.echo_fork", "--reap", "none")
    pid = server.proc.pid
    clients = served_clients(server.address, 5)
    kids = children_of(pid)
    for c in clients:
        c.close()
    wait_exited(kids)
    assert sorted(zombies(pid)) == sorted(kids)
    server.signal(signal.SIGTERM)
    assert server.wait() == 0


def test_fork_children_never_die_of_sigpipe(start_server):
    """A child that writes to a client that has gone gets EPIPE/ECONNRESET and exits 0:
    SIGPIPE never kills it (CS:APP's robust server)."""
    server = start_server("servers.echo_fork")
    for _ in range(10):
        c = socket.create_connection(server.address, timeout=DEADLINE)
        c.sendall(os.urandom(300_000))
        reset(c)
    server.wait_for_log(lambda log: log.count("terminated (") == 10, "ten children reaped")
    log = server.log()
    assert log.count("terminated (exit 0)") == 10, log
    assert "SIGPIPE" not in log


@pytest.mark.parametrize("reap", ["waitpid", "wait", "ignore", "none"])
def test_fork_max_children_makes_the_next_client_wait(start_server, reap):
    """With --max-children 2, a third client waits in the backlog until a child ends -- and
    is then served, however children are reaped (or not)."""
    server = start_server("servers.echo_fork", "--max-children", "2", "--reap", reap)
    first, second = served_clients(server.address, 2)
    third = socket.create_connection(server.address, timeout=DEADLINE)
    third.sendall(b"3")
    server.wait_for_log("2 children: not accepting")
    assert len(children_of(server.proc.pid)) == 2
    first.close()
    assert recv_exactly(third, 1) == b"3"
    for c in (second, third):
        c.close()


def test_fork_children_term_ends_children_at_once(start_server):
    """--children term: SIGTERM reaches every child at once, including one forked just as the
    signal came, so the parent exits without waiting out a long grace period."""
    server = start_server("servers.echo_fork", "--children", "term", "--grace", "600")
    clients = served_clients(server.address, 3)
    server.signal(signal.SIGTERM)
    assert server.wait() == 0       # the hang guard: a lost SIGTERM would wait 600 s
    assert server.log().count("killed by SIGTERM") == 3
    assert "dropping" not in server.log()
    for c in clients:
        c.close()


def test_a_fork_child_holds_no_other_clients_socket(start_server):
    """Two clients accepted in one turn: the first one's child must not keep the second's
    socket open, or the second never sees its FIN while the first stays connected."""
    server = start_server("servers.echo_fork")
    server.signal(signal.SIGSTOP)       # both connect before the parent accepts either
    try:
        first = socket.create_connection(server.address, timeout=DEADLINE)
        second = socket.create_connection(server.address, timeout=DEADLINE)
    finally:
        server.signal(signal.SIGCONT)
    with first, second:
        for c in (first, second):
            c.sendall(b"x")
            assert recv_exactly(c, 1) == b"x"
        second.shutdown(socket.SHUT_WR)
        assert recv_all(second) == b""     # the hang guard: it would wait for first to leave


def test_fork_children_ignore_sigusr1(start_server):
    """SIGUSR1 is for the parent's counters; `pkill -USR1 -f servers.echo_fork` reaches the
    children too, and must not end their clients."""
    server = start_server("servers.echo_fork")
    with socket.create_connection(server.address, timeout=DEADLINE) as c:
        c.sendall(b"1")
        assert recv_exactly(c, 1) == b"1"
        (kid,) = children_of(server.proc.pid)
        os.kill(kid, signal.SIGUSR1)
        c.sendall(b"2")
        assert recv_exactly(c, 1) == b"2"
    server.wait_for_log(f"child {kid} terminated (exit 0)")


@pytest.mark.parametrize("children", ["wait", "term"])
def test_fork_stop_leaves_no_process_behind(start_server, children):
    """On SIGTERM the parent ends its children (at once with --children term, after --grace
    with wait), reaps them all, and exits 0: nothing of it is left running or defunct."""
    server = start_server("servers.echo_fork", "--children", children, "--grace", "0.5")
    pid = server.proc.pid
    clients = served_clients(server.address, 5)
    kids = set(children_of(pid))
    assert len(kids) == 5
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    for c in clients:
        assert recv_all(c) == b""
        c.close()
    for kid in kids:
        assert not os.path.exists(f"/proc/{kid}"), f"child {kid} outlived its parent"
    assert "child" in server.log() and "killed by SIGTERM" in server.log()


# --- thread -------------------------------------------------------------------

def test_thread_5000_short_connections_leave_threads_and_memory_at_baseline(start_server):
    """After 5,000 short connections the thread server is back to its idle thread count,
    and its resident memory has not grown by more than a small allocator margin: no thread,
    socket or buffer is kept per finished client."""
    server = start_server("servers.echo_thread", "-v")
    pid = server.proc.pid

    def churn(n):
        for _ in range(n):
            with socket.create_connection(server.address, timeout=DEADLINE) as c:
                c.sendall(b"ping")
                assert recv_exactly(c, 4) == b"ping"

    churn(300)      # warm up the allocator and the interpreter
    server.wait_for_log(lambda log: log.count(" closed (") == 300, "300 connections ended")
    wait_for_threads(pid, 1)
    rss_before = status_field(pid, "VmRSS")
    fds_before = open_fds(pid)
    workers = [threading.Thread(target=churn, args=(1250,)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert not any(w.is_alive() for w in workers)
    server.wait_for_log(lambda log: log.count(" closed (") == 5300, "5,300 connections ended")
    wait_for_threads(pid, 1)
    rss_after = status_field(pid, "VmRSS")
    assert rss_after - rss_before < 4096, f"RSS grew {rss_before} -> {rss_after} KiB"
    assert open_fds(pid) == fds_before


def test_thread_monitor_logs_comers_statistics(start_server):
    """--stats logs current and completed connections, average time and bytes (Comer 12.9)."""
    server = start_server("servers.echo_thread", "--stats", "0.2", "-q")
    with socket.create_connection(server.address, timeout=DEADLINE) as c:
        c.sendall(b"12345")
        assert recv_exactly(c, 5) == b"12345"
    server.wait_for_log("current=0 completed=1")
    line = [row for row in server.log().splitlines() if "completed=1" in row][-1]
    assert "bytes_in=5 bytes_out=5" in line and "average_seconds=" in line


# --- iterative ----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["servers.echo_iterative", "servers.echo_fork",
                                  "servers.echo_thread"])
def test_a_stop_signal_arriving_with_a_new_client_wins(start_server, kind):
    """A SIGTERM that arrives together with a waiting client stops the server: that client
    is not taken on (for the iterative server it would be served with no grace limit)."""
    server = start_server(kind, "-v", "--grace", "600")
    server.signal(signal.SIGSTOP)       # freeze it, so both arrive before it runs again
    try:
        client = socket.create_connection(server.address, timeout=DEADLINE)
        client.sendall(b"x")
        server.signal(signal.SIGTERM)
    finally:
        server.signal(signal.SIGCONT)
    assert server.wait() == 0           # the hang guard: serving the client would wait 600 s
    assert " open" not in server.log()
    client.close()


def test_iterative_serves_the_second_client_only_after_the_first_leaves(start_server):
    """The iterative server is busy with one client; the next one's bytes wait in the backlog
    and are echoed as soon as the first client leaves (the quick guide's answer 12)."""
    server = start_server("servers.echo_iterative", "-v")
    first = socket.create_connection(server.address, timeout=DEADLINE)
    first.sendall(b"1")
    assert recv_exactly(first, 1) == b"1"
    second = socket.create_connection(server.address, timeout=DEADLINE)
    second.sendall(b"2")
    first.sendall(b"1")
    assert recv_exactly(first, 1) == b"1"     # still the first client's server
    server.wait_for_log(" open")              # the first client's line is in the log by now
    assert server.log().count(" open") == 1
    first.close()
    assert recv_exactly(second, 1) == b"2"
    second.close()
