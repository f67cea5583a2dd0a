"""Which selector the loop waits in, and what each can watch.

``--selector`` names one of :data:`SELECTORS`; epoll is the default on
Linux.  select() cannot watch descriptors from :data:`FD_SETSIZE` up, which
``selector_fd_limit`` reports so that the loop refuses them at
``register()`` instead of failing in every later ``select()``.

**On epoll the loop bypasses ``EpollSelector``'s bookkeeping.**  It waits
on the selector's own epoll instance, through a duplicate of its descriptor
(:func:`epoll_of`: only public interfaces, ``selector.fileno()`` and
``select.epoll.fromfd``), registers with it directly using the bit masks
below, and keeps its own ``fd -> handler`` map.  Two costs go:

* ``EpollSelector.register``'s ``SelectorKey`` and file-object bookkeeping:
  14,400 instructions of the 63,500 of a connection that opens, echoes once
  and closes (callgrind, counted over thousands of connections).  The
  selector's own map then stays empty, and ``Reactor.events`` answers
  what ``selector.get_key`` would.
* ``EpollSelector.select()`` turning each ``(fd, bits)`` into a
  ``(SelectorKey, mask)`` pair, a method call, a lookup and a tuple per
  ready socket: 7.10 µs of server CPU per 1 KiB echo through ``select()``,
  6.85 µs without (``python -m bench``, 100 connections, 2 rounds of 3
  runs side by side), about 3.5%.

poll and select go through the selector as usual.
"""

import os
import select
import selectors

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE

# Which epoll bits wake which handler, as selectors.EpollSelector maps them:
# an error or hang-up wakes both (the handler's recv/send then reports it).
EPOLL_READ = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP
EPOLL_WRITE = select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP

# The epoll bits a READ/WRITE mask stands for: selectors.EpollSelector's.
EPOLL_BITS = {EVENT_READ: select.EPOLLIN, EVENT_WRITE: select.EPOLLOUT,
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


def epoll_of(selector):
    """A second handle on ``selector``'s epoll instance, or None if it is not an EpollSelector.

    A duplicated epoll descriptor is the same epoll instance: what the
    selector registers, ``poll()`` on the duplicate reports.
    """
    if not isinstance(selector, getattr(selectors, "EpollSelector", ())):
        return None
    return select.epoll.fromfd(os.dup(selector.fileno()))
