"""What the benchmark compares: the servers, the workloads, and which server runs which workload.

Every server is started the same way: a command that binds 127.0.0.1 on port 0
and prints ``listening on 127.0.0.1:PORT`` as its first line on stdout.
"""

import functools
import importlib.util
import re
import subprocess
import sys
from dataclasses import dataclass

PY = sys.executable
KIB = 1024


@dataclass(frozen=True)
class Workload:
    """One load pattern.

    ``mode`` is ``pingpong`` (each connection sends ``size`` bytes and waits for
    them to come back, again and again), ``churn`` (each of ``conns`` slots
    connects, does one echo, closes, and starts again) or ``memory`` (``idle``
    connections are opened, each confirmed by a 1-byte echo, and held while the
    server's memory is read; then ``conns`` others ping-pong beside them).
    """

    id: str
    title: str
    mode: str
    conns: int
    size: int = KIB
    idle: int = 0


WORKLOADS = [
    Workload("pingpong-1k-1", "1 KiB ping-pong, 1 connection", "pingpong", 1),
    Workload("pingpong-1k-10", "1 KiB ping-pong, 10 connections", "pingpong", 10),
    Workload("pingpong-1k-100", "1 KiB ping-pong, 100 connections", "pingpong", 100),
    Workload("pingpong-1k-1000", "1 KiB ping-pong, 1,000 connections", "pingpong", 1000),
    Workload("pingpong-100k-10", "100 KiB ping-pong, 10 connections", "pingpong", 10, 100 * KIB),
    Workload("churn-10", "connection churn (connect, one 1 KiB echo, close), 10 at a time",
             "churn", 10),
    Workload("idle-1000", "memory: 1,000 idle connections", "memory", 0, idle=1000),
    Workload("idle-10000", "memory: 10,000 idle connections, while 100 others ping-pong 1 KiB",
             "memory", 100, idle=10000),
]
WORKLOAD = {w.id: w for w in WORKLOADS}

#: ``--quick``: enough to show every part works, in well under a minute.
QUICK_WORKLOADS = ["pingpong-1k-10", "pingpong-100k-10", "churn-10", "idle-1000"]
# echo_select_log is left out: each fast server's churn leaves some 20,000 TIME_WAIT
# sockets for a minute, and the host's table (tcp_max_tw_buckets) is soon full.
QUICK_SERVERS = ["echo_select", "echo_fork", "echo_thread", "asyncio", "ss_thread", "c_epoll"]

PINGPONG = [w.id for w in WORKLOADS if w.mode != "memory"]
ALL = [w.id for w in WORKLOADS]


@dataclass(frozen=True)
class Server:
    """One server in the comparison.

    ``argv`` is the command (``{c_echo}`` stands for the compiled C server);
    ``workloads`` the ids it runs; ``skipped`` says why it leaves the others out.
    """

    name: str
    label: str
    argv: tuple
    workloads: tuple = tuple(ALL)
    skipped: str = ""
    needs: str = ""           # a module to import, "cc" for a C compiler, or "--option"


def _ours(module):
    return (PY, "-m", module, "-q", "-b", "127.0.0.1", "0")


def _peer(*args):
    return (PY, "-m", *args)


# What logging costs is measured on the connection-heavy and the request-heavy workload.
_LOGGING_WORKLOADS = ("pingpong-1k-100", "churn-10")
_LOGGING_SKIPPED = ("logging's cost is measured per request (1 KiB ×100) and per connection "
                    "(churn); memory is the same as echo_select's")

SERVERS = [
    Server("echo_select", "selectlab reactor (servers.echo_select -q)",
           _ours("servers.echo_select")),
    Server("echo_select_log", "the same with its default logging, as users start it "
           "(no -q; stderr to a file)",
           (PY, "-m", "servers.echo_select", "-b", "127.0.0.1", "0"), _LOGGING_WORKLOADS,
           skipped=_LOGGING_SKIPPED),
    Server("echo_select_v", "the same with -v: a log line when each client opens and closes",
           (PY, "-m", "servers.echo_select", "-v", "-b", "127.0.0.1", "0"), _LOGGING_WORKLOADS,
           skipped=_LOGGING_SKIPPED),
    Server("echo_fork", "fork per connection (servers.echo_fork)", _ours("servers.echo_fork"),
           tuple(a for a in ALL if a != "idle-10000"),
           skipped="idle-10000: 10,000 Python processes; its cost per connection shows at 1,000"),
    Server("echo_thread", "thread per connection (servers.echo_thread)",
           _ours("servers.echo_thread")),
    Server("echo_iterative", "iterative, one client at a time (servers.echo_iterative)",
           _ours("servers.echo_iterative"), ("pingpong-1k-1", "churn-10"),
           skipped="more than one connection at once: it serves one client at a time, "
                   "so the others would wait the whole run"),
    Server("asyncio", "asyncio Protocol (bench.peers.asyncio_echo)",
           _peer("bench.peers.asyncio_echo", "0")),
    Server("uvloop", "uvloop Protocol (bench.peers.asyncio_echo --uvloop)",
           _peer("bench.peers.asyncio_echo", "--uvloop", "0"), needs="uvloop"),
    Server("ss_fork", "socketserver ForkingTCPServer, defaults (backlog 5, max_children 40)",
           _peer("bench.peers.socketserver_echo", "fork", "0"), tuple(PINGPONG),
           skipped="memory: at most 40 children, so 1,000 idle clients cannot all be served"),
    Server("ss_fork_1024", "socketserver ForkingTCPServer, backlog 1024, no child limit",
           _peer("bench.peers.socketserver_echo", "fork", "--backlog", "1024",
                 "--max-children", "0", "0"), tuple(PINGPONG),
           skipped="memory: measured on echo_fork, the same design"),
    Server("ss_thread", "socketserver ThreadingTCPServer, defaults (backlog 5)",
           _peer("bench.peers.socketserver_echo", "thread", "0"), tuple(PINGPONG),
           skipped="memory: measured on echo_thread, the same design"),
    Server("ss_thread_1024", "socketserver ThreadingTCPServer, backlog 1024",
           _peer("bench.peers.socketserver_echo", "thread", "--backlog", "1024", "0"),
           tuple(PINGPONG), skipped="memory: measured on echo_thread, the same design"),
    Server("c_epoll", "C epoll echo, the floor (bench/peers/c_echo.c)", ("{c_echo}", "0"),
           needs="cc"),
]
SERVER = {s.name: s for s in SERVERS}

# --- the multi-core mode (python -m bench --multicore) ----------------------------
#
# Nothing is pinned: each server, and the load generator, may run on every CPU
# the driver may use.  The workloads are those with enough connections at once
# to keep several cores busy, and churn, where a fork server's children run in
# parallel.

MULTICORE_WORKLOADS = ["pingpong-1k-100", "pingpong-1k-1000", "churn-10"]
QUICK_MULTICORE_WORKLOADS = ["pingpong-1k-100", "churn-10"]


_WORKERS = {1: "one reactor process", 2: "two reactor processes on the port",
            "auto": "a reactor process per usable CPU"}


def _workers(count, shared=False):
    how = "one listening socket they all accept from" if shared else \
        "a SO_REUSEPORT socket each" if count != 1 else ""
    return Server(f"echo_select_w{count}" + ("_shared" if shared else ""),
                  f"selectlab reactor, {_WORKERS[count]}" + (f", {how}" if how else "")
                  + f" (servers.echo_select -q --workers {count}"
                  + (" --no-reuseport)" if shared else ")"),
                  (PY, "-m", "servers.echo_select", "-q", "--workers", str(count),
                   *(["--no-reuseport"] if shared else []), "-b", "127.0.0.1", "0"),
                  tuple(MULTICORE_WORKLOADS), needs="--no-reuseport" if shared else "--workers")


#: Servers only the multi-core mode runs: --workers means nothing on one pinned core.
WORKER_SERVERS = [_workers(1), _workers(2), _workers(2, shared=True), _workers("auto")]
MULTICORE_SERVERS = ["echo_select", *(s.name for s in WORKER_SERVERS), "echo_fork",
                     "echo_thread", "asyncio", "uvloop", "c_epoll"]
#: Every server the multi-core mode can run (--servers may name any of them).
MULTICORE_SERVER = {**{s.name: s for s in WORKER_SERVERS}, **SERVER}


#: Each server's colour and marker in every plot, whatever else ran beside it: a
#: server keeps its look from run to run and from plot to plot.  selectlab's reactor is
#: black, its logging variants gold, its --workers rows indigo; the fork designs red
#: and pink, the thread designs orange, olive and green, the asyncio peers blue and
#: cyan, the C floor grey (dashed where there are lines).  The colours are matplotlib's
#: tab10 and tab20b, each used once, since --servers may put any of them side by side.
PLOT_STYLE = {
    "echo_select": ("black", "o"),
    "echo_select_log": ("#8c6d31", "D"),
    "echo_select_v": ("#e7ba52", "d"),
    "echo_fork": ("#d62728", "v"),
    "echo_thread": ("#ff7f0e", "^"),
    "echo_iterative": ("#8c564b", "<"),
    "asyncio": ("#1f77b4", ">"),
    "uvloop": ("#17becf", "p"),
    "ss_fork": ("#e377c2", "X"),
    "ss_fork_1024": ("#9467bd", "P"),
    "ss_thread": ("#bcbd22", "h"),
    "ss_thread_1024": ("#2ca02c", "H"),
    "c_epoll": ("#7f7f7f", "s"),
    "echo_select_w1": ("#393b79", "8"),
    "echo_select_w2": ("#5254a3", "*"),
    "echo_select_w2_shared": ("#6b6ecf", "+"),
    "echo_select_wauto": ("#9c9ede", "x"),
}


@functools.lru_cache(maxsize=None)
def offers(module, option):
    """Whether ``python -m module --help`` lists ``option``."""
    try:
        done = subprocess.run([PY, "-m", module, "--help"], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return re.search(rf"(^|[\s\[,]){re.escape(option)}\b", done.stdout) is not None


def missing(server, have_cc):
    """Why ``server`` cannot run here, or ``""`` if it can."""
    if server.needs == "cc":
        return "" if have_cc else "no C compiler"
    if server.needs.startswith("--"):
        module = server.argv[2]     # (PY, "-m", module, ...)
        return "" if offers(module, server.needs) else \
            f"{module} has no {server.needs} option (yet): its --help does not list it"
    if server.needs and importlib.util.find_spec(server.needs) is None:
        return f"{server.needs} is not installed (pip install {server.needs})"
    return ""
