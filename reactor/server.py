"""A TCP server on the reactor: a listener, its connections, and their bookkeeping.

:class:`StreamServer` *has* a :class:`~reactor.listener.Listener` and a
protocol (echo, busy, hello...); it does not subclass anything.  It turns
accepted sockets into :class:`~reactor.connection.Connection` objects, keeps
the counters, logs each connection's opening and closing with its peer,
bytes and duration, and knows how to stop gracefully: stop accepting, close
every connection (flush, half-close, drain), and once they are all gone --
or the grace period is over, whichever comes first -- call ``on_stopped``.
"""

import itertools
import logging
import socket

from reactor.connection import Connection, Protocol
from reactor.listener import Listener

log = logging.getLogger("selectlab")
trace_log = logging.getLogger("selectlab.trace")

# How long a rejected client is given to read its rejection and close
# (issue 3: best-effort, must never hold the loop or a slot for long).
REJECT_CLOSE_TIMEOUT = 2.0


def format_address(addr):
    """``('::ffff:127.0.0.1', 5000, 0, 0)`` -> ``127.0.0.1:5000``; IPv6 in brackets."""
    if not isinstance(addr, tuple):
        return str(addr) or "?"
    host, port = addr[0], addr[1]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]     # an IPv4 client on a dual-stack socket
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


class Stats:
    """Counters for a server's lifetime (issue 3 adds the rest of Redis's INFO stats)."""

    def __init__(self):
        self.accepted = 0
        self.rejected = 0
        self.closed = 0
        self.bytes_in = 0      # from connections that have closed
        self.bytes_out = 0


class StreamServer:
    """Serve a protocol on listening sockets.

    Parameters
    ----------
    reactor : reactor.loop.Reactor
    socks : list of socket.socket
        bound, listening sockets (see ``servers.common.open_listeners``).
    protocol_factory : callable
        returns the :class:`~reactor.connection.Protocol` for a new connection
        (a stateless protocol may return the same object each time).
    capacity : int or None
        the listener's capacity; None for no limit.
    reject_message : bytes
        sent, best effort, to a client that arrives at capacity.
    trace : bool
        log every state transition of the listener and the connections.
    """

    def __init__(self, reactor, socks, protocol_factory, capacity=None,
                 reject_message=b"", trace=False):
        self.reactor = reactor
        self.protocol_factory = protocol_factory
        self.reject_message = reject_message
        self.connections = set()
        self.rejecting = set()
        self.stats = Stats()
        self._ids = itertools.count(1)
        self._trace = trace
        self._on_stopped = None
        self._grace_timer = None
        self.listener = Listener(reactor, socks, self._admit, self._reject, capacity,
                                 tracer=self._trace_listener if trace else None)

    # --- admission -------------------------------------------------------

    def _connection(self, sock, addr, protocol, on_release):
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # Send small replies at once, as asyncio, uvloop and Redis do.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return Connection(self.reactor, sock, format_address(addr), protocol,
                          on_release=on_release, ident=next(self._ids),
                          tracer=self._trace_connection if self._trace else None)

    def _admit(self, sock, addr):
        conn = self._connection(sock, addr, self.protocol_factory(), self._released)
        self.connections.add(conn)
        self.stats.accepted += 1
        log.info("#%d %s open", conn.ident, conn.peer)
        conn.protocol.connection_made(conn)

    def _reject(self, sock, addr):
        conn = self._connection(sock, addr, _REJECTED, self._rejected_released)
        self.rejecting.add(conn)
        self.stats.rejected += 1
        log.info("#%d %s rejected: at capacity (%d)", conn.ident, conn.peer,
                 self.listener.capacity)
        if self.reject_message:
            conn.write(self.reject_message)
        conn.close(timeout=REJECT_CLOSE_TIMEOUT)

    def _released(self, conn):
        self.connections.discard(conn)
        stats = self.stats
        stats.closed += 1
        stats.bytes_in += conn.bytes_in
        stats.bytes_out += conn.bytes_out
        log.info("#%d %s closed (%s): in %d B, out %d B, %.3f s", conn.ident, conn.peer,
                 conn.close_reason, conn.bytes_in, conn.bytes_out,
                 self.reactor.time() - conn.opened_at)
        self.listener.slot_freed()
        self._check_stopped()

    def _rejected_released(self, conn):
        self.rejecting.discard(conn)
        self._check_stopped()

    # --- stopping --------------------------------------------------------

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
        self._grace_timer = self.reactor.call_later(grace, self._grace_expired)
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

    def _trace_listener(self, listener, old, event, new):
        capacity = "unlimited" if listener.capacity is None else listener.capacity
        trace_log.info("listener %s --%s--> %s (%d/%s)", old.name, event.name.lower(),
                       new.name, listener.active, capacity)

    def _trace_connection(self, conn, old, event, new):
        trace_log.info("#%d %s %s --%s--> %s (buffered %d)", conn.ident, conn.peer, old.name,
                       event.name.lower(), new.name, conn.buffered)


# A rejected client's input is read only to find its EOF, then discarded.
_REJECTED = Protocol()
