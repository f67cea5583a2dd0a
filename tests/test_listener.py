"""The listener's machine on real sockets: the quick guide's busy server, and the pause when
descriptors run out (tier 3)."""

import contextlib
import os
import resource
import selectors
import socket

import pytest

import reactor.listener as listener_module

from conftest import DEADLINE, recv_all, run_until
from reactor.protocols import Protocol
from reactor.loop import Reactor
from reactor.server import StreamServer
from reactor.states import LISTENER, ListenerEvent, ListenerState
from servers.sockets import open_listeners

L, LE = ListenerState, ListenerEvent


class Echo(Protocol):
    def data_received(self, conn, data):
        conn.write(data)


class Guide:
    """A StreamServer with a capacity, driven turn by turn from the test."""

    def __init__(self, capacity):
        self.reactor = Reactor()
        socks = open_listeners("127.0.0.1", 0)
        self.address = socks[0].getsockname()
        self.server = StreamServer(self.reactor, socks, Echo, capacity=capacity,
                                   reject_message=b"busy\n")
        self.seen = []
        self.server.listener._tracer = lambda _who, old, ev, new: self.seen.append((old, ev, new))
        self.clients = []

    def connect(self):
        sock = socket.create_connection(self.address)
        self.clients.append(sock)
        return sock

    def until(self, condition):
        run_until(self.reactor, condition)

    def state(self):
        return self.server.listener.state

    def close(self):
        self.server.abort_all("test over")
        self.server.listener.shutdown()
        self.reactor._close_released()
        self.reactor.close()
        for sock in self.clients:
            sock.close()


@pytest.fixture
def guide():
    made = []

    def make(capacity):
        g = Guide(capacity)
        made.append(g)
        return g

    yield make
    for g in made:
        g.close()


def test_capacity_one_is_the_quick_guides_idle_busy_server(guide):
    """Serving one client, the server answers every other one `busy\\n` and EOF; when it leaves, the next is served."""
    g = guide(1)
    first = g.connect()
    g.until(lambda: g.state() is L.BUSY)
    second = g.connect()
    g.until(lambda: g.server.stats.rejected_busy == 1)
    assert recv_all(second) == b"busy\n"

    first.sendall(b"still served\n")
    g.until(lambda: any(c.bytes_out for c in g.server.connections))
    assert first.recv(100) == b"still served\n"

    first.close()
    g.until(lambda: g.state() is L.IDLE)
    third = g.connect()
    third.sendall(b"my turn\n")
    g.until(lambda: any(c.bytes_out for c in g.server.connections))
    assert third.recv(100) == b"my turn\n"
    assert g.server.stats.rejected_busy == 1


def scenario_rows(g):
    """Drive a capacity-1 listener through every row of its table."""
    a = g.connect()
    g.until(lambda: g.state() is L.BUSY)             # IDLE-CONNECTION, IDLE-FULL
    b = g.connect()
    g.until(lambda: g.server.stats.rejected_busy == 1)   # BUSY-CONNECTION
    a.close()
    g.until(lambda: g.state() is L.IDLE)             # BUSY-SLOT_FREED
    c = g.connect()
    g.until(lambda: g.state() is L.BUSY)
    g.server.listener.shutdown()                    # BUSY-SHUTDOWN
    c.close()
    g.until(lambda: not g.server.connections)       # CLOSED-SLOT_FREED
    recv_all(b)


@contextlib.contextmanager
def no_descriptor_left():
    """Lower RLIMIT_NOFILE to the lowest free descriptor: the next accept() fails with EMFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.dup(0)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def scenario_exhausted_while_idle(g):
    """IDLE-EXHAUSTED, PAUSED-SLOT_FREED, PAUSED-RETRY; returns the client that waited."""
    first = g.connect()
    g.until(lambda: len(g.server.connections) == 1)
    waiting = g.connect()
    with no_descriptor_left():
        g.until(lambda: g.server.listener.paused)
        assert g.server.listener.emfile_events == 1
        assert g.reactor.events(g.server.listener.sockets[0]) == 0
        for _ in range(20):         # paused: nothing wakes the loop, nothing is retried
            g.reactor.run_once(timeout=0)
        assert g.server.listener.emfile_events == 1
        first.close()               # the server sees EOF and releases its descriptor
        g.until(lambda: g.server.stats.accepted == 2)
    assert not g.server.listener.paused
    return waiting


def scenario_exhausted_while_busy(g):
    """BUSY-EXHAUSTED, then PAUSED-RETRY with every slot still taken; returns the third client."""
    g.connect()
    g.until(lambda: g.state() is L.BUSY)
    rejected = g.connect()
    g.until(lambda: g.server.stats.rejected_busy == 1)  # draining until its EOF: a descriptor held
    waiting = g.connect()
    with no_descriptor_left():
        g.until(lambda: g.server.listener.paused)       # accepting it to reject it failed
        rejected.close()            # the rejected connection ends and frees its descriptor
        g.until(lambda: g.server.stats.rejected_busy + g.server.stats.accepted == 3)
    return waiting


def scenario_shutdown_while_paused(g):
    """PAUSED-SHUTDOWN."""
    g.connect()
    g.until(lambda: len(g.server.connections) == 1)
    g.connect()
    with no_descriptor_left():
        g.until(lambda: g.server.listener.paused)
    g.server.listener.shutdown()
    assert g.state() is L.CLOSED


def test_every_listener_row_is_reached_by_real_clients(guide, monkeypatch):
    """Each transition of the listener happens for the reason it names, on real connections."""
    monkeypatch.setattr(listener_module, "ACCEPT_RETRY_DELAY", 3600.0)
    guides = [guide(1), guide(2), guide(None), guide(1), guide(None), guide(1)]
    scenario_rows(guides[0])
    g2 = guides[1]
    d = g2.connect()
    g2.until(lambda: g2.server.connections)
    d.close()
    g2.until(lambda: not g2.server.connections)     # IDLE-SLOT_FREED
    g2.server.listener.shutdown()                   # IDLE-SHUTDOWN
    scenario_exhausted_while_idle(guides[2])
    scenario_exhausted_while_busy(guides[3])
    scenario_shutdown_while_paused(guides[4])
    g6 = guides[5]
    held = g6.connect()
    g6.until(lambda: g6.server.listener.state is ListenerState.BUSY)
    g6.server.listener.set_capacity(2)              # BUSY-RESIZED: the monitor's control
    assert g6.server.listener.state is ListenerState.IDLE
    g6.server.listener.set_capacity(1)              # IDLE-FULL again: lowered to the clients
    assert g6.server.listener.state is ListenerState.BUSY
    held.close()
    seen = {(old, ev) for g in guides for old, ev, _new in g.seen}
    assert seen == set(LISTENER.table)


def test_a_closed_listener_refuses_new_clients(guide):
    """After shutdown, the port no longer accepts: clients get ECONNREFUSED, not a hang."""
    g = guide(None)
    g.server.listener.shutdown()
    g.reactor.run_once(0)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(g.address, timeout=5)


def test_out_of_descriptors_pauses_accepting_until_a_client_leaves(guide, monkeypatch):
    """At EMFILE the listener stops watching the listening socket (no spin) and starts again
    as soon as one of its clients releases a descriptor, without waiting out the retry delay."""
    monkeypatch.setattr(listener_module, "ACCEPT_RETRY_DELAY", 3600.0)
    g = guide(None)
    waiting = scenario_exhausted_while_idle(g)
    waiting.sendall(b"served\n")
    g.until(lambda: any(c.bytes_out for c in g.server.connections))
    assert waiting.recv(100) == b"served\n"


def test_at_capacity_and_out_of_descriptors_clients_are_turned_away_not_admitted(guide,
                                                                                  monkeypatch):
    """A full server that runs out of descriptors while turning a client away pauses, and once
    a descriptor is back it answers that client `busy\\n`: the pause never admits past capacity."""
    monkeypatch.setattr(listener_module, "ACCEPT_RETRY_DELAY", 3600.0)
    g = guide(1)
    waiting = scenario_exhausted_while_busy(g)
    assert (g.server.stats.accepted, g.server.stats.rejected_busy) == (1, 2)
    assert recv_all(waiting) == b"busy\n" and g.state() is L.BUSY
    assert (L.BUSY, LE.EXHAUSTED, L.PAUSED) in g.seen and (L.PAUSED, LE.RETRY, L.IDLE) in g.seen


def test_stopping_while_paused_closes_the_port_and_drops_the_retry(guide, monkeypatch):
    """A server stopped while out of descriptors closes its port at once, and the retry it had
    planned never fires on the closed listener."""
    monkeypatch.setattr(listener_module, "ACCEPT_RETRY_DELAY", 0.05)
    g = guide(None)
    scenario_shutdown_while_paused(g)
    for _ in range(10):             # well past the retry delay
        g.reactor.run_once(timeout=0.02)
    assert g.state() is L.CLOSED
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(g.address, timeout=5)


class ConnectionsFirst(selectors.DefaultSelector):
    """A selector that reports connections before listening sockets in each turn."""

    def select(self, timeout=None):
        ready = super().select(timeout)
        ready.sort(key=lambda item: isinstance(item[0].data, listener_module._Acceptor))
        return ready


def test_a_descriptor_freed_earlier_in_the_same_turn_is_retried_at_once(monkeypatch):
    """When a client leaves in the same turn as accept runs out of descriptors (its socket is
    only closed at the end of the turn), the next client is accepted in the next turn, not
    after the retry delay."""
    monkeypatch.setattr(listener_module, "ACCEPT_RETRY_DELAY", 3600.0)
    reactor = Reactor(ConnectionsFirst())
    socks = open_listeners("127.0.0.1", 0)
    server = StreamServer(reactor, socks, Echo)
    first = socket.create_connection(socks[0].getsockname())
    waiting = socket.socket()       # made now: no descriptor is free later
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        run_until(reactor, lambda: server.stats.accepted == 1)
        lowest_free = os.dup(0)
        os.close(lowest_free)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
        waiting.connect(socks[0].getsockname())
        first.shutdown(socket.SHUT_WR)  # EOF for the server, without freeing our descriptor
        reactor.run_once(timeout=DEADLINE)  # release #1, then accept: EMFILE
        assert server.listener.emfile_events == 1
        run_until(reactor, lambda: server.stats.accepted == 2, timeout=5)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        first.close()
        waiting.close()
        server.abort_all("test over")
        server.listener.shutdown()
        reactor._close_released()
        reactor.close()
