"""The listening side: accept, admit up to a capacity, reject the rest.

With ``capacity=1`` this is the quick guide's 11th task exactly: while one
client is served the listener is BUSY, and each new client goes to the
rejection hook (which answers ``busy\\n``); when the client leaves it is IDLE
again.  With no capacity it is an ordinary accept loop that is never BUSY.
The transitions are ``reactor.states.LISTENER``.

One listener may own several listening sockets (``-b localhost`` binds both
127.0.0.1 and ::1); they share one capacity and one state.

Accepting, per readiness event, up to ``ACCEPTS_PER_EVENT`` connections:
* ``BlockingIOError``: the backlog is empty; wait for the next event.
* errors of the pending connection (``ECONNABORTED``: UNP's "RST before
  accept"): skip it, accept the next.
* running out of descriptors or memory (``EMFILE``...): the pending
  connection stays in the backlog and the listening socket stays readable,
  so trying again at once would spin at 100% CPU (the classic libev/Node/
  Redis bug).  The remedy here is asyncio's back-off: the listener is
  PAUSED, watching nothing for ``ACCEPT_RETRY_DELAY`` seconds while existing
  clients are served, then RETRY -- or sooner, as soon as one of our own
  connections releases its descriptor (:meth:`Listener.descriptor_freed`),
  which is the usual way descriptors come back.  Waiting clients stay in the
  kernel's backlog and are served when we resume.  (libuv's other remedy, a
  reserved descriptor closed to accept-and-drop the pending client, turns
  every waiting client away; a short shortage should not cost clients.)
"""

import logging
import socket

from reactor import errors
from reactor.states import LISTENER, Action, ListenerEvent, ListenerState, listener_interest

log = logging.getLogger("selectlab")

# The members the accept path names once per connection, looked up once here
# (an Enum class attribute is a metaclass lookup each time).
_ADMIT, _REJECT, _CLOSE_LISTENER = Action.ADMIT, Action.REJECT, Action.CLOSE_LISTENER
_PAUSE, _RESUME = Action.PAUSE_ACCEPTING, Action.RESUME_ACCEPTING
_CONNECTION, _SLOT_FREED = ListenerEvent.CONNECTION, ListenerEvent.SLOT_FREED
_IDLE, _PAUSED = ListenerState.IDLE, ListenerState.PAUSED
_apply = LISTENER.apply     # bound once: no attribute lookup per transition

# Redis's MAX_ACCEPTS_PER_CALL: enough to empty a burst of connections in one
# event, few enough that established clients are not starved meanwhile.
ACCEPTS_PER_EVENT = 1000

# asyncio's ACCEPT_RETRY_DELAY after EMFILE/ENFILE/ENOBUFS/ENOMEM.
ACCEPT_RETRY_DELAY = 1.0

# A shortage that lasts can hit accept once per departing client; warn about
# it at most this often (seconds), and at debug level in between.
EXHAUSTED_WARNING_INTERVAL = 10.0


class _Acceptor:
    """One listening socket, as a reactor handler."""

    __slots__ = ("listener", "sock", "kind")

    def __init__(self, listener, sock):
        self.listener = listener
        self.sock = sock
        # (family, type, proto) as plain ints, for accept() below.
        self.kind = (int(sock.family), int(sock.type), sock.proto)

    def on_readable(self):
        self.listener._accept_from(self)

    def on_writable(self):  # never registered for WRITE
        pass


class Listener:
    """Accepts connections and decides, by its state, who is served.

    Parameters
    ----------
    reactor : reactor.loop.Reactor
    socks : list of socket.socket
        bound, listening sockets.
    admit : callable
        ``admit(sock, addr)`` for a client that gets a slot.
    reject : callable or None
        ``reject(sock, addr)`` for a client that arrives at capacity; None
        to leave such clients in the kernel's backlog instead (the listener
        stops watching its sockets while BUSY).
    capacity : int or None
        how many admitted clients at once; None for no limit.
    tracer : callable, optional
        ``tracer(self, old_state, event, new_state)`` for every transition.
    """

    def __init__(self, reactor, socks, admit, reject, capacity=None, tracer=None):
        if capacity is not None and capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._reactor = reactor
        self._admit = admit
        self._reject = reject
        self._tracer = tracer
        self._retry_timer = None
        self._warned_at = None
        self._freed_in_turn = -1    # the loop turn in which a descriptor was last freed
        self.capacity = capacity
        self.active = 0             # admitted connections not yet released
        self.state = ListenerState.IDLE
        self.accept_errors = 0      # pending connections lost before accept
        self.emfile_events = 0      # accepts failed for lack of descriptors (or memory)
        self.acceptors = [_Acceptor(self, s) for s in socks]
        for acceptor in self.acceptors:
            acceptor.sock.setblocking(False)
        self._mask = 0
        self._update_interest()

    @property
    def sockets(self):
        return [a.sock for a in self.acceptors]

    @property
    def paused(self):
        """True while accepting is paused after running out of descriptors (PAUSED)."""
        return self.state is _PAUSED

    def slot_freed(self):
        """An admitted connection was released (its descriptor too)."""
        self.active -= 1
        self._fire(_SLOT_FREED)
        self.descriptor_freed()

    def descriptor_freed(self):
        """One of our sockets is being closed: if accepting is paused, resume now.

        The descriptor is closed at the end of this turn of the loop, before
        the next ``select()`` reports the listener readable again.  If the
        descriptor went elsewhere meanwhile, accept fails again and the
        listener backs off again: one retry per freed descriptor, never a spin.
        """
        self._freed_in_turn = self._reactor.cycles
        if self.state is _PAUSED:
            self._fire(ListenerEvent.RETRY)

    def set_capacity(self, capacity):
        """Serve at most ``capacity`` clients from now on (None: no limit); nobody is closed.

        Raised above the clients being served, a BUSY listener is IDLE again
        (RESIZED); lowered to them or below, an IDLE one is BUSY (FULL).
        """
        if capacity is not None and capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        full = capacity is not None and self.active >= capacity
        if self.state is ListenerState.BUSY and not full:
            self._fire(ListenerEvent.RESIZED)
        elif self.state is _IDLE and full:
            self._fire(ListenerEvent.FULL)

    def shutdown(self):
        """Stop accepting and close the listening sockets."""
        if self.state is not ListenerState.CLOSED:
            self._fire(ListenerEvent.SHUTDOWN)

    # --- accepting -------------------------------------------------------

    def _accept_from(self, acceptor):
        lsock = acceptor.sock
        family, type_, proto = acceptor.kind
        for _ in range(ACCEPTS_PER_EVENT):
            if not self._mask:
                return      # closed or backing off since this event was reported
            try:
                # socket.accept()'s own two lines, with the listener's family,
                # type and proto as plain numbers: its self.family and
                # self.type make an AddressFamily and a SocketKind per call,
                # 13,900 instructions of a short connection's 77,300
                # (callgrind).
                fd, addr = lsock._accept()
                sock = socket.socket(family, type_, proto, fileno=fd)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in errors.ACCEPT_RETRY_ERRNOS:
                    self.accept_errors += 1
                    log.debug("accept: pending connection lost: %s", errors.describe(exc))
                    continue
                if exc.errno in errors.ACCEPT_EXHAUSTED_ERRNOS:
                    self._fire(ListenerEvent.EXHAUSTED, exc)
                    return
                raise
            self._fire(_CONNECTION, sock, addr)

    def _back_off(self, exc):
        """PAUSE_ACCEPTING: count and log the shortage, and arm the retry."""
        self.emfile_events += 1
        now = self._reactor.time()
        if self._warned_at is None or now - self._warned_at >= EXHAUSTED_WARNING_INTERVAL:
            self._warned_at = now
            level = logging.WARNING
        else:
            level = logging.DEBUG
        log.log(level, "accept: %s (%d time(s) so far); pausing accepts for %.1f s or until "
                "a client leaves; existing clients are still served",
                errors.describe(exc), self.emfile_events, ACCEPT_RETRY_DELAY)
        if self._freed_in_turn == self._reactor.cycles:
            # A connection released earlier in this turn has not closed its
            # socket yet (the loop does that at the end of the turn): retry
            # in the next turn, when its descriptor is free.
            delay = 0
        else:
            delay = ACCEPT_RETRY_DELAY
        self._retry_timer = self._reactor._call_later(delay, self._retry_due)

    def _retry_due(self):
        self._retry_timer = None
        self._fire(ListenerEvent.RETRY)

    def _cancel_retry(self):
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None

    def _update_interest(self):
        """Register, modify or unregister the listening sockets to match the state.

        The only place that decides the listener's interest set: the state's
        (``listener_interest``; nothing while PAUSED).
        """
        mask = listener_interest(self.state, self._reject is not None)
        if mask == self._mask:
            return
        for acceptor in self.acceptors:
            if not mask:
                self._reactor.unregister(acceptor.sock)
            elif not self._mask:
                self._reactor.register(acceptor.sock, mask, acceptor)
            else:
                self._reactor.modify(acceptor.sock, mask, acceptor)
        self._mask = mask

    # --- the state machine -----------------------------------------------

    def _fire(self, event, *args):
        """Apply one transition and carry out its action.  The only code that assigns ``self.state``."""
        old = self.state
        new, action = _apply(old, event)
        self.state = new
        if self._tracer is not None:
            self._tracer(self, old, event, new)
        if action is _ADMIT:
            self.active += 1
            self._admit(*args)
        elif action is _REJECT:
            self._reject(*args)
        elif action is _PAUSE:
            self._back_off(*args)
        elif action is _RESUME:
            self._cancel_retry()
        elif action is _CLOSE_LISTENER:
            self._close_sockets()
        if self.state is _IDLE and self.capacity is not None and self.active >= self.capacity:
            # IDLE with no slot free: the last one was just taken (ADMIT), or
            # was still taken when a pause ended (RESUME_ACCEPTING).
            self._fire(ListenerEvent.FULL)
        if new is not old:
            self._update_interest()     # the interest follows the state, and only it

    def _close_sockets(self):
        self._cancel_retry()
        for acceptor in self.acceptors:
            self._reactor.close_later(acceptor.sock)    # unregistered by _update_interest
