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

In Python, a signal handler runs in the main thread between two bytecodes,
not in signal context, so the handler may call ``waitpid`` (as UNP's does);
it only records what it reaped, and the main loop logs it (UNP 5.8: no
``printf`` in a handler).  ``accept`` interrupted by the signal is restarted
(PEP 475 does what UNP's ``if (errno == EINTR) continue`` does).  SIGPIPE is
ignored in every Python process, so a child writing to a vanished client gets
``EPIPE`` and ends normally instead of being killed.

A child ignores SIGINT, so that Ctrl-C in the terminal (sent to the whole
process group) is the parent's to handle; SIGTERM ends a child at once.  On
the first SIGINT/SIGTERM the parent stops accepting, then, with ``--children
wait`` (the default), gives its children ``--grace`` seconds to finish before
sending them SIGTERM, or with ``--children term`` sends it at once; either
way it reaps them all before it exits.
"""

import logging
import os
import signal
import time

from servers.blocking import ClassicServer, run_one

log = logging.getLogger("selectlab")

REAP_MODES = ("waitpid", "wait", "ignore", "none")
CHILDREN_MODES = ("wait", "term")

# How long the parent waits for children to die after SIGTERM before it
# gives up on them (they ignore nothing but SIGINT, so this is plenty).
TERM_TIMEOUT = 5.0


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


# Blocked across fork() (see Forking.dispatch).
_FORK_BLOCKED = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGUSR1}


def _wake_only(signum, frame):
    """A SIGCHLD handler that reaps nothing; its only effect is the wakeup byte."""


def process_state(pid):
    """``(state, ppid)`` of ``pid`` from ``/proc``, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1])


class Forking(ClassicServer):
    """A child process per connection.

    Parameters
    ----------
    socks, serve, grace
        as for :class:`~servers.blocking.ClassicServer`.
    reap : str
        one of ``REAP_MODES`` (see the module docstring).
    max_children : int or None
        at most this many children at once; while there are that many,
        the parent stops accepting and clients wait in the backlog.
    children : str
        ``"wait"`` or ``"term"``: what stopping does with the children.
    """

    def __init__(self, socks, serve, grace, reap="waitpid", max_children=None,
                 children="wait"):
        if reap not in REAP_MODES:
            raise ValueError(f"reap must be one of {REAP_MODES}")
        if children not in CHILDREN_MODES:
            raise ValueError(f"children must be one of {CHILDREN_MODES}")
        super().__init__(socks, serve, grace)
        self.reap = reap
        self.max_children = max_children
        self.children_mode = children
        self.children = {}          # pid -> peer text, until the pid is known to be gone
        self._reaped = []           # (pid, status) from the SIGCHLD handler, to log

    # --- the parent ------------------------------------------------------

    def run(self):
        if self.reap == "waitpid":
            self.set_handler(signal.SIGCHLD, self._sigchld_waitpid)
        elif self.reap == "wait":
            self.set_handler(signal.SIGCHLD, self._sigchld_wait)
        elif self.reap == "ignore":
            self.set_handler(signal.SIGCHLD, signal.SIG_IGN)
        else:
            # tcpserv01 has no handler at all.  This one reaps nothing either
            # (the zombies stay), but it wakes the loop so that
            # --max-children notices a child has ended.
            self.set_handler(signal.SIGCHLD, _wake_only)
        try:
            return super().run()
        finally:
            self._reap_all()

    def _sigchld_waitpid(self, signum, frame):
        """UNP's sig_chld (tcpserv04): reap every child that has ended, never block."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._reaped.append((pid, status))

    def _sigchld_wait(self, signum, frame):
        """UNP's tcpserv03 handler: one child per signal, so merged signals leave zombies.

        UNP calls ``wait()``; this calls ``waitpid(-1, WNOHANG)`` once, which
        loses children in the same way but cannot block the parent when the
        signal was for a child that stopped (SIGSTOP) rather than ended.
        """
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            self._reaped.append((pid, status))

    def after_wakeup(self):
        self._log_reaped()
        if self.max_children is not None:
            self.set_accepting(self.clients_left() < self.max_children)

    def poll_interval(self):
        at_limit = self.max_children is not None and not self._accepting
        return 0.1 if self.reap == "ignore" and at_limit else None

    def _log_reaped(self):
        reaped, self._reaped = self._reaped, []
        for pid, status in reaped:
            self.children.pop(pid, None)
            log.info("child %d terminated (%s)", pid, describe_exit(status))

    def dispatch(self, sock, addr):
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
            return
        if pid == 0:
            self._child(sock, addr, old_mask)   # never returns
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        sock.close()        # the parent's copy; the child has its own
        self.children[pid] = str(addr[0]) if isinstance(addr, tuple) else str(addr)
        if self.max_children is not None and self.clients_left() >= self.max_children:
            log.info("%d children: not accepting until one ends", self.max_children)
            self.set_accepting(False)

    def clients_left(self):
        """Children still running (zombies and reaped ones do not count)."""
        if self.reap == "waitpid":
            return len(self.children)
        return sum(1 for pid in list(self.children) if self._running(pid))

    def _running(self, pid):
        """Whether ``pid`` is our child and not a zombie (``/proc``: pids are reused)."""
        state = process_state(pid)
        if state is None or state[1] != os.getpid() or state[0] == "Z":
            if state is None or state[1] != os.getpid():
                self.children.pop(pid, None)
            return False
        return True

    # --- stopping --------------------------------------------------------

    def _on_stop_signal(self, signum):
        super()._on_stop_signal(signum)
        if self.children_mode == "term" and self._signals_seen == 1:
            self._terminate_children()

    def end_clients(self):
        self._terminate_children()

    def _terminate_children(self):
        for pid in list(self.children):
            if self._running(pid):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def _reap_all(self):
        """Before exiting: make sure no child of ours is left running or a zombie."""
        self._log_reaped()      # reaped by the handler after the loop's last turn
        end = time.monotonic() + TERM_TIMEOUT
        while self.children and time.monotonic() < end:
            for pid in list(self.children):
                state = process_state(pid)
                if state is None or state[1] != os.getpid():
                    self.children.pop(pid, None)    # auto-reaped (ignore) or gone
                    continue
                try:
                    got, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    self.children.pop(pid, None)
                    continue
                if got:
                    self.children.pop(pid, None)
                    log.info("child %d terminated (%s)", pid, describe_exit(status))
            if self.children:
                time.sleep(0.01)
        for pid in self.children:
            log.warning("child %d did not end", pid)

    # --- the child -------------------------------------------------------

    def _child(self, sock, addr, old_mask):
        """In the child: drop the parent's descriptors and signals, serve, exit."""
        status = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.setitimer(signal.ITIMER_REAL, 0)
            for signum in (signal.SIGTERM, signal.SIGCHLD, signal.SIGUSR1, signal.SIGALRM):
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            self.close()        # the listening sockets (UNP: close(listenfd)) and the loop's
            failed = run_one(self.serve, sock, addr, who=f"[{os.getpid()}] ")[3]
            status = 1 if failed else 0     # the parent logs it: "terminated (exit 1)"
        except BaseException:
            log.exception("child %d failed", os.getpid())
        finally:
            logging.shutdown()
            os._exit(status)
