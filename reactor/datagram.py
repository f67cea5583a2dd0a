"""UDP on the reactor: a bound datagram socket, its protocol, and its counters.

UDP has no connections, so there is no state machine here: a datagram
endpoint is always reading, and each datagram is handed to the protocol
with its sender's address (the quick guide's 9th task: ``recvfrom``, then
``sendto`` the same bytes back, "send only the bytes you read").

What is different from TCP, and why the code looks the way it does:

* **One datagram per recvfrom, whole.**  The buffer is ``RECV_BUFFER``
  bytes, more than the largest UDP payload (65,507 over IPv4, 65,527 over
  IPv6), so nothing is truncated (the guide's 128-byte buffer would cut
  longer datagrams short, silently).  Up to ``DATAGRAMS_PER_EVENT`` are read per readiness event, so
  a flood of datagrams cannot starve the TCP clients on the same loop.
* **Sending never waits.**  ``sendto`` either takes the whole datagram or
  fails; there is no partial send to buffer.  A datagram the kernel refuses
  (``EAGAIN``/``ENOBUFS``: the send buffer is full) is dropped and counted,
  as a router would: UDP promises no delivery, and queueing replies for a
  flood would only grow our memory.
* **Errors are about someone else.**  A reply that cannot be sent to its
  address (``EINVAL`` for a forged source port 0, ``EHOSTUNREACH``...) is
  dropped and counted; it says nothing about our socket.  ICMP errors for
  earlier replies (``ECONNREFUSED``) reach an unconnected socket like this
  one only with ``IP_RECVERR``, which is not set, so a reply to a client
  that has gone is usually just lost, as UDP allows.  Only errors that mean
  our own socket is broken (``EBADF``, ``ENOTSOCK``) stop the endpoint, and
  then ``on_failed`` is called.
* **A protocol's exception costs one datagram.**  If ``datagram_received``
  raises, the exception is logged at ERROR with its traceback and counted
  (``protocol_errors``), and the endpoint goes on with the next datagram.
"""

import errno
import logging

from reactor import errors
from wire.streamio import RECV_BUFFER
from wire.addresses import format_address

log = logging.getLogger("selectlab")

# Redis reads up to 1,000 connections per event; datagrams are cheaper and
# carry no state, and this keeps a burst from holding the loop for long.
DATAGRAMS_PER_EVENT = 64

# Errors that mean our own socket is broken (a bug): the endpoint stops.
# Every other error is about one datagram or one peer, and is counted.
_BROKEN = frozenset({errno.EBADF, errno.ENOTSOCK, errno.EFAULT})


class DatagramProtocol:
    """What a UDP server does with each datagram; override :meth:`datagram_received`."""

    def datagram_received(self, endpoint, data, addr):
        """``data`` (bytes) came from ``addr``."""


class DatagramStats:
    """Counters of one endpoint."""

    def __init__(self):
        self.datagrams_in = 0
        self.datagrams_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.dropped = 0        # replies the kernel refused (send buffer full)
        self.errors = 0         # ICMP errors and the like, reported by recvfrom/sendto
        self.protocol_errors = 0    # datagrams whose datagram_received raised


class DatagramEndpoint:
    """A bound UDP socket served by the reactor.

    Parameters
    ----------
    reactor : reactor.loop.Reactor
    sock : socket.socket
        a bound datagram socket; it is made non-blocking.
    protocol : DatagramProtocol
    on_failed : callable, optional
        ``on_failed(endpoint)`` if the socket breaks and serving stops.
    """

    def __init__(self, reactor, sock, protocol, on_failed=None):
        self._reactor = reactor
        self.on_failed = on_failed      # called if the socket breaks and the endpoint stops
        self.sock = sock
        self.protocol = protocol
        self.stats = DatagramStats()
        self.serving = True
        sock.setblocking(False)
        reactor.register(sock, 1, self)     # READ, always

    def sendto(self, data, addr):
        """Send one datagram now, or drop it (and count it) if the kernel will not take it."""
        try:
            self.sock.sendto(data, addr)
        except errors.WOULD_BLOCK:
            self.stats.dropped += 1     # the send buffer is full
            return
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                self.stats.dropped += 1     # the same, as some kernels report it
            else:
                self._error(exc, "sendto")
            return
        self.stats.datagrams_out += 1
        self.stats.bytes_out += len(data)

    def close(self):
        """Stop serving; the socket is closed at the end of this turn of the loop."""
        if self.serving:
            self.serving = False
            self._reactor.close_later(self.sock)

    def on_readable(self):
        stats = self.stats
        for _ in range(DATAGRAMS_PER_EVENT):
            if not self.serving:
                return
            try:
                data, addr = self.sock.recvfrom(RECV_BUFFER)
            except errors.WOULD_BLOCK:
                return
            except OSError as exc:
                if not self._error(exc, "recvfrom"):
                    return
                continue
            stats.datagrams_in += 1
            stats.bytes_in += len(data)
            try:
                self.protocol.datagram_received(self, data, addr)
            except Exception as exc:
                stats.protocol_errors += 1
                log.error("datagram_received raised %s on a datagram from %s; dropping it",
                          type(exc).__name__, format_address(addr), exc_info=exc)

    def on_writable(self):  # never registered for WRITE
        pass

    def _error(self, exc, call):
        """Count an error about a peer and return True; if our socket is broken, stop serving.

        The TCP side of the loop, if any, goes on either way.
        """
        self.stats.errors += 1
        if exc.errno not in _BROKEN:
            log.debug("%s: %s", call, errors.describe(exc))
            return True
        log.error("%s: unexpected error, no longer serving UDP on this socket", call,
                  exc_info=exc)
        self.close()
        if self.on_failed is not None:
            self.on_failed(self)
        return False
