"""The service lifecycle table: running, stopping, aborting, stopped (tier 1)."""

import pytest

from reactor.states import IllegalTransition
from servers.service import SERVICE, SERVICE_TABLE, ServiceAction, ServiceEvent, ServiceState

S, E, A = ServiceState, ServiceEvent, ServiceAction


def test_a_first_stop_drains_a_second_aborts_and_both_end_the_loop():
    """What an operator relies on: SIGTERM drains (exit 0), a second SIGTERM drops everyone
    (exit 1), and either way the loop ends once the clients are gone."""
    state, action = SERVICE.apply(S.RUNNING, E.STOP)
    assert (state, action) == (S.STOPPING, A.DRAIN)
    assert SERVICE.apply(S.STOPPING, E.DRAINED) == (S.STOPPED, A.END)
    state, action = SERVICE.apply(S.STOPPING, E.STOP)
    assert (state, action) == (S.ABORTING, A.ABORT)
    assert SERVICE.apply(S.ABORTING, E.DRAINED) == (S.STOPPED, A.END)
    # A third signal while the fork server waits for its children changes nothing.
    assert SERVICE.apply(S.ABORTING, E.STOP) == (S.ABORTING, None)


def test_nothing_left_to_serve_ends_the_loop():
    """A UDP-only server whose every socket failed stops (exit status 1) rather than idle."""
    assert SERVICE.apply(S.RUNNING, E.FAILED) == (S.STOPPED, A.END)


def test_stopped_is_final_and_missing_rows_are_errors():
    """Nothing leaves STOPPED (a late signal is ignored), and an event with no row raises an
    error naming the machine instead of leaving the service in a state nobody designed."""
    assert all(new is S.STOPPED for (old, _), (new, _a) in SERVICE_TABLE.items()
               if old is S.STOPPED)
    with pytest.raises(IllegalTransition, match="service: no transition from STOPPED on DRAINED"):
        SERVICE.apply(S.STOPPED, E.DRAINED)


def test_stop_now_aborts_from_any_state_and_never_leaves_stopped():
    """A worker whose master has gone stops at once (exit 1), whether it was serving or
    already draining; once stopped, nothing restarts it."""
    assert SERVICE.apply(S.RUNNING, E.ABORT) == (S.ABORTING, A.ABORT)
    assert SERVICE.apply(S.STOPPING, E.ABORT) == (S.ABORTING, A.ABORT)
    assert SERVICE.apply(S.ABORTING, E.ABORT) == (S.ABORTING, None)
    assert SERVICE.apply(S.STOPPED, E.ABORT) == (S.STOPPED, None)
