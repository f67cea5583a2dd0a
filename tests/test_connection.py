"""A Connection on a real loopback TCP pair: every transition reached through real socket behaviour (tier 2)."""

import functools
import logging
import selectors
import socket

import pytest

from conftest import DEADLINE, reset, run_until, tcp_pair
from reactor.connection import Connection
from reactor.protocols import Protocol
from reactor.loop import Reactor
from reactor.states import CONNECTION, HIGH_WATER, LOW_WATER, ConnEvent, ConnState

IDLE, BUSY, PAUSED = ConnState.IDLE, ConnState.BUSY, ConnState.PAUSED
FLUSHING, DRAINING, CLOSED = ConnState.FLUSHING, ConnState.DRAINING, ConnState.CLOSED
E = ConnEvent
CHUNK = 16 * 1024


class Recorder(Protocol):
    def __init__(self):
        self.data = bytearray()
        self.eof = False
        self.lost = None
        self.flow = []              # ("pause" | "resume", bytes buffered at that moment)

    def data_received(self, conn, data):
        self.data += data

    def eof_received(self, conn):
        self.eof = True

    def pause_writing(self, conn):
        self.flow.append(("pause", conn.buffered))

    def resume_writing(self, conn):
        self.flow.append(("resume", conn.buffered))

    def connection_lost(self, conn, reason):
        self.lost = reason


class Harness:
    """Our side is a Connection on its own Reactor; ``peer`` is the client, driven by the test."""

    def __init__(self):
        self.reactor = Reactor()
        ours, self.peer = tcp_pair()
        # Small buffers on both sides, so that "the kernel refused part of a send" comes soon.
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ours.setblocking(False)
        self.protocol = Recorder()
        self.seen = []
        self.written = bytearray()
        self.received = bytearray()     # what the peer has read
        self.conn = Connection(self.reactor, ours, "peer", self.protocol,
                               tracer=lambda c, old, ev, new: self.seen.append((old, ev, new)))

    def turn_until(self, condition):
        run_until(self.reactor, condition)

    def write(self, data):
        self.written += data
        self.conn.write(data)

    def make_busy(self):
        """Write until the kernel refuses part of it; the buffer is then at most one chunk."""
        pattern = bytes(range(256)) * (CHUNK // 256)
        for _ in range(64 * 1024 * 1024 // CHUNK):
            self.write(pattern)
            if self.conn.state is BUSY:
                assert self.conn.buffered <= CHUNK
                return
        raise AssertionError("64 MiB written and the kernel never refused any")

    def make_paused(self):
        """Write until more than the high-water mark is buffered."""
        self.make_busy()
        while self.conn.state is BUSY:
            self.write(b"x" * CHUNK)
        assert self.conn.state is PAUSED

    def drain_peer(self):
        """Read what the peer can without blocking; True once it has seen EOF."""
        self.peer.setblocking(False)
        try:
            while True:
                data = self.peer.recv(1 << 20)
                if not data:
                    return True
                self.received += data
        except BlockingIOError:
            return False
        finally:
            self.peer.settimeout(DEADLINE)

    def mask(self):
        return self.reactor.events(self.conn.sock)

    def close(self):
        self.conn.abort("test over")
        self.reactor._close_released()
        self.reactor.close()
        self.peer.close()


@pytest.fixture
def h():
    harness = Harness()
    yield harness
    harness.close()


# --- one scenario per row of CONNECTION.table --------------------------------

def idle_output_pending(h):
    h.make_busy()


def idle_peer_eof(h):
    h.peer.shutdown(socket.SHUT_WR)
    h.turn_until(lambda: h.conn.state is CLOSED)
    assert h.protocol.eof and h.protocol.lost == "peer eof"
    h.reactor.run_once(0)
    assert h.peer.recv(10) == b""          # our FIN followed theirs


def idle_close(h):
    h.conn.close()
    assert h.peer.recv(10) == b""          # half-closed: the peer sees EOF at once
    assert h.conn.state is DRAINING and h.mask() == selectors.EVENT_READ


def idle_peer_gone(h):
    reset(h.peer)
    h.peer = socket.socket()               # the fixture closes something harmless
    h.turn_until(lambda: h.conn.state is CLOSED)
    assert "ECONNRESET" in h.protocol.lost


def idle_abort(h):
    h.conn.abort("because")
    assert h.conn.state is CLOSED and h.protocol.lost == "because"


def busy_output_drained(h):
    h.make_busy()
    h.turn_until(lambda: h.drain_peer() or h.conn.state is IDLE)
    assert h.conn.state is IDLE and h.mask() == selectors.EVENT_READ


def busy_peer_eof(h):
    h.make_busy()                          # below the high-water mark: still reading
    h.peer.shutdown(socket.SHUT_WR)
    h.turn_until(lambda: h.conn.state is not BUSY)
    assert h.conn.state is FLUSHING


def busy_high_water(h):
    h.make_paused()
    assert h.mask() == selectors.EVENT_WRITE      # stopped reading
    assert h.protocol.flow == [("pause", h.conn.buffered)]
    assert HIGH_WATER < h.conn.buffered <= HIGH_WATER + CHUNK


def paused_low_water(h):
    h.make_paused()
    h.turn_until(lambda: h.drain_peer() or h.conn.state is not PAUSED)
    (_, at_pause), (resume, at_resume) = h.protocol.flow
    assert resume == "resume" and at_resume <= LOW_WATER < HIGH_WATER < at_pause
    assert h.conn.state in (BUSY, IDLE)


class ReplyOnEof(Recorder):
    """Answers the peer's EOF with more than the high-water mark (a response after the request)."""

    REPLY = bytes(range(256)) * 257         # just over the high-water mark by itself

    def eof_received(self, conn):
        super().eof_received(conn)
        self.eofs = getattr(self, "eofs", 0) + 1
        conn.write(self.REPLY)


def paused_peer_eof(h):
    h.conn.protocol = h.protocol = ReplyOnEof()
    h.make_busy()                              # the kernel's buffers are full: BUSY, reading
    h.peer.shutdown(socket.SHUT_WR)            # the reply to this EOF takes it past high water
    h.turn_until(lambda: h.drain_peer())       # until the peer reads our FIN
    assert bytes(h.received) == bytes(h.written) + ReplyOnEof.REPLY
    assert h.protocol.eofs == 1                # the EOF was answered once, not again and again


# BUSY and PAUSED (output pending, below or above the high-water mark) end the same ways.

def pending_close(state, h):
    _MAKE[state](h)
    h.conn.close()
    assert h.conn.state is FLUSHING and h.mask() == selectors.EVENT_WRITE


def pending_peer_gone(state, h):
    _MAKE[state](h)
    reset(h.peer)
    h.peer = socket.socket()
    h.turn_until(lambda: h.conn.state is CLOSED)


def pending_abort(state, h):
    _MAKE[state](h)
    paused = h.conn.state is PAUSED
    h.conn.abort()
    assert h.conn.buffered == 0
    assert [e for e, _ in h.protocol.flow] == (["pause"] if paused else [])     # no resume


def flushing_output_drained(h):
    h.make_busy()
    h.conn.close()
    h.turn_until(lambda: h.drain_peer())   # until the peer reads our FIN
    assert bytes(h.received) == bytes(h.written)   # close() delivered every byte first


def draining_peer_eof(h):
    h.conn.close()
    h.peer.close()
    h.peer = socket.socket()
    h.turn_until(lambda: h.conn.state is CLOSED)


def start_closing(h, phase, timeout=None):
    if phase is FLUSHING:       # close() with output pending; without, straight to DRAINING
        h.make_busy()
    h.conn.close(timeout)
    assert h.conn.state is phase


def closing_close(phase, h):
    start_closing(h, phase)
    h.conn.close()


def closing_peer_gone(phase, h):
    start_closing(h, phase)
    reset(h.peer)                          # a send (FLUSHING) or a recv (DRAINING) fails
    h.peer = socket.socket()
    h.turn_until(lambda: h.conn.state is CLOSED)


def closing_abort(phase, h):
    start_closing(h, phase)
    h.conn.abort()


def closing_deadline(phase, h):
    start_closing(h, phase, timeout=0.2)   # the peer neither reads nor closes
    h.turn_until(lambda: h.conn.state is CLOSED)
    assert h.protocol.lost == "closed by server, then closing deadline expired"


ROWS = {
    (IDLE, E.OUTPUT_PENDING): idle_output_pending,
    (IDLE, E.PEER_EOF): idle_peer_eof,
    (IDLE, E.CLOSE): idle_close,
    (IDLE, E.PEER_GONE): idle_peer_gone,
    (IDLE, E.ABORT): idle_abort,
    (BUSY, E.OUTPUT_DRAINED): busy_output_drained,
    (BUSY, E.PEER_EOF): busy_peer_eof,
    (BUSY, E.HIGH_WATER): busy_high_water,
    (PAUSED, E.LOW_WATER): paused_low_water,
    (PAUSED, E.PEER_EOF): paused_peer_eof,
    (FLUSHING, E.OUTPUT_DRAINED): flushing_output_drained,
    (DRAINING, E.PEER_EOF): draining_peer_eof,
}
# Rows several states share, each state reached its own way first.
_MAKE = {BUSY: lambda h: h.make_busy(), PAUSED: lambda h: h.make_paused()}
_SHARED = {
    (BUSY, PAUSED): {E.CLOSE: pending_close, E.PEER_GONE: pending_peer_gone,
                     E.ABORT: pending_abort},
    (FLUSHING, DRAINING): {E.CLOSE: closing_close, E.PEER_GONE: closing_peer_gone,
                           E.ABORT: closing_abort, E.DEADLINE: closing_deadline},
}
ROWS.update({(state, event): functools.partial(scenario, state)
             for states, scenarios in _SHARED.items() for state in states
             for event, scenario in scenarios.items()})


def test_every_row_has_a_socket_scenario():
    """No transition of the table goes untested on a real socket."""
    assert set(ROWS) == set(CONNECTION.table)


@pytest.mark.parametrize("row", list(ROWS), ids=[f"{s.name}-{e.name}" for s, e in ROWS])
def test_row_is_reached_by_real_socket_behaviour(h, row, caplog):
    """Each (state, event) happens for the socket reason it names, with no error logged."""
    ROWS[row](h)
    next_state, _action = CONNECTION.table[row]
    assert (row[0], row[1], next_state) in h.seen, h.seen
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# --- the transport path ------------------------------------------------------

def test_the_common_path_sends_at_once_with_no_transition(h):
    """A reply the kernel takes whole goes out immediately: no buffer, no state change, no modify."""
    h.write(b"hello")
    assert h.peer.recv(10) == b"hello"
    assert h.seen == [] and h.conn.buffered == 0 and h.mask() == selectors.EVENT_READ


def test_bytes_are_delivered_in_order_across_the_buffer(h):
    """Bytes written while BUSY queue behind the refused ones: the peer sees the exact stream."""
    h.make_busy()
    h.write(b"after the buffer")
    h.turn_until(lambda: h.drain_peer() or len(h.received) >= len(h.written))
    assert h.conn.state is IDLE
    assert bytes(h.received) == bytes(h.written)


def test_reading_stops_above_high_water_and_resumes_at_low_water(h):
    """A client that does not read cannot make us read (and buffer) more: its input waits in the kernel."""
    h.make_paused()
    assert h.mask() == selectors.EVENT_WRITE
    h.peer.sendall(b"more input")
    for _ in range(5):
        h.reactor.run_once(timeout=0.02)
    assert h.protocol.data == b""          # not read while above the high-water mark
    h.turn_until(lambda: h.drain_peer() or h.protocol.data)
    assert h.conn.buffered <= LOW_WATER    # reading resumed only once drained this far
    assert bytes(h.protocol.data) == b"more input"


class CloseOnEof(Recorder):
    def eof_received(self, conn):
        super().eof_received(conn)
        conn.close()


def test_closing_in_eof_received_still_flushes_everything(h):
    """A protocol that closes when the peer half-closes loses none of its pending output."""
    h.conn.protocol = h.protocol = CloseOnEof()
    h.make_busy()
    h.peer.shutdown(socket.SHUT_WR)
    h.turn_until(lambda: h.drain_peer())
    assert bytes(h.received) == bytes(h.written)


def test_a_stale_read_event_while_flushing_is_ignored(h):
    """An EOF reported in the same turn as our close() (e.g. SIGTERM) cannot cut the flush short."""
    h.make_busy()
    h.peer.shutdown(socket.SHUT_WR)
    h.conn.close()                         # FLUSHING: no longer reading
    h.conn.on_readable()                   # what the loop would dispatch from a stale select()
    assert h.conn.state is FLUSHING and h.conn.buffered
    h.turn_until(lambda: h.drain_peer())
    assert bytes(h.received) == bytes(h.written)


def test_data_and_eof_reach_the_protocol(h):
    """What the peer sends arrives whole and in order, then eof_received, then connection_lost."""
    h.peer.sendall(b"abc" * 1000)
    h.peer.shutdown(socket.SHUT_WR)
    h.turn_until(lambda: h.conn.state is CLOSED)
    assert bytes(h.protocol.data) == b"abc" * 1000
    assert h.protocol.eof and h.protocol.lost == "peer eof"


def test_writes_after_the_end_are_dropped_quietly(h):
    """A protocol that answers after the peer reset does not crash the server."""
    h.conn.abort()
    h.conn.write(b"too late")
    h.conn.close()
    assert h.conn.state is CLOSED


def test_closing_discards_input_until_the_peer_eof(h):
    """After close(), what the peer still sends is read and dropped, so our close is a FIN, not a reset."""
    h.conn.close()
    h.peer.sendall(b"ignored" * 1000)
    h.peer.shutdown(socket.SHUT_WR)
    h.turn_until(lambda: h.conn.state is CLOSED)
    assert h.protocol.data == b""
    h.reactor.run_once(0)
    assert h.peer.recv(10) == b""          # EOF, not ConnectionResetError
