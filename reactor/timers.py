"""Timers for the reactor: a heap ordered by deadline, cancelled lazily.

The loop asks two things of it each turn: how long may ``select()`` sleep
(:meth:`TimerQueue.timeout`) and which callbacks are due
(:meth:`TimerQueue.pop_due`).  Cancelling only marks a timer; it is dropped
when it reaches the top of the heap, or all at once when cancelled timers
make up more than half of a large heap (asyncio's rule), so a server that
keeps cancelling idle timers cannot grow the heap without bound.

No I/O and no clock of its own: the caller passes ``now``, which keeps the
module testable without sleeping.
"""

import heapq
import itertools

# Compact the heap when it holds more than this many timers and over half of
# them are cancelled (asyncio's _MIN_SCHEDULED_TIMER_HANDLES and
# _MIN_CANCELLED_TIMER_HANDLES_FRACTION).
_COMPACT_MIN_SIZE = 100
_COMPACT_CANCELLED_FRACTION = 0.5


class Timer:
    """A scheduled callback; :meth:`cancel` it to stop it from running.

    ``contained`` says what the loop does if the callback raises: log it and
    go on (a protocol's or an application's timer), or let it propagate (the
    reactor's own timers, where an exception is a bug of the loop).
    """

    __slots__ = ("when", "callback", "args", "cancelled", "contained", "_queue")

    def __init__(self, when, callback, args, queue, contained=True):
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False
        self.contained = contained
        self._queue = queue

    def cancel(self):
        """Stop the timer from firing.  Cancelling twice, or after it fired, does nothing."""
        if not self.cancelled:
            self.cancelled = True
            if self._queue is not None:
                self._queue._cancelled_one()

    def __repr__(self):
        state = "cancelled" if self.cancelled else f"at {self.when:.3f}"
        return f"<Timer {getattr(self.callback, '__qualname__', self.callback)} {state}>"


class TimerQueue:
    """Pending timers, nearest deadline first."""

    def __init__(self):
        self._heap = []        # (when, sequence, Timer); sequence keeps equal deadlines FIFO
        self._seq = itertools.count()
        self._cancelled = 0

    def __len__(self):
        return len(self._heap) - self._cancelled

    def push(self, when, callback, args=(), contained=True):
        """Schedule ``callback(*args)`` at time ``when``; return its :class:`Timer`."""
        timer = Timer(when, callback, args, self, contained)
        heapq.heappush(self._heap, (when, next(self._seq), timer))
        return timer

    def timeout(self, now):
        """Seconds until the nearest live timer (0 if one is due), or None if there is none."""
        heap = self._heap
        while heap and heap[0][2].cancelled:
            self._drop_top()
        if not heap:
            return None
        return max(0.0, heap[0][0] - now)

    def pop_due(self, now):
        """Remove and return the live timers due at ``now``, in deadline order."""
        due = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            timer = heap[0][2]
            if timer.cancelled:
                self._drop_top()
                continue
            heapq.heappop(heap)
            timer._queue = None      # a late cancel() must not count it again
            due.append(timer)
        return due

    def put_back(self, timers):
        """Return timers taken with :meth:`pop_due` but not run (a callback before them raised)."""
        for timer in timers:
            if not timer.cancelled:
                timer._queue = self
                heapq.heappush(self._heap, (timer.when, next(self._seq), timer))

    def _drop_top(self):
        heapq.heappop(self._heap)[2]._queue = None
        self._cancelled -= 1

    def _cancelled_one(self):
        self._cancelled += 1
        heap = self._heap
        if (len(heap) > _COMPACT_MIN_SIZE
                and self._cancelled > len(heap) * _COMPACT_CANCELLED_FRACTION):
            live = []
            for entry in heap:
                if entry[2].cancelled:
                    entry[2]._queue = None
                else:
                    live.append(entry)
            heapq.heapify(live)
            self._heap = live
            self._cancelled = 0
