"""What every selectlab server shares: options, listening sockets, the run/stop cycle.

* :func:`add_server_arguments`: ``[port]``, ``-b/--bind``, ``--backlog``,
  ``--grace``, ``--trace``, ``-v/-q``, the same on every server.
* :func:`add_reactor_arguments`: ``--max-clients``, ``--idle-timeout`` and
  ``--stats``, the same on every server that runs on the reactor.
* :func:`open_listeners`: bind and listen, or raise :class:`~cli.Fatal`
  with a message that says what to do (address in use, unknown host, port
  needing root...).
* :func:`announce`: the ``listening on HOST:PORT`` line on stdout, flushed,
  which scripts and tests wait for.
* :class:`Service`: run a :class:`~reactor.server.StreamServer` (and UDP
  endpoints) until SIGINT or SIGTERM, then stop gracefully; a second signal
  stops at once.  SIGUSR1 logs the counters, which :meth:`Service.snapshot`
  gathers from the server, UDP, the loop and the log.
* :func:`build_stream_service` / :func:`run_stream_server`: all of the above
  for a protocol, from parsed arguments: what ``main()`` of a reactor server
  does.
"""

import errno
import logging
import resource
import signal
import socket

import cli
from cli import Fatal, add_verbosity, byte_size, port, positive_float, positive_int
from reactor.connection import MAX_OUTPUT, Protocol, format_address
from reactor.datagram import DatagramEndpoint, DatagramProtocol
from reactor.loop import FD_SETSIZE, SELECTORS, Reactor, make_selector
from reactor.server import LINGER_TIMEOUT, StreamServer, format_stats

log = logging.getLogger("selectlab")
stats_log = logging.getLogger("selectlab.stats")

# UNP's LISTENQ.  The kernel caps it at net.core.somaxconn.
DEFAULT_BACKLOG = 1024

# How long a stopping server waits for its clients to take their last bytes.
DEFAULT_GRACE = 5.0

EXIT_SECOND_SIGNAL = 1
EXIT_FAILURE = 1

# What a client arriving at capacity reads before our FIN: the quick guide's
# 11th task ("send "busy\n" to new incoming clients"), 5 bytes.
BUSY_MESSAGE = b"busy\n"

# Redis's CONFIG_MIN_RESERVED_FDS: descriptors kept back from clients, for
# the server's own (selector, wakeup socketpair, listening sockets, logs) and
# for answering "busy" to clients beyond capacity.
RESERVED_FDS = 32


def add_server_arguments(parser, default_port, trace=True, protocols="TCP"):
    """The options every server takes (``--trace`` only where there are state machines to trace)."""
    parser.add_argument("port", nargs="?", type=port, default=default_port,
                        help=f"{protocols} port to listen on (default {default_port}; 0 picks a "
                             f"free one)")
    parser.add_argument("-b", "--bind", metavar="HOST", default=None,
                        help="address or host name to listen on (default: every interface, "
                             "IPv4 and IPv6 where the host has both)")
    parser.add_argument("--backlog", type=int, default=DEFAULT_BACKLOG, metavar="N",
                        help=f"listen() backlog: connections the kernel queues before we accept "
                             f"them (default {DEFAULT_BACKLOG}, UNP's LISTENQ)")
    parser.add_argument("--grace", type=positive_float, default=DEFAULT_GRACE, metavar="SECS",
                        help=f"on SIGINT/SIGTERM, how long to let clients take their pending "
                             f"output before dropping them (default {DEFAULT_GRACE:g})")
    if trace:
        parser.add_argument("--trace", action="store_true",
                            help="log every state transition of the listener and the "
                                 "connections, and the line -v logs as each client opens and "
                                 "closes; even with -q")
    add_verbosity(parser)


def add_reactor_arguments(parser, default_max_clients=None):
    """The options of every server on the reactor: admission control, idle timeout, counters.

    ``default_max_clients`` None means Redis's default: as many clients as
    the descriptor limit allows, minus ``RESERVED_FDS``.
    """
    if default_max_clients is None:
        default_text = (f"the open-file limit minus {RESERVED_FDS} descriptors kept for the "
                        f"server, as Redis does; here {_fd_limit() - RESERVED_FDS}")
    else:
        default_text = str(default_max_clients)
    parser.add_argument("--max-clients", type=positive_int, default=default_max_clients,
                        metavar="N",
                        help=f"serve at most N clients at once; a client beyond them reads "
                             f"'busy' and is closed cleanly (default: {default_text})")
    parser.add_argument("--idle-timeout", type=positive_float, default=None, metavar="SECS",
                        help="close a client after SECS seconds with no byte moving either "
                             "way (default: never)")
    parser.add_argument("--max-output", type=byte_size, default=MAX_OUTPUT, metavar="BYTES",
                        help=f"cut a client off (reason 'output limit') rather than buffer more "
                             f"than BYTES of output for it, as Redis's "
                             f"client-output-buffer-limit does (default {MAX_OUTPUT >> 20} MiB); "
                             f"64K, 8M and the like are understood")
    parser.add_argument("--stats", type=positive_float, default=None, metavar="SECS",
                        help="log the counters (accepted, rejected_busy, active, closed, "
                             "idle_timeouts, protocol_errors, log_lines_dropped, bytes...) "
                             "every SECS seconds; SIGUSR1 logs them at any time")
    add_selector_argument(parser)


def add_selector_argument(parser):
    """``--selector epoll|poll|select``: which system call the reactor waits in."""
    names = "|".join(SELECTORS)
    parser.add_argument("--selector", choices=list(SELECTORS), default=None,
                        metavar=names,
                        help=f"the system call the loop waits in (default: the best this system "
                             f"has, epoll on Linux). select() cannot watch descriptors past "
                             f"{FD_SETSIZE - 1}, so with it the server keeps its open-file limit "
                             f"at {FD_SETSIZE} and serves at most {FD_SETSIZE - RESERVED_FDS} "
                             f"clients by default")


def make_reactor(args):
    """A :class:`~reactor.loop.Reactor` on the selector ``args.selector`` names."""
    return Reactor(make_selector(getattr(args, "selector", None)))


def _fd_limit():
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


def log_capacity(requested, capacity, fd_limit, on_select=False):
    """Say how many clients will be served, and warn if the descriptors cannot cover them."""
    allowed = fd_limit - RESERVED_FDS
    remedy = ("use --selector poll or epoll, which have no such limit" if on_select
              else "raise ulimit -n to avoid this")
    if requested is None:
        log.info("serving at most %d clients at once (open-file limit %d minus %d kept "
                 "for the server)", capacity, fd_limit, RESERVED_FDS)
    elif capacity > allowed:
        log.warning("--max-clients %d is more than the open-file limit (%d) allows: past "
                    "about %d clients, accepting will pause until clients leave (%s)",
                    capacity, fd_limit, max(allowed, 0), remedy)
    else:
        log.info("serving at most %d client(s) at once", capacity)


def _listen_error(where, exc):
    if exc.errno == errno.EADDRINUSE:
        return Fatal(f"cannot listen on {where}: address already in use; is another server "
                     f"running there? stop it, or choose another port (0 picks a free one)")
    if exc.errno == errno.EACCES:
        return Fatal(f"cannot listen on {where}: permission denied; ports below 1024 need "
                     f"root, so choose a port from 1024 up")
    if exc.errno == errno.EADDRNOTAVAIL:
        return Fatal(f"cannot listen on {where}: no interface of this host has that address; "
                     f"use one of its addresses, or leave out -b to listen on all of them")
    return Fatal(f"cannot listen on {where}: {exc.strerror or exc}")


def _stream_opener(backlog):
    def open_one(family, sockaddr, dualstack=False):
        return socket.create_server(sockaddr, family=family, backlog=backlog,
                                    dualstack_ipv6=dualstack)
    return open_one


def _open_datagram(family, sockaddr, dualstack=False):
    # No SO_REUSEADDR: on UDP it would let a second server share the port
    # silently instead of failing with "address in use".
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dualstack else 1)
        sock.bind(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock


def _open_all(host, port_number, open_one, socktype):
    """Sockets from ``open_one(family, sockaddr, dualstack)`` for ``host`` and a port.

    With no host: one dual-stack IPv6 socket where the host supports it (it
    takes IPv4 too), else one IPv4 socket.  With a host name: one socket per
    address it resolves to (``localhost``: 127.0.0.1 and ::1), all on the
    same port -- with port 0, the port the first one got.
    """
    def opened(family, sockaddr, dualstack=False):
        try:
            return open_one(family, sockaddr, dualstack)
        except OSError as exc:
            raise _listen_error(format_address(sockaddr), exc) from None

    if host is None:
        if socket.has_dualstack_ipv6():
            try:
                return [open_one(socket.AF_INET6, ("::", port_number), True)]
            except OSError as exc:
                if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                    raise _listen_error(f"[::]:{port_number}", exc) from None
                # IPv6 compiled in but switched off: IPv4 alone.
        return [opened(socket.AF_INET, ("0.0.0.0", port_number))]

    try:
        infos = socket.getaddrinfo(host, port_number, type=socktype, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not a valid host name"
        raise Fatal(f"cannot resolve bind address {host!r}: {reason}; "
                    f"give an IP address such as 127.0.0.1, or leave out -b") from None
    socks = []
    seen = set()
    try:
        for family, _type, _proto, _name, sockaddr in infos:
            if sockaddr[0] in seen:
                continue
            seen.add(sockaddr[0])
            if socks and port_number == 0:
                sockaddr = (sockaddr[0], socks[0].getsockname()[1]) + tuple(sockaddr[2:])
            socks.append(opened(family, sockaddr))
    except Fatal:
        for sock in socks:
            sock.close()
        raise
    return socks


def open_listeners(host, port_number, backlog=DEFAULT_BACKLOG):
    """Bound, listening TCP sockets for ``host`` (None: every interface) and a port.

    See :func:`_open_all` for which addresses.  ``SO_REUSEADDR`` is set (the
    worksheet's advice: restart at once, without waiting for TIME_WAIT).

    Raises
    ------
    cli.Fatal
        with a one-line explanation when the address cannot be used.
    """
    return _open_all(host, port_number, _stream_opener(backlog), socket.SOCK_STREAM)


def open_datagram_sockets(host, port_number):
    """Bound UDP sockets for ``host`` (None: every interface) and a port, as :func:`open_listeners`."""
    return _open_all(host, port_number, _open_datagram, socket.SOCK_DGRAM)


def announce(socks, suffix=""):
    """Print ``listening on HOST:PORT`` for each socket, flushed, first thing on stdout."""
    for sock in socks:
        print(f"listening on {format_address(sock.getsockname())}{suffix}", flush=True)


class Service:
    """A reactor server as its ``main()`` runs it: the loop, its servers, the log, one set of counters.

    Parameters
    ----------
    reactor : reactor.loop.Reactor
    server : reactor.server.StreamServer or None
        the TCP side, if any.
    endpoints : list of reactor.datagram.DatagramEndpoint
        the UDP side, if any, on the same loop.
    log_writer : reactor.logwriter.LogWriter or None
        the handler the logs go through (``cli.setup_logging`` returns it):
        while the service runs, the loop flushes it, and its dropped lines
        are counted in :meth:`snapshot`.

    :meth:`run` announces the sockets and runs the loop until SIGINT/SIGTERM
    or :meth:`stop`.  The first signal stops gracefully (no new clients;
    pending output is flushed for up to ``grace`` seconds; UDP stops at
    once, having nothing pending); a second one drops every client at once
    and the exit status is 1.  SIGUSR1 logs the counters, as does a timer
    every ``stats_interval`` seconds if one is given.  Signals reach the loop
    through its wakeup socket: nothing here polls.
    """

    def __init__(self, reactor, server=None, endpoints=(), log_writer=None):
        self.reactor = reactor
        self.server = server
        self.endpoints = list(endpoints)
        self.log_writer = log_writer
        self.status = 0
        self.grace = DEFAULT_GRACE
        self._stopping = False
        self._more_counters = []

    def add_counters(self, snapshot):
        """Report ``snapshot()``'s counters (a dict) too: an application's own, such as a chat room's."""
        self._more_counters.append(snapshot)

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

    def run(self, grace=DEFAULT_GRACE, stats_interval=None, signals=True):
        """Announce, serve until stopped, return the exit status.

        ``signals=False`` leaves the signal handlers alone (the loop may then
        run outside the main thread); stop it with :meth:`stop`.
        """
        reactor = self.reactor
        self.grace = grace
        for endpoint in self.endpoints:
            endpoint.on_failed = self._endpoint_failed
        if signals:
            for signum in (signal.SIGINT, signal.SIGTERM):
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
        if self.log_writer is not None:
            self.log_writer.attach(reactor)
        # The handlers are in place before the lines are printed, so whoever
        # waits for them may signal at once.
        if self.server:
            announce(self.server.sockets)
        announce([e.sock for e in self.endpoints], suffix=" (UDP)")
        try:
            reactor.run()
        finally:
            if self.log_writer is not None:
                self.log_writer.detach()
            reactor.close()
        log.info("stopped: %s", format_stats(self.snapshot()))
        return self.status

    def stop(self, reason="stopping"):
        """Stop gracefully, as the first SIGINT/SIGTERM does; a second call stops at once.

        Call it from the loop (a callback, a timer, a signal handler given to
        the reactor), not from another thread.
        """
        clients = len(self.server.connections) if self.server else 0
        if not self._stopping:
            self._stopping = True
            log.info("%s: shutting down: %d client(s), %d byte(s) pending; grace %.1f s "
                     "(send it again to stop at once)", reason, clients,
                     self.server.pending_output() if self.server else 0, self.grace)
            for endpoint in self.endpoints:
                endpoint.close()        # UDP has nothing pending: it stops now
            if self.server:
                self.server.shutdown(self.grace, self._stopped)
            else:
                self._stopped()
        else:
            log.warning("%s again: stopping now, dropping %d client(s)", reason, clients)
            self.status = EXIT_SECOND_SIGNAL
            if self.server:
                self.server.abort_all("second signal")
            self._stopped()

    def _on_signal(self, signum):
        self.stop(signal.Signals(signum).name)

    def _stopped(self):
        for endpoint in self.endpoints:
            endpoint.close()
        self.reactor.stop()

    def _endpoint_failed(self, _endpoint):
        if not self.server and not any(e.serving for e in self.endpoints):
            log.error("no UDP socket left to serve: stopping")
            self.status = EXIT_FAILURE
            self.reactor.stop()


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


def start_classic(args):
    """Logging, descriptor limit and listening sockets for a classic (blocking) server."""
    cli.setup_logging(args)
    raise_fd_limit()
    return open_listeners(args.bind, args.port, args.backlog)


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
    ceiling = fd_limit_for(args)
    fd_limit = raise_fd_limit(ceiling)
    capacity = choose_max_clients(args.max_clients, fd_limit)
    with_udp = datagram_protocol is not None and getattr(args, "udp", False)
    socks, udp_socks = _open_stream_and_datagram(args, with_udp)
    log_capacity(args.max_clients, capacity, fd_limit, on_select=ceiling is not None)
    reactor = make_reactor(args)
    if ceiling is not None:
        log.info("waiting in select(): open-file limit %d, since select() cannot watch "
                 "descriptors past %d", fd_limit, FD_SETSIZE - 1)
    server = StreamServer(reactor, socks, protocol_factory, capacity=capacity,
                          reject_message=BUSY_MESSAGE, idle_timeout=args.idle_timeout,
                          trace=args.trace, max_output=args.max_output)
    if args.idle_timeout is not None:
        log.info("closing clients idle for %g s", args.idle_timeout)
    endpoints = [DatagramEndpoint(reactor, sock, datagram_protocol) for sock in udp_socks]
    return Service(reactor, server, endpoints, writer)


def run_stream_server(args, protocol_factory, datagram_protocol=None):
    """What ``main()`` of a reactor server does: :func:`build_stream_service`, then run it.

    Returns the exit status.
    """
    service = build_stream_service(args, protocol_factory, datagram_protocol)
    return service.run(args.grace, args.stats)


# With port 0 and --udp, how many times to try for a port free for both protocols.
_PORT_TRIES = 10


def _open_stream_and_datagram(args, with_udp):
    """Listening TCP sockets, and UDP sockets on the same port number if ``with_udp``.

    With port 0 the kernel picks the TCP port; that number may be taken for
    UDP, and then another is tried.
    """
    for attempt in range(_PORT_TRIES):
        socks = open_listeners(args.bind, args.port, args.backlog)
        if not with_udp:
            return socks, []
        try:
            return socks, open_datagram_sockets(args.bind, socks[0].getsockname()[1])
        except Fatal:
            for sock in socks:
                sock.close()
            if args.port != 0 or attempt == _PORT_TRIES - 1:
                raise
    raise AssertionError("unreachable")


class ReplyAndClose(Protocol):
    """A TCP service that speaks first and only: send ``reply()``, then close (DAYTIME, TIME).

    Whatever the client sends is read and discarded while the connection closes.
    """

    def __init__(self, reply):
        self.reply = reply

    def connection_made(self, conn):
        conn.write(self.reply())
        conn.close(timeout=LINGER_TIMEOUT, reason="reply sent")


class ReplyToDatagram(DatagramProtocol):
    """The same service over UDP: every datagram, whatever it holds, gets ``reply()``."""

    def __init__(self, reply):
        self.reply = reply

    def datagram_received(self, endpoint, data, addr):
        endpoint.sendto(self.reply(), addr)


def reply_service_parser(prog, description, default_port, standard_port):
    """The parser of a one-reply service (DAYTIME, TIME) on TCP and UDP."""
    parser = cli.Parser(
        prog=prog,
        description=f"{description} Served over TCP and UDP on selectlab's reactor. Default "
                    f"port {default_port}, since the standard port {standard_port} needs root "
                    f"(give {standard_port} to use it). The first lines on stdout are "
                    f"'listening on HOST:PORT' (TCP, then UDP). SIGINT/SIGTERM stop it "
                    f"gracefully.")
    add_server_arguments(parser, default_port, protocols="TCP and UDP")
    add_reactor_arguments(parser)
    return parser


def run_reply_service(args, reply):
    """Serve ``reply()`` to every TCP client and every UDP datagram, from one loop."""
    args.udp = True
    return run_stream_server(args, lambda: ReplyAndClose(reply), ReplyToDatagram(reply))
