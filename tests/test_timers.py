"""The timer heap, with the clock passed in: no sleeping (tier 1)."""

from reactor.timers import TimerQueue


def test_timers_fire_in_deadline_order_and_equal_deadlines_in_fifo_order():
    """Callbacks scheduled for the same moment run in the order they were scheduled."""
    q = TimerQueue()
    fired = []
    q.push(2.0, fired.append, ("b",))
    q.push(1.0, fired.append, ("a",))
    q.push(2.0, fired.append, ("c",))
    assert q.timeout(0.5) == 0.5
    for timer in q.pop_due(2.0):
        timer.callback(*timer.args)
    assert fired == ["a", "b", "c"]
    assert q.timeout(3.0) is None


def test_a_cancelled_timer_never_fires_and_does_not_shorten_the_sleep():
    """Cancelling an idle timeout really cancels it, and the loop sleeps until the next live one."""
    q = TimerQueue()
    early = q.push(1.0, lambda: None)
    q.push(5.0, lambda: None)
    early.cancel()
    early.cancel()
    assert len(q) == 1
    assert q.timeout(0.0) == 5.0
    assert [t.when for t in q.pop_due(10.0)] == [5.0]


def test_cancelled_timers_do_not_pile_up():
    """A server that re-arms a timer per request keeps a heap the size of its live timers."""
    q = TimerQueue()
    keep = [q.push(100.0 + i, lambda: None) for i in range(50)]
    for i in range(10_000):
        q.push(50.0 + i, lambda: None).cancel()
    assert len(q._heap) < 400
    assert len(q) == len(keep)
