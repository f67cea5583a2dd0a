"""The one place that decides what a socket error means.

Every ``OSError`` from ``recv``, ``send``, ``accept`` or ``shutdown`` falls in
one of three kinds:

* **would block** -- the kernel has nothing for us right now
  (``EAGAIN``/``EWOULDBLOCK``, ``EINTR``).  Not an error: wait for the next
  readiness event.  PEP 475 already retries EINTR inside the socket methods;
  it stays in the tuple for callers that raise it themselves.
* **peer gone** -- the connection is over from the other side: reset,
  broken pipe, timed out by keepalive, unreachable.  A normal event for a
  server (CS:APP: "treat EPIPE on write as the client left, never as a
  crash"): the connection is released, nobody else is affected, and nothing
  is printed above debug level.
* **anything else** -- a bug (``EBADF``, ``EINVAL``, ``ENOTSOCK``...): it
  must be seen, with its traceback.  The reactor logs it at ERROR and drops
  only the connection it happened on.

Accept has its own list of errors that concern the *pending* connection or
the machine, not the listener: see ``ACCEPT_RETRY`` and ``ACCEPT_EXHAUSTED``.
"""

import enum
import errno


class Kind(enum.Enum):
    WOULD_BLOCK = "would block"
    PEER_GONE = "peer gone"
    BUG = "bug"


WOULD_BLOCK = (BlockingIOError, InterruptedError)

PEER_GONE_ERRNOS = frozenset({
    errno.ECONNRESET,     # RST received
    errno.EPIPE,          # write after the peer's RST or our own shutdown
    errno.ECONNABORTED,   # aborted locally (e.g. by the kernel)
    errno.ETIMEDOUT,      # keepalive or retransmission timeout
    errno.ENOTCONN,       # shutdown() on a socket the peer already reset
    errno.EHOSTUNREACH,   # ICMP errors reported on an established socket
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.EHOSTDOWN,
})

# accept() errors that concern only the connection being accepted (it was
# reset before we got to it: UNP's "RST before accept") or a passing
# condition: skip it and accept the next.  Linux also passes up pending
# network errors of the new socket through accept (accept(2), "Error handling").
ACCEPT_RETRY_ERRNOS = frozenset({
    errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENETDOWN,
    errno.ENOPROTOOPT, errno.EHOSTDOWN, errno.ENONET, errno.EHOSTUNREACH,
    errno.EOPNOTSUPP, errno.ENETUNREACH,
})

# accept() errors that mean the *process or machine* is out of something:
# the pending connection stays in the backlog and the listener stays
# readable, so accepting again at once would spin at 100% CPU.  The listener
# backs off instead (asyncio's remedy; see reactor.listener).
ACCEPT_EXHAUSTED_ERRNOS = frozenset({
    errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM,
})


def classify(exc):
    """Return the :class:`Kind` of an exception raised by a socket call."""
    if isinstance(exc, WOULD_BLOCK):
        return Kind.WOULD_BLOCK
    if isinstance(exc, OSError) and exc.errno in PEER_GONE_ERRNOS:
        return Kind.PEER_GONE
    return Kind.BUG


def describe(exc):
    """A short human description of a socket error, without a traceback."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{errno.errorcode.get(exc.errno, exc.errno)} ({exc.strerror})"
    return f"{type(exc).__name__}: {exc}"
