"""The two state machines of selectlab, written as data.

Each machine is an enum of states, an enum of events, and a table mapping
``(state, event)`` to ``(next state, action)``.  One function, :func:`apply`,
looks a pair up; a pair that is not in the table raises
:class:`IllegalTransition` naming both, so a bug shows up as a clear error
instead of a socket in a state nobody designed.  The objects that own a
machine (``reactor.listener.Listener``, ``reactor.connection.Connection``)
carry out the *actions*; this module does no I/O at all (it imports neither
``socket`` nor ``selectors``, and a test checks that), which is what lets the
tables be tested row by row and drawn in ``docs/architecture.md``
(``python -m tools.docgen``).

The listener (the quick guide's ``enum {idle,busy}`` server, generalised to a
capacity of N)::

    IDLE  --CONNECTION/admit-->   IDLE     a slot is free: serve the client
    IDLE  --FULL-->               BUSY     the last slot was just taken
    BUSY  --CONNECTION/reject-->  BUSY     no slot: the rejection hook answers
    BUSY  --SLOT_FREED-->         IDLE     a served client left

A connection::

    IDLE     nothing to send; wants READ.  The common path (read, send all of
             it at once) never leaves this state.
    BUSY     the kernel refused part of a send; the rest waits in the output
             buffer and the connection wants WRITE as well as READ.
    PAUSED   more than the high-water mark is buffered: the connection stops
             reading (so a client that never reads cannot grow our memory
             with its own replies) and tells its protocol ``pause_writing``
             (so one that writes to it from elsewhere can hold back); at the
             low-water mark it is BUSY again, with ``resume_writing``.
    CLOSING  we decided to close: flush what is pending, then half-close
             (FIN) and read-and-discard until the peer's EOF, so that the
             close never turns into a reset that destroys our last bytes.
             Bounded by a deadline.
    CLOSED   the socket is released; every further event is a bug.
"""

import enum


class IllegalTransition(RuntimeError):
    """An event arrived in a state that has no row for it.

    Other machines built the same way (the Hello session's) raise it too,
    naming themselves in ``machine``.
    """

    def __init__(self, machine, state, event):
        super().__init__(f"{machine}: no transition from {state.name} on {event.name}")
        self.machine = machine
        self.state = state
        self.event = event


# The machines of this module: an IllegalTransition of theirs is a bug of
# the reactor itself, which no containment of a protocol's errors may hide.
REACTOR_MACHINES = frozenset({"listener", "connection"})


def is_reactor_bug(exc):
    """True for an exception that must stop the loop: one of the reactor's own machines broke."""
    return isinstance(exc, IllegalTransition) and exc.machine in REACTOR_MACHINES


class _Enum(enum.Enum):
    """An Enum hashed by identity.

    Members are singletons compared by identity, so object's hash (a C slot)
    is as right as Enum's, which is a Python method (``hash(self._name_)``)
    run twice for every lookup in a table below: about 170 ns a lookup,
    some 2% of the CPU of a connection that opens, echoes once and closes.
    """

    __hash__ = object.__hash__


class Action(_Enum):
    """What the owner of a machine must do when a transition fires."""

    ADMIT = "admit"              # listener: hand the new socket to the server
    REJECT = "reject"            # listener: hand it to the rejection hook
    CLOSE_LISTENER = "close listener"
    ARM_DEADLINE = "arm deadline"    # connection: start the closing deadline
    HALF_CLOSE = "half close"    # connection: shutdown(SHUT_WR), start draining input
    RELEASE = "release"          # connection: drop the buffer, hand the socket back to the loop
    PAUSE_WRITING = "pause writing"      # connection: tell the protocol to hold back
    RESUME_WRITING = "resume writing"    # connection: tell the protocol it may write again


# --- the listener -----------------------------------------------------------

class ListenerState(_Enum):
    IDLE = "idle"      # below capacity
    BUSY = "busy"      # at capacity
    CLOSED = "closed"  # stopped accepting (shutdown)


class ListenerEvent(_Enum):
    CONNECTION = "connection"  # accept() returned a new socket
    FULL = "full"              # the admitted connection took the last slot
    SLOT_FREED = "slot freed"  # a served connection was released
    SHUTDOWN = "shutdown"      # the server is stopping


_L, _LE = ListenerState, ListenerEvent

LISTENER_TABLE = {
    (_L.IDLE, _LE.CONNECTION): (_L.IDLE, Action.ADMIT),
    (_L.IDLE, _LE.FULL): (_L.BUSY, None),
    # A slot freed while below capacity (the usual case with a large capacity).
    (_L.IDLE, _LE.SLOT_FREED): (_L.IDLE, None),
    (_L.IDLE, _LE.SHUTDOWN): (_L.CLOSED, Action.CLOSE_LISTENER),
    (_L.BUSY, _LE.CONNECTION): (_L.BUSY, Action.REJECT),
    (_L.BUSY, _LE.SLOT_FREED): (_L.IDLE, None),
    (_L.BUSY, _LE.SHUTDOWN): (_L.CLOSED, Action.CLOSE_LISTENER),
    # Served connections still finishing after shutdown free their slots.
    (_L.CLOSED, _LE.SLOT_FREED): (_L.CLOSED, None),
}


# --- a connection -----------------------------------------------------------

class ConnState(_Enum):
    IDLE = "idle"        # nothing to send
    BUSY = "busy"        # output pending
    PAUSED = "paused"    # output pending above the high-water mark: not reading
    CLOSING = "closing"  # flushing, then half-closed and draining input
    CLOSED = "closed"


class ConnEvent(_Enum):
    OUTPUT_PENDING = "output pending"  # send() took less than it was given
    HIGH_WATER = "high water"          # buffered output went above HIGH_WATER
    LOW_WATER = "low water"            # ... and came back down to LOW_WATER
    OUTPUT_DRAINED = "output drained"  # the output buffer became empty
    CLOSE = "close"                    # we asked to close: flush, then close
    PEER_EOF = "peer eof"              # recv() returned b"": the peer sent FIN
    PEER_GONE = "peer gone"            # reset, broken pipe: nothing more can be sent
    ABORT = "abort"                    # we drop the connection now, pending output and all
    DEADLINE = "deadline"              # the closing deadline expired


_C, _CE = ConnState, ConnEvent

CONNECTION_TABLE = {
    (_C.IDLE, _CE.OUTPUT_PENDING): (_C.BUSY, None),
    # The peer is done and we have nothing to send: release at once.  A FIN,
    # never a reset, since the peer's FIN means no input is left unread.
    (_C.IDLE, _CE.PEER_EOF): (_C.CLOSED, Action.RELEASE),
    # Nothing to flush: send our FIN now, then wait for the peer's.
    (_C.IDLE, _CE.CLOSE): (_C.CLOSING, Action.HALF_CLOSE),
    (_C.IDLE, _CE.PEER_GONE): (_C.CLOSED, Action.RELEASE),
    (_C.IDLE, _CE.ABORT): (_C.CLOSED, Action.RELEASE),

    (_C.BUSY, _CE.OUTPUT_DRAINED): (_C.IDLE, None),
    (_C.BUSY, _CE.HIGH_WATER): (_C.PAUSED, Action.PAUSE_WRITING),
    # The peer half-closed but still reads (UNP's str_cli at end of input):
    # it must get every pending byte, then our FIN.
    (_C.BUSY, _CE.PEER_EOF): (_C.CLOSING, Action.ARM_DEADLINE),
    (_C.BUSY, _CE.CLOSE): (_C.CLOSING, Action.ARM_DEADLINE),
    (_C.BUSY, _CE.PEER_GONE): (_C.CLOSED, Action.RELEASE),
    (_C.BUSY, _CE.ABORT): (_C.CLOSED, Action.RELEASE),

    # A buffer that drains at once passes LOW_WATER first, then OUTPUT_DRAINED
    # from BUSY.
    (_C.PAUSED, _CE.LOW_WATER): (_C.BUSY, Action.RESUME_WRITING),
    # A paused connection does not read, but the EOF it read last may have
    # made eof_received write past the high-water mark: flush all, then FIN.
    (_C.PAUSED, _CE.PEER_EOF): (_C.CLOSING, Action.ARM_DEADLINE),
    (_C.PAUSED, _CE.CLOSE): (_C.CLOSING, Action.ARM_DEADLINE),
    (_C.PAUSED, _CE.PEER_GONE): (_C.CLOSED, Action.RELEASE),
    (_C.PAUSED, _CE.ABORT): (_C.CLOSED, Action.RELEASE),

    # Flushed: now half-close and read until the peer's EOF.
    (_C.CLOSING, _CE.OUTPUT_DRAINED): (_C.CLOSING, Action.HALF_CLOSE),
    (_C.CLOSING, _CE.CLOSE): (_C.CLOSING, None),
    # Only seen once flushed: a flushing connection does not read, and a
    # peer's FIN read earlier is read again (recv returns b"" for ever).
    (_C.CLOSING, _CE.PEER_EOF): (_C.CLOSED, Action.RELEASE),
    (_C.CLOSING, _CE.PEER_GONE): (_C.CLOSED, Action.RELEASE),
    (_C.CLOSING, _CE.ABORT): (_C.CLOSED, Action.RELEASE),
    (_C.CLOSING, _CE.DEADLINE): (_C.CLOSED, Action.RELEASE),
}


def apply(table, state, event):
    """Look up one transition.

    Parameters
    ----------
    table : dict
        ``LISTENER_TABLE`` or ``CONNECTION_TABLE``.
    state, event : enum members of that machine.

    Returns
    -------
    (next_state, action)
        ``action`` is an :class:`Action` or None.

    Raises
    ------
    IllegalTransition
        if the table has no row for ``(state, event)``.
    """
    try:
        return table[state, event]
    except KeyError:
        machine = "listener" if table is LISTENER_TABLE else "connection"
        raise IllegalTransition(machine, state, event) from None


# --- interest set -----------------------------------------------------------

# Selector event bits, the same values as selectors.EVENT_READ/EVENT_WRITE
# (this module must not import selectors; a test checks the values agree).
READ = 1
WRITE = 2

# Output buffer marks, asyncio's defaults and meaning: PAUSED once more than
# HIGH_WATER bytes are buffered, BUSY again at LOW_WATER or fewer.  The gap
# between them keeps a slow reader from toggling our READ interest (one
# epoll_ctl each way) and the protocol's pause on every send.
HIGH_WATER = 64 * 1024
LOW_WATER = HIGH_WATER // 4


# Looked up once: an Enum class attribute is a metaclass lookup each time, and
# this runs on every transition (with the listener's, 8% of the instructions
# of a connection that opens, echoes once and closes).
_C_IDLE, _C_BUSY, _C_PAUSED, _C_CLOSING = ConnState.IDLE, ConnState.BUSY, ConnState.PAUSED, \
    ConnState.CLOSING
_L_BUSY, _L_CLOSED = ListenerState.BUSY, ListenerState.CLOSED


def connection_interest(state, buffered):
    """The selector events a connection wants, derived from its state.

    This is the only place that decides a connection's interest set.

    Parameters
    ----------
    state : ConnState
    buffered : int
        bytes waiting in the output buffer (it tells CLOSING's two phases apart).

    Returns
    -------
    int
        a mask of READ and WRITE (0 for CLOSED).
    """
    if state is _C_IDLE:
        return READ
    if state is _C_BUSY:
        return READ | WRITE
    if state is _C_PAUSED:
        return WRITE
    if state is _C_CLOSING:
        # Flush first; once flushed (and half-closed), read to the peer's EOF.
        return WRITE if buffered else READ
    return 0


def listener_interest(state, rejects=True):
    """The selector events a listener wants: READ until it is closed.

    A BUSY listener that ``rejects`` keeps accepting so that the rejection
    hook can answer each extra client at once (the quick guide's server
    writes ``busy\\n``) instead of leaving it waiting in the backlog.  One
    that does not (the classic servers' ``--max-children``, the iterative
    server's one client) stops watching at capacity: the extra clients wait
    in the kernel's backlog until a slot is freed.
    """
    if state is _L_CLOSED or (state is _L_BUSY and not rejects):
        return 0
    return READ
