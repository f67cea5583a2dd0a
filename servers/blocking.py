"""What serves one client in the classic designs: blocking calls only, as in the texts.

* :func:`serve_connection`: UNP's ``str_echo``, the echo loop that the
  iterative, fork and thread servers all run, so that a benchmark compares
  concurrency models and not three echo loops.
* :func:`run_one`: serve one connection, close it, log it; neither a
  client's fault nor a bug in the serving function gets out of it.
* :func:`linger_close`: the blocking twin of ``Connection.close``.
* :class:`ConnectionStats`: Comer's monitor counters (12.9).

Where these run (inline, in a thread, in a child) is ``servers.classic``'s
and ``servers.forking``'s.
"""

import logging
import socket
import time

from reactor import errors
from reactor.connection import PROTOCOL_ERROR
from reactor.server import LINGER_TIMEOUT
from wire.addresses import format_address
from wire.streamio import RECV_SIZE, writen

log = logging.getLogger("selectlab")
client_log = logging.getLogger("selectlab.clients")


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


def run_one(serve, sock, addr, who="", report=None):
    """Serve one connection with ``serve``, close it, log it; a client's fault never raises.

    Neither does a bug in ``serve``: an exception other than a socket error
    is logged at ERROR with its traceback, the connection is dropped
    (reason ``protocol error``), and the caller goes on with its next
    client, as the reactor does with a protocol's exception.

    ``report``, if given, is called with the result just before the
    ``closed`` line is logged.

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
        if report is not None:
            # Before the line: whoever reads "closed" finds it counted too.
            report((bytes_in, bytes_out, seconds, failed))
        client_log.info("%s%s closed (%s): in %d B, out %d B, %.3f s", who, peer, reason,
                        bytes_in, bytes_out, seconds)
    return bytes_in, bytes_out, seconds, failed


class ConnectionStats:
    """Comer's monitor (12.9): current and completed connections, their average time, bytes.

    Updated on the loop's thread only (a thread-per-connection server's
    threads report through the loop).
    """

    def __init__(self):
        self.current = 0
        self.completed = 0
        self.total_seconds = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self.protocol_errors = 0

    def opened(self):
        self.current += 1

    def closed(self, bytes_in, bytes_out, seconds, failed=False):
        self.current -= 1
        self.completed += 1
        self.total_seconds += seconds
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out
        self.protocol_errors += failed

    def snapshot(self, with_bytes=True):
        """The counters as a stats line shows them: ``current=0 completed=1 average_seconds=...``.

        ``with_bytes=False`` leaves out the bytes, which a fork server's parent never sees.
        """
        average = self.total_seconds / self.completed if self.completed else 0.0
        counters = {"current": self.current, "completed": self.completed,
                    "average_seconds": f"{average:.3f}", "bytes_in": self.bytes_in,
                    "bytes_out": self.bytes_out, "protocol_errors": self.protocol_errors}
        if not with_bytes:
            del counters["bytes_in"], counters["bytes_out"]
        return counters
