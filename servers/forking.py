"""Fork per connection: UNP's ``tcpserv04``, and on request the flawed versions before it.

For each client the parent forks; the child closes the listening sockets
(and the parent's other descriptors), serves the connection, and exits; the
parent closes the connected socket (or the client would never see a FIN) and
goes back to accepting.  How the parent learns that children have ended is
the subject of UNP 5.8-5.10 and the worksheet, and ``--reap`` reproduces each
version:

=========  ==================================================================
waitpid    ``tcpserv04`` (the default and the correct one): the SIGCHLD
           handler calls ``waitpid(-1, WNOHANG)`` in a loop, so children
           whose signals were merged into one are reaped too.
wait       ``tcpserv02/03``: one child reaped per SIGCHLD.  Signals are not
           queued, so when several children end together some stay zombies.
ignore     the quick guide's ``sigaction(SIGCHLD, SIG_IGN)``: the kernel
           reaps them, and the parent never learns how a child ended.
none       ``tcpserv01``: nothing reaps; every finished child stays a zombie
           (``<defunct>`` in ``ps``) until the parent exits.
=========  ==================================================================

The parent runs on the reactor (``servers.classic``), so SIGCHLD is one
more signal the loop delivers between two handlers: the callback calls
``waitpid`` as UNP's handler does, and logs what it reaped (UNP 5.8's rule,
no ``printf`` in a handler, holds because the callback is not one).  The
loop, like the kernel, merges signals that arrive together, so ``wait``
leaves zombies just as tcpserv03 does.  With ``ignore`` no SIGCHLD comes at
all; the parent learns that a child has ended from a pidfd
(``pidfd_open(2)``), which the loop watches like a socket.  SIGPIPE is
ignored in every Python process, so a child writing to a vanished client gets
``EPIPE`` and ends normally instead of being killed.

A child ignores SIGINT, so that Ctrl-C in the terminal (sent to the whole
process group) is the parent's to handle, and SIGUSR1, which
``pkill -USR1 -f`` sends to children too; SIGTERM ends a child at once.
The parent's counters count children: their bytes are the children's own.  On
the first SIGINT/SIGTERM the parent stops accepting, then, with ``--children
wait`` (the default), gives its children ``--grace`` seconds to finish before
sending them SIGTERM, or with ``--children term`` sends it at once; either
way it reaps them all before it exits (with ``none`` too: the zombies are
reaped at exit, as the kernel would once the parent is gone).
"""

import logging
import os
import signal
import time

from servers.blocking import run_one
from servers.classic import Design

log = logging.getLogger("selectlab")

REAP_MODES = ("waitpid", "wait", "ignore", "none")
CHILDREN_MODES = ("wait", "term")

# Blocked across fork() (see Forking.serve).
_FORK_BLOCKED = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGUSR1}


def describe_exit(status):
    """A ``waitpid`` status in words (UNP's WIFEXITED/WIFSIGNALED): ``exit 0``, ``killed by SIGTERM``."""
    if os.WIFEXITED(status):
        return f"exit {os.WEXITSTATUS(status)}"
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(signum).name}"
        except ValueError:
            return f"killed by signal {signum}"
    return f"status {status:#x}"


def reap_ended():
    """Reap, without waiting, each child that has ended: ``(pid, status)`` pairs (UNP's
    ``while ((pid = waitpid(-1, &stat, WNOHANG)) > 0)``).  Stop early to reap fewer."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, status


def has_ended(pid):
    """Whether our child ``pid`` has ended, without reaping it (``waitid`` with ``WNOWAIT``)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True     # reaped already, or not ours


class _ChildExit:
    """A pidfd as a reactor handler: readable once the child has ended (``--reap ignore``)."""

    def __init__(self, forking, pid, fd):
        self.forking, self.pid, self.fd = forking, pid, fd

    def on_readable(self):
        self.forking._pidfd_ready(self)

    def on_writable(self):  # never registered for WRITE
        pass


class Forking(Design):
    """A child process per connection.

    Parameters
    ----------
    serve : callable
        ``serve(sock, addr) -> (bytes_in, bytes_out, reason)``, blocking,
        run in the child (``servers.blocking.serve_connection``).
    reap : str
        one of ``REAP_MODES`` (see the module docstring).
    max_children : int or None
        at most this many children at once; while there are that many,
        the parent stops accepting and clients wait in the backlog.
    children : str
        ``"wait"`` or ``"term"``: what stopping does with the children.
    """

    counts_bytes = False

    def __init__(self, serve, reap="waitpid", max_children=None, children="wait"):
        if reap not in REAP_MODES:
            raise ValueError(f"reap must be one of {REAP_MODES}")
        if children not in CHILDREN_MODES:
            raise ValueError(f"children must be one of {CHILDREN_MODES}")
        self._serve = serve
        self.reap = reap
        self.capacity = max_children
        self.children_mode = children
        self.children = {}          # pid -> when it was forked, while it runs
        self._unreaped = set()      # ended children not reaped yet (wait, none)
        self._pidfds = {}           # pid -> _ChildExit (ignore)
        self._previous_sigchld = None

    def attach(self, server):
        super().attach(server)
        reactor = server.reactor
        if self.reap == "ignore":
            self._previous_sigchld = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        else:
            # tcpserv01 (none) has no handler at all.  This one reaps nothing
            # either (the zombies stay), but it tells the parent that a child
            # has ended, so that --max-children frees its slot.
            reactor.add_signal_handler(signal.SIGCHLD, self._on_sigchld)

    # --- children ending -------------------------------------------------

    def _on_sigchld(self, _signum):
        if self.reap == "waitpid":
            self._reap(every=True)          # tcpserv04's sig_chld: while waitpid(WNOHANG)
        elif self.reap == "wait":
            self._reap(every=False)         # tcpserv03: one child per signal
        self._look_for_zombies()

    def _reap(self, every):
        for pid, status in reap_ended():
            self._unreaped.discard(pid)
            log.info("child %d terminated (%s)", pid, describe_exit(status))
            # Exit 1 is a bug in the per-client code; a child killed at the
            # end of the grace period is not.
            self._ended(pid, failed=os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0)
            if not every:
                return

    def _look_for_zombies(self):
        """Children that have ended unreaped (wait, none) no longer count as clients."""
        if self.reap == "waitpid":
            return
        for pid in list(self.children):
            if has_ended(pid):
                self._unreaped.add(pid)
                self._ended(pid)

    def _pidfd_ready(self, watcher):
        reactor = self.server.reactor
        reactor.unregister(watcher.fd)
        os.close(watcher.fd)
        del self._pidfds[watcher.pid]
        self._ended(watcher.pid)

    def _ended(self, pid, failed=False):
        started = self.children.pop(pid, None)
        if started is not None:
            self.server.client_done(seconds=time.monotonic() - started, failed=failed)

    # --- the parent ------------------------------------------------------

    def serve(self, sock, addr):
        # Signals stay blocked from just before fork() until each process has
        # its own handlers: a SIGTERM meant for the new child cannot reach
        # the parent's handler in the child, and is delivered when it unblocks.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _FORK_BLOCKED)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            log.error("fork: %s; dropping the client", exc.strerror)
            sock.close()
            self.server.client_done(failed=True)
            return
        if pid == 0:
            self._child(sock, addr, old_mask)   # never returns
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        sock.close()        # the parent's copy; the child has its own
        self.children[pid] = time.monotonic()
        if self.reap == "ignore":
            watcher = _ChildExit(self, pid, os.pidfd_open(pid))
            self._pidfds[pid] = watcher
            self.server.reactor.register(watcher.fd, 1, watcher)

    def client_count(self):
        """Children still running (zombies and reaped ones do not count)."""
        return len(self.children)

    def at_capacity(self):
        log.info("%d children: not accepting until one ends", self.capacity)

    # --- stopping --------------------------------------------------------

    def stopping(self):
        if self.children_mode == "term":
            self.end_clients()

    def end_clients(self):
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def close(self):
        """After the loop: reap what is left, so that no child stays a zombie."""
        for pid in list(self.children) + sorted(self._unreaped):
            try:
                got, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue    # reaped by the kernel (ignore)
            if got:
                log.info("child %d terminated (%s)", pid, describe_exit(status))
                self.children.pop(pid, None)
        for pid in self.children:
            log.warning("child %d did not end", pid)
        for watcher in self._pidfds.values():
            os.close(watcher.fd)
        self._pidfds.clear()
        if self._previous_sigchld is not None:
            signal.signal(signal.SIGCHLD, self._previous_sigchld)

    # --- the child -------------------------------------------------------

    def _child(self, sock, addr, old_mask):
        """In the child: drop the parent's loop, descriptors and signals, serve, exit."""
        status = 1
        try:
            self.server.reactor.close_in_child()    # its signals back to their defaults
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)   # pkill -USR1 -f asks the parent
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            for listening in self.server.sockets:
                listening.close()       # UNP: close(listenfd)
            for other in self.server.waiting:
                other.close()           # clients accepted with ours, the parent's to hand out
            for watcher in self._pidfds.values():
                os.close(watcher.fd)
            failed = run_one(self._serve, sock, addr, who=f"[{os.getpid()}] ")[3]
            status = 1 if failed else 0     # the parent logs it: "terminated (exit 1)"
        except BaseException:
            log.exception("child %d failed", os.getpid())
        finally:
            logging.shutdown()
            os._exit(status)
