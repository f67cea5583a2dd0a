"""The reactor as a library: a protocol's exceptions, write backpressure and the output limit,
timers and datagram handlers that fail (tier 3: a real loop on loopback, in this process)."""

import logging
import socket

import pytest

from conftest import DEADLINE, ThreadedServer, recv_exactly, run_until, stuff
from reactor.connection import OUTPUT_LIMIT, PROTOCOL_ERROR
from reactor.protocols import Protocol
from reactor.datagram import DatagramEndpoint, DatagramProtocol
from reactor.loop import Reactor
from reactor.server import StreamServer
from reactor.states import HIGH_WATER, LOW_WATER, IllegalTransition

CALLBACKS = ["protocol_factory", "connection_made", "data_received", "eof_received",
             "pause_writing", "resume_writing", "connection_lost"]


class Boom(Exception):
    """What a buggy protocol raises."""


class Faulty(Protocol):
    """An echo protocol with one bug: ``where`` raises, on the first connection only."""

    def __init__(self, where, ident):
        self.where = where
        self.first = ident == 1

    def _maybe_fail(self, callback):
        if self.first and self.where == callback:
            raise Boom(f"bug in {callback}")

    def connection_made(self, conn):
        self._maybe_fail("connection_made")

    def data_received(self, conn, data):
        conn.write(data)
        self._maybe_fail("data_received")

    def eof_received(self, conn):
        self._maybe_fail("eof_received")

    def pause_writing(self, conn):
        self._maybe_fail("pause_writing")

    def resume_writing(self, conn):
        self._maybe_fail("resume_writing")

    def connection_lost(self, conn, reason):
        self._maybe_fail("connection_lost")


def faulty_factory(where):
    made = iter(range(1, 1 << 30))

    def factory():
        ident = next(made)
        if where == "protocol_factory" and ident == 1:
            raise Boom("bug in protocol_factory")
        return Faulty(where, ident)
    return factory


def trigger(where, sock):
    """Make the first connection reach the callback ``where``; return when it should have."""
    if where == "data_received":
        sock.sendall(b"boom")
    elif where == "eof_received":
        sock.shutdown(socket.SHUT_WR)
    elif where == "connection_lost":
        sock.sendall(b"bye")
        assert recv_exactly(sock, 3) == b"bye"
        sock.shutdown(socket.SHUT_WR)
    elif where in ("pause_writing", "resume_writing"):
        # A client that sends without reading: the echoes pile up past the high-water mark.
        try:
            stuff(sock, 64 * 1024 * 1024)
        except OSError:
            return      # reset: pause_writing raised and the server dropped us
        if where == "resume_writing":
            try:        # read, so the buffer drains to the low mark, until the server ends us
                while sock.recv(1 << 20):
                    pass
            except OSError:
                pass    # the reset that ended us


@pytest.mark.parametrize("where", CALLBACKS)
def test_a_protocol_exception_costs_its_own_connection_only(where, caplog):
    """Whichever callback raises, that one client is dropped (reason 'protocol error'), the
    error is logged once at ERROR with its traceback and counted, and the next client is
    served as if nothing had happened."""
    caplog.set_level(logging.INFO, logger="selectlab")
    srv = ThreadedServer(faulty_factory(where))
    try:
        first = socket.create_connection(srv.address, timeout=DEADLINE)
        with first:
            trigger(where, first)
            srv.wait_for(lambda: srv.server.stats.closed >= 1, "the faulty connection's end")
        with socket.create_connection(srv.address, timeout=DEADLINE) as second:
            second.sendall(b"still served")
            assert recv_exactly(second, 12) == b"still served"
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        assert errors[0].exc_info and errors[0].exc_info[0] is Boom
        expected = "connection_made" if where == "protocol_factory" else where
        assert expected in errors[0].getMessage()
        assert srv.server.stats.protocol_errors == 1
        assert srv.server.stats_snapshot()["protocol_errors"] == 1
    finally:
        srv.stop()
    closed = [r.getMessage() for r in caplog.records if " closed (" in r.getMessage()]
    assert PROTOCOL_ERROR in closed[0], closed


def test_an_illegal_transition_is_not_contained():
    """Not a catch-all: a broken state machine (the reactor's own bug) stops the loop loudly."""
    class Broken(Protocol):
        def data_received(self, conn, data):
            raise IllegalTransition("connection", conn.state, conn.state)

    srv = ThreadedServer(Broken)
    with socket.create_connection(srv.address, timeout=DEADLINE) as sock:
        sock.sendall(b"x")
        srv.thread.join(DEADLINE)
    with pytest.raises(IllegalTransition):
        srv.stop()


def test_an_applications_own_illegal_transition_is_contained(caplog):
    """A protocol's own state machine built like the reactor's (the Hello session's) raising
    IllegalTransition is that protocol's bug: its connection is aborted, the server goes on."""
    from wire.hello import HelloEvent, HelloState

    class OwnMachine(Protocol):
        def data_received(self, conn, data):
            raise IllegalTransition("hello session", HelloState.DONE, HelloEvent.MESSAGE)

    srv = ThreadedServer(OwnMachine)
    try:
        with socket.create_connection(srv.address, timeout=DEADLINE) as sock:
            sock.sendall(b"x")
            srv.wait_for(lambda: srv.server.stats.protocol_errors >= 1, "the error, contained")
        assert srv.thread.is_alive()
    finally:
        srv.stop()


# --- write backpressure and the output limit --------------------------------

class Relay(Protocol):
    """The first connection is the sink; what any other connection sends is written to it.

    The sink never reads its own input, and records the marks it is told about."""

    def __init__(self, room):
        self.room = room

    def connection_made(self, conn):
        if self.room.sink is None:
            self.room.sink = conn

    def data_received(self, conn, data):
        if conn is not self.room.sink and not self.room.sink.is_closing():
            self.room.sink.write(data)
            self.room.peak = max(self.room.peak, self.room.sink.buffered)

    def pause_writing(self, conn):
        self.room.flow.append(("pause", conn.buffered))

    def resume_writing(self, conn):
        self.room.flow.append(("resume", conn.buffered))

    def connection_lost(self, conn, reason):
        if conn is self.room.sink:
            self.room.sink_reason = reason


class Room:
    def __init__(self):
        self.sink = None
        self.peak = 0
        self.flow = []
        self.sink_reason = None


def test_a_reader_that_never_reads_is_cut_off_at_the_output_limit():
    """A relay writes another client's bytes to one that never reads: its buffer grows to the
    limit, never past it, pause_writing fires when it crosses the high-water mark, and it is
    aborted with 'output limit' and counted; the sender is not hurt."""
    limit = 1 << 20
    room = Room()
    srv = ThreadedServer(lambda: Relay(room), max_output=limit)
    try:
        sink = socket.socket()
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sink.connect(srv.address)
        srv.wait_for(lambda: room.sink is not None, "the sink's connection")
        with socket.create_connection(srv.address, timeout=DEADLINE) as sender, sink:
            chunk = b"r" * 65536
            for _ in range(4 * limit // len(chunk) + 1024):    # the limit, and kernel buffers
                if room.sink_reason is not None:
                    break
                sender.sendall(chunk)
            srv.wait_for(lambda: room.sink_reason is not None, "the sink cut off")
            assert room.sink_reason == OUTPUT_LIMIT
            assert 0 < room.peak <= limit
            assert room.flow[0][0] == "pause" and room.flow[0][1] > HIGH_WATER
            assert srv.server.stats.output_limit_disconnections == 1
            assert [c.state.name for c in srv.server.connections] == ["IDLE"]  # the sender
    finally:
        srv.stop()


def test_pause_and_resume_writing_fire_at_the_marks():
    """pause_writing once the buffer is above the high-water mark, resume_writing once it is
    back down to the low-water mark, in that order, each once per crossing."""
    room = Room()
    srv = ThreadedServer(lambda: Relay(room))
    try:
        sink = socket.socket()
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sink.connect(srv.address)
        sink.settimeout(DEADLINE)
        srv.wait_for(lambda: room.sink is not None, "the sink's connection")
        with socket.create_connection(srv.address, timeout=DEADLINE) as sender, sink:
            # More than the kernel's buffers hold on the way to the sink (a few MB at
            # most), less than the output limit (8 MiB).
            total = 6 * 1024 * 1024
            sender.sendall(b"m" * total)
            srv.wait_for(lambda: room.flow, "pause_writing")
            got = 0
            while got < total:
                data = sink.recv(1 << 20)
                assert data
                got += len(data)
            # The last bytes can reach the sink before the loop's thread, back
            # from its send, sees the buffer below the low-water mark.
            srv.wait_for(lambda: len(room.flow) >= 2, "resume_writing")
        assert room.flow[0][0] == "pause" and room.flow[0][1] > HIGH_WATER
        assert room.flow[1][0] == "resume" and room.flow[1][1] <= LOW_WATER
        assert [f for f, _ in room.flow] == ["pause", "resume"]
    finally:
        srv.stop()


# --- timers and datagrams ---------------------------------------------------

def test_a_failing_timer_is_logged_counted_and_the_loop_goes_on(caplog):
    """A call_later callback that raises: one ERROR with its traceback, callback_errors counts
    it, and the timers due after it still run."""
    reactor = Reactor()
    fired = []
    try:
        def bad():
            raise Boom("timer bug")
        reactor.call_later(0, bad)
        reactor.call_later(0.001, fired.append, "after")
        run_until(reactor, lambda: fired)
    finally:
        reactor.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info[0] is Boom
    assert reactor.callback_errors == 1 and fired == ["after"]


def test_the_reactors_own_timers_are_not_contained():
    """A failure in one of the loop's own timers is a bug of the loop: it propagates."""
    reactor = Reactor()
    try:
        def bad():
            raise Boom("loop bug")
        reactor._call_later(0, bad)
        with pytest.raises(Boom):
            reactor.run_once(timeout=0.01)
    finally:
        reactor.close()


def test_a_failing_datagram_handler_costs_one_datagram(caplog):
    """datagram_received raising drops that datagram only: logged, counted, and the next
    datagram is answered."""
    class Flaky(DatagramProtocol):
        def datagram_received(self, endpoint, data, addr):
            if data == b"boom":
                raise Boom("datagram bug")
            endpoint.sendto(data, addr)

    reactor = Reactor()
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    endpoint = DatagramEndpoint(reactor, server, Flaky())
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(DEADLINE)
    try:
        client.sendto(b"boom", server.getsockname())
        client.sendto(b"fine", server.getsockname())
        run_until(reactor, lambda: endpoint.stats.datagrams_out)
        assert client.recv(100) == b"fine"
        assert endpoint.stats.protocol_errors == 1
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and errors[0].exc_info[0] is Boom
    finally:
        endpoint.close()
        reactor.close()
        client.close()


def test_a_server_built_from_code_reaches_its_counters():
    """The library use: open a listener, build a StreamServer, serve, read its counters, stop."""
    reactor = Reactor()
    listener = socket.create_server(("127.0.0.1", 0))
    server = StreamServer(reactor, [listener], lambda: Echo())
    port = server.sockets[0].getsockname()[1]
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as client:
        client.sendall(b"ping")
        run_until(reactor, lambda: server.stats_snapshot()["bytes_out"] == 4)
        assert client.recv(4) == b"ping"
    stopped = []
    server.shutdown(1.0, lambda: stopped.append(True))
    run_until(reactor, lambda: stopped)
    reactor.close()
    counters = server.stats_snapshot()
    assert (counters["accepted"], counters["closed"], counters["active"]) == (1, 1, 0)


class Echo(Protocol):
    def data_received(self, conn, data):
        conn.write(data)
