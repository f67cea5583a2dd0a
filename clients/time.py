"""The TIME client (RFC 868; Comer 7.12-7.15), over TCP or UDP.

    python -m clients.time [host] [port]            # default localhost 8037
    python -m clients.time --udp [host] [port]

Reads the server's 4 bytes (big-endian seconds since 1900), and prints the
time they stand for and how far the local clock is from it.  Over UDP it
sends Comer's ``what time is it?`` and retries as ``clients.udp_echo`` does.

The 32-bit count wraps on 2036-02-07; the decoding picks the 136-year era
closest to the local clock, so it stays right after the wrap.  The offset is
only as good as the protocol: whole seconds, and the trip's delay is not
accounted for (Comer 7.14).
"""

import datetime
import sys
import time

import cli
from clients.common import ask, service_parser
from wire.services import TIME_PORT, TIME_STANDARD_PORT, decode_time

ASK = b"what time is it?\n"     # Comer's UDP TIME client's request


def build_parser():
    return service_parser("python -m clients.time",
                          "TIME client (RFC 868): prints the server's time and its offset "
                          "from the local clock.", TIME_PORT, TIME_STANDARD_PORT)


def main(argv=None):
    args = build_parser().parse_args(argv)
    reply = ask(args, ASK, size=4)
    now = time.time()
    try:
        server_time = decode_time(reply, now)
    except ValueError as exc:
        raise cli.Fatal(f"{args.host} port {args.port}: {exc}; is it a TIME server?") from None
    when = datetime.datetime.fromtimestamp(server_time, datetime.timezone.utc)
    offset = now - server_time
    sys.stdout.write(f"server time: {when:%Y-%m-%d %H:%M:%S} UTC\n")
    sys.stdout.write(f"local clock: {offset:+.1f} s from it (the protocol counts whole "
                     f"seconds)\n")
    return 0


def cli_main():
    """Entry point of the console script."""
    cli.run(main)


if __name__ == "__main__":
    cli_main()
