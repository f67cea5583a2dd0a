"""The lifecycles of selectlab, written as data.

Each lifecycle is a :class:`Machine`: an enum of states, an enum of events,
an initial state, and a table mapping ``(state, event)`` to ``(next state,
action)``.  :meth:`Machine.apply` looks a pair up; a pair that is not in the
table raises :class:`IllegalTransition` naming the machine and both, so a bug
shows up as a clear error instead of a socket in a state nobody designed.
The object that owns a machine carries out its *actions*; this module does
no I/O at all (it imports neither ``socket`` nor ``selectors``, and a test
checks that), which is what lets every table be tested row by row and drawn
in ``docs/architecture.md`` from the same object (``python -m tools.docgen``).

The reactor's two machines are here; others are built the same way beside
their owners (the Hello session in ``wire.hello``, the echo client in
``clients.echo``).

The listener's states (``LISTENER``, owned by ``reactor.listener.Listener``:
the quick guide's ``enum {idle,busy}`` server, generalised to a capacity of
N)::

    IDLE     a slot is free: a new client is admitted.
    BUSY     at capacity: a new client goes to the rejection hook (or, with
             none, waits in the kernel's backlog: the listener stops watching).
    PAUSED   accept() found no descriptor (EMFILE...) for the pending client:
             the listening sockets are not watched, so the loop does not spin,
             until a retry (a delay, or one of our descriptors freed).
    CLOSED   shut down: the listening sockets are closed.

A connection's (``CONNECTION``, owned by ``reactor.connection.Connection``)::

    IDLE      nothing to send; wants READ.  The common path (read, send all
              of it at once) never leaves this state.
    BUSY      the kernel refused part of a send; the rest waits in the output
              buffer and the connection wants WRITE as well as READ.
    PAUSED    more than the high-water mark is buffered: the connection stops
              reading (so a client that never reads cannot grow our memory
              with its own replies) and tells its protocol ``pause_writing``
              (so one that writes to it from elsewhere can hold back); at the
              low-water mark it is BUSY again, with ``resume_writing``.
    FLUSHING  closing with output pending (we asked to close, or the peer
              half-closed while we had more to say): send it all, reading
              nothing; wants WRITE.
    DRAINING  flushed and half-closed (our FIN is sent): read and discard
              until the peer's EOF, so that the close never turns into a reset
              that destroys our last bytes; wants READ.  One deadline bounds
              FLUSHING and DRAINING together.
    CLOSED    the socket is released; every further event is a bug.
"""

import enum


class IllegalTransition(RuntimeError):
    """An event arrived in a state that has no row for it.

    ``machine`` is the name of the :class:`Machine` it happened in.
    """

    def __init__(self, machine, state, event):
        super().__init__(f"{machine}: no transition from {state.name} on {event.name}")
        self.machine = machine
        self.state = state
        self.event = event


class Machine:
    """One lifecycle as data: what :meth:`apply` runs and ``tools.docgen`` draws.

    Parameters
    ----------
    name : str
        what errors and the docs call it (``"connection"``).
    states, events : enum classes
    initial : member of ``states``
    table : dict
        ``{(state, event): (next_state, action)}``; ``action`` is one of the
        owner's actions (an enum member), or None.

    Raises
    ------
    ValueError
        if ``initial`` or a row names a state or event that is not the machine's.
    """

    __slots__ = ("name", "states", "events", "initial", "table")

    def __init__(self, name, states, events, initial, table):
        strays = [row for row, (new, _action) in table.items()
                  if not (isinstance(row[0], states) and isinstance(row[1], events)
                          and isinstance(new, states))]
        if strays or not isinstance(initial, states):
            raise ValueError(f"{name}: not its states or events: {strays or initial}")
        self.name = name
        self.states = states
        self.events = events
        self.initial = initial
        self.table = table

    def __repr__(self):
        return f"<Machine {self.name}: {len(self.table)} transitions>"

    def apply(self, state, event):
        """Look one transition up.

        Returns
        -------
        (next_state, action)
            ``action`` is None when the owner has nothing to do.

        Raises
        ------
        IllegalTransition
            if the table has no row for ``(state, event)``.
        """
        try:
            return self.table[state, event]
        except KeyError:
            raise IllegalTransition(self.name, state, event) from None


class _Enum(enum.Enum):
    """An Enum hashed by identity.

    Members are singletons compared by identity, so object's hash (a C slot)
    is as right as Enum's, which is a Python method (``hash(self._name_)``)
    run twice for every lookup in a table below: about 170 ns a lookup,
    some 2% of the CPU of a connection that opens, echoes once and closes.
    """

    __hash__ = object.__hash__


class Action(_Enum):
    """What the owner of a reactor machine must do when a transition fires."""

    ADMIT = "admit"              # listener: hand the new socket to the server
    REJECT = "reject"            # listener: hand it to the rejection hook
    PAUSE_ACCEPTING = "pause accepting"      # listener: stop watching, arm the retry
    RESUME_ACCEPTING = "resume accepting"    # listener: drop the retry, FULL if at capacity
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
    PAUSED = "paused"  # out of descriptors: not accepting until a retry
    CLOSED = "closed"  # stopped accepting (shutdown)


class ListenerEvent(_Enum):
    CONNECTION = "connection"  # accept() returned a new socket
    FULL = "full"              # the admitted connection took the last slot
    SLOT_FREED = "slot freed"  # a served connection was released
    EXHAUSTED = "exhausted"    # accept() failed for lack of descriptors or memory (EMFILE...)
    RETRY = "retry"            # the back-off delay passed, or one of our descriptors was freed
    SHUTDOWN = "shutdown"      # the server is stopping
    RESIZED = "resized"        # the capacity was raised above the clients being served


_L, _LE = ListenerState, ListenerEvent

LISTENER_TABLE = {
    (_L.IDLE, _LE.CONNECTION): (_L.IDLE, Action.ADMIT),
    (_L.IDLE, _LE.FULL): (_L.BUSY, None),
    # A slot freed while below capacity (the usual case with a large capacity).
    (_L.IDLE, _LE.SLOT_FREED): (_L.IDLE, None),
    # The pending client stays in the backlog and the listening socket stays
    # readable: watching it now would spin (the libev/Node/Redis bug).
    (_L.IDLE, _LE.EXHAUSTED): (_L.PAUSED, Action.PAUSE_ACCEPTING),
    (_L.IDLE, _LE.SHUTDOWN): (_L.CLOSED, Action.CLOSE_LISTENER),
    (_L.BUSY, _LE.CONNECTION): (_L.BUSY, Action.REJECT),
    (_L.BUSY, _LE.SLOT_FREED): (_L.IDLE, None),
    # A capacity lowered to the clients being served or below fires FULL
    # (existing clients stay, as Redis's CONFIG SET maxclients leaves them).
    (_L.BUSY, _LE.RESIZED): (_L.IDLE, None),
    # Turning a client away takes a descriptor too (only with a rejection
    # hook: without one a BUSY listener does not accept).
    (_L.BUSY, _LE.EXHAUSTED): (_L.PAUSED, Action.PAUSE_ACCEPTING),
    (_L.BUSY, _LE.SHUTDOWN): (_L.CLOSED, Action.CLOSE_LISTENER),
    # Paused, a client leaving frees a descriptor as well as a slot: RETRY follows.
    (_L.PAUSED, _LE.SLOT_FREED): (_L.PAUSED, None),
    # Back to IDLE, whichever state the pause began in: no client was
    # admitted meanwhile, so the slots are as they were or freer, and
    # RESUME_ACCEPTING fires FULL at once if they are all still taken.
    (_L.PAUSED, _LE.RETRY): (_L.IDLE, Action.RESUME_ACCEPTING),
    (_L.PAUSED, _LE.SHUTDOWN): (_L.CLOSED, Action.CLOSE_LISTENER),
    # Served connections still finishing after shutdown free their slots.
    (_L.CLOSED, _LE.SLOT_FREED): (_L.CLOSED, None),
}

LISTENER = Machine("listener", ListenerState, ListenerEvent, ListenerState.IDLE, LISTENER_TABLE)


# --- a connection -----------------------------------------------------------

class ConnState(_Enum):
    IDLE = "idle"            # nothing to send
    BUSY = "busy"            # output pending
    PAUSED = "paused"        # output pending above the high-water mark: not reading
    FLUSHING = "flushing"    # closing: sending what is pending, not reading
    DRAINING = "draining"    # closing: half-closed, reading to the peer's EOF
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
    (_C.IDLE, _CE.CLOSE): (_C.DRAINING, Action.HALF_CLOSE),
    (_C.IDLE, _CE.PEER_GONE): (_C.CLOSED, Action.RELEASE),
    (_C.IDLE, _CE.ABORT): (_C.CLOSED, Action.RELEASE),

    (_C.BUSY, _CE.OUTPUT_DRAINED): (_C.IDLE, None),
    (_C.BUSY, _CE.HIGH_WATER): (_C.PAUSED, Action.PAUSE_WRITING),
    # The peer half-closed but still reads (UNP's str_cli at end of input):
    # it must get every pending byte, then our FIN.
    (_C.BUSY, _CE.PEER_EOF): (_C.FLUSHING, Action.ARM_DEADLINE),
    (_C.BUSY, _CE.CLOSE): (_C.FLUSHING, Action.ARM_DEADLINE),
    (_C.BUSY, _CE.PEER_GONE): (_C.CLOSED, Action.RELEASE),
    (_C.BUSY, _CE.ABORT): (_C.CLOSED, Action.RELEASE),

    # A buffer that drains at once passes LOW_WATER first, then OUTPUT_DRAINED
    # from BUSY.
    (_C.PAUSED, _CE.LOW_WATER): (_C.BUSY, Action.RESUME_WRITING),
    # A paused connection does not read, but the EOF it read last may have
    # made eof_received write past the high-water mark: flush all, then FIN.
    (_C.PAUSED, _CE.PEER_EOF): (_C.FLUSHING, Action.ARM_DEADLINE),
    (_C.PAUSED, _CE.CLOSE): (_C.FLUSHING, Action.ARM_DEADLINE),
    (_C.PAUSED, _CE.PEER_GONE): (_C.CLOSED, Action.RELEASE),
    (_C.PAUSED, _CE.ABORT): (_C.CLOSED, Action.RELEASE),

    # Flushed: now half-close and read until the peer's EOF.  No PEER_EOF
    # here: a flushing connection does not read, and a peer's FIN read
    # earlier is read again once DRAINING (recv returns b"" for ever).
    (_C.FLUSHING, _CE.OUTPUT_DRAINED): (_C.DRAINING, Action.HALF_CLOSE),
    (_C.FLUSHING, _CE.CLOSE): (_C.FLUSHING, None),
    (_C.FLUSHING, _CE.PEER_GONE): (_C.CLOSED, Action.RELEASE),
    (_C.FLUSHING, _CE.ABORT): (_C.CLOSED, Action.RELEASE),
    (_C.FLUSHING, _CE.DEADLINE): (_C.CLOSED, Action.RELEASE),

    (_C.DRAINING, _CE.CLOSE): (_C.DRAINING, None),
    (_C.DRAINING, _CE.PEER_EOF): (_C.CLOSED, Action.RELEASE),
    (_C.DRAINING, _CE.PEER_GONE): (_C.CLOSED, Action.RELEASE),
    (_C.DRAINING, _CE.ABORT): (_C.CLOSED, Action.RELEASE),
    (_C.DRAINING, _CE.DEADLINE): (_C.CLOSED, Action.RELEASE),
}

CONNECTION = Machine("connection", ConnState, ConnEvent, ConnState.IDLE, CONNECTION_TABLE)


# The machines of this module: an IllegalTransition of theirs is a bug of
# the reactor itself, which no containment of a protocol's errors may hide.
REACTOR_MACHINES = frozenset({LISTENER.name, CONNECTION.name})


def is_reactor_bug(exc):
    """True for an exception that must stop the loop: one of the reactor's own machines broke."""
    return isinstance(exc, IllegalTransition) and exc.machine in REACTOR_MACHINES


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

# What a connection watches in each state: the state alone decides it.
_CONNECTION_INTEREST = {
    _C.IDLE: READ,
    _C.BUSY: READ | WRITE,
    _C.PAUSED: WRITE,       # not reading: see PAUSED above
    _C.FLUSHING: WRITE,
    _C.DRAINING: READ,      # only to find the peer's EOF
    _C.CLOSED: 0,           # unregistered by the loop when it closes the socket
}

# Looked up once: an Enum class attribute is a metaclass lookup each time
# (such lookups in the two interest functions, called after transitions, were
# 8% of the instructions of a connection that opens, echoes once and closes).
_L_BUSY, _L_PAUSED, _L_CLOSED = ListenerState.BUSY, ListenerState.PAUSED, ListenerState.CLOSED


def connection_interest(state):
    """The selector events a connection wants in ``state``.

    This is the only place that decides a connection's interest set.

    Returns
    -------
    int
        a mask of READ and WRITE (0 for CLOSED).
    """
    return _CONNECTION_INTEREST[state]


def listener_interest(state, rejects=True):
    """The selector events a listener wants: READ while it can accept.

    A BUSY listener that ``rejects`` keeps accepting so that the rejection
    hook can answer each extra client at once (the quick guide's server
    writes ``busy\\n``) instead of leaving it waiting in the backlog.  One
    that does not (the classic servers' ``--max-children``, the iterative
    server's one client) stops watching at capacity: the extra clients wait
    in the kernel's backlog until a slot is freed.  A PAUSED listener
    watches nothing: its sockets would be readable at once, and accept fail
    again.
    """
    if state is _L_CLOSED or state is _L_PAUSED or (state is _L_BUSY and not rejects):
        return 0
    return READ
