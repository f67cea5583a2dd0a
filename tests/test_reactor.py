"""The event loop itself: sleeping, waking, timers, signals, deferred close (tier 3)."""

import os
import selectors
import signal
import socket
import threading

import pytest

from conftest import DEADLINE
from reactor.loop import EVENT_READ, Reactor


class RecordingSelector:
    """Wraps the real selector to record the timeout of every select() call."""

    def __init__(self, inner):
        self.inner = inner
        self.timeouts = []
        self.entered = threading.Event()

    def select(self, timeout=None):
        self.timeouts.append(timeout)
        self.entered.set()
        return self.inner.select(timeout)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture
def reactor():
    r = Reactor()
    yield r
    r.close()


def test_idle_loop_sleeps_without_timeout_until_a_signal_wakes_it():
    """An idle server makes no periodic wakeups (no 0.5 s poll) and still reacts to SIGTERM at once."""
    selector = RecordingSelector(selectors.DefaultSelector())
    r = Reactor(selector)
    got = []
    r.add_signal_handler(signal.SIGUSR1, lambda signum: (got.append(signum), r.stop()))
    try:
        sender = threading.Thread(
            target=lambda: selector.entered.wait(DEADLINE) and os.kill(os.getpid(), signal.SIGUSR1))
        sender.start()
        r.run()
        sender.join()
    finally:
        r.close()
    assert got == [signal.SIGUSR1]
    assert selector.timeouts == [None]       # one select, with no timeout: woken by the signal


def test_signal_handlers_are_restored_on_close():
    """A loop leaves SIGINT as it found it, so Ctrl-C works again after it ends."""
    before = signal.getsignal(signal.SIGINT)
    r = Reactor()
    r.add_signal_handler(signal.SIGINT, lambda s: None)
    assert signal.getsignal(signal.SIGINT) is not before
    r.close()
    assert signal.getsignal(signal.SIGINT) is before
    assert signal.set_wakeup_fd(-1) == -1    # no wakeup fd left behind


def test_stop_from_a_callback_ends_run(reactor):
    """stop() inside the loop returns from run() after the current turn."""
    reactor.call_later(0.01, reactor.stop)
    reactor.run()


def test_timers_run_in_deadline_order_and_cancel_works(reactor):
    """Timeouts fire in the order of their deadlines; a cancelled one never fires."""
    fired = []
    reactor.call_later(0.03, fired.append, "late")
    reactor.call_later(0.01, fired.append, "early")
    reactor.call_later(0.02, fired.append, "cancelled").cancel()
    reactor.call_later(0.05, reactor.stop)
    reactor.run()
    assert fired == ["early", "late"]


def test_a_timer_cancelled_by_an_earlier_one_of_the_same_batch_does_not_run(reactor):
    """Two timers due together: when the first cancels the second, the second never runs."""
    fired = []
    past = reactor.time() - 1.0            # both already due: one batch
    second = reactor.call_at(past + 0.5, fired.append, "second")
    reactor.call_at(past, lambda: (fired.append("first"), second.cancel()))
    reactor.run_once(timeout=0)
    assert fired == ["first"]


def test_the_nearest_timer_bounds_the_sleep():
    """With a timer pending, select() sleeps no longer than until that timer."""
    selector = RecordingSelector(selectors.DefaultSelector())
    r = Reactor(selector)
    fired = []
    try:
        r.call_later(0.05, fired.append, "due")
        r.run_once(timeout=0)
        assert selector.timeouts == [0] and fired == []
        while not fired:
            r.run_once(timeout=60)
        assert all(0 <= t <= 0.05 for t in selector.timeouts[1:])
    finally:
        r.close()


def test_sockets_are_closed_after_dispatch_not_during_it(reactor):
    """A handler that ends its socket does not pull it from under the loop: it closes after the turn."""
    a, b = socket.socketpair()
    seen = []

    class Handler:
        def on_readable(self):
            seen.append(a.recv(10))
            reactor.close_later(a)
            assert a.fileno() != -1       # still open during dispatch

        def on_writable(self):
            pass

    reactor.register(a, EVENT_READ, Handler())
    fd = a.fileno()
    b.sendall(b"x")
    reactor.run_once(timeout=DEADLINE)
    assert seen == [b"x"]
    assert a.fileno() == -1
    assert reactor.events(fd) == 0          # unregistered before it was closed
    b.close()


@pytest.mark.parametrize("selector_class", ["EpollSelector", "PollSelector", "SelectSelector"])
def test_every_selector_dispatches_the_same_way(selector_class):
    """Whatever the selector (epoll has its own faster path), each ready socket's handler runs
    read then write, only for the events it asked for, and a hang-up wakes its reader."""
    r = Reactor(getattr(selectors, selector_class)())
    a, a_peer = socket.socketpair()
    b, b_peer = socket.socketpair()
    calls = []

    class Handler:
        def __init__(self, name, sock):
            self.name, self.sock = name, sock

        def on_readable(self):
            calls.append((self.name, "read", self.sock.recv(10)))

        def on_writable(self):
            calls.append((self.name, "write"))

    try:
        r.register(a, EVENT_READ | selectors.EVENT_WRITE, Handler("a", a))
        r.register(b, EVENT_READ, Handler("b", b))
        a_peer.sendall(b"x")
        b_peer.close()        # b's peer hangs up: readable (EOF), never "writable" for b
        r.run_once(timeout=DEADLINE)
        assert sorted(calls) == [("a", "read", b"x"), ("a", "write"), ("b", "read", b"")]
        assert calls.index(("a", "read", b"x")) < calls.index(("a", "write"))
        calls.clear()
        r.modify(a, EVENT_READ, Handler("a2", a))    # the new handler and mask take over
        a_peer.sendall(b"y")
        r.unregister(b)
        r.run_once(timeout=DEADLINE)
        assert calls == [("a2", "read", b"y")]
    finally:
        r.close()
        for s in (a, a_peer, b):
            s.close()


@pytest.mark.parametrize("selector_class", ["EpollSelector", "PollSelector", "SelectSelector"])
def test_a_handler_ended_earlier_in_the_same_turn_is_not_called(selector_class):
    """Whatever the selector, a handler that an earlier handler of the same turn unregistered,
    or whose interest it dropped, gets no call for the stale event (Redis's ae.c re-checks too)."""
    r = Reactor(getattr(selectors, selector_class)())
    pairs = [socket.socketpair() for _ in range(2)]
    calls = []

    class Handler:
        """Both sockets are ready to read and write; whichever runs first ends the other,
        and drops its own WRITE interest from its read handler."""

        def __init__(self, name, sock, other):
            self.name, self.sock, self.other = name, sock, other

        def on_readable(self):
            calls.append((self.name, "read"))
            self.sock.recv(10)
            r.unregister(self.other)
            r.modify(self.sock, EVENT_READ, self)

        def on_writable(self):
            calls.append((self.name, "write"))

    (a, a_peer), (b, b_peer) = pairs
    try:
        r.register(a, EVENT_READ | selectors.EVENT_WRITE, Handler("a", a, b))
        r.register(b, EVENT_READ | selectors.EVENT_WRITE, Handler("b", b, a))
        a_peer.sendall(b"x")
        b_peer.sendall(b"y")
        r.run_once(timeout=DEADLINE)
        assert calls in ([("a", "read")], [("b", "read")]), calls
    finally:
        r.close()
        for pair in pairs:
            for s in pair:
                s.close()


@pytest.mark.parametrize("selector_class", ["EpollSelector", "PollSelector", "SelectSelector"])
def test_a_socket_closed_before_it_is_unregistered_leaves_nothing_behind(selector_class):
    """Closing a socket and then unregistering it works on every selector, and a new socket
    that gets the same descriptor number can be registered."""
    r = Reactor(getattr(selectors, selector_class)())
    a, b = socket.socketpair()
    try:
        number = a.fileno()
        r.register(a, EVENT_READ, None)
        a.close()
        r.unregister(a)
        assert r.events(number) == 0
        c, d = socket.socketpair()
        with c, d:
            r.register(c, EVENT_READ, None)         # whatever number it got
            r.unregister(c)
        with pytest.raises((KeyError, ValueError)):     # selectors' own: ValueError
            r.unregister(a)
    finally:
        r.close()
        b.close()


# --- a blocking call on the loop's thread, other threads, a forked child -----

class Cut(BaseException):
    """Raised by a callback to end a blocking call, as the iterative server's grace period does."""


def test_a_signal_during_a_blocking_call_runs_its_callback_at_once(reactor):
    """While the iterative server's thread is inside a blocking recv, SIGTERM still reaches the
    loop's callback, and the callback can end the call; a signal noted just before the call
    (as the client was accepted) runs as the call starts, not after the client leaves."""
    seen = []

    def on_term(signum):
        seen.append(signum)
        raise Cut()

    reactor.add_signal_handler(signal.SIGTERM, on_term)
    a, b = socket.socketpair()
    try:
        os.kill(os.getpid(), signal.SIGTERM)     # noted now, dispatched as the call starts
        with pytest.raises(Cut):
            reactor.run_blocking(a.recv, 1)      # nobody ever writes to b
    finally:
        a.close()
        b.close()
    assert seen == [signal.SIGTERM]
    a, b = socket.socketpair()
    try:
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
        with pytest.raises(Cut):
            reactor.run_blocking(a.recv, 1)      # arrives while recv blocks
    finally:
        a.close()
        b.close()
    assert seen == [signal.SIGTERM, signal.SIGTERM]


def test_a_timer_due_during_a_blocking_call_fires_and_can_end_it(reactor):
    """The iterative server's grace period is a loop timer like any other: it fires while the
    loop's thread blocks in recv, and ends that client."""
    fired = []

    def grace_over():
        fired.append(reactor.time())
        raise Cut()

    before = signal.getsignal(signal.SIGALRM), signal.getitimer(signal.ITIMER_REAL)[0]
    a, b = socket.socketpair()
    try:
        reactor.call_later(0.05, grace_over)
        later = reactor.call_later(0.05, fired.append, "due with it")
        with pytest.raises(Cut):
            reactor.run_blocking(a.recv, 1)
    finally:
        a.close()
        b.close()
    assert len(fired) == 1
    # The timer due in the same batch was not lost with the exception: it runs next turn.
    assert not later.cancelled
    reactor.call_later(DEADLINE, reactor.stop)
    reactor.call_later(0.01, reactor.stop)
    reactor.run()
    assert fired[1:] == ["due with it"]
    # SIGALRM given back, and an alarm that was set before (pytest-timeout's) still set.
    assert signal.getsignal(signal.SIGALRM) is before[0]
    assert bool(signal.getitimer(signal.ITIMER_REAL)[0]) == bool(before[1])


def test_another_thread_hands_work_to_the_loop(reactor):
    """A thread-per-connection server's threads tell the loop they are done; the loop runs
    the callback on its own thread, in its next turn."""
    ran_on = []

    def done(value):
        ran_on.append((value, threading.get_ident()))
        reactor.stop()

    worker = threading.Thread(target=reactor.call_soon_threadsafe, args=(done, 42))
    worker.start()
    worker.join(DEADLINE)
    reactor.call_later(DEADLINE, reactor.stop)     # the hang guard
    reactor.run()
    assert ran_on == [(42, threading.get_ident())]


def test_a_forked_child_lets_go_of_the_loop_without_changing_the_parents(reactor):
    """The fork server's child closes the loop it inherited; the parent's loop still sees its
    sockets (the epoll instance is shared, so nothing may be unregistered from it)."""
    a, b = socket.socketpair()
    got = []

    class Reader:
        def on_readable(self):
            got.append(a.recv(16))
            reactor.stop()

        def on_writable(self):
            pass

    reactor.register(a, EVENT_READ, Reader())
    reactor.add_signal_handler(signal.SIGUSR1, lambda signum: None)
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            reactor.close_in_child()
            status = 0 if signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    b.send(b"still here")
    reactor.call_later(DEADLINE, reactor.stop)
    reactor.run()
    assert got == [b"still here"]
    reactor.unregister(a)
    a.close()
    b.close()
