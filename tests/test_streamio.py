"""UNP's writen/readn/readline on the shared framer (tiers 1 and 2)."""

import socket
import threading

from wire.framing import LineTooLong
from wire.streamio import Reader, writen


class Trickle:
    """A fake socket whose send takes at most `step` bytes, as a full kernel buffer does."""

    def __init__(self, step):
        self.step = step
        self.received = bytearray()
        self.calls = 0

    def send(self, data):
        self.calls += 1
        piece = bytes(data[:self.step])
        self.received += piece
        return len(piece)


def test_writen_keeps_sending_after_short_writes():
    """The quick guide's answer 8: send may take fewer bytes; writen still delivers all of them."""
    fake = Trickle(7)
    data = bytes(range(256)) * 3
    assert writen(fake, data) == len(data)
    assert bytes(fake.received) == data
    assert fake.calls == -(-len(data) // 7)


def test_readline_and_readn_share_one_buffer_over_a_real_socket():
    """Lines and fixed-size reads can be mixed on one connection without losing bytes between them."""
    a, b = socket.socketpair()
    with a, b:
        def sender():
            for piece in (b"fir", b"st\r\nsec", b"ond\n\x00\x01\x02", b"\x03tail"):
                b.sendall(piece)
            b.shutdown(socket.SHUT_WR)

        thread = threading.Thread(target=sender)
        thread.start()
        reader = Reader(a)
        assert reader.readline() == b"first\r\n"
        assert reader.readline() == b"second\n"
        assert reader.readn(4) == b"\x00\x01\x02\x03"
        assert reader.readline() == b"tail"     # the last line, unterminated, at EOF
        assert reader.readline() == b""
        assert reader.readn(3) == b""
        thread.join()


def test_readn_returns_short_only_at_eof():
    """readn(n) gives exactly n bytes unless the peer closed first; then what there was."""
    a, b = socket.socketpair()
    with a, b:
        b.sendall(b"abc")
        b.shutdown(socket.SHUT_WR)
        assert Reader(a).readn(10) == b"abc"


def test_readline_reports_an_over_long_line():
    """A blocking server can refuse an endless line instead of reading it into memory."""
    a, b = socket.socketpair()
    with a, b:
        b.sendall(b"x" * 50 + b"\n")
        assert Reader(a, max_line=20).readline() == LineTooLong(b"x" * 20, 20)
