"""Shared fixtures: servers started on loopback port 0, and helpers to drive a reactor.

Every server a test starts is ended by its pid at teardown; every loop here
is bounded in time (``DEADLINE``) as well as by pytest-timeout.
"""

import io
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from bench.process import LISTENING as LISTENING_TEXT, Child, parse_listening, stat
from bench.process import python_env
from bench.scenarios import __main__ as runner
from bench.scenarios import observe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEADLINE = 20.0     # seconds any single wait in a test may take before it fails

# The one 'listening on' pattern, for tests that read a child's stdout as bytes.
LISTENING = re.compile(LISTENING_TEXT.pattern.encode())


def _raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


_raise_fd_limit()   # 1,000 clients and their server in one process need ~2,000 descriptors


def needs_descriptors(count, what):
    """A mark that skips the test, saying why, unless a process here may open ``count`` descriptors.

    The hard limit is what counts: the soft one was raised to it above, and
    the servers a test starts inherit it.  Many laptops and containers have
    1024, below what the tests of 1,000 clients at once need.
    """
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return pytest.mark.skipif(
        hard != resource.RLIM_INFINITY and hard < count,
        reason=f"{what} needs {count:,} open files and the hard limit here is {hard:,} "
               f"(ulimit -Hn)")


def readline_within(stream, timeout=DEADLINE):
    """A line from a child's pipe, or an AssertionError if none comes in time."""
    import select

    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"no output within {timeout} s"
    return stream.readline()


def fd_limit_setter(limit):
    """A ``preexec_fn`` that gives the child ``limit`` descriptors, soft and hard."""
    if limit is None:
        return None

    def set_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    return set_limit


STATS_LINE = re.compile(r" stats: (.*)$", re.M)


class ServerProcess:
    """A server started with ``python -m MODULE ... 0``, its port read from its first line.

    Its stderr (the log) is read as it comes into memory and ``log_path``,
    waking :meth:`wait_for_log` on every chunk: tests wait for the line they
    expect, never for time to pass.  ``fd_limit`` lowers the server's
    descriptor limit (soft and hard, so it cannot raise it back).
    """

    def __init__(self, module, *args, log_path, fd_limit=None):
        self.log_path = log_path
        self.child = Child([sys.executable, "-m", module, *args], copy_stderr=log_path,
                           preexec_fn=fd_limit_setter(fd_limit))
        self.proc = self.child.popen
        line = self.child.first_line(DEADLINE)
        where = parse_listening(line)
        if where is None:
            self.kill()
            raise AssertionError(f"no 'listening on' line, got {line!r}; log:\n{self.log()}")
        self.host, self.port, self.udp = where

    @property
    def address(self):
        return ("127.0.0.1", self.port)

    def log(self):
        return self.child.stderr.text()

    def wait_for_log(self, condition, what=None):
        """Block until ``condition(log)`` is true (a str: until it appears); return its value."""
        if isinstance(condition, str):
            text, condition = condition, lambda log: text in log
        found = self.child.stderr.wait(lambda: condition(self.log()), DEADLINE)
        assert found, f"never logged: {what or text}; log:\n{self.log()[-2000:]}"
        return found

    def signal(self, signum):
        self.proc.send_signal(signum)

    def stats(self):
        """Ask for the counters (SIGUSR1) and return them as a dict of ints."""
        return {k: int(v) for k, v in (f.split("=") for f in self.stats_line().split())}

    def stats_line(self):
        """Ask for the counters (SIGUSR1) and return the line logged in answer, as text."""
        before = len(STATS_LINE.findall(self.log()))
        self.signal(signal.SIGUSR1)
        lines = self.wait_for_log(
            lambda log: (found := STATS_LINE.findall(log))[before:] and found,
            "a stats line after SIGUSR1")
        return lines[before]

    def cpu_seconds(self):
        """User plus system CPU time the server has used so far, from /proc."""
        return stat(self.proc.pid).cpu_seconds

    def wait(self, timeout=DEADLINE):
        """Wait for the server to exit; then its last log lines are in :meth:`log` too."""
        status = self.child.wait(timeout)
        assert status is not None, f"still running after {timeout} s; log:\n{self.log()[-2000:]}"
        return status

    def kill(self):
        """SIGKILL, at once, the server and the children of it still running."""
        self.child.kill()
        self.child.close()


def wait_exited(pids):
    """Block until every process in ``pids`` has exited (its pidfd becomes readable)."""
    import select

    fds = []
    for pid in pids:
        try:
            fds.append(os.pidfd_open(pid))
        except ProcessLookupError:
            pass        # gone and reaped already
    try:
        pending = set(fds)
        end = time.monotonic() + DEADLINE
        while pending:
            left = end - time.monotonic()
            assert left > 0, f"{len(pending)} process(es) still running"
            ready, _, _ = select.select(list(pending), [], [], left)
            pending.difference_update(ready)
    finally:
        for fd in fds:
            os.close(fd)


@pytest.fixture(autouse=True)
def _selectlab_logging_as_found():
    """A test that runs a server's main() in this process (setup_logging) must not leave its
    handler behind: the next test's caplog would see nothing."""
    import logging

    names = ["selectlab", "selectlab.trace", "selectlab.clients", "selectlab.stats"]
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in names]
    root = logging.getLogger("selectlab")
    handlers, propagate = list(root.handlers), root.propagate
    flags = {name: getattr(logging, name) for name in
             ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")}
    yield
    for name, value in flags.items():
        setattr(logging, name, value)
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.propagate = propagate
    for logger, level in saved:
        logger.setLevel(level)


@pytest.fixture
def start_server(tmp_path):
    """Start a server module on 127.0.0.1, port 0; killed (by pid) at teardown."""
    started = []

    def start(module="servers.echo_select", *args, bind="127.0.0.1", fd_limit=None):
        bind_args = ["-b", bind] if bind else []
        server = ServerProcess(module, *bind_args, *args, "0",
                               log_path=tmp_path / f"server{len(started)}.log",
                               fd_limit=fd_limit)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


class ThreadedServer:
    """A StreamServer on its own Reactor, run in a thread of the test process.

    The reactor itself has no threads; the *test* runs it in one so that it
    can look inside the server (buffers, counters) while clients push on it.
    """

    def __init__(self, protocol_factory, **kwargs):
        from reactor.loop import Reactor
        from reactor.server import StreamServer
        from servers.sockets import open_listeners

        self.reactor = Reactor()
        socks = open_listeners("127.0.0.1", 0)
        self.port = socks[0].getsockname()[1]
        self.server = StreamServer(self.reactor, socks, protocol_factory, **kwargs)
        self.errors = []
        self._turned = threading.Condition()   # notified after every turn of the loop
        self._stopping = False
        self._ended = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def address(self):
        return ("127.0.0.1", self.port)

    def _run(self):
        try:
            while not self._stopping:
                self.reactor.run_once()
                with self._turned:
                    self._turned.notify_all()
        except BaseException as exc:   # surfaced by stop(), which the test calls
            self.errors.append(exc)
        finally:
            with self._turned:
                self._ended = True
                self._turned.notify_all()

    def wait_for(self, condition, what):
        """Block until ``condition()`` holds after a turn of the loop (or the loop has ended)."""
        with self._turned:
            self._turned.wait_for(lambda: self._ended or condition(), DEADLINE)
        assert condition(), f"never happened: {what}"

    def stop(self):
        self._stopping = True
        self.reactor.stop()
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive(), "reactor thread did not stop"
        self.server.abort_all("test over")
        self.server.listener.shutdown()
        self.reactor._close_released()
        self.reactor.close()
        if self.errors:
            raise self.errors[0]


@pytest.fixture
def threaded_echo():
    """An in-process echo server on 127.0.0.1:0, stopped at teardown."""
    from servers.echo_select import ECHO

    servers = []

    def start(**kwargs):
        server = ThreadedServer(lambda: ECHO, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def run_until(reactor, condition, timeout=DEADLINE):
    """Turn ``reactor`` until ``condition()`` is true; fail if it never is."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        reactor.run_once(timeout=0.05)


def tcp_pair():
    """A connected (server side, client side) pair of TCP sockets on loopback."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=DEADLINE)
        server, _ = listener.accept()
    return server, client


def reset(sock):
    """Close ``sock`` with a reset (SO_LINGER 0), as a crashed or impatient peer does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


def recv_all(sock, timeout=DEADLINE):
    """Read until EOF (bounded in time); return the bytes."""
    sock.settimeout(timeout)
    chunks = []
    while True:
        data = sock.recv(1 << 20)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def recv_exactly(sock, n, timeout=DEADLINE):
    sock.settimeout(timeout)
    buf = bytearray()
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        assert data, f"EOF after {len(buf)} of {n} bytes"
        buf += data
    return bytes(buf)


def slow_reader(address):
    """A client socket with a small receive buffer, so the server's output jams soon."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.settimeout(DEADLINE)
    sock.connect(address)
    return sock


def stuff(sock, limit, stall=0.5):
    """Send from a non-blocking ``sock`` until ``limit`` bytes or no progress for ``stall`` s.

    Returns the bytes sent (a prefix of the pattern), i.e. what the peer has
    to deal with when it stops reading.
    """
    import selectors

    sock.setblocking(False)
    pattern = os.urandom(1 << 16)
    sent = bytearray()
    end = time.monotonic() + DEADLINE
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_WRITE)
        while len(sent) < limit and time.monotonic() < end:
            if not sel.select(stall):
                break
            try:
                n = sock.send(pattern)
            except BlockingIOError:
                continue
            sent += pattern[:n]
    sock.settimeout(DEADLINE)
    return bytes(sent)


@pytest.fixture
def no_dns(monkeypatch):
    """Every name lookup in this process fails as for an unknown host.

    The machine's resolver is off loopback, and tests send nothing there.
    """
    def unknown(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", unknown)


@pytest.fixture
def texts_guide():
    """Start ``python -m bench.scenarios.texts_guide PROGRAM [ARGS] 0`` (one of the quick guide's
    servers); returns (process, port), stdout and stderr merged in a pipe.  The process and its
    children are ended by pid at teardown."""
    started = []

    def start(program, *args):
        proc = subprocess.Popen([sys.executable, "-m", "bench.scenarios.texts_guide", program,
                                 *map(str, args), "0"], cwd=ROOT, env=python_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        started.append(proc)
        line = proc.stdout.readline()
        assert LISTENING.search(line), line
        return proc, int(line.split(b":")[-1])
    yield start
    for proc in started:
        for pid in observe.children_of(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait(DEADLINE)
        proc.stdout.close()


def wait_until(condition, what="the condition", timeout=DEADLINE):
    """Poll ``condition()`` (/proc state, which sends no event) until true; its value. Fails,
    naming ``what``, after ``timeout``."""
    end = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)
    return value


def run_main(args):
    """``python -m bench.scenarios ARGS`` in this process: (exit status, what it printed)."""
    out = io.StringIO()
    old, sys.stdout = sys.stdout, out
    try:
        status = runner.main(args)
    finally:
        sys.stdout = old
    return status, out.getvalue()
