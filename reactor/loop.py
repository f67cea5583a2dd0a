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
* ``stop()`` and signals wake ``select()`` through a socketpair: ``stop()``
  writes a zero byte; for signals, ``signal.set_wakeup_fd`` makes the C-level
  handler write a byte, and the loop runs the callbacks given to
  :meth:`Reactor.add_signal_handler` when it dispatches the wakeup socket's
  read event: between two handlers, never in the middle of one.  (asyncio
  does the same, but reads *which* signals arrived from the bytes, and a
  full socket drops them; here the Python-level handler records them.)
* A handler never closes a socket under the loop's feet: it asks for
  :meth:`Reactor.close_later`, and the loop unregisters and then closes at
  the end of the turn, after every handler of the turn has run.  Before
  each handler the loop looks the socket up again (ae.c does too): one that
  an earlier handler of the same turn unregistered, or whose interest in
  that event it dropped, is not called.

An exception from a timer callback scheduled with :meth:`Reactor.call_later`
or :meth:`Reactor.call_at`, or from a signal's callback, is logged with its
traceback and counted (:attr:`Reactor.callback_errors`), and the loop goes
on; the reactor's own
timers (closing deadlines, idle checks, accept back-off) are scheduled with
``_call_later``, and an exception there is a bug of the loop: it propagates.
(What the loop does with a protocol's exceptions is ``reactor.connection``'s.)

What it leaves out: threads (``stop()`` and ``call_later`` are not thread
safe, except that ``stop()`` may be called from a signal handler), child
process watching, and any kind of future/coroutine.
"""

import logging
import math
import os
import select
import selectors
import signal
import socket
import time

from reactor.states import is_reactor_bug
from reactor.timers import TimerQueue

log = logging.getLogger("selectlab")

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE

# Which epoll bits wake which handler, as selectors.EpollSelector maps them:
# an error or hang-up wakes both (the handler's recv/send then reports it).
_EPOLL_READ = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP
_EPOLL_WRITE = select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP

# The epoll bits a READ/WRITE mask stands for: selectors.EpollSelector's.
_EPOLL_BITS = {EVENT_READ: select.EPOLLIN, EVENT_WRITE: select.EPOLLOUT,
               EVENT_READ | EVENT_WRITE: select.EPOLLIN | select.EPOLLOUT}

# select() watches descriptors below FD_SETSIZE only (select(2): "an
# unreasonably low limit for many modern applications"); a higher one makes
# every later select() call raise ValueError, for all clients at once.
FD_SETSIZE = 1024

# The selectors a loop can run on, by the name ``--selector`` takes.
SELECTORS = {name: getattr(selectors, cls) for name, cls in (
    ("epoll", "EpollSelector"), ("poll", "PollSelector"), ("select", "SelectSelector"),
) if hasattr(selectors, cls)}


def make_selector(name=None):
    """A new selector by name (``epoll``, ``poll``, ``select``); None gives DefaultSelector."""
    if name is None:
        return selectors.DefaultSelector()
    return SELECTORS[name]()


def selector_fd_limit(selector):
    """The first descriptor ``selector`` cannot watch: FD_SETSIZE for select(), else None."""
    return FD_SETSIZE if isinstance(selector, selectors.SelectSelector) else None


# Bytes read from the wakeup socket per event.  The bytes only wake the loop
# (which signals arrived is recorded separately, see _Waker), so a full
# socket loses nothing.
_WAKEUP_READ_SIZE = 4096


class _Waker:
    """The read end of the wakeup socketpair, as a handler; also the loop's signal inbox.

    ``signal.set_wakeup_fd`` makes CPython's C-level handler write the signal
    number into the socket, which wakes a sleeping ``select()``.  But those
    bytes are not a reliable record: when the socket is full (a storm of
    SIGUSR1s), further bytes are dropped, and a SIGTERM among them would be
    lost.  So the Python-level handler, :meth:`note`, which CPython runs in
    the main thread soon after, records the signal in ``pending`` too, and
    :meth:`on_readable` dispatches from there: each kind of signal once per
    turn, however many times it arrived, and none lost.
    """

    def __init__(self, reactor, sock):
        self._reactor = reactor
        self._sock = sock
        self.pending = {}       # signum -> None, in order of arrival

    def note(self, signum, frame):
        """The Python-level handler of every signal the loop handles."""
        self.pending[signum] = None

    def on_readable(self):
        try:
            while self._sock.recv(_WAKEUP_READ_SIZE):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        # A signal noted after this swap stays pending; its byte wakes the next turn.
        pending, self.pending = self.pending, {}
        for signum in pending:
            self._reactor._dispatch_signal(signum)

    def on_writable(self):  # never registered for WRITE
        pass


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
        self._epoll = _epoll_of(self.selector)
        self.fd_limit = selector_fd_limit(self.selector)
        self._timers = TimerQueue()
        self.cycles = 0              # turns of the loop so far (Redis's eventloop_cycles)
        self.callback_errors = 0     # call_later/call_at and signal callbacks that raised
        self.now = time.monotonic()  # the clock, read once per turn when select() returns
        self._to_close = []          # sockets whose handlers are done with them
        self._running = False
        self._signal_callbacks = {}  # signum -> (callback, previous Python handler)
        self._previous_wakeup_fd = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._waker = _Waker(self, self._wake_r)
        self.register(self._wake_r, EVENT_READ, self._waker)

    # --- sockets ---------------------------------------------------------

    def register(self, fileobj, events, handler):
        """Watch ``fileobj`` for ``events``; ``handler.on_readable()`` / ``on_writable()`` run when ready.

        Raises ValueError for a descriptor the selector cannot watch (on
        select(), FD_SETSIZE and up), here rather than in every later
        ``select()`` call.  Servers avoid it by keeping their open-file limit
        at FD_SETSIZE on select (see ``servers.common.fd_limit_for``).

        On epoll the loop registers with its epoll instance itself and keeps
        its own ``fd -> handler`` map (which :meth:`events` reads), rather
        than going through ``EpollSelector.register``, whose ``SelectorKey``
        and file-object bookkeeping cost a connection that opens, echoes once
        and closes 14,400 instructions of its 63,500 (callgrind, counted over
        thousands of connections).  The selector's own map then stays empty:
        ``selector.get_key`` and ``get_map`` know nothing of it, and
        :meth:`events` answers instead; poll and select still register
        through the selector.  Nothing is returned (the selector returned a
        ``SelectorKey``).
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
            self._epoll.register(fd, _EPOLL_BITS[events])
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
            self._epoll.modify(fd, _EPOLL_BITS[events])
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

        Handlers that only need "when did this turn start", such as a
        connection noting when it last saw activity, read :attr:`now`
        instead: one clock read per turn rather than one per event (libuv's
        ``uv_now``, Redis's cached ``server.unixtime``).
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
        try:
            while self._running:
                self.run_once()
        finally:
            self._running = False

    def run_once(self, timeout=None):
        """One turn of the loop, in five phases.

        1. **Timeout**: sleep until the nearest timer (``timeout`` caps it);
           with no timer and no cap, sleep until a socket is ready.
        2. **Select**: wait for readiness; note the time (:attr:`now`).
        3. **Dispatch**: for each ready socket, its read handler, then its
           write handler, each only if the socket is still registered for
           that event when its turn comes.
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
            self._dispatch([(key.fd, mask & EVENT_READ, mask & EVENT_WRITE)
                            for key, mask in ready])

        if timers:
            for timer in timers.pop_due(time.monotonic()):
                if timer.cancelled:         # an earlier callback of this batch cancelled it
                    continue
                if not timer.contained:
                    timer.callback(*timer.args)
                    continue
                try:
                    timer.callback(*timer.args)
                except Exception as exc:
                    if is_reactor_bug(exc):
                        raise
                    self._callback_failed("timer", timer.callback, exc)

        if self._to_close:
            self._close_released()

    def _dispatch_epoll(self, wait):
        """Phases 2 and 3 on epoll: the same as the ``selector.select()`` path, with less per event.

        ``EpollSelector.select()`` turns each ``(fd, bits)`` that epoll
        reports into a ``(SelectorKey, mask)`` pair: a method call, a dict
        lookup and a tuple per ready socket, before the loop looks at any of
        them.  Here the loop waits on the selector's own epoll instance
        (through a duplicate of its descriptor, so only public interfaces
        are used: ``selector.fileno()`` and ``select.epoll.fromfd``) and maps
        each descriptor to its handler with one lookup in ``_handlers``,
        which :meth:`register`, :meth:`modify` and :meth:`unregister` keep.

        What it saves, measured with ``python -m bench`` (1 KiB echo, 100
        connections, 2 rounds of 3 runs, side by side): 7.10 µs of server CPU
        per request through ``select()``, 6.85 µs here, about 3.5%.
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
        for fd, bits in ready:
            handler = handlers.get(fd)
            if handler is None:
                continue    # unregistered by an earlier handler of this turn
            if bits & _EPOLL_READ and not_read_only.get(fd, EVENT_READ) & EVENT_READ:
                handler.on_readable()
                if not bits & _EPOLL_WRITE:
                    continue
                # Look again: the read handler (or one it called) may have
                # unregistered this socket, or dropped its WRITE interest.
                handler = handlers.get(fd)
                if handler is None:
                    continue
            if bits & _EPOLL_WRITE and not_read_only.get(fd, EVENT_READ) & EVENT_WRITE:
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
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass    # the socket is full of wakeups already

    # --- signals ---------------------------------------------------------

    def add_signal_handler(self, signum, callback):
        """Run ``callback(signum)`` from the loop whenever ``signum`` arrives.

        Must be called from the main thread (a rule of :mod:`signal`).
        """
        if self._previous_wakeup_fd is None:
            self._previous_wakeup_fd = signal.set_wakeup_fd(
                self._wake_w.fileno(), warn_on_full_buffer=False)
        previous = signal.signal(signum, self._waker.note)
        old = self._signal_callbacks.get(signum)
        self._signal_callbacks[signum] = (callback, old[1] if old else previous)

    def remove_signal_handler(self, signum):
        """Give ``signum`` back the handler it had before :meth:`add_signal_handler`."""
        callback, previous = self._signal_callbacks.pop(signum)
        signal.signal(signum, previous)
        if not self._signal_callbacks and self._previous_wakeup_fd is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            self._previous_wakeup_fd = None

    def _dispatch_signal(self, signum):
        entry = self._signal_callbacks.get(signum)
        if entry is not None:
            try:
                entry[0](signum)
            except Exception as exc:
                if is_reactor_bug(exc):
                    raise
                self._callback_failed("signal", entry[0], exc)

    def _callback_failed(self, kind, callback, exc):
        """A timer's or a signal's callback raised: log it with its traceback, count it, go on."""
        self.callback_errors += 1
        log.error("%s callback %s raised %s; the loop goes on", kind,
                  getattr(callback, "__qualname__", callback), type(exc).__name__, exc_info=exc)

    def close(self):
        """Restore signal handlers and release the loop's own descriptors.

        Sockets the caller registered are left to the caller.
        """
        for signum in list(self._signal_callbacks):
            self.remove_signal_handler(signum)
        if self._to_close:
            self._close_released()
        if self._epoll is not None:
            self._epoll.close()
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()


def _epoll_of(selector):
    """A second handle on ``selector``'s epoll instance, or None if it is not an EpollSelector.

    A duplicated epoll descriptor is the same epoll instance: what the
    selector registers, ``poll()`` on the duplicate reports.
    """
    if not isinstance(selector, getattr(selectors, "EpollSelector", ())):
        return None
    return select.epoll.fromfd(os.dup(selector.fileno()))
