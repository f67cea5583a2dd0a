"""The echo service (RFC 862, UNP's ``str_echo``) on the reactor.

    python -m servers.echo_select [port]        # default 9877, UNP's SERV_PORT

Every byte a client sends comes back, in order, whatever its value: the
server echoes buffers, not lines (UNP's ``str_echo`` reads a buffer and
``writen``s it), so there is no framing on this side.  When the client
half-closes, it still gets every pending byte, then the server's FIN.

It serves as many clients at once as its descriptors allow (``--max-clients``
to set fewer); a client beyond them reads ``busy\\n`` and is closed cleanly,
as in ``servers.busy_select``, which is this server with a capacity of one.

With ``--udp`` the same loop also echoes UDP datagrams on the same port
number (``servers.udp_echo``).

Try it with ``nc localhost 9877`` or ``python -m clients.echo``, and watch
the state machines with ``--trace``.
"""

import cli
from reactor.protocols import Protocol
from servers.options import add_reactor_arguments, add_server_arguments, server_parser
from servers.service import run_stream_server
from servers.udp_echo import UDP_ECHO
from wire.services import SERV_PORT



class Echo(Protocol):
    """Send back what was received.  Stateless: one instance serves every connection."""

    def data_received(self, conn, data):
        conn.write(data)


ECHO = Echo()


def build_parser():
    parser = server_parser(
        "python -m servers.echo_select",
        "Echo server (RFC 862) on selectlab's single-thread reactor: every byte a client sends "
        "comes back.")
    add_server_arguments(parser, SERV_PORT)
    add_reactor_arguments(parser)
    parser.add_argument("--udp", action="store_true",
                        help="also echo UDP datagrams on the same port number, from the same "
                             "loop (the quick guide's answer 6: one port, two protocols)")
    return parser


def main(argv=None):
    return run_stream_server(build_parser().parse_args(argv), lambda: ECHO, UDP_ECHO)


def cli_main():
    """Entry point of the console script."""
    cli.run(main)


if __name__ == "__main__":
    cli_main()
