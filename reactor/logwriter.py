"""Logging that never blocks the loop: a bounded buffer, written without waiting, drops counted.

``logging.StreamHandler`` writes with a blocking ``write()``.  When stderr
is a pipe nobody reads (a supervisor that captures output, ``... 2>&1 |
head``), or a terminal paused with Ctrl-S, the pipe fills and the next log
line blocks the whole server: one thread, every client frozen.
:class:`LogWriter` is the handler the servers log through instead, HAProxy's
rule: never block on logs, count what is dropped.

* **Write now, buffer the rest** (as a connection does): a line goes out at
  once if the destination takes it; what it refuses waits in a buffer of at
  most ``LOG_BUFFER`` bytes.  With a reactor attached (:meth:`attach`), the
  writer asks the loop for WRITE on the destination and flushes when it is
  writable; without one (the thread server, a program with no loop) it
  tries again, without waiting, at each new line.  Each write is at most
  ``PIPE_BUF`` bytes and ends at a line's end where it can, so that lines
  stay whole in a pipe shared with other writers (a fork server's children).
* **Drop, count, and say so**: a line that does not fit in the buffer is
  dropped and counted (:attr:`LogWriter.lines_dropped`, ``log_lines_dropped``
  in the counters).  Once the buffer has drained, one WARNING line says how
  many were lost.
* **Never touch the shared descriptor's flags.**  Setting ``O_NONBLOCK`` on
  descriptor 2 would set it on the open file description that the shell's
  terminal, a parent, or our own stdout (after ``2>&1``) share, and their
  blocking writes would start failing.  So the writer opens the same pipe,
  FIFO or terminal again through ``/proc/self/fd/2``, which gives a new
  description with ``O_NONBLOCK`` of its own; a socket (journald's) is
  written with ``MSG_DONTWAIT``; a regular file is written as it is (a disk
  does not wait on a reader).  Where none of that is possible, it writes at
  most ``PIPE_BUF`` bytes at a time and only after ``poll()`` says there is
  room, which a pipe guarantees not to block.
* At exit (:meth:`close`, which ``logging.shutdown`` calls) it waits at
  most ``EXIT_FLUSH_TIMEOUT`` for what is still buffered, then gives up;
  lines logged after that are dropped and counted.
* A line that cannot be formatted (``log.info("%s %s", one)``) is a bug of
  the caller: the writer logs one line that says so, with the message, in
  its place (``logging.Handler.handleError`` would print a traceback to
  stderr with a blocking write).

One thread: a writer attached to a reactor registers with that reactor
from whichever thread logs, and the reactor is not thread-safe; attach it
only to a loop whose thread does all the logging (every server here but
the thread-per-connection one, which does not attach it).

The date in each line is formatted once per second, not once per line
(:class:`LineFormatter`): ``time.strftime`` was a third of a log line's cost.
"""

import errno
import logging
import os
import select
import socket
import stat
import time
import weakref

# At most this many bytes of log lines wait for a destination that does not
# keep up: as much again as a Linux pipe holds (pipe(7): 16 pages).
LOG_BUFFER = 64 * 1024

# How long close() waits for a stalled destination before giving up on the
# lines still buffered (a server that is stopping must not hang on its log).
EXIT_FLUSH_TIMEOUT = 0.5

# POSIX: a write of at most PIPE_BUF bytes to a pipe is atomic, so when
# poll() reports room it never blocks half-way (Linux: 4096 bytes).
PIPE_BUF = select.PIPE_BUF

FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

_WRITE = 2      # selectors.EVENT_WRITE


class LineFormatter(logging.Formatter):
    """The servers' line format, ``2026-12-01 18:41:38.123 INFO ...``, with the date cached per second.

    ``prefix`` goes before each message: a worker's ``worker 2 (pid 4242): ``.
    """

    def __init__(self, prefix=""):
        fmt = FORMAT.replace("%(message)s", prefix.replace("%", "%%") + "%(message)s")
        super().__init__(fmt, DATE_FORMAT)
        self._second = None
        self._date = ""

    def formatTime(self, record, datefmt=None):
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._date = time.strftime(DATE_FORMAT, self.converter(second))
        return self._date


class LogWriter(logging.Handler):
    """A logging handler that writes lines to a descriptor without ever blocking.

    Parameters
    ----------
    fd : int
        where the lines go (default 2, stderr).  It is not changed; see the
        module docstring for how it is written without blocking.
    limit : int
        the most bytes buffered while the destination does not keep up.
    """

    def __init__(self, fd=2, limit=LOG_BUFFER):
        super().__init__()
        self.limit = limit
        self.lines_dropped = 0      # over the writer's life
        self._unreported = 0        # dropped since the last line that said so
        self._buf = bytearray()
        self._reactor = None
        self._registered = False
        self._target, self._write, self._poll_first, self._owned = _open_nonblocking(fd)
        self.setFormatter(LineFormatter())
        _WRITERS.add(self)

    @property
    def buffered(self):
        """Bytes of log lines waiting for the destination."""
        return len(self._buf)

    # --- logging.Handler -------------------------------------------------

    def emit(self, record):
        try:
            text = self.format(record)
        except Exception as exc:
            text = self.format(logging.LogRecord(
                record.name, logging.ERROR, record.pathname, record.lineno,
                "log: a line could not be formatted (%s: %s): message %r, arguments %r",
                (type(exc).__name__, exc, record.msg, record.args), None))
        line = (text + "\n").encode("utf-8", "backslashreplace")
        buf = self._buf
        if buf and not self._registered:
            self._flush()       # no loop watches the destination: try now, to make room
        if len(buf) + len(line) > self.limit:
            self._drop(1)
            return
        was_empty = not buf
        buf += line
        if was_empty:
            self._flush()       # else: waiting for the destination (the loop, or the next line)

    def flush(self):
        """Write what the destination takes now (never waits)."""
        with self.lock:
            self._flush()

    def close(self):
        """Wait at most ``EXIT_FLUSH_TIMEOUT`` for the buffered lines, then release the descriptor."""
        with self.lock:
            self.detach()
            end = time.monotonic() + EXIT_FLUSH_TIMEOUT
            while self._buf and self._target is not None:
                left = end - time.monotonic()
                if left <= 0 or not _writable(self._fileno(), left):
                    break
                self._flush()
            if self._buf:
                self._drop(self._buf.count(b"\n"))
                self._buf.clear()
            self._release_target()
        super().close()

    # --- the loop --------------------------------------------------------

    def attach(self, reactor):
        """Let ``reactor`` tell us when the destination has room (until :meth:`detach`)."""
        with self.lock:
            self._reactor = reactor
            self._update_interest()

    def detach(self):
        """Stop using the reactor (before it closes); lines still buffered wait for the next one."""
        with self.lock:
            if self._registered:
                self._reactor.unregister(self._target)
                self._registered = False
            self._reactor = None

    def on_writable(self):
        with self.lock:
            self._flush()

    def on_readable(self):  # never registered for READ
        pass

    # --- writing ---------------------------------------------------------

    def _flush(self):
        buf = self._buf
        while buf:
            if self._poll_first and not _writable(self._fileno(), 0):
                break
            chunk = buf[:PIPE_BUF]
            if len(buf) > PIPE_BUF:
                end = chunk.rfind(b"\n")
                if end >= 0:
                    chunk = chunk[:end + 1]     # whole lines: atomic in a shared pipe
            try:
                sent = self._write(chunk)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._destination_gone(exc)
                return
            del buf[:sent]
            if not buf and self._unreported:
                self._report_dropped()
        self._update_interest()

    def _report_dropped(self):
        count, self._unreported = self._unreported, 0
        record = logging.LogRecord(
            "selectlab", logging.WARNING, __file__, 0,
            "log: %d line(s) dropped: the log's destination did not keep up (a pipe nobody "
            "reads, a paused terminal); the counters say log_lines_dropped", (count,), None)
        self._buf += (self.format(record) + "\n").encode()

    def _drop(self, lines):
        self.lines_dropped += lines
        self._unreported += lines

    def _destination_gone(self, exc):
        """EPIPE, EBADF, ENOSPC...: these lines cannot be written; count them and keep none."""
        self._drop(self._buf.count(b"\n"))
        self._buf.clear()
        self._unreported = 0        # nobody to tell: the next line tries again anyway
        self._update_interest()

    def _update_interest(self):
        """Watch the destination for WRITE exactly while lines are waiting and a loop is attached."""
        want = bool(self._buf) and self._reactor is not None and self._target is not None
        if want and not self._registered:
            try:
                self._reactor.register(self._target, _WRITE, self)
            except (OSError, ValueError):
                return      # a destination the selector cannot watch: retried at the next line
            self._registered = True
        elif not want and self._registered:
            self._reactor.unregister(self._target)
            self._registered = False

    def _fileno(self):
        target = self._target
        return target if isinstance(target, int) else target.fileno()

    def _forget_buffer(self):
        self._buf = bytearray()
        self._unreported = 0
        self._registered = False
        self._reactor = None

    def _release_target(self):
        """Close what the writer opened itself (never the descriptor it was given).

        From then on every line is dropped: the number may already be
        someone else's descriptor.
        """
        target, self._target = self._target, None
        self._write, self._poll_first = _nowhere, False
        if not self._owned or target is None:
            return
        if isinstance(target, socket.socket):
            target.close()
        else:
            os.close(target)


# Every writer, for the fork hook below (weakly: a closed writer can go).
_WRITERS = weakref.WeakSet()


def _after_fork_in_child():
    """A forked child (the fork server's) starts with empty buffers: the parent writes its own."""
    for writer in _WRITERS:
        writer._forget_buffer()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _writable(fd, timeout):
    """Whether ``fd`` has room for a write within ``timeout`` seconds (poll)."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    try:
        return bool(poller.poll(timeout * 1000))
    except InterruptedError:
        return False


def _open_nonblocking(fd):
    """``(target, write, poll_first, owned)``: how to write to ``fd`` without blocking.

    ``target`` is what the loop watches (a descriptor or a socket),
    ``write(data)`` returns the bytes taken or raises ``BlockingIOError``,
    ``poll_first`` says to poll before each write of at most PIPE_BUF bytes
    (the fallback), and ``owned`` that the writer opened ``target`` itself.
    """
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return None, _nowhere, False, False    # no stderr at all: every line is dropped
    if stat.S_ISREG(mode):
        return fd, lambda data: os.write(fd, data), False, False
    if stat.S_ISSOCK(mode):
        sock = socket.socket(fileno=os.dup(fd))
        return sock, lambda data: sock.send(data, socket.MSG_DONTWAIT), False, True
    try:
        own = os.open(f"/proc/self/fd/{fd}",
                      os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return fd, lambda data: os.write(fd, data), True, False
    return own, lambda data: os.write(own, data), False, True


def _nowhere(data):
    raise OSError(errno.EBADF, "no log destination")
