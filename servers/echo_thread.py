"""The thread-per-connection echo server (Comer ch. 12), with Comer's monitor (12.9).

    python -m servers.echo_thread [port]        # default 9877, UNP's SERV_PORT

Each accepted client gets a thread running
:func:`servers.blocking.serve_connection`, the same echo loop as the fork and
iterative servers.  ``--stats SECS`` logs what Comer's monitor thread does:
the current and completed connections, their average duration and the bytes
moved, every SECS seconds (from a timer of the parent's loop, not a thread
of its own); SIGUSR1 logs the same line at any time.

Python's threads take turns on one interpreter lock, so this design cannot
use a second core for echoing; it pays a thread (stack, scheduling) per
client.  bench/ measures what that costs against the reactor.
"""

import cli
from servers.blocking import serve_connection
from servers.classic import Threading, run_classic
from servers.options import add_server_arguments, server_parser
from wire.services import SERV_PORT


def build_parser():
    parser = server_parser(
        "python -m servers.echo_thread", "Thread-per-connection echo server (Comer ch. 12).")
    add_server_arguments(parser, SERV_PORT, trace=False)
    parser.add_argument("--stats", type=cli.positive_float, default=None, metavar="SECS",
                        help="log current and completed connections, average connection time "
                             "and bytes every SECS seconds (what Comer's monitor thread logs)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_classic(args, Threading(serve_connection), stats_interval=args.stats)


def cli_main():
    """Entry point of the console script."""
    cli.run(main)


if __name__ == "__main__":
    cli_main()
