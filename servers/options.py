"""The command-line options every selectlab server shares.

* :func:`server_parser`: the parser, with the description's common ending.
* :func:`add_server_arguments`: ``[port]``, ``-b/--bind``, ``--backlog``,
  ``--grace``, ``--trace``, ``-v/-q``, the same on every server.
* :func:`add_reactor_arguments`: ``--max-clients``, ``--idle-timeout``,
  ``--max-output``, ``--stats``, ``--selector``, the PROXY protocol's
  options and ``--workers``, the same on every server that runs on the
  reactor.
"""

import argparse
import ipaddress

from cli import (
    Parser, add_verbosity, byte_size, port, positive_float, positive_int, seconds_from_zero,
    whole_number_from,
)
from reactor.connection import MAX_OUTPUT
from reactor.protocols import LOOPBACK, PROXY_HEADER_TIMEOUT
from reactor.selection import FD_SETSIZE, SELECTORS
from servers.limits import RESERVED_FDS, cpu_count, fd_limit

# UNP's LISTENQ.  The kernel caps it at net.core.somaxconn.
DEFAULT_BACKLOG = 1024

# How long a stopping server waits for its clients to take their last bytes.
DEFAULT_GRACE = 5.0


def server_parser(prog, summary, first="The first line on stdout is 'listening on HOST:PORT'.",
                  stop="SIGINT/SIGTERM stop it gracefully; a second signal stops it at once"):
    """A server's parser, whose description ends as every server's does: what stdout shows first,
    how it stops, and that SIGUSR1 logs its counters."""
    return Parser(prog=prog, description=f"{summary} {first} {stop}; SIGUSR1 logs its counters.")


def add_server_arguments(parser, default_port, trace=True, protocols="TCP"):
    """The options every server takes (``--trace`` only where there are state machines to trace)."""
    parser.add_argument("port", nargs="?", type=port, default=default_port,
                        help=f"{protocols} port to listen on (default {default_port}; 0 picks a "
                             f"free one)")
    parser.add_argument("-b", "--bind", metavar="HOST", default=None,
                        help="address or host name to listen on (default: every interface, "
                             "IPv4 and IPv6 where the host has both)")
    parser.add_argument("--backlog", type=positive_int, default=DEFAULT_BACKLOG, metavar="N",
                        help=f"listen() backlog: connections the kernel queues before we accept "
                             f"them (default {DEFAULT_BACKLOG}, UNP's LISTENQ)")
    parser.add_argument("--grace", type=seconds_from_zero, default=DEFAULT_GRACE, metavar="SECS",
                        help=f"on SIGINT/SIGTERM, how long to let clients take their pending "
                             f"output before dropping them (default {DEFAULT_GRACE:g}; 0: at "
                             f"once). Exit status 0 either way; a second signal drops them at "
                             f"once with exit status 1")
    if trace:
        parser.add_argument("--trace", action="store_true",
                            help="log every state transition of the listener and the "
                                 "connections, and the line -v logs as each client opens and "
                                 "closes; even with -q")
    add_verbosity(parser)


def add_reactor_arguments(parser, default_max_clients=None, workers=True):
    """The options of every server on the reactor: admission control, idle timeout, counters.

    ``default_max_clients`` None means Redis's default: as many clients as
    the descriptor limit allows, minus ``RESERVED_FDS``.  ``workers=False``
    leaves out ``--workers`` (a server whose clients share state in memory).
    """
    if default_max_clients is None:
        default_text = (f"the open-file limit minus {RESERVED_FDS} descriptors kept for the "
                        f"server, as Redis does; here {fd_limit() - RESERVED_FDS}")
    else:
        default_text = str(default_max_clients)
    parser.add_argument("--max-clients", type=positive_int, default=default_max_clients,
                        metavar="N",
                        help=f"serve at most N clients at once (with --workers, N in each "
                             f"worker); a client beyond them reads 'busy' and is closed "
                             f"cleanly (default: {default_text})")
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
    add_proxy_arguments(parser)
    parser.add_argument("--monitor", type=monitor_address, default=None, metavar="[HOST:]PORT",
                        help="also serve a live page of the state machines, the connections "
                             "and the counters at http://HOST:PORT/ (HOST default 127.0.0.1; "
                             "PORT 0 picks one), with /state.json, /events and /metrics "
                             "(Prometheus); stdout then says 'monitor on http://...' after the "
                             "listening line. It has no authentication; changing the capacity "
                             "or closing a client from it works from loopback only")
    if workers:
        add_workers_arguments(parser)


def workers_argument(text):
    """argparse type: a number of workers from 1, or ``auto``."""
    return "auto" if text == "auto" else _worker_count(text)


_worker_count = whole_number_from(1, ", or auto (one per CPU this process may run on)")


def add_workers_arguments(parser, reuseport_help=None):
    """``--workers N|auto`` and ``--reuseport``: a reactor per core (``servers.workers``).

    ``reuseport_help``: ``--reuseport``'s text for a server whose clients are
    not TCP's (UDP: datagrams spread by sender, not connections).
    """
    parser.add_argument("--workers", type=workers_argument, default=1, metavar="N|auto",
                        help="run N reactor processes on the port, under a master that "
                             "restarts any that dies and passes signals on (default 1: one "
                             "process, no master; auto: one per CPU this process may run on, "
                             "here %d). SIGUSR1 to the master logs each worker's counters "
                             "and their total" % cpu_count())
    parser.add_argument("--reuseport", action=argparse.BooleanOptionalAction, default=True,
                        help=reuseport_help or (
                            "with --workers: a listening socket per worker with SO_REUSEPORT, "
                            "the kernel spreading new clients over them (the default), or "
                            "--no-reuseport: one socket that every worker accepts from"))


def monitor_address(text):
    """argparse type: ``PORT``, ``HOST:PORT`` or ``[V6]:PORT`` -> (host, port); host 127.0.0.1 by default."""
    host, colon, number = text.rpartition(":")
    if not colon:
        host = "127.0.0.1"
    host = host.strip("[]")
    if colon and not host:
        raise argparse.ArgumentTypeError(f"invalid address {text!r}: give PORT or HOST:PORT")
    return host, port(number)


def networks(text):
    """argparse type: ``ADDR[,ADDR...]``, each an address or a network (``10.0.0.0/8``)."""
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False)
                     for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid address or network: {exc}") from None


def add_proxy_arguments(parser):
    """``--proxy-protocol``, ``--proxy-from``, ``--proxy-timeout``: serving behind a balancer."""
    parser.add_argument("--proxy-protocol", action="store_true",
                        help="every connection starts with a PROXY protocol header, version 1 "
                             "or 2, as HAProxy's send-proxy and send-proxy-v2 send it; the "
                             "client's address in it is the one logged and served")
    parser.add_argument("--proxy-from", type=networks, default=LOOPBACK, metavar="ADDR[,ADDR]",
                        help="with --proxy-protocol, the balancers' addresses or networks "
                             "allowed to send a header (default 127.0.0.0/8 and ::1); "
                             "connections from anywhere else are refused")
    parser.add_argument("--proxy-timeout", type=positive_float, default=PROXY_HEADER_TIMEOUT,
                        metavar="SECS",
                        help=f"with --proxy-protocol, how long a connection may take to send "
                             f"its whole header (default {PROXY_HEADER_TIMEOUT:g})")


def add_selector_argument(parser, help=None):
    """``--selector epoll|poll|select``: which system call the reactor waits in.

    ``help``: the option's text for a server whose clients are not TCP's (UDP).
    """
    names = "|".join(SELECTORS)
    parser.add_argument("--selector", choices=list(SELECTORS), default=None,
                        metavar=names,
                        help=help or f"the system call the loop waits in (default: the best this system "
                             f"has, epoll on Linux). select() cannot watch descriptors past "
                             f"{FD_SETSIZE - 1}, so with it the server keeps its open-file limit "
                             f"at {FD_SETSIZE} and serves at most {FD_SETSIZE - RESERVED_FDS} "
                             f"clients by default")
