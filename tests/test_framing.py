"""The line framer, bytes in and lines out: no sockets (tier 1)."""

from hypothesis import given, strategies as st

from wire.framing import LineFramer, LineTooLong, strip_eol


def feed_all(framer, chunks):
    out = []
    for chunk in chunks:
        framer.feed(chunk)
        out.extend(framer.lines())
    return out


def test_lf_and_crlf_lines_come_back_whole_with_their_terminators():
    """A server reading telnet (CRLF) or nc (LF) input gets each line exactly as sent."""
    framer = LineFramer()
    framer.feed(b"hello\nworld\r\nhalf")
    assert list(framer.lines()) == [b"hello\n", b"world\r\n"]
    assert framer.buffered == 4
    framer.feed(b" done\n")
    assert list(framer.lines()) == [b"half done\n"]


def test_a_line_split_over_many_receives_is_reassembled():
    """TCP has no message boundaries: a line that arrives one byte at a time is still one line."""
    framer = LineFramer()
    assert feed_all(framer, [bytes([b]) for b in b"one line\r\n"]) == [b"one line\r\n"]


def test_strip_eol_removes_crlf_or_lf_only():
    """`quit\\r\\n` from telnet and `quit\\n` from nc both mean `quit` (the worksheet's CRLF trap)."""
    assert strip_eol(b"quit\r\n") == b"quit"
    assert strip_eol(b"quit\n") == b"quit"
    assert strip_eol(b"quit") == b"quit"
    assert strip_eol(b"a\r") == b"a\r"


def test_a_line_of_exactly_the_limit_is_accepted_with_either_terminator():
    """The limit counts the line's content, not its CRLF, so the boundary is the same for nc and telnet."""
    framer = LineFramer(max_length=5)
    framer.feed(b"12345\n12345\r\n")
    assert list(framer.lines()) == [b"12345\n", b"12345\r\n"]


def test_a_cr_at_the_limit_waits_for_its_lf():
    """A CRLF split between two receives does not make a line of exactly the limit look too long."""
    framer = LineFramer(max_length=5)
    framer.feed(b"12345\r")
    assert framer.next_line() is None
    framer.feed(b"\n")
    assert framer.next_line() == b"12345\r\n"


def test_an_over_long_line_is_a_named_outcome_and_memory_stays_bounded():
    """A client sending an endless line gets LineTooLong, never an ever-growing buffer."""
    framer = LineFramer(max_length=8)
    framer.feed(b"x" * 9)
    assert framer.next_line() == LineTooLong(b"x" * 8, 8)
    assert framer.buffered == 1


def test_an_over_long_line_with_its_terminator_present_is_split_like_unp_readline():
    """Like UNP's readline, the first max bytes come out (as LineTooLong), then the rest as a line."""
    framer = LineFramer(max_length=4)
    framer.feed(b"abcdefg\nok\n")
    assert list(framer.lines()) == [LineTooLong(b"abcd", 4), b"efg\n", b"ok\n"]


def test_eof_returns_the_unterminated_last_line_once():
    """A file without a final newline is still echoed to its last byte."""
    framer = LineFramer()
    framer.feed(b"a\nlast")
    assert list(framer.lines()) == [b"a\n"]
    assert framer.eof() == b"last"
    assert framer.eof() == b""


def test_take_returns_raw_bytes_across_line_boundaries():
    """readn needs exact byte counts whatever the content (the TIME protocol's 4 bytes)."""
    framer = LineFramer()
    framer.feed(b"ab\ncd\n")
    assert framer.take(4) == b"ab\nc"
    assert list(framer.lines()) == [b"d\n"]


@given(st.binary(max_size=2000), st.lists(st.integers(1, 50), max_size=60),
       st.integers(1, 40))
def test_framing_is_lossless_and_independent_of_how_bytes_arrive(data, cuts, limit):
    """However the stream is chunked, the lines are the same and nothing is lost or added."""
    chunks, pos = [], 0
    for cut in cuts:
        chunks.append(data[pos:pos + cut])
        pos += cut
    chunks.append(data[pos:])

    whole = LineFramer(limit)
    whole.feed(data)
    expected = list(whole.lines())

    framer = LineFramer(limit)
    got = feed_all(framer, chunks)
    assert got == expected
    rebuilt = b"".join(x.data if isinstance(x, LineTooLong) else x for x in got) + framer.eof()
    assert rebuilt == data
    for item in got:
        if isinstance(item, bytes):
            assert item.endswith(b"\n") and len(strip_eol(item)) <= limit
        else:
            assert len(item.data) == limit
