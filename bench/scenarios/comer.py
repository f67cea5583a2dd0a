"""Comer's single-thread server (ch. 13, 8.29), and select()'s limit (select(2))."""

import os
import resource
import select
import selectors
import socket
import time

from bench.scenarios.harness import ScenarioError, scenario
from reactor.loop import FD_SETSIZE
from servers.limits import RESERVED_FDS

COMER = "Comer & Stevens, Internetworking with TCP/IP vol. III"

# How much the client that never reads pushes at most (it stops when send blocks).
FLOOD_LIMIT = 64 * 1024 * 1024


def _echo_once(address, text, timeout):
    """Connect, send ``text``, and return what comes back within ``timeout`` (b"" if nothing)."""
    with socket.create_connection(address, timeout=2) as sock:
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
        hog = socket.create_connection(server.address, timeout=2)
        sent = _flood(hog)
        r.say(f"[client A] sends and never reads: {sent / 1048576:.1f} MiB sent before send() "
              f"blocked")
        rows = r.netstat(server.port, "client A's buffers full")
        hog_port = hog.getsockname()[1]
        stuck = sum(x.send_q for x in rows if x.remote[1] == hog_port)
        start = time.monotonic()
        echo = _echo_once(server.address, b"hello from B\n", timeout=2.0)
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


def _connect_many(address, count, deadline):
    """``count`` connected sockets to ``address`` (bounded by ``deadline``)."""
    socks = []
    for _ in range(count):
        if time.monotonic() > deadline:
            raise ScenarioError(f"only {len(socks)} of {count} connections made in time")
        socks.append(socket.create_connection(address, timeout=2))
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
            socks = _connect_many(server.address, clients, r.deadline)
            try:
                echoed, busy, other = _echo_all(socks, timeout=10)
                r.netstat_summary(server.port, "every client has its answer")
                r.ps([server], "one process for every client")
                fds = [int(fd) for fd in os.listdir(f"/proc/{server.pid}/fd")]
                server_fds, highest = len(fds), max(fds)
                again = _echo_once(server.address, b"after\n", timeout=2)
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
