"""The quick guide's UDP echo client (3rd task), with its answer 1 built in.

    python -m clients.udp_echo [host] [port]        # default localhost 58001

Sends one datagram (``Hello!\\n`` unless ``-m`` says otherwise), prints the
reply as the guide does -- ``echo: ...`` -- and who sent it, named by
``getnameinfo`` -- ``sent by [host:service]``.

The guide's client blocks in ``recvfrom`` for ever if no reply comes, and
its answer 1 says why: "No message will be received back at the client and
it will block in recvfrom. No error will be detected unless timeouts are
used."  Here each try waits ``--timeout`` seconds; after ``--tries`` tries
without an answer the client says so and exits 1.  A datagram from anyone
but the server is ignored (the guide's answer 2: check recvfrom's address).
"""

import socket
import sys

import cli
from clients.common import add_server_address, add_udp_arguments, udp_request
from wire.services import GUIDE_PORT

MESSAGE = "Hello!\n"        # 7 bytes, the guide's


def build_parser():
    parser = cli.Parser(
        prog="python -m clients.udp_echo",
        description="UDP echo client (the quick guide's 3rd task): sends one datagram, prints "
                    "'echo: ...' and 'sent by [host:service]'. Waits --timeout seconds per try "
                    "and tries --tries times, then gives up with exit status 1.")
    add_server_address(parser, GUIDE_PORT, "the guide's")
    parser.add_argument("-m", "--message", default=MESSAGE,
                        help="what to send (default 'Hello!' and a newline, the guide's)")
    add_udp_arguments(parser)
    parser.add_argument("-n", "--numeric", action="store_true",
                        help="print the sender's address and port as numbers, without "
                             "looking up names")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    data, sender = udp_request(args.host, args.port, args.message.encode(), args.timeout,
                               args.tries)
    flags = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV if args.numeric else 0
    try:
        host, service = socket.getnameinfo(sender, flags)
    except socket.gaierror as exc:
        raise cli.Fatal(f"getnameinfo: {exc.strerror}") from None
    sys.stdout.write(f"echo: {data.decode('utf-8', 'backslashreplace')}")
    if not data.endswith(b"\n"):
        sys.stdout.write("\n")
    sys.stdout.write(f"sent by [{host}:{service}]\n")
    return 0


def cli_main():
    """Entry point of the console script."""
    cli.run(main)


if __name__ == "__main__":
    cli_main()
