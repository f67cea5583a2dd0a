"""The fork-per-connection echo server: UNP's ``tcpserv04`` (and, on request, 01-03).

    python -m servers.echo_fork [port]          # default 9877, UNP's SERV_PORT

The parent accepts; each client gets a child process running
:func:`servers.blocking.serve_connection`, the same echo loop as the thread
and iterative servers.  The child closes the listening socket, the parent the
connected one.  ``--reap`` chooses how dead children are collected, to
reproduce the texts' versions: ``waitpid`` (tcpserv04, the default),
``wait`` (tcpserv03: one child per SIGCHLD, so merged signals leave zombies), ``ignore`` (the quick
guide's SIG_IGN) and ``none`` (tcpserv01: zombies).  See
:mod:`servers.forking` for the details.
"""

import cli
from servers.blocking import serve_connection
from servers.classic import run_classic
from servers.forking import CHILDREN_MODES, REAP_MODES, Forking
from servers.options import add_server_arguments, server_parser
from wire.services import SERV_PORT


def add_fork_arguments(parser):
    """``--reap``, ``--max-children``, ``--children``: the fork server's options."""
    parser.add_argument("--reap", choices=REAP_MODES, default="waitpid",
                        help="how finished children are reaped: waitpid (UNP tcpserv04, "
                             "correct; the default), wait (tcpserv03: one child reaped per "
                             "SIGCHLD, so merged signals leave zombies), ignore (SIG_IGN, the quick guide's), none "
                             "(tcpserv01: zombies)")
    parser.add_argument("--max-children", type=cli.positive_int, default=None, metavar="N",
                        help="at most N children at once; beyond that, clients wait in the "
                             "backlog (default: no limit)")
    parser.add_argument("--children", choices=CHILDREN_MODES, default="wait",
                        help="on SIGINT/SIGTERM: wait lets children finish for --grace "
                             "seconds, then sends them SIGTERM (the default); term sends it "
                             "at once. Either way every child is reaped before exit.")


def build_parser():
    parser = server_parser(
        "python -m servers.echo_fork", "Fork-per-connection echo server (UNP's tcpserv04).",
        stop="SIGINT/SIGTERM stop it gracefully (see --children); a second signal stops it at "
             "once")
    add_server_arguments(parser, SERV_PORT, trace=False)
    add_fork_arguments(parser)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    design = Forking(serve_connection, reap=args.reap, max_children=args.max_children,
                     children=args.children)
    return run_classic(args, design)


def cli_main():
    """Entry point of the console script."""
    cli.run(main)


if __name__ == "__main__":
    cli_main()
