"""The UDP echo server (the quick guide's 9th task) on the reactor.

    python -m servers.udp_echo [port]           # default 58001, the guide's

Every datagram is sent back to its sender with exactly the bytes received
("send only the bytes you read"), up to the largest a UDP datagram can carry
(65,507 bytes over IPv4, 65,527 over IPv6; the guide's 128-byte buffer would
cut longer ones short).  A reply that cannot be sent -- a full send buffer,
an address that cannot be sent to -- is dropped and counted, and the loop
goes on; the guide's server calls ``exit(1)``.  See :mod:`reactor.datagram`.

``python -m servers.echo_select --udp`` serves this on the same port number
as its TCP echo, from the same loop.
"""

import cli
from reactor.datagram import DatagramEndpoint, DatagramProtocol
from servers.limits import fd_limit_for, raise_fd_limit
from servers.options import add_selector_argument, add_workers_arguments, server_parser
from servers.service import Service, make_reactor
from servers.sockets import open_datagram_sockets, open_for_workers
from servers.workers import serve_with_workers, worker_count
from wire.services import GUIDE_PORT



class UdpEcho(DatagramProtocol):
    """Send each datagram back to where it came from.  Stateless: one instance for all."""

    def datagram_received(self, endpoint, data, addr):
        endpoint.sendto(data, addr)


UDP_ECHO = UdpEcho()


def build_parser():
    parser = server_parser(
        "python -m servers.udp_echo",
        "UDP echo server (the quick guide's 9th task) on selectlab's reactor: every datagram "
        "goes back to its sender, byte for byte.",
        first="The first line on stdout is 'listening on HOST:PORT (UDP)'.",
        stop="SIGINT/SIGTERM stop it")
    parser.add_argument("port", nargs="?", type=cli.port, default=GUIDE_PORT,
                        help=f"UDP port (default {GUIDE_PORT}, the guide's; 0 picks a free one)")
    parser.add_argument("-b", "--bind", metavar="HOST", default=None,
                        help="address or host name to listen on (default: every interface, "
                             "IPv4 and IPv6 where the host has both)")
    parser.add_argument("--stats", type=cli.positive_float, default=None, metavar="SECS",
                        help="log the counters (datagrams and bytes in and out, dropped, "
                             "errors) every SECS seconds; SIGUSR1 logs them at any time")
    # The shared options' texts speak of TCP clients; these are a UDP server's.
    add_selector_argument(parser, help=(
        "the system call the loop waits in (default: the best this system has, epoll on "
        "Linux); this server watches only a few sockets of its own, however many send to "
        "it, so select()'s limit of 1024 descriptors never matters to it"))
    add_workers_arguments(parser, reuseport_help=(
        "with --workers: a socket per worker with SO_REUSEPORT, the kernel spreading the "
        "datagrams over them by a hash of each sender's address and port (the default), or "
        "--no-reuseport: one socket that every worker reads from"))
    cli.add_verbosity(parser, more="a line for each datagram that could not be sent or "
                                   "received (an unreachable sender, say)")
    return parser


def build_service(args, socks, writer):
    reactor = make_reactor(args)
    endpoints = [DatagramEndpoint(reactor, sock, UDP_ECHO) for sock in socks]
    return Service(reactor, None, endpoints, writer)


def main(argv=None):
    args = build_parser().parse_args(argv)
    writer = cli.setup_logging(args)
    raise_fd_limit(fd_limit_for(args))
    if args.workers != 1:
        slots = open_for_workers(args, False, worker_count(args), args.reuseport,
                                 with_tcp=False)
        return serve_with_workers(
            args, slots, writer, lambda _number, _tcp, udp, worker_writer: build_service(
                args, udp, worker_writer), trace=False)
    socks = open_datagram_sockets(args.bind, args.port)
    return build_service(args, socks, writer).run(0.0, args.stats)


def cli_main():
    """Entry point of the console script."""
    cli.run(main)


if __name__ == "__main__":
    cli_main()
