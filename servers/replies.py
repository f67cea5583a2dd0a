"""The one-reply services, DAYTIME and TIME: the server speaks first and only, over TCP and UDP."""

import cli
from reactor.protocols import Protocol
from reactor.datagram import DatagramProtocol
from reactor.server import LINGER_TIMEOUT
from servers.options import add_reactor_arguments, add_server_arguments, server_parser
from servers.service import run_stream_server


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
    parser = server_parser(
        prog,
        f"{description} Served over TCP and UDP on selectlab's reactor. Default port "
        f"{default_port}, since the standard port {standard_port} needs root (give "
        f"{standard_port} to use it).",
        first="The first lines on stdout are 'listening on HOST:PORT' (TCP, then UDP).")
    add_server_arguments(parser, default_port, protocols="TCP and UDP")
    add_reactor_arguments(parser)
    return parser


def run_reply_service(args, reply):
    """Serve ``reply()`` to every TCP client and every UDP datagram, from one loop."""
    args.udp = True
    return run_stream_server(args, lambda: ReplyAndClose(reply), ReplyToDatagram(reply))


def reply_service(prog, description, default_port, standard_port, reply):
    """A one-reply service's ``build_parser``, ``main`` and console-script entry point."""
    def build_parser():
        return reply_service_parser(prog, description, default_port, standard_port)

    def main(argv=None):
        return run_reply_service(build_parser().parse_args(argv), reply)

    def cli_main():
        cli.run(main)

    return build_parser, main, cli_main
