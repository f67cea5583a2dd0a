"""What a server does with a connection's bytes: :class:`Protocol`, :class:`LineProtocol` for lines,
and :class:`ProxyHeaderReceiver` for connections relayed by a balancer.

A :class:`Protocol` gets bytes as ``recv`` returned
them: half a line, or three.  Most text protocols (the Hello server, a chat
room, SMTP, Redis's inline commands) want whole lines, and each one would
otherwise wire a :class:`~wire.framing.LineFramer` by hand.
:class:`LineProtocol` does it once, as Twisted's ``LineReceiver`` does:
override :meth:`~LineProtocol.line_received`, and
:meth:`~LineProtocol.line_too_long` if the default (close) is not what you
want.

The rules are the framer's (``wire.framing``), the same ones the blocking
clients and servers read with (``wire.streamio``):

* a line ends with LF; a CR just before it belongs to the terminator;
  ``line_received`` gets the line *without* its terminator;
* a line longer than ``max_line`` bytes (terminator not counted) is never
  buffered whole: ``line_too_long`` gets its first ``max_line`` bytes; if it
  returns without closing, the rest of that line follows as further pieces
  and a last ``line_received``;
* once the connection is closing (a callback closed or aborted it), no more
  lines are delivered;
* a last line without terminator before the peer's EOF is delivered too
  (UNP's ``readline`` returns it).

What it leaves out: other terminators, and decoding (lines are bytes).
"""

import ipaddress
import logging

from reactor import proxy_protocol
from wire.addresses import format_address, peer_host
from wire.framing import MAX_LINE, LineFramer, LineTooLong, strip_eol

log = logging.getLogger("selectlab")
client_log = logging.getLogger("selectlab.clients")


class Protocol:
    """What a server does with a connection's bytes (UNP: "all you need to do
    is change what the server does with the input it receives").

    Subclass and override what you need; every method has a default.  An
    exception from any of them aborts that connection only (see
    ``reactor.connection``).
    """

    def connection_made(self, conn):
        """``conn`` was accepted and registered."""

    def data_received(self, conn, data):
        """``data`` (bytes) arrived on ``conn``."""

    def eof_received(self, conn):
        """The peer half-closed.  The connection closes (flushing first) after this returns."""

    def pause_writing(self, conn):
        """More than the high-water mark is buffered for ``conn``: write less to it for now.

        ``conn`` has stopped reading its own input meanwhile.  Writes still
        go into its buffer, up to its output limit.
        """

    def resume_writing(self, conn):
        """``conn``'s buffer is down to the low-water mark: it reads again, write freely."""

    def connection_lost(self, conn, reason):
        """``conn`` is finished; ``reason`` is a short text such as ``"peer eof"``."""


class LineProtocol(Protocol):
    """A protocol that receives lines.

    One instance serves one connection (its framer holds that connection's
    partial line), so the server's ``protocol_factory`` must make a new one
    each time; an instance given a second connection raises (and so aborts
    that connection, as any protocol error does).

    Attributes
    ----------
    max_line : int
        the longest line delivered whole, terminator not counted (default
        UNP's MAXLINE, 4096); set it on a subclass or an instance before the
        first byte arrives.
    """

    max_line = MAX_LINE
    _framer = None      # made on the first data, so subclasses need not call __init__
    _conn = None

    def data_received(self, conn, data):
        framer = self._framer
        if framer is None:
            framer = self._framer = LineFramer(self.max_line)
            self._conn = conn
        elif conn is not self._conn:
            raise RuntimeError("a LineProtocol serves one connection: make a new one for "
                               "each (the protocol_factory must not return a shared instance)")
        framer.feed(data)
        while not conn.is_closing():
            item = framer.next_line()
            if item is None:
                return
            if item.__class__ is LineTooLong:
                self.line_too_long(conn, item.data)
            else:
                self.line_received(conn, strip_eol(item))

    def eof_received(self, conn):
        """Deliver a last unterminated line, if any; then the connection closes as usual."""
        if self._framer is not None and not conn.is_closing():
            rest = self._framer.eof()
            if rest:
                self.line_received(conn, rest)

    def line_received(self, conn, line):
        """One line arrived on ``conn`` (bytes, without its LF or CRLF)."""

    def line_too_long(self, conn, piece):
        """A line longer than ``max_line`` arrived; ``piece`` is its first ``max_line`` bytes.

        The default closes the connection (flushing what is pending), as
        Twisted's ``lineLengthExceeded`` does: one endless line costs that
        connection, never the server's memory.
        """
        conn.close(reason="line too long")


# How long a balancer may take to send the PROXY header (HAProxy sends it
# with the connection; a client that dribbles is not a balancer).
PROXY_HEADER_TIMEOUT = 3.0

# Who may send a header by default: the same host (a balancer beside us).
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class ProxyHeaderReceiver(Protocol):
    """Read a PROXY protocol header first, then hand the connection to the real protocol.

    The header's source address becomes ``conn.address``, so every later
    log line, the counters and the protocol itself (the Hello server's
    ``Goodbye, ADDR``) see the client, not the balancer.  A connection
    from outside ``trusted`` (networks, default loopback), or whose header
    is malformed, too long or later than ``timeout`` seconds, is closed
    with one log line; nothing it sent reaches the protocol.  Once the
    header is read, the real protocol replaces this one on the connection.
    """

    def __init__(self, protocol_factory, trusted=LOOPBACK, timeout=PROXY_HEADER_TIMEOUT):
        self._factory = protocol_factory
        self._trusted = trusted
        self._timeout = timeout
        self._buf = b""
        self._timer = None

    def connection_made(self, conn):
        host = _host(conn.address)
        if host is None or not any(host in net for net in self._trusted):
            self._refuse(conn, "not from a trusted balancer (see --proxy-from)")
            return
        self._timer = conn.reactor.call_later(self._timeout, self._too_slow, conn)

    def data_received(self, conn, data):
        self._buf += data
        try:
            header = proxy_protocol.parse(self._buf)
        except proxy_protocol.HeaderError as exc:
            self._refuse(conn, str(exc))
            return
        if header is None:
            return
        self._timer.cancel()
        rest, self._buf = self._buf[header.length:], b""
        balancer = conn.address
        if header.source is not None:
            conn.address = header.source
        if client_log.isEnabledFor(logging.INFO):
            client_log.info("%s: PROXY v%d from %s", conn, header.version,
                            format_address(balancer))
        conn.protocol = protocol = self._factory()
        protocol.connection_made(conn)
        if rest and not conn.is_closing():
            protocol.data_received(conn, rest)

    def eof_received(self, conn):
        self._refuse(conn, "closed before its PROXY header was complete")

    def connection_lost(self, conn, reason):
        if self._timer is not None:
            self._timer.cancel()

    def _too_slow(self, conn):
        self._refuse(conn, f"no complete PROXY header within {self._timeout:g} s")

    def _refuse(self, conn, why):
        log.warning("%s: refused: %s", conn, why)
        conn.abort("bad PROXY header")


def _host(address):
    try:
        return ipaddress.ip_address(peer_host(address))
    except ValueError:
        return None     # a Unix socket's address
