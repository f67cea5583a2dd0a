"""The event loop: one thread, one selector, no asyncio.

Everything the loop does is in :meth:`Reactor.run_once`; :meth:`Reactor.run`
only repeats it until :meth:`Reactor.stop`.  The design is Redis's ``ae.c``
in Python:

* Sockets are registered with a *handler*, an object with ``on_readable()``
  and ``on_writable()``, kept in the loop's own ``fd -> handler`` map (and,
  on poll and select, in ``SelectorKey.data`` too).  For each ready
  socket the read handler runs first, then the write handler (ae.c's order:
  reply to what was just read in the same turn).
* Timers live in a heap (``reactor.timers``); the nearest one bounds how long
  ``select()`` sleeps, and with no timers it sleeps until something happens.
  There is no poll interval anywhere.
* ``stop()``, signals and other threads wake ``select()`` through a
  socketpair (``reactor.wakeup``); signal callbacks run first in a turn,
  between two handlers, never in the middle of one (but see
  :meth:`Reactor.run_blocking`).
* A handler never closes a socket under the loop's feet: it asks for
  :meth:`Reactor.close_later`, and the loop unregisters and then closes at
  the end of the turn, after every handler of the turn has run.  Before
  each handler the loop looks the socket up again (ae.c does too): one that
  an earlier handler of the same turn unregistered, or whose interest in
  that event it dropped, is not called.

An exception from a timer callback scheduled with :meth:`Reactor.call_later`
or :meth:`Reactor.call_at`, or from a signal's callback, is logged with its
traceback and counted (:attr:`Reactor.callback_errors`), and the loop goes
on; the reactor's own timers (closing deadlines, idle checks, accept
back-off) use ``_call_later``, and an exception there propagates: a bug of
the loop.  (A protocol's exceptions are ``reactor.connection``'s.)

What it leaves out: threads (only :meth:`Reactor.call_soon_threadsafe` may
be called from another thread, and ``stop()`` from a signal handler), child
process watching, and any kind of future/coroutine.
"""

import logging
import math
import selectors
import time

from reactor.selection import (
    EPOLL_BITS, EPOLL_READ, EPOLL_WRITE, EVENT_READ, EVENT_WRITE, FD_SETSIZE, epoll_of,
    selector_fd_limit,
)
from reactor.states import is_reactor_bug
from reactor.timers import TimerQueue
from reactor.wakeup import Wakeup

log = logging.getLogger("selectlab")

class Reactor:
    """A single-thread event loop over a :mod:`selectors` selector.

    Parameters
    ----------
    selector : selectors.BaseSelector, optional
        defaults to ``selectors.DefaultSelector()`` (epoll on Linux).
    """

    def __init__(self, selector=None):
        self.selector = selector if selector is not None else selectors.DefaultSelector()
        self._handlers = {}          # fd -> handler: what the loop dispatches
        self._fileobjs = {}          # fd -> file object, on epoll (for one closed before unregister)
        self._not_read_only = {}     # fd -> events, for the few not watched for READ alone
        self._epoll = epoll_of(self.selector)
        self.fd_limit = selector_fd_limit(self.selector)
        self._timers = TimerQueue()
        self.cycles = 0              # turns of the loop so far (Redis's eventloop_cycles)
        self.callback_errors = 0     # call_later/call_at and signal callbacks that raised
        self.now = time.monotonic()  # the clock when select() last returned
        self._to_close = []          # sockets whose handlers are done with them
        self._running = False
        self._wakeup = Wakeup(self)
        self.register(self._wakeup.sock, EVENT_READ, self._wakeup)

    # --- sockets ---------------------------------------------------------

    def register(self, fileobj, events, handler):
        """Watch ``fileobj`` for ``events``; ``handler.on_readable()`` / ``on_writable()`` run when ready.

        Raises ValueError for a descriptor select() cannot watch (FD_SETSIZE
        and up), here rather than in every later ``select()``; servers keep
        their open-file limit below it (``servers.limits.fd_limit_for``).  On
        epoll the loop registers with its epoll instance itself, and
        :meth:`events` answers what ``selector.get_key`` would
        (``reactor.selection`` says why).  Nothing is returned.
        """
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        if self.fd_limit is not None and fd >= self.fd_limit:
            raise ValueError(f"descriptor {fd} is past what select() can watch (FD_SETSIZE "
                             f"{FD_SETSIZE}); use poll or epoll")
        if self._epoll is None:
            self.selector.register(fileobj, events, handler)
        elif fd in self._handlers:
            raise KeyError(f"{fileobj!r} (descriptor {fd}) is already registered")
        else:
            self._epoll.register(fd, EPOLL_BITS[events])
            self._fileobjs[fd] = fileobj
        self._handlers[fd] = handler
        if events != EVENT_READ:
            self._not_read_only[fd] = events

    def modify(self, fileobj, events, handler):
        """Change what ``fileobj`` is watched for."""
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        if self._epoll is None:
            self.selector.modify(fileobj, events, handler)
        elif fd not in self._handlers:
            raise KeyError(f"{fileobj!r} is not registered")
        else:
            self._epoll.modify(fd, EPOLL_BITS[events])
        self._note(fd, events, handler)

    def unregister(self, fileobj):
        """Stop watching ``fileobj`` (even one closed meanwhile).  KeyError if it is not registered."""
        if self._epoll is None:
            fd = self.selector.unregister(fileobj).fd
        else:
            fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
            if fd < 0:
                # Closed already, so the kernel took it out of the epoll set;
                # find its old number by identity, as selectors does.
                fd = next((n for n, obj in self._fileobjs.items() if obj is fileobj), None)
                if fd is None:
                    raise KeyError(f"{fileobj!r} is not registered")
            elif fd not in self._handlers:
                raise KeyError(f"{fileobj!r} is not registered")
            else:
                self._epoll.unregister(fd)
        del self._handlers[fd]
        self._fileobjs.pop(fd, None)
        self._not_read_only.pop(fd, None)

    def events(self, fileobj):
        """The events ``fileobj`` is registered for, or 0 if it is not."""
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        if fd not in self._handlers:
            return 0
        return self._not_read_only.get(fd, EVENT_READ)

    def _note(self, fd, events, handler):
        # Most sockets are watched for READ alone; only the others (output
        # pending) take a second entry, so an idle client costs one dict slot.
        self._handlers[fd] = handler
        if events == EVENT_READ:
            self._not_read_only.pop(fd, None)
        else:
            self._not_read_only[fd] = events

    def close_later(self, sock):
        """Unregister and close ``sock`` at the end of this turn of the loop."""
        self._to_close.append(sock)

    # --- time ------------------------------------------------------------

    @staticmethod
    def time():
        """The loop's clock (monotonic seconds), read now.

        Handlers that only need "when did select() return" read :attr:`now`
        instead, one reading shared by the turn's handlers (libuv's
        ``uv_now``, Redis's cached ``server.unixtime``); the loop reads the
        clock twice more per turn, to size its sleep and to find due timers.
        """
        return time.monotonic()

    def call_later(self, delay, callback, *args):
        """Run ``callback(*args)`` after ``delay`` seconds; returns a :class:`~reactor.timers.Timer`.

        If the callback raises, the exception is logged at ERROR with its
        traceback and counted in :attr:`callback_errors`; the loop goes on.
        """
        return self._timers.push(time.monotonic() + delay, callback, args)

    def call_at(self, when, callback, *args):
        """Run ``callback(*args)`` at loop time ``when`` (see :meth:`time`), as :meth:`call_later`."""
        return self._timers.push(when, callback, args)

    def _call_later(self, delay, callback, *args):
        """:meth:`call_later` for the reactor's own timers: an exception propagates out of :meth:`run`."""
        return self._timers.push(time.monotonic() + delay, callback, args, False)

    def _call_at(self, when, callback, *args):
        """:meth:`call_at` for the reactor's own timers."""
        return self._timers.push(when, callback, args, False)

    # --- running ---------------------------------------------------------

    def run(self):
        """Run turns of the loop until :meth:`stop` is called."""
        self._running = True
        while self._running:
            self.run_once()

    def run_once(self, timeout=None):
        """One turn of the loop, in five phases.

        1. **Timeout**: sleep until the nearest timer (``timeout`` caps it);
           with no timer and no cap, sleep until a socket is ready.
        2. **Select**: wait for readiness; note the time (:attr:`now`).
        3. **Dispatch**: the signals noted so far, then for each ready
           socket its read handler and its write handler, each only if the
           socket is still registered for that event when its turn comes.
        4. **Timers**: run the callbacks that are due, in deadline order
           (skipping any that an earlier one of them cancelled); one that
           raises is logged and counted, and the others still run.
        5. **Release**: unregister and close the sockets handed to
           :meth:`close_later` during this turn.
        """
        timers = self._timers
        if timers:
            wait = timers.timeout(time.monotonic())
            if timeout is not None and (wait is None or timeout < wait):
                wait = timeout
        else:
            wait = timeout
        if self._to_close:
            wait = 0

        if self._epoll is not None:
            self._dispatch_epoll(wait)
        else:
            ready = self.selector.select(wait)
            self.now = time.monotonic()
            self.cycles += 1
            if self._wakeup.pending or self._wakeup.calls:
                self._wakeup.run_ready()
            self._dispatch([(key.fd, mask & EVENT_READ, mask & EVENT_WRITE)
                            for key, mask in ready])

        if timers:
            self._run_timers()

        if self._to_close:
            self._close_released()

    def _run_timers(self):
        due = self._timers.pop_due(time.monotonic())
        for i, timer in enumerate(due):
            if timer.cancelled:         # an earlier callback of this batch cancelled it
                continue
            try:
                if timer.contained:
                    self._contained("timer", timer.callback, *timer.args)
                else:
                    timer.callback(*timer.args)
            except BaseException:
                self._timers.put_back(due[i + 1:])  # the rest of the batch is not lost
                raise

    def _contained(self, kind, callback, *args):
        """Run a user's callback: an exception is logged with its traceback and counted, and the loop goes on."""
        try:
            callback(*args)
        except Exception as exc:
            if is_reactor_bug(exc):
                raise
            self.callback_errors += 1
            log.error("%s callback %s raised %s; the loop goes on", kind,
                      getattr(callback, "__qualname__", callback), type(exc).__name__,
                      exc_info=exc)

    def _dispatch_epoll(self, wait):
        """Phases 2 and 3 on epoll: the same as the ``selector.select()`` path, with less per event.

        The loop waits on the selector's own epoll instance and maps each
        descriptor to its handler with one lookup (see ``reactor.selection``).
        """
        if wait is None:
            wait = -1
        elif wait <= 0:
            wait = 0
        else:
            # epoll_wait() counts whole milliseconds: round up, as selectors
            # does, so a timer is never woken before it is due.
            wait = math.ceil(wait * 1e3) * 1e-3
        handlers = self._handlers
        not_read_only = self._not_read_only
        try:
            ready = self._epoll.poll(wait, len(handlers) or 1)
        except InterruptedError:
            ready = ()
        self.now = time.monotonic()
        self.cycles += 1
        if self._wakeup.pending or self._wakeup.calls:
            self._wakeup.run_ready()        # signals first, even if their byte came late
        for fd, bits in ready:
            handler = handlers.get(fd)
            if handler is None:
                continue    # unregistered by an earlier handler of this turn
            if bits & EPOLL_READ and not_read_only.get(fd, EVENT_READ) & EVENT_READ:
                handler.on_readable()
                if not bits & EPOLL_WRITE:
                    continue
                # Look again: the read handler (or one it called) may have
                # unregistered this socket, or dropped its WRITE interest.
                handler = handlers.get(fd)
                if handler is None:
                    continue
            if bits & EPOLL_WRITE and not_read_only.get(fd, EVENT_READ) & EVENT_WRITE:
                handler.on_writable()

    def _dispatch(self, ready):
        """Phase 3 for poll and select: ``ready`` is ``(fd, readable, writable)`` triples.

        Before each handler the loop looks the socket up again, as Redis's
        ``aeProcessEvents`` does ("an already processed event may have
        removed an element that fired and we still didn't processed"): a
        handler unregistered, or whose interest was dropped, by an earlier
        handler of this turn is not called.
        """
        handlers = self._handlers
        not_read_only = self._not_read_only
        for fd, readable, writable in ready:
            if readable:
                handler = handlers.get(fd)
                if handler is not None and not_read_only.get(fd, EVENT_READ) & EVENT_READ:
                    handler.on_readable()
            if writable:
                handler = handlers.get(fd)
                if handler is not None and not_read_only.get(fd, EVENT_READ) & EVENT_WRITE:
                    handler.on_writable()

    def _close_released(self):
        to_close, self._to_close = self._to_close, []
        for sock in to_close:
            try:
                self.unregister(sock)
            except (KeyError, ValueError):
                pass    # never registered, or already closed by its owner
            sock.close()

    def stop(self):
        """Make :meth:`run` return after the current turn.

        Safe to call from a callback or a signal handler: it writes one byte
        to the wakeup socket, so a ``select()`` that is sleeping returns.
        """
        self._running = False
        self._wakeup.wake()

    def call_soon_threadsafe(self, callback, *args):
        """From any thread: run ``callback(*args)`` in the loop's next turn (contained, as :meth:`call_later`).

        The one method another thread may call (see ``reactor.wakeup``).
        """
        self._wakeup.call_soon_threadsafe(callback, *args)

    def run_blocking(self, func, *args):
        """Run a blocking ``func(*args)`` on the loop's thread and return its result.

        Meanwhile signal callbacks run as soon as their signal arrives, and
        timers when they are due (through SIGALRM); one of them may raise a
        ``BaseException`` to end ``func``.  Main thread only.  See
        ``reactor.wakeup``.
        """
        return self._wakeup.run_blocking(func, *args)

    # --- signals ---------------------------------------------------------

    def add_signal_handler(self, signum, callback):
        """Run ``callback(signum)`` from the loop whenever ``signum`` arrives.

        Must be called from the main thread (a rule of :mod:`signal`).  If
        the callback raises, it is logged and counted, as a timer's.
        """
        self._wakeup.add_signal_handler(signum, callback)

    def remove_signal_handler(self, signum):
        """Give ``signum`` back the handler it had before :meth:`add_signal_handler`."""
        self._wakeup.remove_signal_handler(signum)

    def close(self):
        """Restore signal handlers and release the loop's own descriptors.

        Sockets the caller registered are left to the caller.
        """
        self._wakeup.close()
        if self._to_close:
            self._close_released()
        if self._epoll is not None:
            self._epoll.close()
        self.selector.close()

    def close_in_child(self):
        """In a child process after ``fork()``: let go of the parent's loop without changing it.

        The epoll instance is shared with the parent, so nothing is
        unregistered from it: the loop's descriptors are closed, its signals
        go back to their default actions, and every other socket is left to
        the caller.
        """
        self._wakeup.close_in_child()
        self._to_close.clear()
        self._timers = TimerQueue()
        if self._epoll is not None:
            self._epoll.close()
        self.selector.close()
