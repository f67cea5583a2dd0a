"""LineProtocol at its boundaries, bytes in and lines out, with no socket (tier 1)."""

import pytest

from reactor.protocols import LineProtocol


class FakeConn:
    """What a LineProtocol asks of its connection: is_closing(), close()."""

    def __init__(self):
        self.closed_with = None

    def is_closing(self):
        return self.closed_with is not None

    def close(self, timeout=None, reason="closed by server"):
        self.closed_with = reason


class Lines(LineProtocol):
    max_line = 8

    def __init__(self, close_on=None):
        self.got = []
        self.close_on = close_on

    def line_received(self, conn, line):
        self.got.append(line)
        if line == self.close_on:
            conn.close(reason="asked")


def feed(protocol, *chunks, conn=None):
    conn = conn or FakeConn()
    for chunk in chunks:
        protocol.data_received(conn, chunk)
    return conn


def test_a_line_of_exactly_the_maximum_is_delivered_whole():
    """max_line bytes plus LF, or plus CRLF, is one line, terminator stripped."""
    p = Lines()
    conn = feed(p, b"12345678\n", b"abcdefgh\r\n")
    assert p.got == [b"12345678", b"abcdefgh"] and conn.closed_with is None


def test_one_byte_more_is_too_long_and_closes_by_default():
    """max_line + 1 bytes: line_too_long, whose default closes the connection (Twisted's
    lineLengthExceeded), and nothing more is delivered."""
    p = Lines()
    conn = feed(p, b"123456789\nnext\n")
    assert p.got == [] and conn.closed_with == "line too long"


def test_too_long_is_noticed_before_the_terminator_arrives():
    """An endless line is refused as soon as it is over the limit: the framer never holds it."""
    p = Lines()
    conn = feed(p, b"123456789")
    assert conn.closed_with == "line too long"


def test_a_cr_at_the_limit_waits_for_its_lf():
    """max_line bytes and a CR may be a CRLF still on its way: not too long yet."""
    p = Lines()
    conn = feed(p, b"12345678\r")
    assert conn.closed_with is None and p.got == []
    feed(p, b"\n", conn=conn)
    assert p.got == [b"12345678"]


@pytest.mark.parametrize("split", [1, 4, 8, 9])
def test_a_line_split_across_reads_is_one_line(split):
    """However recv cuts the bytes, even between CR and LF, the lines are the same."""
    data = b"hello\r\nworld!!!\r\n"
    p = Lines()
    feed(p, data[:split], data[split:])
    assert p.got == [b"hello", b"world!!!"]


def test_no_lines_after_the_protocol_closes():
    """A line that closes the connection (a quit) ends delivery: the rest is not processed."""
    p = Lines(close_on=b"quit")
    feed(p, b"a\nquit\nb\n")
    assert p.got == [b"a", b"quit"]


def test_a_last_unterminated_line_is_delivered_at_eof():
    """`printf 'hi' | nc`: the last line, without LF, still arrives."""
    p = Lines()
    conn = feed(p, b"one\ntwo")
    p.eof_received(conn)
    assert p.got == [b"one", b"two"]


def test_pieces_of_a_long_line_follow_when_line_too_long_does_not_close():
    """An override that keeps the connection gets the long line in max_line pieces, then the
    rest as a line (the framer's rule, and the Hello server's MAXDATASIZE exercise)."""
    class Pieces(Lines):
        def line_too_long(self, conn, piece):
            self.got.append(("piece", piece))

    p = Pieces()
    feed(p, b"x" * 20 + b"\n")
    assert p.got == [("piece", b"x" * 8), ("piece", b"x" * 8), b"x" * 4]


def test_one_instance_serves_one_connection():
    """A factory that returns a shared LineProtocol is a bug that says so."""
    p = Lines()
    feed(p, b"a\n")
    with pytest.raises(RuntimeError, match="one connection"):
        feed(p, b"b\n")
