"""The state tables as data: every machine, every illegal pair, the interest sets (tier 1)."""

import enum
import itertools
import selectors
import subprocess
import sys

import pytest

from reactor import states
from tools import docgen
from reactor.states import (
    CONNECTION, HIGH_WATER, LISTENER, LOW_WATER, READ, WRITE, Action, ConnEvent, ConnState,
    IllegalTransition, ListenerEvent, ListenerState, Machine, connection_interest,
    listener_interest,
)

ILLEGAL = [(m, s, e) for m in docgen.MACHINES
           for s, e in itertools.product(m.states, m.events) if (s, e) not in m.table]


@pytest.mark.parametrize("machine,state,event", ILLEGAL,
                         ids=[f"{m.name}-{s.name}-{e.name}" for m, s, e in ILLEGAL])
def test_an_illegal_pair_raises_naming_both(machine, state, event):
    """A bug that sends an event to the wrong state fails loudly, naming machine, state and event."""
    with pytest.raises(IllegalTransition) as info:
        machine.apply(state, event)
    message = str(info.value)
    assert machine.name in message and state.name in message and event.name in message
    assert info.value.machine == machine.name


@pytest.mark.parametrize("machine", docgen.MACHINES, ids=lambda m: m.name)
def test_every_state_is_reached_from_the_initial_one(machine):
    """No machine has a state that nothing leads to (a state only its own table could reach)."""
    reached, frontier = {machine.initial}, [machine.initial]
    while frontier:
        state = frontier.pop()
        for (old, _event), (new, _action) in machine.table.items():
            if old is state and new not in reached:
                reached.add(new)
                frontier.append(new)
    assert reached == set(machine.states)


def test_a_table_naming_another_machines_states_is_refused():
    """A typo that puts one machine's state in another's table fails at import, not at run time."""
    class Other(enum.Enum):
        X = "x"

    with pytest.raises(ValueError, match="demo"):
        Machine("demo", ConnState, ConnEvent, ConnState.IDLE,
                {(ConnState.IDLE, ConnEvent.CLOSE): (Other.X, None)})
    with pytest.raises(ValueError, match="demo"):
        Machine("demo", ConnState, ConnEvent, Other.X, {})


def test_only_the_reactors_own_machines_are_reactor_bugs():
    """An illegal transition of the listener or a connection stops the loop; a protocol's own
    machine (the Hello session's) raising one is that protocol's bug, contained like any other."""
    from wire.hello import SESSION
    assert states.REACTOR_MACHINES == {LISTENER.name, CONNECTION.name}
    for machine, fatal in ((LISTENER, True), (CONNECTION, True), (SESSION, False)):
        state, event = next((s, e) for m, s, e in ILLEGAL if m is machine)
        with pytest.raises(IllegalTransition) as info:
            machine.apply(state, event)
        assert states.is_reactor_bug(info.value) is fatal


def test_closed_is_terminal_for_a_connection():
    """Once released, a connection accepts no event at all: no resurrection, no double close."""
    assert not [pair for pair in CONNECTION.table if pair[0] is ConnState.CLOSED]


def test_only_release_leads_to_closed_and_it_always_does():
    """A connection's socket is handed back exactly when it becomes CLOSED, never earlier or later."""
    for (state, event), (new, action) in CONNECTION.table.items():
        assert (new is ConnState.CLOSED) == (action is Action.RELEASE), (state, event)


def test_closing_flushes_first_then_half_closes_and_drains():
    """close() with output pending sends it all before our FIN; with none, the FIN goes at once;
    either way we then read until the peer's FIN, and a flushing connection never sees one."""
    C, E, A = ConnState, ConnEvent, Action
    for state in (C.BUSY, C.PAUSED):
        assert CONNECTION.apply(state, E.CLOSE) == (C.FLUSHING, A.ARM_DEADLINE)
    assert CONNECTION.apply(C.IDLE, E.CLOSE) == (C.DRAINING, A.HALF_CLOSE)
    assert CONNECTION.apply(C.FLUSHING, E.OUTPUT_DRAINED) == (C.DRAINING, A.HALF_CLOSE)
    assert (C.FLUSHING, E.PEER_EOF) not in CONNECTION.table
    for state in (C.FLUSHING, C.DRAINING):
        assert CONNECTION.apply(state, E.DEADLINE) == (C.CLOSED, A.RELEASE)


def test_interest_bits_match_selectors():
    """The sans-IO module's READ/WRITE are the selector's bits."""
    assert (READ, WRITE) == (selectors.EVENT_READ, selectors.EVENT_WRITE)


def test_interest_follows_the_state():
    """IDLE reads, BUSY reads and writes, PAUSED and FLUSHING only write, DRAINING only reads."""
    assert connection_interest(ConnState.IDLE) == READ
    assert connection_interest(ConnState.BUSY) == READ | WRITE
    assert connection_interest(ConnState.PAUSED) == WRITE
    assert connection_interest(ConnState.FLUSHING) == WRITE
    assert connection_interest(ConnState.DRAINING) == READ
    assert connection_interest(ConnState.CLOSED) == 0


def test_flow_control_is_a_state_with_hysteresis():
    """Crossing the high-water mark pauses (and tells the protocol); only the low-water mark
    resumes, so a slow reader does not flip our READ interest on every send."""
    C, E, A = ConnState, ConnEvent, Action
    assert CONNECTION.table[C.BUSY, E.HIGH_WATER] == (C.PAUSED, A.PAUSE_WRITING)
    assert CONNECTION.table[C.PAUSED, E.LOW_WATER] == (C.BUSY, A.RESUME_WRITING)
    assert LOW_WATER < HIGH_WATER


def test_listener_keeps_accepting_when_busy_so_it_can_reject():
    """The guide's busy server still watches the listening socket while it serves a client."""
    assert listener_interest(ListenerState.BUSY) == READ
    assert listener_interest(ListenerState.CLOSED) == 0
    # Without a rejection hook, clients beyond the capacity wait in the backlog.
    assert listener_interest(ListenerState.IDLE, rejects=False) == READ
    assert listener_interest(ListenerState.BUSY, rejects=False) == 0


def test_a_listener_out_of_descriptors_watches_nothing_until_it_retries():
    """At EMFILE the listening socket stays readable, so a PAUSED listener must not watch it
    (that would spin); a retry goes back to IDLE, and never admits while paused."""
    L, E = ListenerState, ListenerEvent
    assert listener_interest(L.PAUSED) == listener_interest(L.PAUSED, rejects=False) == 0
    for state in (L.IDLE, L.BUSY):
        assert LISTENER.apply(state, E.EXHAUSTED) == (L.PAUSED, Action.PAUSE_ACCEPTING)
    assert LISTENER.apply(L.PAUSED, E.RETRY) == (L.IDLE, Action.RESUME_ACCEPTING)
    assert (L.PAUSED, E.CONNECTION) not in LISTENER.table


def test_architecture_doc_is_generated_from_the_tables():
    """docs/architecture.md shows the tables the code runs; regenerate it when they change."""
    result = subprocess.run([sys.executable, "-m", "tools.docgen", "--check"],
                            cwd=docgen.DOC.parent.parent, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_doc_draws_every_row_of_every_machine():
    """Each machine in docgen.MACHINES gets its own table and diagram, row for row."""
    section = docgen.generate()
    for machine in docgen.MACHINES:
        part = section.split(docgen._heading(machine), 1)[1].split("\n### ", 1)[0]
        for (state, event), (new, _action) in machine.table.items():
            assert f"| {state.name} | {event.value} | {new.name} |" in part
            assert f"    {state.name} --> {new.name}: {event.value}" in part


def test_doc_check_notices_a_stale_doc():
    """The staleness check compares content: an edited table would not slip through."""
    section = docgen.generate()
    text = docgen.DOC.read_text()
    assert docgen.splice(text, section) == text
    stale = text.replace("| BUSY | output drained | IDLE |", "| BUSY | output drained | CLOSED |")
    assert stale != text and docgen.splice(stale, section) != stale
