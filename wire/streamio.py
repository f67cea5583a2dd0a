"""UNP's blocking helpers -- ``writen``, ``readn``, ``readline`` -- on the shared framer.

For blocking sockets: the clients and the fork/thread/iterative servers.
``readline`` and ``readn`` read through one :class:`~wire.framing.LineFramer`
per socket (UNP keeps that buffer in a static array; here it is an object, so
two sockets never share it), which is the same framer the reactor's line
servers feed, so a blocking client and a reactor server split a stream in
exactly the same way.

The socket is any object with ``recv`` and ``send``: this module imports no
``socket`` either.  EINTR needs no code: since PEP 475 Python retries
interrupted calls itself.
"""

from wire.framing import MAX_LINE, LineFramer

# Bytes per recv, for the reactor and the blocking helpers alike: as much as
# fits under glibc's default mmap threshold (128 KiB).  CPython allocates the
# whole size for each recv before shrinking the result.  Above the threshold
# that allocation is an mmap, an mremap and a munmap per call, until the first
# EOF frees a whole buffer and glibc raises its threshold: asyncio's 256 KiB
# reads made a fresh server 4x slower (35,000 instead of 142,000 1 KiB echoes a
# second) until a first client left.  Below it, the bigger the better for big
# messages: with 100 KiB echoes (python -m bench, 2 rounds side by side) the
# server's CPU per message was 31.2 us at 64 KiB, 23.1 us here, the same as at
# 256 KiB (22.7), and 1 KiB messages were unchanged (7.0 us).
RECV_SIZE = 128 * 1024 - 512

# The largest UDP payload over IPv4: 65,535 (IP total length) - 20 (IP
# header) - 8 (UDP header).  Over IPv6 it is 65,527 (no IP header counted).
MAX_DATAGRAM = 65507

# Bytes per recvfrom: the largest datagram of either family fits.
RECV_BUFFER = 65535


def writen(sock, data):
    """Send all of ``data``, looping over short writes (UNP's ``writen``).

    ``send`` on a stream socket may accept fewer bytes than it was given (the
    quick guide's answer 8); this keeps going until every byte is taken.
    Equivalent to ``sock.sendall`` on a blocking socket, written out because
    this is the loop the texts teach.

    Returns
    -------
    int
        ``len(data)``.

    Raises
    ------
    OSError
        whatever ``send`` raises, e.g. ``BrokenPipeError`` when the peer has
        gone (CS:APP: that is how a robust program learns the client left).
    """
    with memoryview(data) as view:
        total = len(view)
        sent = 0
        while sent < total:
            sent += sock.send(view[sent:])
    return total


class Reader:
    """Buffered reading from a blocking socket: ``readline`` and ``readn``.

    Parameters
    ----------
    sock
        a blocking socket (anything with ``recv``).
    max_line : int
        the longest line :meth:`readline` returns whole.
    """

    def __init__(self, sock, max_line=MAX_LINE):
        self.sock = sock
        self.framer = LineFramer(max_line)
        self.at_eof = False
        self.bytes_read = 0     # from the socket, lines returned or not

    def _fill(self):
        """One recv into the framer; False at EOF."""
        if self.at_eof:
            return False
        data = self.sock.recv(RECV_SIZE)
        if not data:
            self.at_eof = True
            return False
        self.bytes_read += len(data)
        self.framer.feed(data)
        return True

    def readline(self):
        """The next line with its terminator (UNP ``readline``).

        Returns
        -------
        bytes
            a line; at EOF the last unterminated piece, then ``b""`` for ever;
        LineTooLong
            when the line is over ``max_line`` (see ``wire.framing``).
        """
        while True:
            item = self.framer.next_line()
            if item is not None:
                return item
            if not self._fill():
                return self.framer.eof()

    def readn(self, n):
        """Exactly ``n`` bytes, or fewer only if the peer closed first (UNP ``readn``)."""
        while self.framer.buffered < n and self._fill():
            pass
        return self.framer.take(n)
