"""One TCP connection on the reactor: a socket, an output buffer, a state.

* **Read**: one ``recv`` of up to ``RECV_SIZE`` per readiness event, handed to
  the protocol's ``data_received``; ``b""`` is the peer's FIN.
* **Write**: :meth:`Connection.write` tries ``send`` at once.  On the common
  path the kernel takes everything: no state change, no buffer, no
  ``selector.modify``.  Only refused bytes are buffered; the connection is
  then BUSY and wants WRITE until the buffer drains.
* **Flow control**: above ``HIGH_WATER`` buffered bytes it is PAUSED (it stops
  reading, and its protocol hears ``pause_writing``); at ``LOW_WATER`` it
  reads again (``resume_writing``), as asyncio does.  A write past
  ``max_output`` (8 MiB) aborts it instead: reason ``output limit``, Redis's
  ``client-output-buffer-limit``.
* **Endings**: :meth:`abort` drops everything now; :meth:`close` flushes
  (FLUSHING), half-closes and reads to the peer's EOF (DRAINING), then
  closes, within a deadline: a plain ``close()`` with unread input would
  send a reset that can destroy our last bytes.

The state changes only in :meth:`_fire`, which applies
``reactor.states.CONNECTION`` and recomputes the interest set from the state.
A socket error is sorted by ``reactor.errors.classify``: peer-gone is a normal
ending; anything else is logged with its traceback and drops this connection.
**A protocol's exception is this connection's problem only**: it is logged
once at ERROR with its traceback, counted (``protocol_errors``), and the
connection aborted (reason ``protocol error``), as asyncio, Twisted and
``socketserver.handle_error`` do -- except an ``IllegalTransition`` of the
reactor's own machines, which propagates (``reactor.states.is_reactor_bug``).
"""

import logging
import socket

from reactor import errors
from reactor.states import (
    CONNECTION, HIGH_WATER, LOW_WATER, READ, Action, ConnEvent, ConnState, connection_interest,
    is_reactor_bug,
)
from wire.addresses import format_address
from wire.streamio import RECV_SIZE

log = logging.getLogger("selectlab")

# How long close() may take to flush and see the peer's EOF before the
# connection is dropped anyway (nginx's lingering_time).
CLOSE_TIMEOUT = 30.0

# The most output a connection may have waiting before it is aborted: the low
# end of Redis's client-output-buffer-limit defaults (8 MiB soft for pub/sub,
# 32 MiB hard).  A client's own replies stop at HIGH_WATER plus one RECV_SIZE
# (it is PAUSED); only writes from elsewhere can reach it.
MAX_OUTPUT = 8 * 1024 * 1024

# Close reasons that the server counts (see reactor.server.Stats).
PROTOCOL_ERROR = "protocol error"
OUTPUT_LIMIT = "output limit"

_IDLE, _BUSY, _PAUSED = ConnState.IDLE, ConnState.BUSY, ConnState.PAUSED
_FLUSHING, _DRAINING, _CLOSED = ConnState.FLUSHING, ConnState.DRAINING, ConnState.CLOSED
_WOULD_BLOCK = errors.WOULD_BLOCK
_PEER_EOF = ConnEvent.PEER_EOF      # named once per connection: looked up once here
_apply = CONNECTION.apply           # bound once: no attribute lookup per transition

# The output buffer of a connection the kernel has never refused a byte: no
# bytearray of its own until then (56 bytes each, half a megabyte at 10,000
# idle clients).  Once given one, it keeps it, emptied, until released.
_NO_OUTPUT = b""


class Connection:
    """A connected socket driven by the reactor.

    Parameters
    ----------
    reactor : reactor.loop.Reactor
    sock : socket.socket
        a connected socket, already non-blocking.
    peer : str or None
        the peer's address as text, for logs; None: ``address``, formatted
        only when a log line asks (for most clients of a quiet server, never).
    protocol : Protocol
    on_release : callable, optional
        called with the connection once it is CLOSED (the server's bookkeeping).
    tracer : callable, optional
        ``tracer(conn, old_state, event, new_state)`` for every transition.
    ident : int
        a number for logs (``#12``).
    address : tuple, optional
        the peer's address as ``accept()`` gave it.
    max_output : int
        the output limit (reason ``output limit``).
    counters : object, optional
        has ``protocol_errors`` and ``output_limit_disconnections`` to count
        in (the server's ``Stats``).
    """

    # Slots, not a __dict__: a server holding 10,000 idle clients pays for
    # every field of every connection (bench/ measures it: see README).
    __slots__ = ("_reactor", "sock", "_peer", "address", "protocol", "ident", "state",
                 "close_reason", "bytes_in", "bytes_out", "opened_at",
                 "last_active", "max_output", "_outbuf", "_mask", "_deadline",
                 "_close_timeout", "_on_release", "_tracer", "_counters")

    def __init__(self, reactor, sock, peer, protocol, on_release=None, tracer=None, ident=0,
                 address=None, max_output=MAX_OUTPUT, counters=None):
        self._reactor = reactor
        self.sock = sock
        self._peer = peer           # None: formatted from address when asked for
        self.address = address      # the peer's address as accept() gave it, if known
        self.protocol = protocol
        self.ident = ident
        self.state = _IDLE
        self.close_reason = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.opened_at = reactor.now
        self.last_active = reactor.now  # the last turn in which bytes moved either way
        self.max_output = max_output
        self._outbuf = _NO_OUTPUT   # a bytearray of its own only once output must wait
        self._mask = READ
        self._deadline = None
        self._close_timeout = CLOSE_TIMEOUT
        self._on_release = on_release
        self._tracer = tracer
        self._counters = counters
        reactor.register(sock, READ, self)

    def __repr__(self):
        return f"<Connection #{self.ident} {self.peer} {self.state.name}>"

    def __str__(self):
        # "#12 127.0.0.1:5000": a logging argument, formatted only if the line is emitted.
        return f"#{self.ident} {self.peer}"

    @property
    def peer(self):
        """The peer's address as text, for logs (``127.0.0.1:5000``, ``[::1]:5000``)."""
        # Not kept: 66 bytes a connection, for lines a quiet server never logs.
        return self._peer if self._peer is not None else format_address(self.address)

    @property
    def reactor(self):
        """The loop this connection runs on (for a protocol's own timers: ``conn.reactor.call_later``)."""
        return self._reactor

    @property
    def buffered(self):
        """Bytes accepted by :meth:`write` that the kernel has not taken yet."""
        return len(self._outbuf)

    def is_closing(self):
        """True once closing (FLUSHING, DRAINING) or CLOSED: further writes are dropped."""
        return self.state is _FLUSHING or self.state is _DRAINING or self.state is _CLOSED

    # --- what a protocol calls -------------------------------------------

    def write(self, data):
        """Send ``data``, now if the kernel takes it, else from the output buffer.

        Writes after :meth:`close` or after the peer has gone are dropped, as
        in asyncio and Twisted: nobody is left to read them.  One that would
        take the buffer past ``max_output`` aborts the connection instead.
        """
        state = self.state
        if state is _IDLE:
            try:
                sent = self.sock.send(data)
            except _WOULD_BLOCK:
                sent = 0
            except OSError as exc:
                self._io_error(exc)
                return
            self.bytes_out += sent
            self.last_active = self._reactor.now
            if sent == len(data):
                return                      # the common path: done
            if len(data) - sent > self.max_output:
                self._output_limit()
                return
            self._outbuf = bytearray(memoryview(data)[sent:])
            self._fire(ConnEvent.OUTPUT_PENDING)
            if len(self._outbuf) > HIGH_WATER and self.state is _BUSY:
                self._fire(ConnEvent.HIGH_WATER)
        elif state is _BUSY or state is _PAUSED:
            if len(self._outbuf) + len(data) > self.max_output:
                self._output_limit()
                return
            self._outbuf += data            # keep order: the older bytes go first
            if state is _BUSY and len(self._outbuf) > HIGH_WATER:
                self._fire(ConnEvent.HIGH_WATER)

    def close(self, timeout=None, reason="closed by server"):
        """Flush what is pending, half-close, wait for the peer's EOF, close.

        ``timeout`` is the deadline for all of it (default ``CLOSE_TIMEOUT``;
        a shorter one given later, at shutdown, wins); ``reason`` is for the
        logs (the first one given is kept).
        """
        if self.state is _CLOSED:
            return
        if timeout is not None and timeout < self._close_timeout:
            self._close_timeout = timeout
            if self._deadline is not None:      # already closing: bring it forward
                self._deadline.cancel()
                self._deadline = None
                self._arm_deadline()
        if self.close_reason is None:
            self.close_reason = reason
        self._fire(ConnEvent.CLOSE)

    def abort(self, reason="aborted"):
        """Drop the connection now, pending output and all."""
        if self.state is _CLOSED:
            return
        self.close_reason = reason
        self._fire(ConnEvent.ABORT)

    # --- what the server calls -------------------------------------------

    def begin(self, protocol_factory=None):
        """Make the protocol (with ``protocol_factory``, if given) and call its ``connection_made``.

        An exception from either aborts this connection, as from any callback.
        """
        try:
            if protocol_factory is not None:
                self.protocol = protocol_factory()
            self.protocol.connection_made(self)
        except Exception as exc:
            if is_reactor_bug(exc):
                raise
            self._protocol_failed("connection_made", exc)

    # --- what the loop calls ---------------------------------------------

    def on_readable(self):
        if not self._mask & READ:
            return      # released earlier in this turn: unregistered at its end
        try:
            data = self.sock.recv(RECV_SIZE)
        except _WOULD_BLOCK:
            return
        except OSError as exc:
            self._io_error(exc)
            return
        if data:
            self.bytes_in += len(data)
            self.last_active = self._reactor.now
            if self.state is not _DRAINING:     # draining: read only to find the EOF
                try:
                    self.protocol.data_received(self, data)
                except Exception as exc:
                    if is_reactor_bug(exc):
                        raise
                    self._protocol_failed("data_received", exc)
            return
        if self.state is not _DRAINING:
            try:
                self.protocol.eof_received(self)
            except Exception as exc:
                if is_reactor_bug(exc):
                    raise
                self._protocol_failed("eof_received", exc)
        state = self.state
        if state is _CLOSED or state is _FLUSHING:
            # eof_received aborted, or closed with output pending: the flush
            # comes first, and recv returns this EOF again once DRAINING.
            return
        if self.close_reason is None:
            self.close_reason = "peer eof"
        self._fire(_PEER_EOF)

    def on_writable(self):
        buf = self._outbuf
        if not buf:
            return      # nothing pending: ended or drained earlier in this turn
        try:
            sent = self.sock.send(buf)
        except _WOULD_BLOCK:
            return
        except OSError as exc:
            self._io_error(exc)
            return
        self.bytes_out += sent
        self.last_active = self._reactor.now
        del buf[:sent]          # bytearray drops a prefix in O(1) (CPython 3.4+)
        if self.state is _PAUSED and len(buf) <= LOW_WATER:
            self._fire(ConnEvent.LOW_WATER)     # resume_writing may write, close, abort
        if not self._outbuf and self.state is not _CLOSED:
            self._fire(ConnEvent.OUTPUT_DRAINED)

    # --- the state machine -----------------------------------------------

    def _fire(self, event):
        """Apply one transition, carry out its action, update the interest set.

        The only code that assigns ``self.state``.
        """
        old = self.state
        new, action = _apply(old, event)
        self.state = new
        if self._tracer is not None:
            self._tracer(self, old, event, new)
        if action is not None:
            _ACTIONS[action](self)
        self._update_interest()

    def _update_interest(self):
        mask = connection_interest(self.state)
        if mask != self._mask:
            self._mask = mask
            if mask:    # CLOSED (0) is unregistered by the loop when it closes the socket
                self._reactor.modify(self.sock, mask, self)

    def _arm_deadline(self):
        if self._deadline is None:
            self._deadline = self._reactor._call_later(self._close_timeout, self._on_deadline)

    def _half_close(self):
        self._arm_deadline()
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._io_error(exc)

    def _release(self):
        self._outbuf = _NO_OUTPUT
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._reactor.close_later(self.sock)
        try:
            self.protocol.connection_lost(self, self.close_reason)
        except Exception as exc:
            if is_reactor_bug(exc):
                raise
            self._protocol_failed("connection_lost", exc)
        if self._on_release is not None:
            self._on_release(self)

    def _callback(self, name, *args):
        """Call the protocol's method ``name``; its exception aborts this connection only.

        The callbacks every connection meets have this ``try`` written out
        where they are called: the getattr cost a short connection 6% of its
        instructions (callgrind).
        """
        try:
            getattr(self.protocol, name)(self, *args)
        except Exception as exc:
            if is_reactor_bug(exc):
                raise
            self._protocol_failed(name, exc)

    def _protocol_failed(self, callback, exc):
        """A protocol callback raised: log it with its traceback, count it, abort this connection."""
        log.error("%s: %s raised %s; aborting this connection", self, callback,
                  type(exc).__name__, exc_info=exc)
        if self._counters is not None:
            self._counters.protocol_errors += 1
        if self.state is _CLOSED:
            self._add_reason(PROTOCOL_ERROR)    # connection_lost itself raised
        else:
            self.abort(PROTOCOL_ERROR)

    def _output_limit(self):
        log.debug("%s: output limit (%d bytes) reached; aborting", self, self.max_output)
        if self._counters is not None:
            self._counters.output_limit_disconnections += 1
        self.abort(OUTPUT_LIMIT)

    def _on_deadline(self):
        self._deadline = None
        self._add_reason("closing deadline expired")
        self._fire(ConnEvent.DEADLINE)

    def _add_reason(self, text):
        """Record why the connection ended; a later cause is added to the first, not put in its place."""
        self.close_reason = text if self.close_reason is None else f"{self.close_reason}, then {text}"

    def _io_error(self, exc):
        kind = errors.classify(exc)
        if kind is errors.Kind.BUG:
            log.error("#%d %s: unexpected socket error, dropping this connection",
                      self.ident, self.peer, exc_info=exc)
        self._add_reason(errors.describe(exc))
        if self.state is not _CLOSED:
            self._fire(ConnEvent.PEER_GONE if kind is errors.Kind.PEER_GONE else ConnEvent.ABORT)


_ACTIONS = {
    Action.ARM_DEADLINE: Connection._arm_deadline,
    Action.HALF_CLOSE: Connection._half_close,
    Action.RELEASE: Connection._release,
    Action.PAUSE_WRITING: lambda conn: conn._callback("pause_writing"),
    Action.RESUME_WRITING: lambda conn: conn._callback("resume_writing"),
}
