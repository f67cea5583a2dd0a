"""A server with a bug put in on purpose, for the tests: it echoes, and raises on ``boom``.

    python -m tests.faulty_server [server options] iterative|thread|fork|select [port]

Each design serves with the project's own machinery (``servers.blocking``,
``servers.classic``, ``servers.forking``); only the per-connection code is
faulty, so a test can check that one client's bug costs that client alone.
"""

import sys

import cli
from reactor.protocols import Protocol
from servers.blocking import serve_connection
from servers.classic import Iterative, Threading, run_classic
from servers.forking import Forking
from servers.service import run_stream_server


class Bug(Exception):
    """The bug: a client sent ``boom``."""


class _BuggySocket:
    """A connected socket whose ``recv`` raises on ``boom``: the bug, inside the serve loop."""

    def __init__(self, sock):
        self._sock = sock

    def recv(self, size):
        data = self._sock.recv(size)
        if b"boom" in data:
            raise Bug("boom")
        return data

    def send(self, data):
        return self._sock.send(data)


def faulty_serve(sock, addr=None):
    """UNP's str_echo (``serve_connection``), meeting the bug on a buffer that holds ``boom``."""
    return serve_connection(_BuggySocket(sock), addr)


class FaultyEcho(Protocol):
    def data_received(self, conn, data):
        if b"boom" in data:
            raise Bug("boom")
        conn.write(data)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    design = next(a for a in argv if a in ("iterative", "thread", "fork", "select"))
    rest = [a for a in argv if a is not design]
    if design == "select":
        from servers.echo_select import build_parser
        return run_stream_server(build_parser().parse_args(rest), FaultyEcho)
    if design == "thread":
        from servers.echo_thread import build_parser
        args = build_parser().parse_args(rest)
        return run_classic(args, Threading(faulty_serve))
    if design == "fork":
        from servers.echo_fork import build_parser
        args = build_parser().parse_args(rest)
        return run_classic(args, Forking(faulty_serve))
    from servers.echo_iterative import build_parser
    args = build_parser().parse_args(rest)
    return run_classic(args, Iterative(faulty_serve))


if __name__ == "__main__":
    cli.run(main)
