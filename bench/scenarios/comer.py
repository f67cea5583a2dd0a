"""Comer's single-thread server (ch. 13, 8.29), idle clients (10.7), select(2)'s fd limit."""

import os
import re
import resource
import select
import selectors
import signal
import socket
import time

from bench.scenarios import observe
from bench.scenarios.harness import ScenarioError, recv_to_eof, recv_until, scenario
from reactor.loop import FD_SETSIZE
from servers.limits import RESERVED_FDS

COMER = "Comer & Stevens, Internetworking with TCP/IP vol. III"

# How much the client that never reads pushes at most (it stops when send blocks).
FLOOD_LIMIT = 64 * 1024 * 1024


def _echo_once(r, address, text, timeout):
    """Connect, send ``text``, and return what comes back within ``timeout`` (b"" if nothing)."""
    with r.connect(address, timeout=2) as sock:
        sock.sendall(text)
        sock.settimeout(timeout)
        data = b""
        end = time.monotonic() + timeout
        while not data.endswith(b"\n") and time.monotonic() < end:
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
        return data


def _flood(sock):
    """Send until the socket would block for 0.5 s (both sides' buffers full); bytes sent."""
    sock.setblocking(False)
    sent, chunk = 0, b"x" * 65536
    while sent < FLOOD_LIMIT:
        try:
            sent += sock.send(chunk)
        except BlockingIOError:
            _, writable, _ = select.select([], [sock], [], 0.5)
            if not writable:
                break
    return sent


@scenario("X19", "deadlock", "A client that never reads: Comer's single-thread server "
          "deadlocks, the reactor serves everyone", f"{COMER}, 8.29 and ch. 13", """\
"8.29 The Important Problem Of Server Deadlock" (Comer, contents).
The single-thread concurrent ECHO server of ch. 13 writes each reply with a blocking write:
a client that sends but never reads fills the buffers, the server blocks in write, and every
other client waits with it. A server must never block on one client.
""", limit=30.0)
def deadlock(r):
    outcome = {}
    for module, args, label, loopback in (
            ("bench.scenarios.texts", ("mechod", "0"), "TCPmechod (Comer ch. 13)", False),
            ("servers.echo_select", (), "echo_select", True)):
        r.heading(label)
        server = r.server(module, *args, label=label, loopback=loopback)
        hog = r.connect(server.address, timeout=2)
        sent = _flood(hog)
        r.say(f"[client A] sends and never reads: {sent / 1048576:.1f} MiB sent before send() "
              f"blocked")
        rows = r.netstat(server.port, "client A's buffers full")
        hog_port = hog.getsockname()[1]
        stuck = sum(x.send_q for x in rows if x.remote[1] == hog_port)
        start = time.monotonic()
        echo = _echo_once(r, server.address, b"hello from B\n", timeout=2.0)
        took = time.monotonic() - start
        r.say(f"[client B] sent b'hello from B\\n', read {echo!r} "
              f"({'within' if echo else 'nothing in'} {took:.1f} s)")
        procs = r.ps([server], "after client B's try")
        outcome[label] = (echo == b"hello from B\n", procs[0] if procs else None, stuck)
        hog.close()
    echoed, proc, stuck = outcome["TCPmechod (Comer ch. 13)"]
    r.expect(not echoed and proc is not None and proc.stat == "S" and stuck > 0,
             f"TCPmechod: client B gets no echo in 2 s; the server is alive and asleep "
             f"(wchan {proc.wchan if proc else '?'}) with {stuck} bytes for client A stuck in "
             f"its socket: it blocks in the write to A")
    served, _, _ = outcome["echo_select"]
    r.expect(served, "echo_select: client B is echoed at once, while client A's output "
                     "waits (the reactor buffers it, stops reading A, and keeps serving)")


UNP = "Stevens, UNIX Network Programming, ch. 5"

# The clients X20 leaves idle on each server, and the half line one of them sends.
HALF_LINE = b"hello, wor"


def _idle_clients(r, address):
    """Three connected clients: two that send nothing, one that sends half a line (echoed)."""
    socks = [r.connect(address, timeout=2) for _ in range(3)]
    socks[2].sendall(HALF_LINE)
    echo = recv_until(socks[2], lambda d: len(d) >= len(HALF_LINE))
    if echo != HALF_LINE:
        raise ScenarioError(f"the half line came back as {echo!r}")
    return socks


def _held(rows, port):
    """The server's ESTABLISHED sides in a netstat snapshot (the clients it holds, or queues)."""
    return [x for x in rows if x.local[1] == port and x.state == "ESTABLISHED"]


def _logged(r, server, pattern, count, timeout=5.0):
    """Whether ``count`` of the server's lines match ``pattern`` within ``timeout`` (waited for)."""
    regex = re.compile(pattern)
    done = r.until(lambda: sum(map(bool, map(regex.search, server.output()))) >= count,
                   timeout=timeout)
    server.flush()
    return done


@scenario("X20", "idle-clients", "Clients that connect and never send hold a server's places "
          "for ever, unless it has an idle timeout",
          f"{COMER}, 10.7; {UNP}, 5.9 Handling Interrupted System Calls", """\
"10.7 Connection Termination And Server Vulnerability" (Comer, contents).
"accept: there is no guarantee that a server's call to accept will ever return, if there are no
clients that will connect to the server."
"read: the server's call to read in server's str_echo function will never return if the client
never sends a line for the server to echo." (Stevens)
So a client that connects and never sends, or never closes, keeps what the server gave it (a
process, a place among its --max-clients) for as long as it likes, unless the server ends idle
connections itself.
""", limit=30.0)
def idle_clients(r):
    socks = []
    try:
        r.heading("busy_select --max-clients 3, no idle timeout")
        held = r.server("servers.busy_select", "--max-clients", "3", "-v",
                        label="busy_select")
        socks += _idle_clients(r, held.address)
        since = time.monotonic()
        r.say(f"[3 clients] two connect and send nothing; one sends {HALF_LINE!r} (half a "
              f"line, no newline) and reads it back; then all three send nothing more")
        held.wait_for(r"#3 .* open")
        with r.connect(held.address, timeout=2) as late:
            first, how = recv_to_eof(late)
        r.say(f"[client 4] read {first!r}, then {how}")

        r.heading("echo_fork --max-children 3 (no idle timeout: it has none)")
        forked = r.server("servers.echo_fork", "--max-children", "3", "-v", label="echo_fork")
        socks += _idle_clients(r, forked.address)
        r.say("[3 clients] the same three")
        r.until(lambda: len(observe.children_of(forked.pid)) == 3)
        r.remember_children(forked)
        queued = r.connect(forked.address, timeout=2)
        socks.append(queued)
        queued.sendall(b"anyone there?\n")
        r.say("[client 4] connected, sent b'anyone there?\\n'")
        forked.wait_for("3 children: not accepting until one ends")

        r.heading("busy_select --max-clients 3 --idle-timeout 1")
        timed = r.server("servers.busy_select", "--max-clients", "3", "--idle-timeout", "1",
                         "-v", label="busy_select --idle-timeout 1")
        timed_socks = _idle_clients(r, timed.address)
        socks += timed_socks
        r.say("[3 clients] the same three, connected after the others")
        if not _logged(r, timed, r"idle for 1 s: closing", 3):
            r.expect(False, "with --idle-timeout 1 the server closes its three idle clients: "
                            "it logged no 'idle for 1 s: closing' for them within 5 s")
            return
        ends = [recv_to_eof(s, timeout=2) for s in timed_socks]
        r.say(f"[3 clients] each reads {sorted(set(ends))}, and closes")
        for sock in timed_socks:
            sock.close()
        closed = _logged(r, timed, r"closed \(idle timeout\)", 3)
        rows = r.netstat(timed.port, "a second of silence later")
        r.expect(closed and all(end == (b"", "EOF") for end in ends)
                 and not _held(rows, timed.port),
                 f"with --idle-timeout 1 the server ends all three after 1 s of silence (its "
                 f"log: 'idle for 1 s: closing', then 'closed (idle timeout)'); each client reads "
                 f"EOF; no ESTABLISHED line of the server's is left "
                 f"({len(_held(rows, timed.port))})")
        echo = _echo_once(r, timed.address, b"hello\n", timeout=2)
        r.say(f"[client 4] sent b'hello\\n', read {echo!r}")
        r.expect(echo == b"hello\n", "its places free again, a new client is served at once")

        r.heading("meanwhile, the servers without an idle timeout")
        r.say(f"their silent clients have been connected {time.monotonic() - since:.1f} s now; "
              f"the server above closed its own after 1 s of silence")
        held.signal(signal.SIGUSR1)
        stats = held.wait_for(r"stats: .*active=(\d+) .*idle_timeouts=(\d+)")
        rows = r.netstat(held.port, "busy_select, a while later")
        with r.connect(held.address, timeout=2) as late:
            again, how = recv_to_eof(late)
        r.say(f"[client 5] read {again!r}, then {how}")
        r.expect(first == b"busy\n" and again == b"busy\n" and len(_held(rows, held.port)) == 3
                 and stats.group(1, 2) == ("3", "0"),
                 f"busy_select without an idle timeout still holds the three silent clients "
                 f"(ESTABLISHED: {len(_held(rows, held.port))}; its counters: active="
                 f"{stats.group(1)}, idle_timeouts={stats.group(2)}): a new client reads "
                 f"{again!r} now as before")
        forked.signal(signal.SIGUSR1)
        stats = forked.wait_for(r"stats: current=(\d+)")
        rows = r.netstat(forked.port, "echo_fork, a while later")
        procs = r.ps([forked], "echo_fork, a while later")
        children = [p for p in procs if p.ppid == forked.pid]
        listen_q = [x.recv_q for x in rows if x.state == "LISTEN"]
        queued.setblocking(False)
        try:
            answer = queued.recv(64)
        except BlockingIOError:
            answer = None
        r.expect(len(children) == 3 and all(p.stat == "S" for p in children)
                 and stats.group(1) == "3",
                 f"echo_fork still has its three children, each asleep in read (WCHAN "
                 f"{sorted({p.wchan for p in children})}; current={stats.group(1)})")
        r.expect(listen_q == [1] and answer is None,
                 f"and the fourth client waits in the accept queue (LISTEN Recv-Q {listen_q}), "
                 f"unanswered ({answer!r})")
    finally:
        for sock in socks:
            sock.close()


def _connect_many(r, address, count, deadline):
    """``count`` connected sockets to ``address`` (bounded by ``deadline``)."""
    socks = []
    for _ in range(count):
        if time.monotonic() > deadline:
            raise ScenarioError(f"only {len(socks)} of {count} connections made in time")
        socks.append(r.connect(address, timeout=2))
    return socks


def _echo_all(socks, timeout):
    """Send one line on each socket; return (echoed, busy, other) counts."""
    sel = selectors.DefaultSelector()
    replies = {}
    for sock in socks:
        sock.sendall(b"x\n")
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
        replies[sock] = b""
    end = time.monotonic() + timeout
    pending = set(socks)
    while pending and time.monotonic() < end:
        for key, _ in sel.select(0.2):
            sock = key.fileobj
            try:
                data = sock.recv(64)
            except OSError:
                data = b""
            replies[sock] += data
            if not data or replies[sock].endswith(b"\n"):
                pending.discard(sock)
                sel.unregister(sock)
    sel.close()
    values = list(replies.values())
    return (values.count(b"x\n"), values.count(b"busy\n"),
            len(values) - values.count(b"x\n") - values.count(b"busy\n"))


@scenario("select-1024", "select-fd-limit", "select() cannot watch descriptor 1024; poll and "
          "epoll can", "select(2), BUGS; Python's select and selectors modules", """\
select(2): "select() can monitor only file descriptors numbers that are less than FD_SETSIZE
(1024)—an unreasonably low limit for many modern applications—and this limitation will not
change. All modern applications should instead use poll(2) or epoll(7)".
In Python, select.select and selectors.SelectSelector raise ValueError for a descriptor of
FD_SETSIZE (1024) or more: a real select-versus-epoll boundary.
""", limit=40.0)
def select_fd_limit(r):
    clients = 1100
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < clients + 100:
        raise ScenarioError(f"needs {clients + 100} open files and the hard limit is {hard}; "
                            f"raise it (ulimit -Hn) to run this scenario")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, clients + 100), hard))
    try:
        r.heading("select() itself, on descriptor 1030")
        with socket.socket() as sock:
            high = os.dup2(sock.fileno(), FD_SETSIZE + 6)
            try:
                select.select([high], [], [], 0)
                r.say(f">>> select.select([{high}], [], [], 0)  -> no error")
                raised = False
            except ValueError as exc:
                r.say(f">>> select.select([{high}], [], [], 0)\nValueError: {exc}")
                raised = True
            finally:
                os.close(high)
        r.expect(raised, "select() refuses a descriptor past 1023 (ValueError)")
        results = {}
        for name in ("select", "poll", "epoll"):
            r.heading(f"echo_select --selector {name}, {clients} clients at once")
            server = r.server("servers.echo_select", "--selector", name, "-q",
                              label=f"echo_select ({name})")
            socks = _connect_many(r, server.address, clients, r.deadline)
            try:
                echoed, busy, other = _echo_all(socks, timeout=10)
                r.netstat_summary(server.port, "every client has its answer")
                r.ps([server], "one process for every client")
                fds = [int(fd) for fd in os.listdir(f"/proc/{server.pid}/fd")]
                server_fds, highest = len(fds), max(fds)
                again = _echo_once(r, server.address, b"after\n", timeout=2)
            finally:
                for sock in socks:
                    sock.close()
            r.say(f"{echoed} echoed, {busy} read busy, {other} other; the server holds "
                  f"{server_fds} descriptors, the highest {highest}; a new client meanwhile: "
                  f"{again!r}")
            results[name] = (echoed, busy, other, server.alive(), highest)
        capacity = FD_SETSIZE - RESERVED_FDS
        r.expect(results["select"] == (capacity, clients - capacity, 0, True,
                                       results["select"][4])
                 and results["select"][4] < FD_SETSIZE,
                 f"--selector select: the server keeps its descriptors below 1024 (highest "
                 f"{results['select'][4]}): {capacity} clients served, the other "
                 f"{clients - capacity} read busy, none is cut off, and the server stays up")
        for name in ("poll", "epoll"):
            r.expect(results[name][:4] == (clients, 0, 0, True),
                     f"--selector {name}: all {clients} clients are served")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
