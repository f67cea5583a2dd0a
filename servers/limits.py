"""How many clients a server can take: the open-descriptor limit and the capacity it allows.

Each client costs one descriptor.  A server raises its soft limit to the
hard one (as Go and Redis do), keeps ``RESERVED_FDS`` back for itself, and
serves at most the rest unless ``--max-clients`` says otherwise.  On
select() the limit stays at FD_SETSIZE instead, since select() cannot watch
a descriptor past it.
"""

import logging
import os
import resource

from cli import Fatal
from reactor.selection import FD_SETSIZE

log = logging.getLogger("selectlab")

# Redis's CONFIG_MIN_RESERVED_FDS: descriptors kept back from clients, for
# the server's own (selector, wakeup socketpair, listening sockets, logs) and
# for answering "busy" to clients beyond capacity.
RESERVED_FDS = 32


def cpu_count():
    """The CPUs this process may run on (its affinity mask), as ``--workers auto`` counts them."""
    return len(os.sched_getaffinity(0))


def fd_limit():
    """The open-descriptor limit this process has, or will have after :func:`raise_fd_limit`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if hard == resource.RLIM_INFINITY else max(soft, hard)


def raise_fd_limit(ceiling=None):
    """Raise the soft limit on open descriptors to the hard limit (as Go and Redis do).

    Each client costs one descriptor; the usual soft limit of 1024 would
    refuse clients long before the machine is short of anything.  Returns
    the limit in force.

    With ``ceiling`` (FD_SETSIZE, for a loop on select()), the soft limit is
    set to at most that instead, lowered if need be: the kernel then refuses
    (EMFILE) any descriptor select() could not watch, and the listener's
    EMFILE back-off keeps waiting clients in the backlog, where a descriptor
    past the limit would make every select() call fail.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if ceiling is not None and (hard == resource.RLIM_INFINITY or hard > ceiling):
        target = ceiling
    if soft != target and target != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


def fd_limit_for(args):
    """The descriptor ceiling the chosen selector needs (FD_SETSIZE for select), or None."""
    return FD_SETSIZE if getattr(args, "selector", None) == "select" else None


def choose_max_clients(requested, fd_limit):
    """The capacity to serve with: ``requested``, or what ``fd_limit`` allows.

    Raises
    ------
    cli.Fatal
        when nothing was requested and the limit leaves no descriptor for
        clients (Redis refuses to start in that case too).
    """
    if requested is not None:
        return requested
    allowed = fd_limit - RESERVED_FDS
    if allowed < 1:
        raise Fatal(f"the open-file limit ({fd_limit}) leaves no descriptor for clients "
                    f"once the server keeps its {RESERVED_FDS}; raise it (ulimit -n) or "
                    f"give --max-clients")
    return allowed


def log_capacity(requested, capacity, fd_limit, on_select=False, per_worker=False):
    """Say how many clients will be served, and warn if the descriptors cannot cover them.

    ``per_worker``: each of several worker processes has that capacity.
    """
    each = " by each worker" if per_worker else ""
    allowed = fd_limit - RESERVED_FDS
    remedy = ("use --selector poll or epoll, which have no such limit" if on_select
              else "raise ulimit -n to avoid this")
    if requested is None:
        log.info("serving at most %d clients at once%s (open-file limit %d minus %d kept "
                 "for the server)", capacity, each, fd_limit, RESERVED_FDS)
    elif capacity > allowed:
        log.warning("--max-clients %d is more than the open-file limit (%d) allows: past "
                    "about %d clients, accepting will pause until clients leave (%s)",
                    capacity, fd_limit, max(allowed, 0), remedy)
    else:
        log.info("serving at most %d client(s) at once%s", capacity, each)
