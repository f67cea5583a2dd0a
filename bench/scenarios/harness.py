"""The machinery every scenario shares: processes it starts, what it prints, its checks.

A scenario is a function ``run(r)`` registered with :func:`scenario`, with the
text's prediction (quoted, with its source).  It receives a :class:`Run`,
through which it starts servers and clients (always on 127.0.0.1, port 0),
writes the transcript, takes ``netstat``/``ps`` snapshots, and states what it
expected with :meth:`Run.expect`.  The verdict is "as predicted" when every
expectation held, and a contradiction otherwise (exit status 1).

Bounds: every wait here has a deadline, and none lasts past the scenario's
limit (``Scenario.limit`` seconds): the wait that reaches it raises
:class:`OverTime`, and the runner fails the scenario.  The limit is
cooperative: code of the scenario's own (a socket read) is bounded by its own
timeout, and the limit is found at the next wait here or when it returns.
Cleanup: every process a scenario started is ended by its pid at the end,
whatever happened, and its children too (a fork server's), once each, only
while they are still the processes it started (same start time).  The
scenario's own sockets are closed then too, however it ended, if it made
them with :meth:`Run.connect` (a client's connection) or handed them to
:meth:`Run.keep` (any other: a listener, a UDP socket, a non-blocking
connect); closing one earlier, or in a ``with`` block, is still fine.
"""

import contextlib
import re
import signal
import socket
import struct
import subprocess
import sys
import time

from bench import process
from bench.scenarios import observe

# How long a process may take to start, and to stop once told.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 3.0
# How long the transcript waits for a process's pipe to be read in, so that
# the lines it wrote before an event of the scenario's come before it.
CATCH_UP = 0.2

REGISTRY = {}


class Scenario:
    """One runnable "what happens if" experiment."""

    def __init__(self, ident, name, title, source, prediction, func, limit):
        self.ident, self.name, self.title = ident, name, title
        self.source, self.prediction, self.func, self.limit = source, prediction, func, limit


def scenario(ident, name, title, source, prediction, limit=20.0):
    """Register ``run(r)`` as a scenario.

    ``ident``: the texts' ids it shows, X1-X25 or E1-E14, space-separated
    when it shows several (``"X17 E7 E8 E9"``); any one of them finds it.
    """
    def register(func):
        REGISTRY[ident.split()[0].lower()] = Scenario(ident, name, title, source, prediction,
                                                       func, limit)
        return func
    return register


def find(key):
    """The scenario with id or name ``key`` (any case; any of its ids), or None."""
    key = key.lower()
    for s in REGISTRY.values():
        if key == s.name or key in s.ident.lower().split():
            return s
    return None


class ScenarioError(Exception):
    """Something the scenario needed did not happen in time (a failed observation, not a bug)."""


class OverTime(BaseException):
    """The scenario's time limit ran out during one of its waits.

    A BaseException, so that neither a scenario's ``except ScenarioError`` (a
    wait it expects may fail) nor an ``except Exception`` swallows it.
    """

    def __init__(self, limit, doing):
        super().__init__(f"did not finish within its limit of {limit:g} s ({doing})")


class Proc:
    """A process the scenario started: its output, line by line, as it comes.

    stdout and stderr are read together (in the order written) into
    ``child.stdout``; :meth:`wait_for` waits for a line matching a pattern.
    Each process gets its own session: cleanup ends whatever is left in it,
    children included.
    """

    def __init__(self, run, label, argv, stdin):
        run.check_time(f"starting {label}")
        self.run, self.label, self.argv = run, label, argv
        self.child = process.Child(argv, stdin=stdin, stderr=subprocess.STDOUT,
                                   env=process.python_env(), new_session=True)
        self.pid = self.child.pid
        self._seen = 0            # lines already copied to the transcript
        run.procs.append(self)

    def wait_for(self, pattern, timeout=5.0, what=None):
        """The first line (from the start) matching ``pattern``; ScenarioError after ``timeout``.

        ``what``: the line as the messages name it (default: the pattern).
        """
        regex = re.compile(pattern)
        out = self.child.stdout
        what = what or f"a line matching {pattern!r}"

        def found():
            return next(filter(None, map(regex.search, out.lines())), None)
        match = out.wait(found, self.run.within(timeout))
        if not match:
            self.run.ran_out(f"{self.label} did not print {what} within {timeout:g} s",
                             f"waiting for {self.label} to print {what}")
        self.flush()
        return match

    def has(self, pattern):
        """Whether a line so far matches ``pattern``."""
        regex = re.compile(pattern)
        return any(regex.search(line) for line in self.child.stdout.lines())

    def output(self):
        return self.child.stdout.lines()

    def send(self, text):
        """Type ``text`` into the process's stdin, as at its terminal; shown in the transcript."""
        self.run.say(f"[{self.label}] (typed) {text.rstrip()}")
        self.child.popen.stdin.write(text.encode())
        self.child.popen.stdin.flush()

    def close_stdin(self):
        """Ctrl-D: end of input."""
        self.run.say(f"[{self.label}] (typed) ^D")
        self.child.popen.stdin.close()

    def wait(self, timeout=5.0):
        """The exit status (negative: killed by that signal); ScenarioError after ``timeout``."""
        status = self.child.wait(self.run.within(timeout))
        if status is None:
            self.run.ran_out(f"{self.label} did not exit within {timeout:g} s",
                             f"waiting for {self.label} to exit")
        return status

    def alive(self):
        return self.child.running()

    def flush(self):
        """Copy what every process printed so far into the transcript, in the order it came."""
        self.run.flush_all()

    def signal(self, signum):
        """Send ``signum`` to this process (one the scenario started), shown in the transcript."""
        self.run.say(f"$ kill -{signal.Signals(signum).name[3:]} {self.pid}    # {self.label}")
        self.child.popen.send_signal(signum)      # not once it has been reaped


class Server(Proc):
    """A server on loopback, port 0; ``port`` is read back from its ``listening on`` line."""

    def __init__(self, run, label, argv):
        super().__init__(run, label, argv, subprocess.DEVNULL)
        line = self.wait_for(process.LISTENING.pattern, START_TIMEOUT,
                             what="'listening on HOST:PORT'").group(0)
        where = process.parse_listening(line)
        if where.host not in ("127.0.0.1", "::1"):
            raise ScenarioError(f"{label} listens on {where.host}, not on loopback")
        self.port = where.port

    @property
    def address(self):
        return ("127.0.0.1", self.port)


class Run:
    """One run of one scenario: what it started, printed and checked."""

    def __init__(self, sc, out):
        self.scenario = sc
        self.out = out
        self.procs = []
        self.sockets = []         # the scenario's own, closed by cleanup()
        self.checks = []          # (ok, what)
        self.start = time.monotonic()
        self.deadline = self.start + sc.limit
        # (local, remote) -> (inode, when its TIME_WAIT ends) of TCP sockets
        # older than our servers.
        self._stale = {}
        self._timewait_overflows = observe.timewait_overflows()

    def timewait_table_full(self):
        """Whether the host's TIME_WAIT table overflowed during this run.

        Then the kernel closed some connection without a TIME_WAIT, and a
        check that looks for one says so instead of reporting a contradiction.
        """
        return observe.timewait_overflows() > self._timewait_overflows

    # --- output ----------------------------------------------------------

    def say(self, text=""):
        """A line (or several) of the transcript, stamped now, after what the processes printed."""
        self.flush_all()
        self._emit(time.monotonic(), text)

    def heading(self, text):
        self.flush_all()
        print(file=self.out)
        self._emit(time.monotonic(), f"-- {text}")

    def _emit(self, when, text):
        """Print ``text`` stamped ``when`` (seconds since the scenario started; None: no stamp)."""
        stamp = f"{when - self.start:7.3f}" if when is not None else " " * 7
        for line in str(text).splitlines() or [""]:
            print(f"  {stamp}  {line}", file=self.out)
            stamp = " " * 7
        self.out.flush()

    def table(self, heading, rows):
        """A snapshot: ``heading`` stamped now, then its ``rows`` (lines of text), unstamped."""
        self.heading(heading)
        for row in rows:
            self._emit(None, row)

    def command(self, argv):
        shown = ["python" if a == sys.executable else a for a in argv]
        self.say("$ " + " ".join(shown))

    def tcp_sockets(self, port):
        """The TCP sockets with ``port`` at either end, less those older than our servers."""
        return [r for r in observe.tcp_sockets(port) if not self._is_stale(r)]

    def _is_stale(self, row):
        """Whether ``row`` is a socket from before our servers, not a new one on the same ports.

        Linux reuses a TIME_WAIT's ports for a new loopback connection
        (``tcp_tw_reuse``), so the addresses alone do not tell: a new
        TIME_WAIT has more time left than the old one had, and any other
        socket has an inode of its own.
        """
        seen = self._stale.get((row.local, row.remote))
        if seen is None:
            return False
        inode, ends = seen
        if row.state == "TIME_WAIT":
            return ends is not None and time.monotonic() + row.timer <= ends + 1.0
        return row.inode == inode

    def netstat(self, port, title, every=False):
        """The TCP sockets with ``port`` at either end, as ``netstat -a | grep PORT``.

        ``every``: those older than our servers too (a killed server's
        children's, when they are the point).
        """
        self.flush_all()
        rows = observe.tcp_sockets(port) if every else self.tcp_sockets(port)
        self.table(f"netstat -a | grep {port}  ({title})", observe.format_netstat(rows, port))
        return rows

    def netstat_summary(self, port, title):
        """How many TCP sockets with ``port`` are in each state (for snapshots too long to list)."""
        rows = self.tcp_sockets(port)
        counts = {}
        for r in rows:
            side = "server" if r.local[1] == port else "client"
            key = f"{r.state} ({side} side)" if r.state != "LISTEN" else "LISTEN"
            counts[key] = counts.get(key, 0) + 1
        self.table(f"netstat -a | grep {port} | count by state  ({title})",
                   [f"{n:>6}  {key}" for key, n in sorted(counts.items())])
        return rows

    def ps(self, procs, title):
        """The process table of ``procs`` and their children: ``ps -o pid,ppid,stat,wchan,args``."""
        rows = self.ps_of([p.pid for p in procs], title, {p.pid: p.label for p in procs})
        for proc in procs:
            proc.child.remember_family()
        return rows

    def ps_of(self, pids, title, names=None):
        """:meth:`ps` of ``pids``, processes this run did not start (a killed server's orphans).

        ``names``: pid -> the role shown beside it.
        """
        self.flush_all()
        rows = observe.family(pids)
        self.table(f"ps  ({title})", observe.format_ps(rows, names))
        return rows

    def flush_all(self):
        """Copy what every process has printed so far into the transcript, in the order it came.

        Each line is stamped when it was read from the process's pipe, on the
        same clock as the scenario's own lines; a process's lines written
        before this call are read in first (:meth:`bench.process.Output.caught_up`),
        so that a reply never comes before the server's line that caused it.
        """
        new = []
        for proc in self.procs:
            out = proc.child.stdout
            if not proc.child.closed:
                out.caught_up(CATCH_UP)
            lines = out.timed_lines(proc._seen)
            proc._seen += len(lines)
            new.extend((when, f"[{proc.label}] {line}") for when, line in lines)
        # sorted is stable: each process's own lines keep their order.
        for when, text in sorted(new, key=lambda item: item[0]):
            self._emit(when, text)

    # --- processes -------------------------------------------------------

    def python(self, module, *args):
        return [sys.executable, "-m", module, *map(str, args)]

    def server(self, module, *args, label=None, loopback=True):
        """Start ``python -m module 0 -b 127.0.0.1 ARGS`` and wait for its port.

        ``loopback=False``: ``python -m module ARGS`` as given (the texts'
        programs, which take their own arguments and listen on 127.0.0.1).
        """
        argv = self.python(module, *(("0", "-b", "127.0.0.1") if loopback else ()), *args)
        self.command(argv)
        server = Server(self, label or module.rsplit(".", 1)[-1], argv)
        # Connections left from before this server (TIME_WAIT, on a reused
        # port number) are not its: snapshots leave them out.
        now = time.monotonic()
        self._stale.update(((r.local, r.remote),
                            (r.inode, now + r.timer if r.state == "TIME_WAIT" else None))
                           for r in observe.tcp_sockets(server.port) if r.state != "LISTEN")
        server.flush()
        return server

    def client(self, module, *args, label=None, stdin=subprocess.PIPE):
        """Start ``python -m module ARGS`` with its stdin a pipe we type into."""
        argv = self.python(module, *args)
        self.command(argv)
        return Proc(self, label or module.rsplit(".", 1)[-1], argv, stdin)

    @contextlib.contextmanager
    def held(self, proc):
        """``proc`` stopped (SIGSTOP) for the block, so it accepts and reads nothing; SIGCONT after.

        The texts' "before the server reads" (or "while the client sleeps"),
        without a race: what the block sends waits in the kernel until the
        process goes on.  The block starts once ``proc`` shows STAT T;
        SIGCONT comes however it ends, while ``proc`` still runs (a stopped
        process would outwait the cleanup's SIGTERM).
        """
        proc.signal(signal.SIGSTOP)
        try:
            if not self.until(lambda: (p := observe.process(proc.pid)) is not None
                              and p.stat == "T", timeout=3):
                raise ScenarioError(f"{proc.label} did not stop within 3 s")
            yield
        finally:
            if proc.alive():
                proc.signal(signal.SIGCONT)

    # --- the scenario's own sockets ---------------------------------------

    def connect(self, address, timeout=3.0, **kw):
        """``socket.create_connection(address, timeout, **kw)``, closed by :meth:`cleanup`."""
        return self.keep(socket.create_connection(address, timeout, **kw))

    def keep(self, sock):
        """Have :meth:`cleanup` close ``sock`` (a socket the scenario made); returns it."""
        self.sockets.append(sock)
        return sock

    def remember_children(self, proc):
        """Note ``proc``'s children now, so that cleanup can end them (fork servers)."""
        proc.child.remember_family()

    def cleanup(self):
        """End every process started here and everything left in their sessions, by pid.

        SIGTERM first (a server stops cleanly), SIGKILL for what is left after
        STOP_TIMEOUT; a pid is signalled only while its start time is the one
        seen, so a reused pid is never touched.  The scenario's own sockets
        (:meth:`connect`, :meth:`keep`) are closed first.
        """
        for sock in self.sockets:
            sock.close()                  # a second close does nothing
        for proc in self.procs:
            proc.child.terminate()
        end = time.monotonic() + STOP_TIMEOUT
        for proc in self.procs:
            proc.child.wait(max(0.1, end - time.monotonic()))
        for proc in self.procs:
            proc.child.kill()
            proc.child.close()

    # --- checks ----------------------------------------------------------

    def expect(self, ok, what):
        """Record one observation the prediction implies; shown as ok or CONTRADICTED."""
        self.checks.append((bool(ok), what))
        return ok

    def expect_timewait(self, ok, what):
        """:meth:`expect` for a TIME_WAIT the text predicts: unobservable if the table was full."""
        if not ok and self.timewait_table_full():
            return self.expect(True, f"{what} -- not observable this time: the host's TIME_WAIT "
                                     f"table was full (TCPTimeWaitOverflow rose), so the kernel "
                                     f"kept no TIME_WAIT")
        return self.expect(ok, what)

    def until(self, condition, timeout=5.0, interval=0.02):
        """Poll ``condition()`` (/proc state, which sends no event) until true or ``timeout``."""
        end = time.monotonic() + timeout
        while True:
            value = condition()
            now = time.monotonic()
            if value or now >= end:
                return value
            self.check_time("polling in until()")
            time.sleep(min(interval, end - now, self.deadline - now))

    # --- the time limit ----------------------------------------------------

    def check_time(self, doing):
        """Raise :class:`OverTime` if the scenario is past its limit (``doing``: what it does)."""
        if time.monotonic() >= self.deadline:
            raise OverTime(self.scenario.limit, doing)

    def within(self, timeout):
        """How long a wait of ``timeout`` s may last: less if the scenario's limit comes first."""
        return max(0.0, min(timeout, self.deadline - time.monotonic()))

    def ran_out(self, problem, doing):
        """A wait ended unanswered: OverTime if the limit is what ended it, else ScenarioError."""
        self.check_time(doing)
        raise ScenarioError(problem)


# --- a scenario's own sockets ------------------------------------------------

def reset(sock):
    """Close with SO_LINGER {on, 0}: the kernel sends an RST, not a FIN (UNP 5.11's client)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def recv_until(sock, predicate, timeout=3.0):
    """Bytes from ``sock`` until ``predicate(data)`` or EOF; ScenarioError after ``timeout``."""
    data = b""
    end = time.monotonic() + timeout
    while not predicate(data):
        left = end - time.monotonic()
        if left <= 0:
            raise ScenarioError(f"no more bytes within {timeout:g} s (have {data!r})")
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        if not chunk:
            break
        data += chunk
    return data


def recv_to_eof(sock, timeout=3.0):
    """Everything until the server's EOF or reset: ``(data, "EOF" | "reset")``.

    On a reset ``data`` is still what came before it.  ScenarioError if
    neither comes within ``timeout``.
    """
    seen = b""

    def never(data):                # shown each byte so far, before each recv
        nonlocal seen
        seen = data
        return False
    try:
        return recv_until(sock, never, timeout), "EOF"
    except ConnectionResetError:
        return seen, "reset"
