"""The processes the benchmark, the scenarios and the tests start: run, read back, stop, inspect.

* :data:`LISTENING` and :func:`parse_listening`: the line every server prints
  first on stdout (``servers.sockets.announce``): ``listening on HOST:PORT`` or
  ``listening on [V6]:PORT``, either followed by `` (UDP)`` for a datagram
  socket.
* :class:`Child`: a command started with its stdout (and stderr, if asked)
  read by one thread as it comes, into memory and a file, so that no pipe
  fills up and every wait for a line has a deadline; ended by its pid, SIGTERM
  then SIGKILL, with every process of its family we saw.
* :func:`stat`, :func:`children`, :func:`descendants`: ``/proc/PID/stat``,
  parsed in this one place.

What it leaves out: no terminal (programs see pipes, so they must flush what
they want seen), nothing that finds a process by its name, and no signal to a
pid without checking it is still the process we saw (the same start time).
"""

import codecs
import fcntl
import os
import re
import selectors
import signal
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent

LISTENING = re.compile(
    r"^listening on (?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<v4>[^\s:\[\]]+)):(?P<port>\d{1,5})"
    r"(?P<udp> \(UDP\))?$")

CLK_TCK = os.sysconf("SC_CLK_TCK")

# Bytes per read from a child's pipe: a pipe holds 64 KiB on Linux.
READ_SIZE = 65536

# How long close() waits for the reader thread, which a wakeup byte ends at once.
READER_JOIN = 5.0

# The signals a program here may handle, kept from the reader thread.
ASYNC_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGALRM, signal.SIGCHLD, signal.SIGHUP,
                 signal.SIGUSR1, signal.SIGUSR2}

# After a child has exited, how long wait() lets the reader take its last output.
LAST_OUTPUT = 1.0


class Listening(NamedTuple):
    """A server's address as its ``listening on`` line gives it (v6 without brackets)."""
    host: str
    port: int
    udp: bool


def parse_listening(line):
    """The :class:`Listening` that ``line`` (without its newline) announces, or None."""
    match = LISTENING.match(line)
    if match is None:
        return None
    return Listening(match["v4"] or match["v6"], int(match["port"]), bool(match["udp"]))


def python_env():
    """The environment for a Python program of this checkout: unbuffered, the checkout on its path."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=path)


# --- /proc -------------------------------------------------------------------

class Stat(NamedTuple):
    """The fields of ``/proc/PID/stat`` we use, with their numbers in proc(5)."""
    pid: int
    name: str       # (2) comm: the program's name, which may hold spaces and parentheses
    state: str      # (3) R running, S asleep, D disk wait, T stopped, Z zombie...
    ppid: int       # (4)
    session: int    # (6) the session id: the pid of the process that called setsid
    utime: int      # (14) user CPU time, in clock ticks
    stime: int      # (15) system CPU time
    cutime: int     # (16) user CPU time of the children it has reaped
    cstime: int     # (17) system CPU time of the children it has reaped
    start: int      # (22) start time, ticks since boot: with the pid, it names one process
    exit_code: int | None   # (52) a zombie's wait status, as waitpid would give it (Linux 3.5+)

    @property
    def zombie(self):
        return self.state == "Z"

    @property
    def cpu_seconds(self):
        """User plus system CPU time of the process itself."""
        return (self.utime + self.stime) / CLK_TCK


def stat(pid):
    """The :class:`Stat` of ``pid`` now, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The name is in parentheses and may hold any character: it ends at the last ")".
    name = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()      # fields[0] is field 3
    return Stat(int(pid), name, fields[0], int(fields[1]), int(fields[3]),
                *map(int, fields[11:15]), int(fields[19]),
                int(fields[49]) if len(fields) > 49 else None)


def all_stats():
    """The :class:`Stat` of every process now."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (s := stat(entry)) is not None:
            found.append(s)
    return found


def children(pid):
    """The processes whose parent is ``pid`` (zombies included), in pid order."""
    return sorted(s for s in all_stats() if s.ppid == pid)


def descendants(*roots):
    """Each of ``roots`` that exists and every process below it, parents first, from one reading."""
    everyone = all_stats()
    below = {}
    for s in everyone:
        below.setdefault(s.ppid, []).append(s)
    by_pid = {s.pid: s for s in everyone}
    queue = [by_pid[pid] for pid in roots if pid in by_pid]
    found, seen = [], set()
    while queue:
        s = queue.pop(0)
        if s.pid not in seen:
            seen.add(s.pid)
            found.append(s)
            queue.extend(sorted(below.get(s.pid, ())))
    return found


# --- a child's output ----------------------------------------------------------

def _unread(fd):
    """How many bytes the pipe ``fd`` holds unread (0 once it is closed)."""
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, bytes(4)))[0]
    except OSError:
        return 0


class Output:
    """What a child writes to one pipe, kept as it comes (and appended to the file ``copy``).

    Only the :class:`Child`'s reader thread reads the pipe; anyone may wait for
    what it brings with :meth:`wait`.
    """

    def __init__(self, pipe, copy=None):
        self._pipe = pipe
        self.fd = pipe.fileno()
        os.set_blocking(self.fd, False)
        self._copy = open(copy, "ab") if copy else None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._changed = threading.Condition()
        self._parts = []        # the text so far, in pieces that text() joins
        self._lines = []        # its complete lines, without their "\n"
        self._times = []        # when each line was read (time.monotonic())
        self._partial = ""      # the line being written
        self._eof_time = None   # when the end of the pipe was read
        self.eof = False        # every writer has closed the pipe
        self.exited = False     # the child has exited, and what it wrote before is here

    def text(self):
        with self._changed:
            if len(self._parts) > 1:
                self._parts[:] = ["".join(self._parts)]
            return self._parts[0] if self._parts else ""

    def lines(self):
        """The lines so far; at the end, a last one without a newline too."""
        with self._changed:
            last = [self._partial] if self.eof and self._partial else []
            return self._lines + last

    def first_line(self):
        """The first line, complete or not ("" if nothing came)."""
        with self._changed:
            return self._lines[0] if self._lines else self._partial

    def timed_lines(self, start=0):
        """``(when read, line)`` for the lines from number ``start`` on (as :meth:`lines`)."""
        with self._changed:
            timed = list(zip(self._times[start:], self._lines[start:]))
            if self.eof and self._partial and start <= len(self._lines):
                timed.append((self._eof_time, self._partial))
            return timed

    def caught_up(self, timeout):
        """Wait until all the child has written so far has been read in; False after ``timeout``.

        Lines are stamped when the reader thread reads them, a little after
        they were written.  Whoever is about to note an event of their own
        and wants the child's earlier lines to come first calls this: once
        the pipe holds no unread byte, every line written before the call
        is in :meth:`timed_lines`, stamped before the call returned.
        """
        end = time.monotonic() + timeout
        with self._changed:
            while not self.eof and _unread(self.fd):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def wait(self, predicate, timeout):
        """Block until ``predicate()`` is true, the pipe has ended or ``timeout`` s have passed.

        Returns ``predicate()``'s value at the end.
        """
        with self._changed:
            self._changed.wait_for(lambda: self.eof or predicate(), timeout)
            return predicate()

    def _read(self, everything=False):
        """Take one read (``everything``: all the pipe holds now); False at EOF."""
        while True:
            # The read and the lines it completes under one lock, so that
            # caught_up() never sees an empty pipe whose bytes are not lines yet.
            with self._changed:
                try:
                    chunk = os.read(self.fd, READ_SIZE)
                except BlockingIOError:
                    return True
                if self._copy:
                    self._copy.write(chunk)
                    self._copy.flush()
                now = time.monotonic()
                text = self._decoder.decode(chunk, final=not chunk)
                self._parts.append(text)
                *complete, self._partial = (self._partial + text).split("\n")
                self._lines.extend(complete)
                self._times.extend([now] * len(complete))
                self.eof = not chunk
                self._eof_time = now
                self._changed.notify_all()
            if not chunk:
                return False
            if not everything:
                return True

    def _mark_exited(self):
        with self._changed:
            self.exited = True
            self._changed.notify_all()

    def _close(self):
        self._pipe.close()
        if self._copy:
            self._copy.close()


# --- a child -------------------------------------------------------------------

class Child:
    """A command we started: its output read as it comes, stopped by its pid.

    Parameters
    ----------
    argv : list of str
        run in the checkout's root.
    stdin : as for :class:`subprocess.Popen` (default: /dev/null)
    stderr : ``subprocess.PIPE`` (read into :attr:`stderr`), ``subprocess.STDOUT``
        (into :attr:`stdout`, in the order written) or a file.
    copy_stdout, copy_stderr : path or None
        files to append each pipe's bytes to as they come.
    env, preexec_fn : as for :class:`subprocess.Popen`
    new_session : bool
        whether the child gets a session of its own (setsid): then whatever is
        left in that session when it is stopped is ended too.

    stdout is always a pipe, read by one thread (with stderr if that is a
    pipe) into :class:`Output` objects, so the child never blocks on a full
    pipe.  :meth:`terminate`, :meth:`wait` and :meth:`kill`, in that order,
    stop it; :meth:`close` then lets go of the pipes.
    """

    def __init__(self, argv, *, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                 copy_stdout=None, copy_stderr=None, env=None, preexec_fn=None,
                 new_session=False):
        self.argv = list(argv)
        self.popen = subprocess.Popen(self.argv, stdin=stdin, stdout=subprocess.PIPE,
                                      stderr=stderr, cwd=ROOT, env=env, preexec_fn=preexec_fn,
                                      start_new_session=new_session)
        self.pid = self.popen.pid
        self.new_session = new_session
        # Not reaped yet, so the pid is still this process, a zombie at worst.
        self._start = stat(self.pid).start
        self._family = {self.pid: self._start}   # pid -> start time, of all of it we saw
        self.stdout = Output(self.popen.stdout, copy_stdout)
        self.stderr = Output(self.popen.stderr, copy_stderr) if stderr == subprocess.PIPE else None
        self._pidfd = os.pidfd_open(self.pid)
        self._wakeup = os.pipe()
        self._closed = False
        self._reader = threading.Thread(target=self._pump, daemon=True,
                                        name=f"output of pid {self.pid}")
        self._reader.start()

    def _outputs(self):
        return [o for o in (self.stdout, self.stderr) if o is not None]

    def _pump(self):
        """The reader thread: each pipe into its Output until all have ended or close() is called."""
        # These go to the main thread, so that they interrupt its waits
        # (Ctrl-C, the scenarios' SIGTERM, pytest-timeout's SIGALRM).
        signal.pthread_sigmask(signal.SIG_BLOCK, ASYNC_SIGNALS)
        live = self._outputs()
        with selectors.DefaultSelector() as sel:
            for output in live:
                sel.register(output.fd, selectors.EVENT_READ, output)
            sel.register(self._pidfd, selectors.EVENT_READ, "exited")
            sel.register(self._wakeup[0], selectors.EVENT_READ, "close")
            while live:
                for key, _ in sel.select():
                    if key.data == "close":
                        return
                    if key.data == "exited":
                        # All it wrote is in the pipes now: take it, then say it has gone.
                        sel.unregister(key.fd)
                        ended = [o for o in live if not o._read(everything=True)]
                        for output in self._outputs():
                            output._mark_exited()
                    elif key.data in live and not key.data._read():
                        ended = [key.data]
                    else:
                        ended = []
                    for output in ended:
                        sel.unregister(output.fd)
                        live.remove(output)

    def first_line(self, timeout):
        """The first line on stdout, waited for at most ``timeout`` s; "" if none came.

        The wait ends at once if the child exits without one.
        """
        out = self.stdout
        out.wait(lambda: out._lines or out.exited, timeout)
        return out.first_line()

    def running(self):
        return self.popen.poll() is None

    def wait(self, timeout):
        """The exit status (negative: killed by that signal), or None if still running after ``timeout`` s.

        Once it has exited, the last of its output is in :attr:`stdout` and
        :attr:`stderr` too (even if a child of it still holds the pipes).
        """
        try:
            status = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        for output in self._outputs():
            output.wait(lambda: output.exited, LAST_OUTPUT)
        return status

    def remember_family(self):
        """Note the processes below this one now, so that :meth:`kill` can end them later.

        (Once it has gone they are orphans: nothing else says they were its.)
        """
        if self.running():
            for s in descendants(self.pid):
                self._family.setdefault(s.pid, s.start)

    def terminate(self):
        """SIGTERM, if it still runs, once its family is noted: it may stop cleanly."""
        if self.running():
            self.remember_family()
            self.popen.send_signal(signal.SIGTERM)

    def kill(self):
        """SIGKILL it if it still runs, and reap it; then SIGKILL what is left of its family.

        Its family: the processes :meth:`remember_family` saw and, with
        ``new_session``, every process in its session that started after it.
        Each is signalled by pid only while it has the start time seen.
        """
        self.remember_family()
        if self.running():
            self.popen.kill()
            self.popen.wait()
        for s in all_stats():
            ours = (self._family.get(s.pid) == s.start
                    or self.new_session and s.session == self.pid and s.start >= self._start)
            if ours and not s.zombie:
                try:
                    os.kill(s.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    @property
    def closed(self):
        """Whether :meth:`close` has let go of the pipes."""
        return self._closed

    def close(self):
        """Stop reading and let go of the pipes (call it once the child is stopped)."""
        if self._closed:
            return
        self._closed = True
        os.write(self._wakeup[1], b"x")
        self._reader.join(READER_JOIN)
        if self.popen.stdin:
            try:
                self.popen.stdin.close()
            except OSError:
                pass        # the unread input it was typed
        if not self._reader.is_alive():     # else it may still read them
            for output in self._outputs():
                output._close()
            for fd in (self._pidfd, *self._wakeup):
                os.close(fd)
