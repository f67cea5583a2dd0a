"""The classic designs on the reactor's loop: iterative, thread per connection, fork per connection.

The parent of every classic server is a reactor like the select server's:
a :class:`~reactor.listener.Listener` accepts (without a rejection hook, so
clients beyond a design's capacity wait in the kernel's backlog), the loop
delivers SIGINT, SIGTERM, SIGUSR1 and SIGCHLD, and the grace period is a loop timer;
:class:`~servers.service.Service` runs it and stops it, as it does the
select server.  What differs is a small *design* object, which says what
to do with an accepted socket and how to end its clients:

* :class:`Iterative`: the loop's own thread serves the client to its end
  (guide task 10, Comer ch. 10); capacity 1, so the others wait in the
  backlog.  While it serves, signals and timers still run (see
  ``Reactor.run_blocking``): the grace period can end a client that never
  finishes, by shutting its socket down.
* :class:`Threading`: a new thread serves it (Comer ch. 12); the thread
  tells the loop when it is done (``Reactor.call_soon_threadsafe``).
* :class:`~servers.forking.Forking`: a child process serves it (UNP
  ``tcpserv04``), with the texts' ways of reaping children.

What a client sees is the classic design's: its connection is served with
blocking calls only (``servers.blocking``).  A client accepted in the same
turn of the loop as a stop signal is not taken on: the design runs from a
timer, after the signal's callback.

**Stopping**, as the select server does: the first SIGINT/SIGTERM stops
accepting and gives current clients ``--grace`` seconds to finish; the ones
still there are then cut off (each design its own way, and the fork server
waits at most ``END_TIMEOUT`` seconds more for its children to go); a
second signal cuts them off at once and exits with status 1.
"""

import logging
import socket
import threading

import cli
from reactor.listener import Listener
from reactor.states import ListenerState
from servers.blocking import ConnectionStats, run_one
from servers.limits import raise_fd_limit
from servers.service import Service, make_reactor
from servers.sockets import open_listeners

log = logging.getLogger("selectlab")

# After the grace period, how long the designs' clients get to end once cut
# off (a child sent SIGTERM, a thread whose socket was shut down).
END_TIMEOUT = 5.0


class Design:
    """What a classic design decides: who serves an accepted connection, and how clients end."""

    capacity = None         # clients at once; the rest wait in the backlog
    counts_bytes = True     # whether this process sees its clients' bytes
    threads = False         # whether clients are served (and log) on other threads

    def attach(self, server):
        """Called once by :class:`ClassicServer`, before any client."""
        self.server = server

    def serve(self, sock, addr):
        """Have the accepted, blocking socket served; call ``server.client_done`` when it is."""
        raise NotImplementedError

    def client_count(self):
        """How many clients are being served now."""
        raise NotImplementedError

    def at_capacity(self):
        """The listener has just gone BUSY: new clients wait in the backlog."""

    def stopping(self):
        """The server has stopped accepting (the first stop signal)."""

    def end_clients(self):
        """Cut off the clients still being served."""

    def close(self):
        """After the loop: release what the design holds."""


class ClassicServer:
    """A classic design's parent: the listener, the counters, and the graceful stop.

    Parameters
    ----------
    reactor : reactor.loop.Reactor
    socks : list of socket.socket
        bound, listening sockets (``servers.sockets.open_listeners``).
    design : Design
    """

    def __init__(self, reactor, socks, design):
        self.reactor = reactor
        self.design = design
        self.stats = ConnectionStats()
        self._on_stopped = None
        self._timer = None
        self.waiting = set()        # accepted, not yet handed to the design (a child closes them)
        design.attach(self)
        self.listener = Listener(reactor, socks, self._accepted, None, design.capacity,
                                 tracer=self._listener_changed)

    @property
    def sockets(self):
        return self.listener.sockets

    def _accepted(self, sock, addr):
        sock.setblocking(True)
        if isinstance(addr, tuple):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # From a timer: after this turn's signal callbacks, so that a stop
        # signal that came with this client wins.
        self.waiting.add(sock)
        self.reactor.call_later(0, self._take, sock, addr)

    @property
    def stopping(self):
        """True once the server has stopped accepting."""
        return self.listener.state is ListenerState.CLOSED

    def _take(self, sock, addr):
        self.waiting.discard(sock)
        if self.stopping:
            self.not_taken(sock)        # stopped in the same turn
            return
        self.stats.opened()
        try:
            self.design.serve(sock, addr)
        except Exception:
            log.exception("%s could not serve a client; dropping it", type(self.design).__name__)
            sock.close()
            self.client_done(failed=True)

    def not_taken(self, sock):
        """A client accepted as the server stopped: closed without being served."""
        sock.close()
        self.listener.slot_freed()
        self._check_stopped()

    def _listener_changed(self, listener, old, event, new):
        if new is ListenerState.BUSY and old is not ListenerState.BUSY:
            self.design.at_capacity()

    def client_done(self, bytes_in=0, bytes_out=0, seconds=0.0, failed=False, served=True):
        """A client has been served (from the loop's thread); ``served=False``: it never was."""
        if served:
            self.stats.closed(bytes_in, bytes_out, seconds, failed)
        else:
            self.stats.current -= 1
        self.listener.slot_freed()
        self._check_stopped()

    # --- what Service asks of a server ---------------------------------

    def client_count(self):
        return self.design.client_count()

    def stats_snapshot(self):
        return self.stats.snapshot(self.design.counts_bytes)

    def shutdown(self, grace, on_stopped):
        """Stop accepting; ``on_stopped()`` once every client is gone (cut off after ``grace``)."""
        self.listener.shutdown()
        self._on_stopped = on_stopped
        self.design.stopping()
        self._timer = self.reactor.call_later(grace, self._grace_over)
        self._check_stopped()

    def abort_all(self, _reason):
        """Cut every client off now (a second stop signal)."""
        self._cut_off()

    def _grace_over(self):
        left = self.design.client_count()
        if left:
            log.warning("grace period over: dropping %d client(s)", left)
        self._cut_off()

    def _cut_off(self):
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.reactor.call_later(END_TIMEOUT, self._give_up)
        self.design.end_clients()
        self._check_stopped()

    def _give_up(self):
        log.warning("%d client(s) did not end; stopping anyway", self.design.client_count())
        self._timer = None
        self._stopped()

    def _check_stopped(self):
        if self._on_stopped is not None and not self.design.client_count():
            self._stopped()

    def _stopped(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        on_stopped, self._on_stopped = self._on_stopped, None
        if on_stopped is not None:
            on_stopped()


class Iterative(Design):
    """One client at a time: the loop's thread serves each connection to its end.

    Others wait in the backlog meanwhile (the quick guide's answer 12).  A
    client that misbehaves ends only its own connection (the guide's server
    calls ``exit(1)`` on any error, a defect not copied here).
    """

    capacity = 1

    def __init__(self, serve):
        self._serve = serve
        self._sock = None           # the client being served

    def serve(self, sock, addr):
        self._sock = sock
        try:
            result = self.server.reactor.run_blocking(self._serve_one, sock, addr)
        finally:
            self._sock = None
        if result is None:
            self.server.client_done(served=False)
        else:
            self.server.client_done(*result)

    def _serve_one(self, sock, addr):
        # A stop signal noted just before the blocking call has run by now.
        if self.server.stopping:
            sock.close()
            return None
        return run_one(self._serve, sock, addr)

    def client_count(self):
        return int(self._sock is not None)

    def end_clients(self):
        # From a signal's or a timer's callback, while the loop's thread is in
        # recv or send: shut the socket down, and that call returns (b"" or
        # EPIPE), through str_echo's own ending, as a thread's does.
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Threading(Design):
    """A thread per connection (Comer ch. 12), with Comer's monitor counters."""

    threads = True

    def __init__(self, serve):
        self._serve = serve
        self._live = set()          # sockets being served, for end_clients

    def serve(self, sock, addr):
        self._live.add(sock)
        threading.Thread(target=self._thread, args=(sock, addr), daemon=True).start()

    def _thread(self, sock, addr):
        call = self.server.reactor.call_soon_threadsafe
        run_one(self._serve, sock, addr, report=lambda result: call(self._done, sock, result))

    def _done(self, sock, result):
        self._live.discard(sock)
        self.server.client_done(*result)

    def client_count(self):
        return len(self._live)

    def end_clients(self):
        # shutdown(), not close(): the thread still owns the descriptor; its
        # blocking recv returns b"" (or its send fails) and it ends by itself.
        for sock in list(self._live):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def run_classic(args, design, stats_interval=None):
    """What ``main()`` of a classic server does: logging, descriptors, sockets, then serve.

    Returns the exit status.
    """
    writer = cli.setup_logging(args)
    raise_fd_limit()
    socks = open_listeners(args.bind, args.port, args.backlog)
    reactor = make_reactor(args)
    server = ClassicServer(reactor, socks, design)
    try:
        service = Service(reactor, server, log_writer=writer, attach_log=not design.threads)
        return service.run(args.grace, stats_interval)
    finally:
        design.close()
