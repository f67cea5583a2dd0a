"""A TCP server on the reactor: a listener, its connections, and their bookkeeping.

:class:`StreamServer` *has* a :class:`~reactor.listener.Listener` and a
protocol (echo, busy, hello...); it does not subclass anything.  It turns
accepted sockets into :class:`~reactor.connection.Connection` objects, keeps
the counters, logs each connection's opening and closing with its peer,
bytes and duration, and knows how to stop gracefully: stop accepting, close
every connection (flush, half-close, drain), and once they are all gone --
or the grace period is over, whichever comes first -- call ``on_stopped``.

Admission control is the listener's: a capacity, and a rejection for the
clients beyond it -- a best-effort message (``busy\\n``), then the same clean
close as any other (flush, half-close, read and discard until the peer's
EOF), so the message is not destroyed by a reset.  The server adds the idle
timeout (activity in either direction resets a client's clock) and the
counters of :meth:`StreamServer.stats_snapshot`, named after Redis's
``INFO stats`` where Redis has one.

What is logged where (the rule, Redis's: per-client lines only when asked
for).  The server's own events (capacity, signals, stopping, warnings) go
to the ``selectlab`` logger at INFO.  Each client's lines (``open``,
``closed (...)``, ``rejected``, ``idle ... closing``) go to
``selectlab.clients``, which the servers show with ``-v`` or ``--trace``
only; every state transition goes to ``selectlab.trace`` (``--trace``).  A
protocol's exception is an ERROR with its traceback, whatever the level.
"""

import itertools
import logging
import socket

from reactor.connection import MAX_OUTPUT, Connection
from reactor.protocols import Protocol
from reactor.listener import Listener
from reactor.states import ConnState

log = logging.getLogger("selectlab")
client_log = logging.getLogger("selectlab.clients")
trace_log = logging.getLogger("selectlab.trace")

# How long a connection that we end on our own initiative (a rejected client,
# an idle one) is given, after our FIN, to read what we sent and close its
# end.  Best effort that must never hold a descriptor or a slot for long:
# such a client owes us nothing, so this is below nginx's 5 s
# lingering_timeout.  Past it the socket is closed anyway.
LINGER_TIMEOUT = 2.0


class Stats:
    """Counters over a server's lifetime (see :meth:`StreamServer.stats_snapshot`)."""

    def __init__(self):
        self.accepted = 0        # clients admitted (Redis: total_connections_received)
        self.rejected_busy = 0   # clients answered at capacity (Redis: rejected_connections)
        self.closed = 0          # admitted clients gone
        self.idle_timeouts = 0   # of those, closed by the idle timeout
        self.protocol_errors = 0     # protocol callbacks that raised (each aborted its client)
        self.output_limit_disconnections = 0     # clients aborted at the output limit (Redis)
        self.bytes_in = 0        # of connections that have ended; stats_snapshot()
        self.bytes_out = 0       # adds the live ones


def format_stats(snapshot):
    """``{'accepted': 3, ...}`` -> ``accepted=3 ...``: one greppable log line."""
    return " ".join(f"{name}={value}" for name, value in snapshot.items())


class StreamServer:
    """Serve a protocol on listening sockets.

    Parameters
    ----------
    reactor : reactor.loop.Reactor
    socks : list of socket.socket
        bound, listening sockets (see ``servers.sockets.open_listeners``).
    protocol_factory : callable
        returns the :class:`~reactor.protocols.Protocol` for a new connection
        (a stateless protocol may return the same object each time).
    capacity : int or None
        the listener's capacity; None for no limit.
    reject_message : bytes
        sent, best effort, to a client that arrives at capacity.
    idle_timeout : float or None
        close a client when no byte has moved either way for this many
        seconds; None (the default) never does.
    trace : bool
        log every state transition of the listener and the connections.
    max_output : int
        each connection's output limit, in bytes (see
        ``reactor.connection.MAX_OUTPUT``).
    """

    def __init__(self, reactor, socks, protocol_factory, capacity=None,
                 reject_message=b"", idle_timeout=None, trace=False, max_output=MAX_OUTPUT):
        self.reactor = reactor
        self.protocol_factory = protocol_factory
        self.reject_message = reject_message
        self.idle_timeout = idle_timeout
        self.max_output = max_output
        self.connections = set()
        self.rejecting = set()
        self.stats = Stats()
        self._idle_timers = {}      # connection -> its idle Timer
        self._ids = itertools.count(1)
        self._trace = trace
        self._observers = []        # (listener_changed, connection_changed): observe()
        self._conn_tracer = self._trace_connection if trace else None
        self._on_stopped = None
        self._grace_timer = None
        # Bound once: ``self._released`` would make a new 64-byte bound method
        # for every connection to hold on to.
        self._on_released = self._released
        self._on_rejected_released = self._rejected_released
        self.listener = Listener(reactor, socks, self._admit, self._reject, capacity,
                                 tracer=self._trace_listener if trace else None)

    @property
    def sockets(self):
        """The listening sockets (``sockets[0].getsockname()`` gives the port of a port 0 server)."""
        return self.listener.sockets

    # --- admission -------------------------------------------------------

    def _connection(self, sock, addr, protocol, on_release):
        sock.setblocking(False)
        if isinstance(addr, tuple):
            # TCP (a Unix socket's address is a string; and sock.family, an
            # enum made anew per call, cost 2% of a short connection's CPU).
            # Send small replies at once, as asyncio, uvloop and Redis do.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return Connection(self.reactor, sock, None, protocol, on_release,
                          self._conn_tracer, next(self._ids),
                          addr, self.max_output, self.stats)

    def _admit(self, sock, addr):
        conn = self._connection(sock, addr, _NO_PROTOCOL, self._on_released)
        self.connections.add(conn)
        self.stats.accepted += 1
        if client_log.isEnabledFor(logging.INFO):
            client_log.info("%s open", conn)
        if self.idle_timeout is not None:
            self._idle_timers[conn] = self.reactor._call_later(
                self.idle_timeout, self._check_idle, conn)
        conn.begin(self.protocol_factory)   # the factory's exception is contained too

    def _reject(self, sock, addr):
        conn = self._connection(sock, addr, _REJECTED, self._on_rejected_released)
        self.rejecting.add(conn)
        self.stats.rejected_busy += 1
        client_log.info("%s rejected: at capacity (%d)", conn, self.listener.capacity)
        if self.reject_message:
            conn.write(self.reject_message)
        conn.close(timeout=LINGER_TIMEOUT, reason="rejected")

    def _check_idle(self, conn):
        """``conn``'s idle timer is due: close it if it really was idle that long.

        Activity does not touch the timer (that would be a heap operation per
        read); the connection only notes the time (``last_active``), and a
        timer that finds it was active since is set again for the remainder.
        """
        timeout = self.idle_timeout
        if self.reactor.time() - conn.last_active < timeout:
            self._idle_timers[conn] = self.reactor._call_at(
                conn.last_active + timeout, self._check_idle, conn)
            return
        del self._idle_timers[conn]
        if conn.state in (ConnState.FLUSHING, ConnState.DRAINING):
            return      # already ending, within its own deadline
        self.stats.idle_timeouts += 1
        client_log.info("%s idle for %g s: closing", conn, timeout)
        conn.close(timeout=LINGER_TIMEOUT, reason="idle timeout")

    def _released(self, conn):
        self.connections.discard(conn)
        timer = self._idle_timers.pop(conn, None)
        if timer is not None:
            timer.cancel()
        stats = self.stats
        stats.closed += 1
        stats.bytes_in += conn.bytes_in
        stats.bytes_out += conn.bytes_out
        if client_log.isEnabledFor(logging.INFO):
            client_log.info("%s closed (%s): in %d B, out %d B, %.3f s", conn,
                            conn.close_reason, conn.bytes_in, conn.bytes_out,
                            self.reactor.time() - conn.opened_at)
        self.listener.slot_freed()
        self._check_stopped()

    def _rejected_released(self, conn):
        self.rejecting.discard(conn)
        self.stats.bytes_in += conn.bytes_in
        self.stats.bytes_out += conn.bytes_out
        self.listener.descriptor_freed()
        self._check_stopped()

    # --- counters --------------------------------------------------------

    def stats_snapshot(self):
        """The counters now, in a fixed order, as a dict.

        ``accepted``, ``rejected_busy``, ``closed``, ``idle_timeouts``: clients
        since the start.  ``active``: clients being served now.
        ``protocol_errors``: protocol callbacks that raised (each aborted its
        client); ``output_limit_disconnections``: clients aborted because
        their output reached the limit (Redis's name).
        ``emfile_events``: accepts that failed for lack of descriptors (each
        pauses accepting; see ``reactor.listener``).  ``accept_errors``:
        clients lost between their handshake and our accept (ECONNABORTED).
        ``bytes_in``/``bytes_out``: over every connection, served or rejected,
        ended or live.  ``eventloop_cycles``: turns of the loop (Redis's name);
        a server that spins shows it here.
        """
        stats = self.stats
        live = list(self.connections) + list(self.rejecting)
        return {
            "accepted": stats.accepted,
            "rejected_busy": stats.rejected_busy,
            "active": len(self.connections),
            "closed": stats.closed,
            "idle_timeouts": stats.idle_timeouts,
            "protocol_errors": stats.protocol_errors,
            "output_limit_disconnections": stats.output_limit_disconnections,
            "emfile_events": self.listener.emfile_events,
            "accept_errors": self.listener.accept_errors,
            "bytes_in": stats.bytes_in + sum(c.bytes_in for c in live),
            "bytes_out": stats.bytes_out + sum(c.bytes_out for c in live),
            "eventloop_cycles": self.reactor.cycles,
        }

    # --- stopping --------------------------------------------------------

    def client_count(self):
        """How many clients are connected now (rejected ones, on their way out, not counted)."""
        return len(self.connections)

    def pending_output(self):
        """Bytes buffered for clients right now, over all connections."""
        return sum(c.buffered for c in self.connections)

    def shutdown(self, grace, on_stopped):
        """Stop gracefully: no new clients, flush and close the others.

        ``on_stopped()`` is called once every connection is closed, or after
        ``grace`` seconds with the stragglers aborted.
        """
        self.listener.shutdown()
        self._on_stopped = on_stopped
        self._grace_timer = self.reactor._call_later(grace, self._grace_expired)
        for conn in list(self.connections) + list(self.rejecting):
            conn.close(timeout=grace)
        self._check_stopped()

    def abort_all(self, reason):
        """Drop every connection now."""
        for conn in list(self.connections) + list(self.rejecting):
            conn.abort(reason)

    def _grace_expired(self):
        self._grace_timer = None
        if self.connections or self.rejecting:
            log.warning("grace period over: dropping %d connection(s)",
                        len(self.connections) + len(self.rejecting))
            self.abort_all("shutdown grace period over")
        self._check_stopped()

    def _check_stopped(self):
        if self._on_stopped is not None and not self.connections and not self.rejecting:
            on_stopped, self._on_stopped = self._on_stopped, None
            if self._grace_timer is not None:
                self._grace_timer.cancel()
                self._grace_timer = None
            on_stopped()

    # --- tracing ---------------------------------------------------------

    def observe(self, listener_changed, connection_changed):
        """Tell ``listener_changed(listener, old, event, new)`` and
        ``connection_changed(conn, old, event, new)`` of every transition from now on.

        This is the monitor's feed (``servers.monitor``); ``--trace`` logging
        goes on beside it.  A server nobody observes pays nothing for it.
        """
        self._observers.append((listener_changed, connection_changed))
        if len(self._observers) == 1 and not self._trace:
            # One observer and no trace lines: call it straight (no dispatch per transition).
            self.listener._tracer, self._conn_tracer = listener_changed, connection_changed
        else:
            self.listener._tracer = self._listener_transition
            self._conn_tracer = self._connection_transition
        for conn in self.connections | self.rejecting:
            conn._tracer = self._conn_tracer

    def _listener_transition(self, listener, old, event, new):
        if self._trace:
            self._trace_listener(listener, old, event, new)
        for on_listener, _ in self._observers:
            on_listener(listener, old, event, new)

    def _connection_transition(self, conn, old, event, new):
        if self._trace:
            self._trace_connection(conn, old, event, new)
        for _, on_connection in self._observers:
            on_connection(conn, old, event, new)

    def _trace_listener(self, listener, old, event, new):
        capacity = "unlimited" if listener.capacity is None else listener.capacity
        trace_log.info("listener %s --%s--> %s (%d/%s)", old.name, event.name.lower(),
                       new.name, listener.active, capacity)

    def _trace_connection(self, conn, old, event, new):
        trace_log.info("%s %s --%s--> %s (buffered %d)", conn, old.name,
                       event.name.lower(), new.name, conn.buffered)


# A rejected client's input is read only to find its EOF, then discarded.
_REJECTED = Protocol()

# An admitted connection's protocol until the factory has made its own.
_NO_PROTOCOL = Protocol()
