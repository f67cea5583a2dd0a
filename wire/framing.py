"""Line framing, sans-IO: bytes in, lines out.

TCP has no message boundaries (the worksheet's MAXDATASIZE exercise, the
quick guide's answer 8): one ``recv`` may hold half a line or three of them.
:class:`LineFramer` is fed whatever arrived and hands back complete lines, in
the spirit of h11 and Twisted's ``LineReceiver``.  It never touches a socket
(this module imports neither ``socket`` nor ``selectors``; a test checks), so
the reactor's servers and the blocking helpers of ``wire.streamio``
(UNP's ``readline``/``readn``) share this one implementation.

Lines end with LF; a CR just before the LF is part of the terminator (telnet
and RFC protocols send CRLF).  Lines are returned *with* their terminator, as
UNP's ``readline`` does, so echoing them is byte-exact; :func:`strip_eol`
removes it.

A line longer than ``max_length`` (not counting its terminator) is not
buffered without bound: the framer returns a :class:`LineTooLong` holding
the first ``max_length`` bytes and carries on with the rest as the start of
the next line (UNP's ``readline`` likewise returns ``maxlen - 1`` bytes of an
over-long line).  A server usually answers it with an error and closes; the
echo client just prints the piece.

What it leaves out: other terminators (a lone CR), and character decoding --
lines are bytes.
"""

# UNP's MAXLINE (unp.h).  Servers with their own limit pass max_length.
MAX_LINE = 4096

_CR = 0x0D


class LineTooLong:
    """The named outcome for a line over the limit.

    Attributes
    ----------
    data : bytes
        the first ``limit`` bytes of the line (no terminator).
    limit : int
        the framer's ``max_length``.
    """

    __slots__ = ("data", "limit")

    def __init__(self, data, limit):
        self.data = data
        self.limit = limit

    def __repr__(self):
        return f"LineTooLong(limit={self.limit}, data={self.data[:20]!r}...)"

    def __eq__(self, other):
        return (isinstance(other, LineTooLong)
                and (self.data, self.limit) == (other.data, other.limit))


class LineFramer:
    """Split a byte stream into lines.

    Parameters
    ----------
    max_length : int
        the longest line accepted, not counting its CRLF or LF terminator.
    """

    def __init__(self, max_length=MAX_LINE):
        if max_length < 1:
            raise ValueError("max_length must be at least 1")
        self.max_length = max_length
        self._buf = bytearray()
        self._scanned = 0    # bytes of _buf already known to hold no LF

    @property
    def buffered(self):
        """Bytes received but not yet returned."""
        return len(self._buf)

    def feed(self, data):
        """Add received bytes."""
        self._buf += data

    def next_line(self):
        """Return the next complete line, a :class:`LineTooLong`, or None.

        Returns
        -------
        bytes
            a complete line including its terminator;
        LineTooLong
            when the line in front is over ``max_length``;
        None
            when more data is needed.
        """
        buf = self._buf
        limit = self.max_length
        end = buf.find(b"\n", self._scanned)
        if end < 0:
            self._scanned = len(buf)
            # Without a LF yet, the line is already too long once it holds
            # more than `limit` bytes, unless the extra byte is the CR of a
            # CRLF still on its way.
            if len(buf) > limit + 1 or (len(buf) == limit + 1 and buf[limit] != _CR):
                return self._too_long()
            return None
        content = end - 1 if end > 0 and buf[end - 1] == _CR else end
        if content > limit:
            return self._too_long()
        line = bytes(buf[:end + 1])
        del buf[:end + 1]
        self._scanned = 0
        return line

    def lines(self):
        """Yield every complete line (or :class:`LineTooLong`) available now."""
        while True:
            item = self.next_line()
            if item is None:
                return
            yield item

    def take(self, n):
        """Remove and return up to ``n`` buffered bytes, lines or not (for ``readn``)."""
        data = bytes(self._buf[:n])
        del self._buf[:n]
        self._scanned = 0
        return data

    def eof(self):
        """The peer closed: return what is left (a last line without terminator, or b"")."""
        return self.take(len(self._buf))

    def _too_long(self):
        limit = self.max_length
        piece = self.take(limit)
        return LineTooLong(piece, limit)


def strip_eol(line):
    """``line`` without its trailing LF or CRLF."""
    if line.endswith(b"\r\n"):
        return line[:-2]
    if line.endswith(b"\n"):
        return line[:-1]
    return line
