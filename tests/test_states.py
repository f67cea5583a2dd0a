"""The state tables as data: every row, every illegal pair, the interest sets (tier 1)."""

import itertools
import selectors
import subprocess
import sys

import pytest

from reactor import states
from tools import docgen
from reactor.states import (
    CONNECTION_TABLE, HIGH_WATER, LISTENER_TABLE, LOW_WATER, READ, WRITE, Action, ConnEvent,
    ConnState, IllegalTransition, ListenerEvent, ListenerState, apply, connection_interest,
)

MACHINES = [
    ("listener", LISTENER_TABLE, ListenerState, ListenerEvent),
    ("connection", CONNECTION_TABLE, ConnState, ConnEvent),
]


ILLEGAL = [(name, table, s, e) for name, table, S, E in MACHINES
           for s, e in itertools.product(S, E) if (s, e) not in table]


@pytest.mark.parametrize("name,table,state,event", ILLEGAL,
                         ids=[f"{n}-{s.name}-{e.name}" for n, _, s, e in ILLEGAL])
def test_an_illegal_pair_raises_naming_both(name, table, state, event):
    """A bug that sends an event to the wrong state fails loudly, saying which state and event."""
    with pytest.raises(IllegalTransition) as info:
        apply(table, state, event)
    message = str(info.value)
    assert name in message and state.name in message and event.name in message


def test_closed_is_terminal_for_a_connection():
    """Once released, a connection accepts no event at all: no resurrection, no double close."""
    assert not [pair for pair in CONNECTION_TABLE if pair[0] is ConnState.CLOSED]


def test_only_release_leads_to_closed_and_it_always_does():
    """A connection's socket is handed back exactly when it becomes CLOSED, never earlier or later."""
    for (state, event), (new, action) in CONNECTION_TABLE.items():
        assert (new is ConnState.CLOSED) == (action is Action.RELEASE), (state, event)


def test_interest_bits_match_selectors():
    """The sans-IO module's READ/WRITE are the selector's bits."""
    assert (READ, WRITE) == (selectors.EVENT_READ, selectors.EVENT_WRITE)


def test_interest_follows_the_state():
    """IDLE reads, BUSY reads and writes, PAUSED only writes, CLOSING flushes then reads to EOF."""
    assert connection_interest(ConnState.IDLE, 0) == READ
    assert connection_interest(ConnState.BUSY, 10) == READ | WRITE
    assert connection_interest(ConnState.PAUSED, HIGH_WATER + 1) == WRITE
    assert connection_interest(ConnState.CLOSING, 10) == WRITE
    assert connection_interest(ConnState.CLOSING, 0) == READ
    assert connection_interest(ConnState.CLOSED, 0) == 0


def test_flow_control_is_a_state_with_hysteresis():
    """Crossing the high-water mark pauses (and tells the protocol); only the low-water mark
    resumes, so a slow reader does not flip our READ interest on every send."""
    C, E, A = ConnState, ConnEvent, Action
    assert CONNECTION_TABLE[C.BUSY, E.HIGH_WATER] == (C.PAUSED, A.PAUSE_WRITING)
    assert CONNECTION_TABLE[C.PAUSED, E.LOW_WATER] == (C.BUSY, A.RESUME_WRITING)
    assert LOW_WATER < HIGH_WATER


def test_listener_keeps_accepting_when_busy_so_it_can_reject():
    """The guide's busy server still watches the listening socket while it serves a client."""
    assert states.listener_interest(ListenerState.BUSY) == READ
    assert states.listener_interest(ListenerState.CLOSED) == 0
    # Without a rejection hook, clients beyond the capacity wait in the backlog.
    assert states.listener_interest(ListenerState.IDLE, rejects=False) == READ
    assert states.listener_interest(ListenerState.BUSY, rejects=False) == 0


def test_architecture_doc_is_generated_from_the_tables():
    """docs/architecture.md shows the tables the code runs; regenerate it when they change."""
    result = subprocess.run([sys.executable, "-m", "tools.docgen", "--check"],
                            cwd=docgen.DOC.parent.parent, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_doc_check_notices_a_stale_doc():
    """The staleness check compares content: an edited table would not slip through."""
    section = docgen.generate()
    text = docgen.DOC.read_text()
    assert docgen.splice(text, section) == text
    stale = text.replace("| BUSY | output drained | IDLE |", "| BUSY | output drained | CLOSED |")
    assert stale != text and docgen.splice(stale, section) != stale
