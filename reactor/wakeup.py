"""The loop's wakeup socket: how signals, ``stop()`` and other threads reach a sleeping ``select()``.

One socketpair per loop.  Its read end is registered like any socket, with
:class:`Wakeup` as the handler; whatever writes a byte into the other end
wakes the loop:

* **Signals.**  ``signal.set_wakeup_fd`` makes CPython's C-level handler
  write the signal number into the socket.  Those bytes are not a reliable
  record (when the socket is full, as in a storm of SIGUSR1s, further bytes
  are dropped, and a SIGTERM among them would be lost), so the Python-level
  handler, :meth:`Wakeup.note`, which CPython runs in the main thread soon
  after, records the signal too, and the loop dispatches from that record:
  each kind of signal once per turn, however many times it arrived, none
  lost, and always between two handlers, never in the middle of one.  A
  signal noted by the time ``select()`` returns is dispatched before that
  turn's handlers, even when its byte came too late for that ``select()``:
  a SIGTERM that arrives with a client stops the server first.
  (asyncio reads *which* signals arrived from the bytes instead.)
* **stop()**, from a callback or a signal handler: one zero byte.
* **Another thread**, through :meth:`Wakeup.call_soon_threadsafe` (the
  thread-per-connection server's threads say they are done this way): the
  call is queued, a byte is written, and the loop runs it in its turn.

And one exception to "between two handlers": :meth:`Wakeup.run_blocking`
runs a blocking call on the loop's thread (the iterative server serving its
one client), during which the loop cannot wait in ``select()``.  Signals
then run their callbacks as soon as they arrive, as any Python signal
handler does, between two bytecodes of the blocking call; and an interval
timer (SIGALRM) is set for the loop's nearest timer, whose callback runs
when it is due.  A callback may raise a ``BaseException`` to end the
blocking call (the iterative server's grace period does).
"""

import collections
import logging
import signal
import socket

log = logging.getLogger("selectlab")

# Bytes read from the wakeup socket per event.  The bytes only wake the loop
# (which signals arrived is recorded separately), so a full socket loses nothing.
_READ_SIZE = 4096


class Wakeup:
    """The read end of the wakeup socketpair as a handler, and the loop's signal inbox."""

    def __init__(self, reactor):
        self._reactor = reactor
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self.sock = self._r
        self.pending = {}           # signum -> None, in order of arrival
        self._callbacks = {}        # signum -> (callback, previous Python handler)
        self._previous_fd = None
        self.calls = collections.deque()    # (callback, args) queued by other threads
        self._blocking = False
        self._outer_handler = None  # SIGALRM's handler before run_blocking
        self._outer_at = None       # when the alarm set before run_blocking is due

    # --- the handler -----------------------------------------------------

    def on_readable(self):
        try:
            while self._r.recv(_READ_SIZE):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        self.run_ready()

    def run_ready(self):
        """Run what other threads queued, then the callbacks of the signals noted so far.

        Calls from threads first: what a thread reported before a signal came
        (a client's end, before SIGUSR1 asks for the counters) is in by the
        time the signal's callback runs.
        """
        calls = self.calls
        for _ in range(len(calls)):
            callback, args = calls.popleft()
            self._reactor._contained("thread call", callback, *args)
        # A signal noted after this swap stays pending; its byte wakes the next turn.
        pending, self.pending = self.pending, {}
        for signum in pending:
            self._dispatch(signum)

    def on_writable(self):  # never registered for WRITE
        pass

    def wake(self):
        """Make a sleeping ``select()`` return (safe from a signal handler or another thread)."""
        try:
            self._w.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass    # the socket is full of wakeups already

    def call_soon_threadsafe(self, callback, *args):
        """From any thread: have the loop run ``callback(*args)`` in its next turn."""
        self.calls.append((callback, args))     # deque.append is atomic
        self.wake()

    # --- signals ---------------------------------------------------------

    def note(self, signum, frame):
        """The Python-level handler of every signal the loop handles."""
        if self._blocking:
            self._dispatch(signum)
            self._arm_alarm()
        else:
            self.pending[signum] = None

    def add_signal_handler(self, signum, callback):
        if self._previous_fd is None:
            self._previous_fd = signal.set_wakeup_fd(self._w.fileno(), warn_on_full_buffer=False)
        previous = signal.signal(signum, self.note)
        old = self._callbacks.get(signum)
        self._callbacks[signum] = (callback, old[1] if old else previous)

    def remove_signal_handler(self, signum):
        _callback, previous = self._callbacks.pop(signum)
        signal.signal(signum, previous)
        if not self._callbacks and self._previous_fd is not None:
            signal.set_wakeup_fd(self._previous_fd)
            self._previous_fd = None

    def _dispatch(self, signum):
        entry = self._callbacks.get(signum)
        if entry is not None:
            self._reactor._contained("signal", entry[0], signum)

    # --- a blocking call on the loop's thread ----------------------------

    def run_blocking(self, func, *args):
        """``func(*args)``, with signals and timers still served while it blocks (see above).

        SIGALRM and the real-time interval timer are the loop's meanwhile.
        An alarm set before (a test's hang guard) still goes off when it is
        due, to the handler it was meant for (its default action, if it had
        none), and is set again afterwards for the time it had left.  Calls
        do not nest: ``func`` must not call it again.
        """
        if self._blocking:
            raise RuntimeError("run_blocking() does not nest")
        # SIGALRM is blocked while it changes hands, so that no alarm is lost between.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        try:
            self._outer_handler = signal.signal(signal.SIGALRM, self._on_alarm)
            outer, interval = signal.getitimer(signal.ITIMER_REAL)
            self._outer_at = self._reactor.time() + outer if outer else None
            self._blocking = True
            self._arm_alarm()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
        try:
            self.run_ready()    # what was noted before: from here on, signals run at once
            return func(*args)
        finally:
            self._blocking = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._outer_handler)
            if self._outer_at is not None:
                left = self._outer_at - self._reactor.time()
                signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), interval)

    def _arm_alarm(self):
        now = self._reactor.time()
        wait = self._reactor._timers.timeout(now)
        if self._outer_at is not None:
            wait = self._outer_at - now if wait is None else min(wait, self._outer_at - now)
        # setitimer(0) would disarm it: a timer due now fires in 1 ms.
        signal.setitimer(signal.ITIMER_REAL, 0 if wait is None else max(wait, 1e-3))

    def _on_alarm(self, signum, frame):
        if not self._blocking:
            return
        if self._outer_at is not None and self._reactor.time() >= self._outer_at:
            self._outer_at = None
            if callable(self._outer_handler):
                self._outer_handler(signum, frame)
            elif self._outer_handler == signal.SIG_DFL:
                signal.signal(signal.SIGALRM, signal.SIG_DFL)
                signal.raise_signal(signal.SIGALRM)     # the default action: the end
        self._reactor._run_timers()
        self._arm_alarm()

    # --- the end ---------------------------------------------------------

    def close(self):
        """Give back every signal handler taken, and close the socketpair."""
        for signum in list(self._callbacks):
            self.remove_signal_handler(signum)
        self._r.close()
        self._w.close()

    def close_in_child(self):
        """In a child after ``fork()``: the same, but the signals go back to their defaults."""
        signal.set_wakeup_fd(-1)
        for signum in self._callbacks:
            signal.signal(signum, signal.SIG_DFL)
        self._callbacks.clear()
        self._previous_fd = None
        self.pending.clear()
        self.calls.clear()
        self._r.close()
        self._w.close()
