"""Running a server: the loop, its servers, the log and the counters, from start to a clean stop.

:class:`Service` runs a TCP server (a :class:`~reactor.server.StreamServer`,
or a classic design's :class:`~servers.classic.ClassicServer`) and UDP
endpoints on one loop until SIGINT or SIGTERM, then stops gracefully; a
second signal stops at once.  SIGUSR1 logs the counters, which
:meth:`Service.snapshot` gathers from the server, UDP, the loop and the
log.  Its lifecycle is the machine ``SERVICE`` (drawn in
``docs/architecture.md``): a first stop drains (no new clients; the others
get ``--grace`` seconds), a second aborts (everyone dropped, exit status 1),
and once the clients are gone the loop returns.

:func:`build_stream_service` / :func:`run_stream_server` are what ``main()``
of a reactor server does, from its parsed arguments.
"""

import enum
import ipaddress
import logging
import signal

import cli
from reactor.datagram import DatagramEndpoint
from reactor.loop import Reactor
from reactor.protocols import ProxyHeaderReceiver
from reactor.selection import FD_SETSIZE, make_selector
from reactor.server import StreamServer, format_stats
from reactor.states import Machine
from servers.limits import choose_max_clients, fd_limit_for, log_capacity, raise_fd_limit
from servers.options import DEFAULT_GRACE
from servers.monitor import Monitor
from servers.sockets import announce, open_listeners, open_stream_and_datagram
from wire.addresses import format_address

log = logging.getLogger("selectlab")
stats_log = logging.getLogger("selectlab.stats")

EXIT_SECOND_SIGNAL = 1      # a second SIGINT/SIGTERM dropped the clients
EXIT_FAILURE = 1

# The monitor's listen() backlog: a few people and a Prometheus.
MONITOR_BACKLOG = 64

# What a client arriving at capacity reads before our FIN: the quick guide's
# 11th task ("send "busy\n" to new incoming clients"), 5 bytes.
BUSY_MESSAGE = b"busy\n"


class ServiceState(enum.Enum):
    RUNNING = "running"
    STOPPING = "stopping"    # draining: no new clients, the others get the grace period
    ABORTING = "aborting"    # dropping every client (a fork server waits for its children)
    STOPPED = "stopped"      # the loop returns at the end of this turn


class ServiceEvent(enum.Enum):
    STOP = "stop"            # SIGINT, SIGTERM or Service.stop()
    ABORT = "abort"          # Service.stop_now(): a worker whose master is gone
    DRAINED = "drained"      # the last client is gone, or the grace period is over
    FAILED = "failed"        # nothing left to serve


class ServiceAction(enum.Enum):
    DRAIN = "drain"          # stop accepting, close every client gracefully
    ABORT = "abort"          # drop every client now; exit status 1
    END = "end"              # stop the loop


_S, _SE, _SA = ServiceState, ServiceEvent, ServiceAction

SERVICE_TABLE = {
    (_S.RUNNING, _SE.STOP): (_S.STOPPING, _SA.DRAIN),
    (_S.RUNNING, _SE.FAILED): (_S.STOPPED, _SA.END),
    (_S.STOPPING, _SE.DRAINED): (_S.STOPPED, _SA.END),
    (_S.STOPPING, _SE.STOP): (_S.ABORTING, _SA.ABORT),
    (_S.ABORTING, _SE.DRAINED): (_S.STOPPED, _SA.END),
    (_S.ABORTING, _SE.STOP): (_S.ABORTING, None),
    # A signal in the turn the loop stops in.
    (_S.STOPPED, _SE.STOP): (_S.STOPPED, None),
    # A worker whose master has gone (Service.stop_now) stops at once, whatever it was doing.
    (_S.RUNNING, _SE.ABORT): (_S.ABORTING, _SA.ABORT),
    (_S.STOPPING, _SE.ABORT): (_S.ABORTING, _SA.ABORT),
    (_S.ABORTING, _SE.ABORT): (_S.ABORTING, None),
    (_S.STOPPED, _SE.ABORT): (_S.STOPPED, None),
}


SERVICE = Machine("service", ServiceState, ServiceEvent, ServiceState.RUNNING, SERVICE_TABLE)


def make_reactor(args):
    """A :class:`~reactor.loop.Reactor` on the selector ``args.selector`` names."""
    return Reactor(make_selector(getattr(args, "selector", None)))


class Service:
    """A reactor server as its ``main()`` runs it: the loop, its servers, the log, one set of counters.

    Parameters
    ----------
    reactor : reactor.loop.Reactor
    server : reactor.server.StreamServer, servers.classic.ClassicServer or None
        the TCP side, if any: anything with ``sockets``, ``client_count()``,
        ``shutdown(grace, on_stopped)``, ``abort_all(reason)`` and
        ``stats_snapshot()``.
    endpoints : list of reactor.datagram.DatagramEndpoint
        the UDP side, if any, on the same loop.
    log_writer : reactor.logwriter.LogWriter or None
        the handler the logs go through (``cli.setup_logging`` returns it):
        while the service runs, the loop flushes it, and its dropped lines
        are counted in :meth:`snapshot`.
    attach_log : bool
        False when other threads log too (the thread server): the writer is
        then not given to the loop, which is not thread-safe, and retries at
        each new line instead.

    :meth:`run` announces the sockets and runs the loop until SIGINT/SIGTERM
    or :meth:`stop`.  The first signal stops gracefully (no new clients;
    pending output is flushed for up to ``grace`` seconds; UDP stops at
    once, having nothing pending); a second one drops every client at once
    and the exit status is 1.  SIGUSR1 logs the counters, as does a timer
    every ``stats_interval`` seconds if one is given.  Signals reach the loop
    through its wakeup socket: nothing here polls.
    """

    def __init__(self, reactor, server=None, endpoints=(), log_writer=None, attach_log=True):
        self.reactor = reactor
        self.server = server
        self.endpoints = list(endpoints)
        self.log_writer = log_writer
        self._attach_log = attach_log and log_writer is not None
        self.status = 0
        self.grace = DEFAULT_GRACE
        self.state = ServiceState.RUNNING
        self._more_counters = []
        self._more_lines = []       # printed after the 'listening on' lines
        self._on_stopping = []      # called as the service starts to stop

    def add_counters(self, snapshot):
        """Report ``snapshot()``'s counters (a dict) too: an application's own, such as a chat room's."""
        self._more_counters.append(snapshot)

    def also_announce(self, line):
        """Print ``line`` on stdout after the ``listening on`` lines (the monitor's address)."""
        self._more_lines.append(line)

    def on_stopping(self, callback):
        """Call ``callback()`` when the service starts to stop (drain or abort)."""
        self._on_stopping.append(callback)

    def snapshot(self):
        """Every counter now, in a fixed order: the server's, UDP's, the application's, the loop's and the log's."""
        counters = self.server.stats_snapshot() if self.server else {
            "eventloop_cycles": self.reactor.cycles}
        if self.endpoints:
            counters.update(datagram_snapshot(self.endpoints))
        for more in self._more_counters:
            counters.update(more())
        counters["callback_errors"] = self.reactor.callback_errors
        counters["log_lines_dropped"] = (self.log_writer.lines_dropped
                                         if self.log_writer is not None else 0)
        return counters

    def log_stats(self, _signum=None):
        stats_log.info("stats: %s", format_stats(self.snapshot()))

    def run(self, grace=DEFAULT_GRACE, stats_interval=None, signals=True, ready=None,
            stop_signals=(signal.SIGINT, signal.SIGTERM)):
        """Announce, serve until stopped, return the exit status.

        ``signals=False`` leaves the signal handlers alone (the loop may then
        run outside the main thread); stop it with :meth:`stop`.  A worker
        (``servers.workers``) stops on SIGTERM alone, the master's, and
        instead of announcing its sockets calls ``ready()``.
        """
        reactor = self.reactor
        self.grace = grace
        for endpoint in self.endpoints:
            endpoint.on_failed = self._endpoint_failed
        if signals:
            for signum in stop_signals:
                reactor.add_signal_handler(signum, self._on_signal)
            # Ignored, not fatal (its default action), once the loop has put
            # the handlers back: a SIGUSR1 that arrives while the process
            # exits is harmless.
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
            reactor.add_signal_handler(signal.SIGUSR1, self.log_stats)
        if stats_interval is not None:
            def every_interval():
                reactor.call_later(stats_interval, every_interval)  # first: log_stats may raise
                self.log_stats()
            reactor.call_later(stats_interval, every_interval)
        if self._attach_log:
            self.log_writer.attach(reactor)
        # The handlers are in place before the lines are printed, so whoever
        # waits for them may signal at once.
        if ready is not None:
            ready()
        else:
            if self.server:
                announce(self.server.sockets)
            announce([e.sock for e in self.endpoints], suffix=" (UDP)")
            for line in self._more_lines:
                print(line, flush=True)
        try:
            reactor.run()
        finally:
            if self._attach_log:
                self.log_writer.detach()
            reactor.close()
        log.info("stopped: %s", format_stats(self.snapshot()))
        return self.status

    def stop(self, reason="stopping"):
        """Stop gracefully, as the first SIGINT/SIGTERM does; a second call stops at once.

        Call it from the loop (a callback, a timer, a signal handler given to
        the reactor), not from another thread.
        """
        self._fire(ServiceEvent.STOP, reason)

    def stop_now(self, reason):
        """Stop at once, as a second signal does (exit status 1), whatever the state."""
        self._fire(ServiceEvent.ABORT, reason, False, self.state is not ServiceState.RUNNING)

    def _drain(self, reason):
        server = self.server
        clients = server.client_count() if server else 0
        pending = (f", {server.pending_output()} byte(s) pending"
                   if hasattr(server, "pending_output") else "")
        log.info("%s: shutting down: %d client(s)%s; grace %.1f s (send it again to stop at "
                 "once)", reason, clients, pending, self.grace)
        for endpoint in self.endpoints:
            endpoint.close()        # UDP has nothing pending: it stops now
        if server:
            server.shutdown(self.grace, self._drained)
        else:
            self._drained()

    def _abort(self, reason, again=True, draining=True):
        """Drop every client; DRAINED follows once they are gone (the drain's own callback)."""
        server = self.server
        clients = server.client_count() if server else 0
        log.warning("%s%s: stopping now, dropping %d client(s)", reason,
                    " again" if again else "", clients)
        self.status = EXIT_SECOND_SIGNAL
        for endpoint in self.endpoints:
            endpoint.close()
        if not server:
            self._drained()
            return
        if not draining:
            server.shutdown(0.0, self._drained)
        server.abort_all("second signal" if again else reason)

    def _drained(self):
        self._fire(ServiceEvent.DRAINED)

    def _end(self, *_args):
        self.reactor.stop()

    def _fire(self, event, *args):
        """Apply one transition of SERVICE and carry out its action.  The only code that assigns ``self.state``."""
        old = self.state
        self.state, action = SERVICE.apply(old, event)
        if old is ServiceState.RUNNING and self.state is not old:
            for callback in self._on_stopping:
                callback()
        if action is ServiceAction.DRAIN:
            self._drain(*args)
        elif action is ServiceAction.ABORT:
            self._abort(*args)
        elif action is ServiceAction.END:
            self._end()

    def _on_signal(self, signum):
        self.stop(signal.Signals(signum).name)

    def _endpoint_failed(self, _endpoint):
        if not self.server and not any(e.serving for e in self.endpoints):
            log.error("no UDP socket left to serve: stopping")
            self.status = EXIT_FAILURE
            self._fire(ServiceEvent.FAILED)


def datagram_snapshot(endpoints):
    """The UDP counters, summed over ``endpoints``, named for a stats line."""
    total = {"udp_datagrams_in": 0, "udp_datagrams_out": 0, "udp_bytes_in": 0,
             "udp_bytes_out": 0, "udp_dropped": 0, "udp_errors": 0, "udp_protocol_errors": 0}
    for endpoint in endpoints:
        stats = endpoint.stats
        total["udp_datagrams_in"] += stats.datagrams_in
        total["udp_datagrams_out"] += stats.datagrams_out
        total["udp_bytes_in"] += stats.bytes_in
        total["udp_bytes_out"] += stats.bytes_out
        total["udp_dropped"] += stats.dropped
        total["udp_errors"] += stats.errors
        total["udp_protocol_errors"] += stats.protocol_errors
    return total


class StreamPlan:
    """What a reactor server settles before it serves: its descriptor limit, capacity and sockets.

    :func:`plan_stream_service` makes one, and logs its choices once; with
    ``--workers`` the master makes it, and each worker builds its loop and
    server from it (:meth:`build`).
    """

    def __init__(self, args, protocol_factory, datagram_protocol=None):
        self.args = args
        self.ceiling = fd_limit_for(args)
        self.fd_limit = raise_fd_limit(self.ceiling)
        self.capacity = choose_max_clients(args.max_clients, self.fd_limit)
        self.with_udp = datagram_protocol is not None and getattr(args, "udp", False)
        self.datagram_protocol = datagram_protocol
        if getattr(args, "proxy_protocol", False):
            protocol_factory = _behind_a_balancer(protocol_factory, args)
        self.protocol_factory = protocol_factory

    def log_choices(self, per_worker=False):
        args = self.args
        log_capacity(args.max_clients, self.capacity, self.fd_limit,
                     on_select=self.ceiling is not None, per_worker=per_worker)
        if self.ceiling is not None:
            log.info("waiting in select(): open-file limit %d, since select() cannot watch "
                     "descriptors past %d", self.fd_limit, FD_SETSIZE - 1)
        if getattr(args, "proxy_protocol", False):
            log.info("expecting a PROXY protocol header on every connection, from %s only",
                     ", ".join(map(str, args.proxy_from)))
        if args.idle_timeout is not None:
            log.info("closing clients idle for %g s", args.idle_timeout)

    def build(self, socks, udp_socks, writer, attach_log=True):
        """The :class:`Service` serving on ``socks`` (TCP) and ``udp_socks``."""
        args = self.args
        reactor = make_reactor(args)
        server = StreamServer(reactor, socks, self.protocol_factory, capacity=self.capacity,
                              reject_message=BUSY_MESSAGE, idle_timeout=args.idle_timeout,
                              trace=args.trace, max_output=args.max_output)
        endpoints = [DatagramEndpoint(reactor, sock, self.datagram_protocol)
                     for sock in udp_socks]
        return Service(reactor, server, endpoints, writer, attach_log)


def build_stream_service(args, protocol_factory, datagram_protocol=None):
    """The :class:`Service` that ``main()`` of a reactor server runs, from its parsed arguments.

    Sets up logging, raises the descriptor limit, chooses the capacity,
    listens, and builds the server for ``protocol_factory``'s protocol.
    Clients beyond capacity read ``busy\n``.  With ``datagram_protocol``
    (and ``args.udp``), the same loop also serves UDP on the same port
    number (the quick guide's answer 6: one port, two protocols).  Nothing
    runs until ``.run()``; meanwhile ``.server``, ``.snapshot()`` and the
    sockets are there to look at.
    """
    writer = cli.setup_logging(args, trace=args.trace)
    plan = StreamPlan(args, protocol_factory, datagram_protocol)
    socks, udp_socks = open_stream_and_datagram(args, plan.with_udp)
    monitor_socks = open_monitor(args)
    plan.log_choices()
    service = plan.build(socks, udp_socks, writer)
    if monitor_socks:
        add_monitor(service, monitor_socks, args)
    return service


def open_monitor(args, offset=0):
    """The monitor's listening sockets, if ``--monitor`` asks for one (else an empty list).

    ``offset``: on the port so many after the one asked for (worker 2's is 1).
    """
    where = getattr(args, "monitor", None)
    if where is None:
        return []
    host, port_number = where
    if port_number and port_number + offset > 65535:
        raise cli.Fatal(f"--monitor {port_number}: with --workers, worker {offset + 1}'s "
                        f"monitor would need port {port_number + offset}; choose a lower port")
    socks = open_listeners(host, port_number + offset if port_number else 0, MONITOR_BACKLOG)
    if offset == 0 and not all(ipaddress.ip_address(s.getsockname()[0].split("%")[0])
                               .is_loopback for s in socks):
        log.warning("monitor: listening on %s, beyond this host: it has no authentication, "
                    "so anyone who reaches it sees every client's address (control stays "
                    "loopback-only)", host)
    return socks


def add_monitor(service, socks, args):
    """Serve the monitor (``servers.monitor``) for ``service`` on ``socks``, on its loop."""
    monitor = Monitor(service.reactor, service.server, service.snapshot,
                      name=cli.prog_name(), host_names=[args.monitor[0]])
    monitor.start(socks)
    service.add_counters(monitor.counters)
    service.on_stopping(monitor.stop)
    for sock in socks:
        service.also_announce(f"monitor on http://{format_address(sock.getsockname())}/")
    return monitor


def _behind_a_balancer(protocol_factory, args):
    """``protocol_factory``'s protocols, each behind a PROXY header read first."""
    trusted, timeout = args.proxy_from, args.proxy_timeout
    return lambda: ProxyHeaderReceiver(protocol_factory, trusted, timeout)


def run_stream_server(args, protocol_factory, datagram_protocol=None):
    """What ``main()`` of a reactor server does: :func:`build_stream_service`, then run it.

    With ``--workers`` other than 1, a master runs that many of them
    instead (``servers.workers``).  Returns the exit status.
    """
    if getattr(args, "workers", 1) != 1:
        from servers.workers import run_workers     # here: servers.workers builds on this module
        return run_workers(args, protocol_factory, datagram_protocol)
    service = build_stream_service(args, protocol_factory, datagram_protocol)
    return service.run(args.grace, args.stats)
