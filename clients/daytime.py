"""The DAYTIME client (RFC 867; Comer 7.9-7.11), over TCP or UDP.

    python -m clients.daytime [host] [port]         # default localhost 8013
    python -m clients.daytime --udp [host] [port]

Over TCP it connects and reads until the server closes -- in a loop, because
one reply may arrive in several pieces (Comer 7.11) -- and prints what came.
Over UDP it sends an empty datagram and prints the answer, retrying as
``clients.udp_echo`` does.
"""

import sys

import cli
from clients.common import ask, service_parser
from wire.services import DAYTIME_PORT, DAYTIME_STANDARD_PORT


def build_parser():
    return service_parser("python -m clients.daytime",
                          "DAYTIME client (RFC 867): prints the date and time a server sends.",
                          DAYTIME_PORT, DAYTIME_STANDARD_PORT)


def main(argv=None):
    args = build_parser().parse_args(argv)
    text = ask(args).decode("ascii", "backslashreplace").rstrip("\r\n")
    sys.stdout.write(text + "\n")
    return 0


def cli_main():
    """Entry point of the console script."""
    cli.run(main)


if __name__ == "__main__":
    cli_main()
