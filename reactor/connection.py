"""One TCP connection on the reactor: a socket, an output buffer, a state.

The transport path, in the order the bytes travel:

* **Read**: one ``recv`` of up to ``RECV_SIZE`` (127.5 KiB) per readiness event,
  handed to the protocol's ``data_received``.  ``b""`` is the peer's FIN.
* **Write**: :meth:`Connection.write` tries ``send`` at once.  On the common
  path the kernel takes everything and nothing else happens: no state
  change, no buffer, no ``selector.modify``.  Only the bytes the kernel
  refused are copied into the output buffer; the connection becomes BUSY and
  asks for WRITE.  Each writable event sends from the buffer; when it
  drains, the connection is IDLE again.
* **Flow control**: while BUSY, reading stops above ``HIGH_WATER`` buffered
  bytes and resumes at ``LOW_WATER`` (``reactor.states``), so a client that
  sends without reading fills its own socket buffers, not our memory.
* **Endings** -- the small vocabulary of STYLE.md:
  :meth:`abort` drops everything now; :meth:`close` flushes, half-closes,
  reads and discards until the peer's EOF, then closes, all bounded by a
  deadline (a plain ``close()`` with unread input would send a reset, which
  can destroy the last bytes we sent before the peer reads them).

The state lives in ``self.state`` and changes only in :meth:`_fire`, which
applies ``reactor.states.CONNECTION_TABLE`` and then recomputes the interest
set (``reactor.states.connection_interest``).  Socket errors are sorted by
``reactor.errors.classify``: peer-gone is a normal ending; anything else is
logged with its traceback, and only this connection is dropped.
"""

import logging
import socket

from reactor import errors
from reactor.streamio import RECV_SIZE
from reactor.states import (
    CONNECTION_TABLE, READ, Action, ConnEvent, ConnState, apply, connection_interest,
)

log = logging.getLogger("selectlab")

# How long close() may take to flush and see the peer's EOF before the
# connection is dropped anyway (nginx's lingering_time is 30 s; an echo
# client that stopped reading should not hold a descriptor for longer).
CLOSE_TIMEOUT = 30.0

_IDLE = ConnState.IDLE
_BUSY = ConnState.BUSY
_CLOSING = ConnState.CLOSING
_CLOSED = ConnState.CLOSED
_WOULD_BLOCK = errors.WOULD_BLOCK

# The output buffer of every connection with nothing waiting: an IDLE
# connection has no bytes of its own buffered, so it needs no bytearray of its
# own (56 bytes each, at 10,000 idle clients half a megabyte).  write() gives
# a connection its own bytearray when the kernel refuses bytes.
_NO_OUTPUT = b""


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


class Protocol:
    """What a server does with a connection's bytes (UNP: "all you need to do
    is change what the server does with the input it receives").

    Subclass and override what you need; every method has a default.
    """

    def connection_made(self, conn):
        """``conn`` was accepted and registered."""

    def data_received(self, conn, data):
        """``data`` (bytes) arrived on ``conn``."""

    def eof_received(self, conn):
        """The peer half-closed.  The connection closes (flushing first) after this returns."""

    def connection_lost(self, conn, reason):
        """``conn`` is finished; ``reason`` is a short text such as ``"peer eof"``."""


class Connection:
    """A connected socket driven by the reactor.

    Parameters
    ----------
    reactor : reactor.loop.Reactor
    sock : socket.socket
        a connected socket, already non-blocking.
    peer : str or None
        the peer's address as text, for logs; None formats ``address`` each
        time it is needed (for most connections of a quiet server, never).
    protocol : Protocol
    on_release : callable, optional
        called with the connection once it is CLOSED (the server's bookkeeping).
    tracer : callable, optional
        ``tracer(conn, old_state, event, new_state)`` for every transition.
    ident : int
        a number for logs (``#12``).
    address : tuple, optional
        the peer's address as ``accept()`` gave it (``peer`` is its text).
    """

    # Slots, not a __dict__: a server holding 10,000 idle clients pays for
    # every field of every connection (bench/ measures it: see README).
    __slots__ = ("_reactor", "sock", "_peer", "address", "protocol", "ident", "state",
                 "close_reason", "bytes_in", "bytes_out", "peak_buffered", "opened_at",
                 "last_active", "_outbuf", "_mask", "_deadline", "_close_timeout",
                 "_on_release", "_tracer")

    def __init__(self, reactor, sock, peer, protocol, on_release=None, tracer=None, ident=0,
                 address=None):
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
        self.peak_buffered = 0     # the most output ever buffered: what a slow reader cost us
        self.opened_at = reactor.now
        self.last_active = reactor.now  # the last turn in which bytes moved either way
        self._outbuf = _NO_OUTPUT   # a bytearray of its own only once output must wait
        self._mask = READ
        self._deadline = None
        self._close_timeout = CLOSE_TIMEOUT
        self._on_release = on_release
        self._tracer = tracer
        reactor.register(sock, READ, self)

    def __repr__(self):
        return f"<Connection #{self.ident} {self.peer} {self.state.name}>"

    def __str__(self):
        # What log lines name a connection by: "#12 127.0.0.1:5000".  Passed
        # to logging as an argument, it is formatted only if the line is
        # emitted, so a quiet server never formats a peer address.
        return f"#{self.ident} {self.peer}"

    @property
    def peer(self):
        """The peer's address as text, for logs (``127.0.0.1:5000``, ``[::1]:5000``)."""
        # Not kept: formatted again for each log line that asks, which costs
        # nothing when nothing is logged (and 66 bytes a connection if kept).
        return self._peer if self._peer is not None else format_address(self.address)

    @property
    def buffered(self):
        """Bytes accepted by :meth:`write` that the kernel has not taken yet."""
        return len(self._outbuf)

    # --- what a protocol calls -------------------------------------------

    def write(self, data):
        """Send ``data``, now if the kernel takes it, else from the output buffer.

        Writes after :meth:`close` or after the peer has gone are dropped, as
        asyncio and Twisted do: there is nobody left to read them, and a
        protocol cannot know about a reset before its next write.
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
            self._outbuf = bytearray(memoryview(data)[sent:])
            self._note_buffered()
            self._fire(ConnEvent.OUTPUT_PENDING)
        elif state is _BUSY:
            self._outbuf += data            # keep order: the older bytes go first
            self._note_buffered()
            self._update_interest()

    def close(self, timeout=None, reason="closed by server"):
        """Flush what is pending, half-close, wait for the peer's EOF, close.

        Parameters
        ----------
        timeout : float, optional
            the deadline for all of that, in seconds (default ``CLOSE_TIMEOUT``);
            a shorter one given later (e.g. at shutdown) wins.
        reason : str
            why, for the logs (the first reason given is kept).
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

    # --- what the loop calls ---------------------------------------------

    def on_readable(self):
        if not self._mask & READ:
            # A stale event: since select() returned, an earlier handler of
            # this turn ended us, or we stopped reading (high-water mark,
            # flushing before a close).  Redis re-checks its mask the same way.
            return
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
            if self.state is not _CLOSING:      # closing: read only to find the EOF
                self.protocol.data_received(self, data)
            return
        if self.state is not _CLOSING:
            self.protocol.eof_received(self)
        if self._mask & READ:
            # Unless eof_received left us not reading (it closed with output
            # pending, or aborted): then the flush comes first, and recv will
            # return this EOF again once we read.
            if self.close_reason is None:
                self.close_reason = "peer eof"
            self._fire(ConnEvent.PEER_EOF)

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
        if buf:
            self._update_interest()     # below LOW_WATER: resume reading
        else:
            self._fire(ConnEvent.OUTPUT_DRAINED)

    # --- the state machine -----------------------------------------------

    def _fire(self, event):
        """Apply one transition, carry out its action, update the interest set.

        The only code that assigns ``self.state``.
        """
        old = self.state
        new, action = apply(CONNECTION_TABLE, old, event)
        self.state = new
        if self._tracer is not None:
            self._tracer(self, old, event, new)
        if action is not None:
            _ACTIONS[action](self)
        self._update_interest()

    def _update_interest(self):
        mask = connection_interest(self.state, len(self._outbuf), bool(self._mask & READ))
        if mask != self._mask:
            self._mask = mask
            if mask:    # CLOSED (0) is unregistered by the loop when it closes the socket
                self._reactor.modify(self.sock, mask, self)

    def _arm_deadline(self):
        if self._deadline is None:
            self._deadline = self._reactor.call_later(self._close_timeout, self._on_deadline)

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
        self.protocol.connection_lost(self, self.close_reason)
        if self._on_release is not None:
            self._on_release(self)

    def _on_deadline(self):
        self._deadline = None
        self._add_reason("closing deadline expired")
        self._fire(ConnEvent.DEADLINE)

    def _add_reason(self, text):
        """Record why the connection ended; a later cause is added to the first, not put in its place."""
        self.close_reason = text if self.close_reason is None else f"{self.close_reason}, then {text}"

    def _note_buffered(self):
        if len(self._outbuf) > self.peak_buffered:
            self.peak_buffered = len(self._outbuf)

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
}
