"""The iterative echo server: one client at a time (the quick guide's 10th task, Comer ch. 10).

    python -m servers.echo_iterative [port]     # default 9877, UNP's SERV_PORT

It accepts a client, echoes until that client's EOF, closes, and only then
accepts the next; meanwhile other clients wait in the kernel's backlog (the
guide's answer 12: "this program can only serve a client at a time").  The
echo loop is :func:`servers.blocking.serve_connection`, the same as the fork
and thread servers'.

Unlike the guide's code, which calls ``exit(1)`` on any error, a client that
resets or vanishes ends only its own connection.  A client that sends but
never reads still stalls it for everyone: the blocking ``write`` waits for
ever (Comer 8.29, server deadlock) -- which is the point of comparing it with
the reactor.
"""

import cli
from servers.blocking import serve_connection
from servers.classic import Iterative, run_classic
from servers.options import add_server_arguments, server_parser
from wire.services import SERV_PORT


def build_parser():
    parser = server_parser(
        "python -m servers.echo_iterative",
        "Iterative echo server: serves one client at a time, to the end, while the others wait "
        "in the backlog.",
        stop="SIGINT/SIGTERM stop it once the current client is done (or after --grace); a "
             "second signal stops it at once")
    add_server_arguments(parser, SERV_PORT, trace=False)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_classic(args, Iterative(serve_connection))


def cli_main():
    """Entry point of the console script."""
    cli.run(main)


if __name__ == "__main__":
    cli_main()
