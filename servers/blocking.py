"""The classic designs the reactor is compared with: iterative, thread per connection, fork per connection.

All three run the same per-connection code, a plain blocking function such as
:func:`serve_connection` (UNP's ``str_echo``), so a benchmark compares
concurrency models, not three echo loops.  They differ in one method,
:meth:`ClassicServer.dispatch`, which decides who serves an accepted
connection (CPython's socketserver does this with mixins; here each design is
one subclass, and nothing else):

* :class:`Iterative`: the main loop serves it to the end, then accepts the
  next (guide task 10, Comer ch. 10); other clients wait in the backlog.
* :class:`Threading`: a new thread serves it (Comer ch. 12).
* :class:`~servers.forking.Forking`: a child process serves it (UNP
  ``tcpserv04``), with the texts' ways of reaping children.

**The accept loop.**  The texts block in ``accept()``.  Here the main loop
blocks in ``select()`` on the listening sockets *and* a socketpair that
signals write into (``signal.set_wakeup_fd``), then accepts.  That is what
lets SIGINT/SIGTERM stop the server at once and cleanly, lets ``-b
localhost`` serve IPv4 and IPv6 together, and wakes the fork server when a
child exits -- without socketserver's 0.5 s poll while it runs.  (While it
stops, it checks on its remaining clients every 0.1 s; and ``--reap
ignore`` sends no signal at all, so a fork server at ``--max-children``
looks again every 0.1 s.)  What a client sees is the classic design's: its
connection is served with blocking calls only.

**Stopping**, as echo_select does: the first SIGINT/SIGTERM stops accepting
and gives current clients ``--grace`` seconds to finish; the ones still there
are then cut off (:meth:`ClassicServer.end_clients`: each design its own
way); a second signal cuts them off at once and exits with status 1.
"""

import logging
import selectors
import signal
import socket
import threading
import time

from reactor import errors
from reactor.connection import PROTOCOL_ERROR, format_address
from servers.common import announce
from wire.streamio import RECV_SIZE, writen

log = logging.getLogger("selectlab")
client_log = logging.getLogger("selectlab.clients")
stats_log = logging.getLogger("selectlab.stats")

EXIT_SECOND_SIGNAL = 1

# After accept fails for lack of descriptors, how long to stop accepting
# (the reactor's ACCEPT_RETRY_DELAY: asyncio's value).
ACCEPT_RETRY_DELAY = 1.0


def serve_connection(sock, addr=None):
    """Echo everything until the client's EOF: UNP's ``str_echo``, the blocking echo loop.

    Reads a buffer, writes all of it back (``writen``), until ``recv``
    returns ``b""``.  A client that resets the connection or goes away ends
    only this connection: peer-gone errors end the loop quietly, as CS:APP
    asks of a robust server (every Python process ignores SIGPIPE, so a
    write to a closed connection raises ``BrokenPipeError`` instead of
    killing us).  Other errors are bugs and propagate.

    Returns
    -------
    (bytes_in, bytes_out, reason) : (int, int, str)
        ``reason`` is ``"peer eof"`` or the error that ended the connection.
    """
    bytes_in = bytes_out = 0
    try:
        while True:
            data = sock.recv(RECV_SIZE)
            if not data:
                return bytes_in, bytes_out, "peer eof"
            bytes_in += len(data)
            bytes_out += writen(sock, data)
    except OSError as exc:
        if errors.classify(exc) is not errors.Kind.PEER_GONE:
            raise
        return bytes_in, bytes_out, errors.describe(exc)


# How long a connection we end on our own initiative may take, after our FIN,
# to read what we sent and close its end (the reactor's LINGER_TIMEOUT).
LINGER_TIMEOUT = 2.0


def linger_close(sock, timeout=LINGER_TIMEOUT):
    """Close after our last reply without destroying it: the blocking twin of ``Connection.close``.

    ``close()`` with unread input sends a reset instead of a FIN, and the
    reset can destroy the reply before the client reads it.  So: half-close,
    read and discard until the client's EOF (or ``timeout``), then close.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(timeout)
        while sock.recv(RECV_SIZE):
            pass
    except (OSError, TimeoutError):
        pass
    finally:
        sock.close()


def run_one(serve, sock, addr, who=""):
    """Serve one connection with ``serve``, close it, log it; a client's fault never raises.

    Neither does a bug in ``serve``: an exception other than a socket error
    is logged at ERROR with its traceback, the connection is dropped
    (reason ``protocol error``), and the caller goes on with its next
    client, as the reactor does with a protocol's exception.

    Returns
    -------
    (bytes_in, bytes_out, seconds, failed)
        ``failed`` is True when ``serve`` raised a bug.
    """
    peer = format_address(addr)
    start = time.monotonic()
    client_log.info("%s%s open", who, peer)
    bytes_in = bytes_out = 0
    reason = "error"
    failed = False
    try:
        bytes_in, bytes_out, reason = serve(sock, addr)
    except GraceOver:
        reason = "grace period over"
        raise
    except OSError as exc:
        if errors.classify(exc) is errors.Kind.PEER_GONE:
            reason = errors.describe(exc)
        else:
            log.exception("%s%s: unexpected socket error, dropping this connection", who, peer)
            reason = "error"
    except Exception as exc:
        log.error("%s%s: %s raised %s; dropping this connection", who, peer,
                  getattr(serve, "__qualname__", "serve"), type(exc).__name__, exc_info=exc)
        reason = PROTOCOL_ERROR
        failed = True
    finally:
        sock.close()
        seconds = time.monotonic() - start
        client_log.info("%s%s closed (%s): in %d B, out %d B, %.3f s", who, peer, reason,
                        bytes_in, bytes_out, seconds)
    return bytes_in, bytes_out, seconds, failed


def peer_host(addr):
    """The client's host as the worksheet's ``inet_ntoa`` gives it: no port, IPv4 plainly."""
    host = addr[0] if isinstance(addr, tuple) else str(addr)
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]     # an IPv4 client on a dual-stack socket
    return host


class GraceOver(BaseException):
    """The grace period is over, or a second stop signal came: cut the clients off.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception``
    on its way (logging's, for one) can swallow it.
    """


class ClassicServer:
    """The accept loop and the stopping rules the three designs share.

    Parameters
    ----------
    socks : list of socket.socket
        bound, listening sockets (``servers.common.open_listeners``).
    serve : callable
        ``serve(sock, addr) -> (bytes_in, bytes_out, reason)``, blocking:
        e.g. :func:`serve_connection`.
    grace : float
        seconds current clients get to finish after the first stop signal.
    """

    def __init__(self, socks, serve, grace):
        self.socks = socks
        self.serve = serve
        self.grace = grace
        self.status = 0
        self.stopping = False
        self._signals_seen = 0
        self._callbacks = {}
        self._pending = {}
        self._previous = {}
        self._accepting = False
        self._resume_at = None
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        for sock in (self._wake_r, self._wake_w, *socks):
            sock.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)

    # --- what a design provides ------------------------------------------

    def dispatch(self, sock, addr):
        """Have the accepted, blocking connection ``sock`` served: the one method the designs differ in."""
        raise NotImplementedError

    def clients_left(self):
        """How many clients are being served now."""
        return 0

    def end_clients(self):
        """The grace period is over: cut off the clients still being served."""

    def after_wakeup(self):
        """Called by the main loop after each wakeup (a client, a signal, a timeout)."""

    # --- signals ---------------------------------------------------------

    def on_signal(self, signum, callback):
        """Run ``callback(signum)`` from the main loop, not from the handler, when ``signum`` arrives."""
        self._previous.setdefault(signum, signal.getsignal(signum))
        self._callbacks[signum] = callback
        signal.signal(signum, self._note_signal)

    def set_handler(self, signum, handler):
        """Install a plain Python signal handler (restored when :meth:`run` returns)."""
        self._previous.setdefault(signum, signal.getsignal(signum))
        signal.signal(signum, handler)

    def _note_signal(self, signum, frame):
        self._pending[signum] = None    # the wakeup byte gets the loop to it

    # --- running ---------------------------------------------------------

    def run(self):
        """Announce, accept until stopped, stop; return the exit status."""
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.on_signal(signum, self._on_stop_signal)
        self._set_accepting(True)
        announce(self.socks)
        try:
            while not self.stopping:
                self._turn()
            deadline = time.monotonic() + self.grace
            while self.clients_left():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise GraceOver()
                self._turn(timeout=min(left, 0.1))
        except GraceOver:
            left = self.clients_left()
            if left:
                log.warning("dropping %d client(s)", left)
            self.end_clients()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.set_wakeup_fd(-1)
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)
            self.close()
        log.info("stopped")
        return self.status

    def close(self):
        """Release the listening sockets and the loop's own descriptors."""
        for sock in self.socks:
            sock.close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _turn(self, timeout=None):
        """Wait for a client or a signal; run the signal callbacks, then accept.

        Signals first: a SIGTERM that arrives together with a client must
        stop the server before that client is taken on.
        """
        if self._resume_at is not None:
            wait = max(0.0, self._resume_at - time.monotonic())
            timeout = wait if timeout is None else min(timeout, wait)
        poll = self.poll_interval()
        if poll is not None:
            timeout = poll if timeout is None else min(timeout, poll)
        ready = self._selector.select(timeout)
        for key, _ in ready:
            if key.fileobj is self._wake_r:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except (BlockingIOError, InterruptedError):
                    pass
        self.run_signal_callbacks()
        self.after_wakeup()
        if self._resume_at is not None and time.monotonic() >= self._resume_at:
            self._resume_at = None
            if not self.stopping:
                self._set_accepting(True)
        for key, _ in ready:
            if key.fileobj is not self._wake_r and self._accepting:
                self._accept(key.fileobj)

    def poll_interval(self):
        """Seconds after which to wake up even if nothing happens, or None (the default)."""
        return None

    def run_signal_callbacks(self):
        pending, self._pending = self._pending, {}
        for signum in pending:
            self._callbacks[signum](signum)

    def _accept(self, lsock):
        try:
            sock, addr = lsock.accept()
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno in errors.ACCEPT_RETRY_ERRNOS:
                log.debug("accept: pending connection lost: %s", errors.describe(exc))
                return
            if exc.errno in errors.ACCEPT_EXHAUSTED_ERRNOS:
                log.warning("accept: %s; not accepting for %.1f s", errors.describe(exc),
                            ACCEPT_RETRY_DELAY)
                self._set_accepting(False)
                self._resume_at = time.monotonic() + ACCEPT_RETRY_DELAY
                return
            raise
        sock.setblocking(True)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.dispatch(sock, addr)

    def set_accepting(self, accepting):
        """Watch the listening sockets, or stop watching them (clients wait in the backlog)."""
        self._set_accepting(accepting and not self.stopping and self._resume_at is None)

    def _set_accepting(self, accepting):
        if accepting == self._accepting:
            return
        for sock in self.socks:
            if accepting:
                self._selector.register(sock, selectors.EVENT_READ)
            else:
                self._selector.unregister(sock)
        self._accepting = accepting

    # --- stopping --------------------------------------------------------

    def _on_stop_signal(self, signum):
        self._signals_seen += 1
        name = signal.Signals(signum).name
        if self._signals_seen == 1:
            log.info("%s: shutting down: %d client(s); grace %.1f s (send it again to stop "
                     "at once)", name, self.clients_left(), self.grace)
            self.stopping = True
            self._set_accepting(False)
        else:
            log.warning("%s again: stopping now", name)
            self.status = EXIT_SECOND_SIGNAL
            raise GraceOver()


class Iterative(ClassicServer):
    """One client at a time: the main loop serves each connection to its end.

    Others wait in the backlog meanwhile (the quick guide's answer 12).  A
    client that misbehaves ends only its own connection (the guide's server
    calls ``exit(1)`` on any error, a defect not copied here).

    While a client is served, the main thread is inside a blocking ``recv``
    and the loop cannot run: a stop signal there is handled in the signal
    handler itself, which arms an alarm for the grace period; the alarm's
    handler raises :class:`GraceOver` out of the ``recv``.
    """

    def __init__(self, socks, serve, grace):
        super().__init__(socks, serve, grace)
        self._serving = False

    def clients_left(self):
        return int(self._serving)

    def dispatch(self, sock, addr):
        self._serving = True
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._stop_while_serving)
        self.set_handler(signal.SIGALRM, _raise_grace_over)
        # A stop signal noted after the loop ran its callbacks but before the
        # handlers above were in place: act on it now.
        for signum in (signal.SIGINT, signal.SIGTERM):
            if self._pending.pop(signum, 0) is None:
                self._stop_while_serving(signum, None)
        try:
            run_one(self.serve, sock, addr)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._serving = False
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, self._note_signal)
        if self.stopping:
            log.info("%s while a client was served: stopped after it", self._stop_name)
            self._set_accepting(False)

    def _stop_while_serving(self, signum, frame):
        # A signal handler: no logging here (UNP 5.8: no printf in a handler).
        self._signals_seen += 1
        if self._signals_seen == 1:
            self._stop_name = signal.Signals(signum).name
            self.stopping = True
            signal.setitimer(signal.ITIMER_REAL, self.grace)
        else:
            self.status = EXIT_SECOND_SIGNAL
            raise GraceOver()


def _raise_grace_over(signum, frame):
    raise GraceOver()


class ConnectionStats:
    """Comer's monitor (12.9): current and completed connections, their average time, bytes.

    Updated by every serving thread, under a lock.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.current = 0
        self.completed = 0
        self.total_seconds = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self.protocol_errors = 0

    def opened(self):
        with self._lock:
            self.current += 1

    def closed(self, bytes_in, bytes_out, seconds, failed=False):
        with self._lock:
            self.current -= 1
            self.completed += 1
            self.total_seconds += seconds
            self.bytes_in += bytes_in
            self.bytes_out += bytes_out
            self.protocol_errors += failed

    def line(self):
        with self._lock:
            average = self.total_seconds / self.completed if self.completed else 0.0
            return (f"stats: current={self.current} completed={self.completed} "
                    f"average_seconds={average:.3f} bytes_in={self.bytes_in} "
                    f"bytes_out={self.bytes_out} protocol_errors={self.protocol_errors}")


class Threading(ClassicServer):
    """A thread per connection (Comer ch. 12), with Comer's monitor.

    Parameters
    ----------
    stats_interval : float or None
        log :class:`ConnectionStats` every so many seconds, from a monitor
        thread (Comer's ``prstats``); SIGUSR1 logs them at any time.
    """

    def __init__(self, socks, serve, grace, stats_interval=None):
        super().__init__(socks, serve, grace)
        self.stats = ConnectionStats()
        self._live = set()          # sockets being served, for end_clients
        self._live_lock = threading.Lock()
        self._threads = set()
        self._stats_interval = stats_interval
        self._monitor_stop = threading.Event()

    def run(self):
        self.on_signal(signal.SIGUSR1, lambda signum: stats_log.info(self.stats.line()))
        monitor = None
        if self._stats_interval is not None:
            monitor = threading.Thread(target=self._monitor, name="monitor", daemon=True)
            monitor.start()
        try:
            return super().run()
        finally:
            self._monitor_stop.set()
            if monitor is not None:
                monitor.join()

    def _monitor(self):
        while not self._monitor_stop.wait(self._stats_interval):
            stats_log.info(self.stats.line())

    def dispatch(self, sock, addr):
        with self._live_lock:
            self._live.add(sock)
        self.stats.opened()
        thread = threading.Thread(target=self._serve_thread, args=(sock, addr), daemon=True)
        thread.start()

    def _serve_thread(self, sock, addr):
        try:
            self.stats.closed(*run_one(self.serve, sock, addr))
        finally:
            with self._live_lock:
                self._live.discard(sock)

    def clients_left(self):
        with self._live_lock:
            return len(self._live)

    def end_clients(self):
        # shutdown(), not close(): the thread still owns the descriptor; its
        # blocking recv returns b"" (or its send fails) and it ends by itself.
        with self._live_lock:
            live = list(self._live)
        for sock in live:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        end = time.monotonic() + 1.0
        while self.clients_left() and time.monotonic() < end:
            time.sleep(0.01)
