"""A reactor per core: ``--workers N`` runs N reactor processes on one port, under a master.

    python -m servers.echo_select --workers auto    # one worker per CPU it may run on

One loop runs on one core.  To use more, the master opens the listening
sockets, forks N workers, each a whole reactor server (its own loop, clients
and counters, exactly what runs without ``--workers``), and supervises them,
as nginx's master does its ``worker_processes``:

* It prints ``listening on HOST:PORT`` once, when every worker has said it
  is ready.
* A worker that dies is replaced, with one log line naming its pid and how
  it ended; one that keeps dying within ``QUICK_EXIT`` seconds of starting is
  replaced after a growing delay (``restart_delay``).
* A worker that fails before the first ``listening on`` line makes the
  master stop the others and exit 1 with that worker's one-line error: no
  restart loop for a server that cannot start.
* SIGINT or SIGTERM: every worker gets SIGTERM and drains as a single
  server does (``--grace``); a second signal sends SIGTERM again, and the
  workers drop their clients.  The master exits when every worker has: 0,
  or 1 after a second signal.  A worker still there ``KILL_MARGIN`` seconds
  after its grace period is killed.
* SIGUSR1: it asks each worker for its counters, logs them, then their
  total.  Sent to a worker, SIGUSR1 logs that worker's alone.
* A worker notices its master's end (its control socket reads end of file)
  and stops at once: no worker outlives its master.

The workers ignore SIGINT: Ctrl-C in a terminal reaches the whole process
group, and the master is the one to pass it on.

How the workers share the port (``--reuseport``, the default, or
``--no-reuseport``) is :func:`servers.sockets.open_for_workers`: a socket
each with ``SO_REUSEPORT``, the kernel spreading the connections, or one
socket they all accept from.  ``docs/deploy.md`` gives the measurements.

Each worker's lifecycle in the master is the machine ``WORKER`` (drawn in
``docs/architecture.md``); the master's own is ``servers.service.SERVICE``,
the same as a single server's.
"""

import enum
import json
import logging
import os
import signal
import socket

import cli
from reactor.loop import EVENT_READ, Reactor
from reactor.server import format_stats
from reactor.states import Machine
from servers.forking import describe_exit, reap_ended
from servers.service import (
    EXIT_FAILURE, SERVICE, ServiceAction, ServiceEvent, ServiceState, StreamPlan, add_monitor,
    open_monitor,
)
from servers.limits import cpu_count
from servers.sockets import announce, open_for_workers
from wire.addresses import format_address

log = logging.getLogger("selectlab")
stats_log = logging.getLogger("selectlab.stats")

# A worker that ends within this many seconds of its start "died at start".
QUICK_EXIT = 1.0
# The longest wait before replacing a worker that keeps dying at start.
MAX_RESTART_DELAY = 10.0
# How long past its grace period a stopping worker may take before SIGKILL.
KILL_MARGIN = 5.0
# How long SIGUSR1 waits for every worker's counters.
STATS_TIMEOUT = 1.0
# The longest message a worker sends its master (its counters, an error).
MAX_MESSAGE = 64 * 1024

# Blocked across fork(), as the fork server does (see Master._spawn).
_FORK_BLOCKED = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGUSR1}


def restart_delay(quick_exits):
    """Seconds to wait before replacing a worker that died at start ``quick_exits`` times in a row.

    None at once (a worker killed once, or that had run a while), then 0.5,
    1, 2, 4... up to ``MAX_RESTART_DELAY``.
    """
    if quick_exits <= 1:
        return 0.0
    return min(0.5 * 2 ** (quick_exits - 2), MAX_RESTART_DELAY)


class WorkerState(enum.Enum):
    DOWN = "down"            # no process: not started yet, ended, or waiting to restart
    STARTING = "starting"    # forked; not ready yet
    SERVING = "serving"      # said it is ready: its loop is running
    STOPPING = "stopping"    # sent SIGTERM; waiting for it to end


class WorkerEvent(enum.Enum):
    FORKED = "forked"
    READY = "ready"          # "ready" on its control socket
    EXITED = "exited"        # reaped after SIGCHLD
    STOP = "stop"            # the master is stopping (each signal it gets)


class WorkerAction(enum.Enum):
    START_FAILED = "start failed"    # before the first listening line: the master fails
    RESTART = "restart"              # replace it, at once or after a back-off
    TERMINATE = "terminate"          # send it SIGTERM


_W, _WE, _WA = WorkerState, WorkerEvent, WorkerAction

WORKER_TABLE = {
    (_W.DOWN, _WE.FORKED): (_W.STARTING, None),
    (_W.DOWN, _WE.STOP): (_W.DOWN, None),
    (_W.STARTING, _WE.READY): (_W.SERVING, None),
    (_W.STARTING, _WE.EXITED): (_W.DOWN, _WA.START_FAILED),
    (_W.STARTING, _WE.STOP): (_W.STOPPING, _WA.TERMINATE),
    (_W.SERVING, _WE.EXITED): (_W.DOWN, _WA.RESTART),
    (_W.SERVING, _WE.STOP): (_W.STOPPING, _WA.TERMINATE),
    (_W.STOPPING, _WE.READY): (_W.STOPPING, None),
    (_W.STOPPING, _WE.STOP): (_W.STOPPING, _WA.TERMINATE),
    (_W.STOPPING, _WE.EXITED): (_W.DOWN, None),
}

WORKER = Machine("worker", WorkerState, WorkerEvent, WorkerState.DOWN, WORKER_TABLE)


class Slot:
    """One worker's place in the master: its number, its sockets, and the process now in it."""

    def __init__(self, number, socks, udp_socks, more_socks=()):
        self.number = number
        self.socks = socks
        self.udp_socks = udp_socks
        self.more_socks = list(more_socks)  # the worker's own others (its monitor's)
        self.state = WorkerState.DOWN
        self.pid = None
        self.channel = None         # the master's end of the control socket
        self.inbox = bytearray()
        self.started = 0.0
        self.quick_exits = 0        # died at start this many times in a row
        self.error = None           # the one-line error it sent, if any
        self.restart = None         # the timer that will replace it
        self.counters = None        # its answer to the last SIGUSR1

    @property
    def name(self):
        return f"worker {self.number} (pid {self.pid})"


class _ChannelReader:
    """The master's end of a worker's control socket, as a reactor handler."""

    def __init__(self, master, slot):
        self.master, self.slot = master, slot

    def on_readable(self):
        self.master._read_channel(self.slot)

    def on_writable(self):  # never registered for WRITE
        pass


class Master:
    """Run and supervise one worker per slot.

    Parameters
    ----------
    slots : list of (tcp_sockets, udp_sockets[, more_sockets])
        each worker's sockets (:func:`servers.sockets.open_for_workers`,
        and its monitor's); the master keeps them open while a worker
        restarts, and announces the first worker's TCP and UDP ones.
    start : callable
        ``start(number, channel) -> exit status``, run in each worker after
        the fork: it serves until it is stopped, calling ``channel.ready()``
        once it is (see :class:`WorkerChannel`).  A :class:`cli.Fatal` it
        raises is that worker's one-line error.
    grace : float
        the workers' ``--grace``: how long they may take to drain.
    log_writer : reactor.logwriter.LogWriter or None
        attached to the master's loop while it runs.
    more_lines : list of str
        printed on stdout after the ``listening on`` lines (the monitors').
    """

    def __init__(self, slots, start, grace, log_writer=None, more_lines=()):
        self.slots = [Slot(number, *socks) for number, socks in enumerate(slots, 1)]
        self.more_lines = list(more_lines)
        self._start = start
        self.grace = grace
        self.log_writer = log_writer
        self.reactor = None
        self.state = ServiceState.RUNNING
        self.status = 0
        self.announced = False
        self.failure = None         # why the master could not start
        self.restarts = 0
        self._kill_timer = None
        self._stats_timer = None

    # --- running ---------------------------------------------------------

    def run(self):
        """Start every worker, supervise them until stopped, return the exit status.

        Raises
        ------
        cli.Fatal
            when a worker failed before the first ``listening on`` line.
        """
        reactor = self.reactor = Reactor()
        for signum in (signal.SIGINT, signal.SIGTERM):
            reactor.add_signal_handler(signum, self._on_signal)
        reactor.add_signal_handler(signal.SIGCHLD, self._on_sigchld)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)   # as Service.run: harmless at exit
        reactor.add_signal_handler(signal.SIGUSR1, self._ask_counters)
        if self.log_writer is not None:
            self.log_writer.attach(reactor)
        try:
            for slot in self.slots:
                self._spawn(slot)
            reactor.run()
        finally:
            if self.log_writer is not None:
                self.log_writer.detach()
            reactor.close()
            self._close_sockets()
        log.info("stopped: %d worker(s), %d restart(s)", len(self.slots), self.restarts)
        if self.failure is not None:
            raise cli.Fatal(self.failure)
        return self.status

    def _close_sockets(self):
        seen = set()
        for slot in self.slots:
            if slot.channel is not None:
                slot.channel.close()
            for sock in slot.socks + slot.udp_socks + slot.more_socks:
                if id(sock) not in seen:
                    seen.add(id(sock))
                    sock.close()

    # --- the master's lifecycle (SERVICE) ---------------------------------

    def stop(self, reason="stopping"):
        """What SIGINT/SIGTERM does: drain every worker; a second call stops them at once."""
        self._fire(ServiceEvent.STOP, reason)

    def _fire(self, event, *args):
        """Apply one transition of SERVICE and carry out its action: the only code assigning ``self.state``."""
        self.state, action = SERVICE.apply(self.state, event)
        if action is ServiceAction.DRAIN:
            self._drain(*args)
        elif action is ServiceAction.ABORT:
            self._abort(*args)
        elif action is ServiceAction.END:
            self.reactor.stop()

    def _on_signal(self, signum):
        self.stop(signal.Signals(signum).name)

    def _drain(self, reason):
        live = self._live()
        if self.failure is None:
            log.info("%s: stopping %d worker(s); grace %.1f s (send it again to stop at once)",
                     reason, len(live), self.grace)
        for slot in self.slots:
            if slot.restart is not None:
                slot.restart.cancel()
                slot.restart = None
            self._fire_worker(slot, WorkerEvent.STOP)
        self._kill_timer = self.reactor.call_later(self.grace + KILL_MARGIN, self._kill_all)
        self._check_drained()

    def _abort(self, reason):
        log.warning("%s again: stopping %d worker(s) now", reason, len(self._live()))
        self.status = EXIT_FAILURE
        if self._kill_timer is not None:        # they drop their clients: no grace now
            self._kill_timer.cancel()
        self._kill_timer = self.reactor.call_later(KILL_MARGIN, self._kill_all)
        for slot in self.slots:
            self._fire_worker(slot, WorkerEvent.STOP)

    def _kill_all(self):
        for slot in self._live():
            log.warning("%s did not stop in time: killing it", slot.name)
            self._kill(slot, signal.SIGKILL)

    def _check_drained(self):
        if self.state in (ServiceState.STOPPING, ServiceState.ABORTING) and not self._live():
            if self._kill_timer is not None:
                self._kill_timer.cancel()
            self._fire(ServiceEvent.DRAINED)

    def _live(self):
        return [slot for slot in self.slots if slot.state is not WorkerState.DOWN]

    # --- each worker's lifecycle (WORKER) ---------------------------------

    def _fire_worker(self, slot, event, *args):
        """Apply one transition of WORKER to ``slot``: the only code assigning ``slot.state``."""
        slot.state, action = WORKER.apply(slot.state, event)
        if action is WorkerAction.TERMINATE:
            self._kill(slot, signal.SIGTERM)
        elif action is WorkerAction.START_FAILED:
            self._start_failed(slot, *args)
        elif action is WorkerAction.RESTART:
            self._restart(slot, *args)

    def _spawn(self, slot):
        slot.restart = None
        if self.state is not ServiceState.RUNNING:
            return
        parent_end, child_end = socket.socketpair()
        # Signals stay blocked from just before fork() until the worker has
        # its own handlers: a SIGTERM meant for it cannot run the master's.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _FORK_BLOCKED)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            parent_end.close()
            child_end.close()
            slot.quick_exits += 1
            delay = max(restart_delay(slot.quick_exits), 0.5)
            log.error("worker %d: fork: %s; trying again in %.1f s", slot.number,
                      exc.strerror, delay)
            slot.restart = self.reactor.call_later(delay, self._spawn, slot)
            return
        if pid == 0:
            parent_end.close()      # else the master's end of file would never come
            self._child(slot, child_end, old_mask)     # never returns
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        child_end.close()
        parent_end.setblocking(False)
        slot.pid, slot.channel, slot.error = pid, parent_end, None
        slot.inbox.clear()
        slot.started = self.reactor.time()
        self.reactor.register(parent_end, EVENT_READ, _ChannelReader(self, slot))
        self._fire_worker(slot, WorkerEvent.FORKED)
        log.debug("%s started", slot.name)

    def _child(self, slot, channel_sock, old_mask):
        """In the worker: let go of the master's loop, sockets and signals; serve; exit."""
        status = EXIT_FAILURE
        channel = WorkerChannel(channel_sock)
        try:
            self.reactor.close_in_child()       # its signals back to their defaults
            signal.signal(signal.SIGINT, signal.SIG_IGN)     # the master's to pass on
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)    # until the worker's handler
            mine = {id(sock) for sock in slot.socks + slot.udp_socks + slot.more_socks}
            for other in self.slots:
                if other.channel is not None:
                    other.channel.close()
                for sock in other.socks + other.udp_socks + other.more_socks:
                    if id(sock) not in mine:
                        sock.close()
            # The signals stay blocked until the worker's loop has its handlers:
            # channel.ready() lets them in (a SIGTERM meanwhile is then a drain).
            channel.unblock = old_mask
            status = self._start(slot.number, channel)
        except cli.Fatal as exc:
            channel.error(str(exc))
            status = exc.status
        except BaseException:
            log.exception("worker %d failed", slot.number)
        finally:
            logging.shutdown()
            os._exit(status)

    def _kill(self, slot, signum):
        try:
            os.kill(slot.pid, signum)
        except ProcessLookupError:
            pass        # ended already: SIGCHLD is on its way

    def _on_sigchld(self, _signum):
        for pid, status in reap_ended():
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is not None:
                self._exited(slot, status)

    def _exited(self, slot, status):
        # Its last words (an error, its counters) may still be in the socket:
        # signals run before the turn's handlers.
        self._read_channel(slot)
        self.reactor.unregister(slot.channel)
        slot.channel.close()
        slot.channel = None
        name, slot.pid = slot.name, None
        uptime = self.reactor.time() - slot.started
        slot.quick_exits = slot.quick_exits + 1 if uptime < QUICK_EXIT else 0
        if slot.state is WorkerState.STOPPING:
            clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            (log.debug if clean else log.warning)("%s ended (%s)", name, describe_exit(status))
            if not clean and self.failure is None:
                self.status = EXIT_FAILURE
        self._fire_worker(slot, WorkerEvent.EXITED, name, status)
        self._check_drained()

    def _start_failed(self, slot, name, status):
        why = slot.error or describe_exit(status)
        if not self.announced:
            self.failure = f"worker {slot.number} could not start: {why}"
            self.status = EXIT_FAILURE
            self.stop("a worker could not start")
            return
        delay = restart_delay(max(slot.quick_exits, 2))
        log.error("%s could not start (%s): trying again in %.1f s", name, why, delay)
        slot.restart = self.reactor.call_later(delay, self._spawn, slot)
        self.restarts += 1

    def _restart(self, slot, name, status):
        delay = restart_delay(slot.quick_exits)
        later = f" in {delay:.1f} s, as it keeps dying at start" if delay else ""
        log.warning("%s ended (%s): starting a new one%s", name, describe_exit(status), later)
        self.restarts += 1
        if delay:
            slot.restart = self.reactor.call_later(delay, self._spawn, slot)
        else:
            self._spawn(slot)

    # --- what the workers say ---------------------------------------------

    def _read_channel(self, slot):
        while True:
            try:
                data = slot.channel.recv(MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                return      # it has ended: SIGCHLD tells the rest
            slot.inbox += data
            while b"\n" in slot.inbox:
                line, _, rest = bytes(slot.inbox).partition(b"\n")
                slot.inbox[:] = rest
                self._message(slot, line.decode("utf-8", "replace"))
            if len(slot.inbox) > MAX_MESSAGE:
                log.warning("%s: a message longer than %d bytes: ignored", slot.name,
                            MAX_MESSAGE)
                slot.inbox.clear()

    def _message(self, slot, line):
        kind, _, rest = line.partition(" ")
        if kind == "ready":
            self._fire_worker(slot, WorkerEvent.READY)
            self._ready(slot)
        elif kind == "error":
            slot.error = rest
        elif kind == "counters" and slot in self._asked:
            try:
                slot.counters = json.loads(rest)
            except ValueError:
                log.warning("%s: unreadable counters: ignored", slot.name)
                return
            if all(s.counters is not None for s in self._asked):
                self._log_counters()

    def _ready(self, slot):
        if self.announced:
            log.info("%s is serving", slot.name)
        if self.announced or self.state is not ServiceState.RUNNING:
            return
        if all(s.state is WorkerState.SERVING for s in self.slots):
            self.announced = True
            first = self.slots[0]
            announce(first.socks)
            announce(first.udp_socks, suffix=" (UDP)")
            for line in self.more_lines:
                print(line, flush=True)
            log.info("%d workers serving: pids %s", len(self.slots),
                     " ".join(str(s.pid) for s in self.slots))

    # --- SIGUSR1 ------------------------------------------------------------

    _asked = ()

    def _ask_counters(self, _signum=None):
        """Ask every serving worker for its counters; log them once all have answered."""
        if self._stats_timer is not None:
            return      # a round is under way
        self._asked = [s for s in self.slots if s.state is WorkerState.SERVING]
        for slot in self._asked:
            slot.counters = None
            try:
                slot.channel.send(b"counters\n")
            except OSError:
                pass        # it is ending; the round reports it silent
        self._stats_timer = self.reactor.call_later(STATS_TIMEOUT, self._log_counters)

    def _log_counters(self):
        if self._stats_timer is not None:
            self._stats_timer.cancel()
            self._stats_timer = None
        total = {}
        answered = 0
        for slot in self._asked:
            if slot.counters is None:
                stats_log.info("%s: no counters within %.1f s", slot.name, STATS_TIMEOUT)
                continue
            answered += 1
            stats_log.info("%s: stats: %s", slot.name, format_stats(slot.counters))
            for name, value in slot.counters.items():
                total[name] = total.get(name, 0) + value
        stats_log.info("stats: total of %d worker(s): %s", answered, format_stats(total))
        self._asked = ()


class WorkerChannel:
    """A worker's end of its control socket to the master.

    The worker says ``ready`` once it serves, or ``error TEXT`` if it
    cannot start; it answers ``counters`` with its counters as JSON; and the
    socket's end of file tells it that the master has gone.
    """

    def __init__(self, sock):
        self.sock = sock
        self.service = None
        self.unblock = None     # the signal mask to restore once ready

    def attach(self, service):
        """Watch the socket on ``service``'s loop: answer the master, and stop if it goes."""
        self.service = service
        self.sock.setblocking(False)
        service.reactor.register(self.sock, EVENT_READ, self)

    def ready(self):
        """Tell the master; then let in the signals held since the fork (the loop has its handlers)."""
        self._send(b"ready\n")
        if self.unblock is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.unblock)
            self.unblock = None

    def error(self, text):
        self._send(f"error {text}\n".encode())

    def _send(self, data):
        try:
            self.sock.send(data)
        except OSError:
            pass        # the master is gone: the end of file says so

    def on_readable(self):
        try:
            data = self.sock.recv(MAX_MESSAGE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.service.reactor.unregister(self.sock)
            self.service.stop_now("the master has gone")
            return
        for _ in range(data.count(b"counters\n")):
            self._send(b"counters " + json.dumps(self.service.snapshot()).encode() + b"\n")

    def on_writable(self):  # never registered for WRITE
        pass


def worker_count(args):
    """The number ``--workers`` asks for (``auto``: :func:`cpu_count`)."""
    return cpu_count() if args.workers == "auto" else args.workers


def run_workers(args, protocol_factory, datagram_protocol=None):
    """What ``run_stream_server`` does with ``--workers``: a master and its workers.

    With ``--monitor``, each worker has a monitor of its own, the first on
    the port asked for and the next ones on the ports after it (or each on
    a port of its own choosing, with port 0); the master lists them all.
    Returns the exit status.
    """
    writer = cli.setup_logging(args, trace=args.trace)
    count = worker_count(args)
    plan = StreamPlan(args, protocol_factory, datagram_protocol)
    slots = open_for_workers(args, plan.with_udp, count, args.reuseport)
    monitors = [open_monitor(args, offset) for offset in range(count)]
    plan.log_choices(per_worker=True)
    lines = [f"monitor on http://{format_address(sock.getsockname())}/ (worker {number})"
             for number, socks in enumerate(monitors, 1) for sock in socks]

    def build(number, socks, udp_socks, worker_writer):
        service = plan.build(socks, udp_socks, worker_writer)
        if monitors[number - 1]:
            add_monitor(service, monitors[number - 1], args)
        return service

    return serve_with_workers(args, [(tcp, udp, monitors[n]) for n, (tcp, udp) in
                                     enumerate(slots)], writer, build, more_lines=lines)


def serve_with_workers(args, slots, writer, build, trace=None, more_lines=()):
    """Run a :class:`Master` whose workers each serve ``build(number, socks, udp_socks, writer)``.

    ``build`` returns the worker's :class:`~servers.service.Service`.
    """
    trace = args.trace if trace is None else trace
    grace = getattr(args, "grace", 0.0)     # UDP has nothing to drain
    log.info("starting %d workers, %s", len(slots),
             "each on its own sockets (SO_REUSEPORT)" if args.reuseport
             else "sharing one listening socket")

    def start(number, channel):
        socks, udp_socks = slots[number - 1][:2]
        worker_writer = cli.setup_logging(args, trace=trace,
                                          prefix=f"worker {number} (pid {os.getpid()}): ")
        service = build(number, socks, udp_socks, worker_writer)
        channel.attach(service)
        return service.run(grace, args.stats, ready=channel.ready,
                           stop_signals=(signal.SIGTERM,))

    return Master(slots, start, grace, writer, more_lines).run()
