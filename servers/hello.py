"""The worksheet's "Hello, World!" server, as a fork server or on the reactor.

    python -m servers.hello [port]                  # default 3490, the worksheet's HELLO_PORT
    python -m servers.hello --model select [port]

Every message a client sends is answered ``Hello, World!``, until it sends
``quit``; the server logs ``got connection from ADDR`` and each ``Message
received: ...``.  The worksheet's changes are options: ``--goodbye`` answers
``quit`` with ``Goodbye, ADDR``, ``--echo`` answers each message with itself,
``--maxdatasize 20`` is its MAXDATASIZE exercise (a long message is taken in
pieces, and each piece is answered).  A message is a line, CR/LF stripped,
so ``nc`` and telnet work; see :mod:`wire.hello` for the exact
rules, which both models share.

``--model fork`` (the worksheet's, the default) serves each client in a child
process with blocking calls (:mod:`servers.forking`); ``--model select``
serves them all from the reactor, each with its session's state machine.
The transcripts are identical.
"""

import argparse
import logging

import cli
from reactor import errors
from reactor.protocols import LineProtocol
from reactor.server import LINGER_TIMEOUT
from servers.blocking import linger_close
from servers.classic import run_classic
from servers.echo_fork import add_fork_arguments
from servers.forking import Forking
from servers.options import add_reactor_arguments, add_server_arguments, server_parser
from servers.service import run_stream_server
from wire.addresses import peer_host
from wire.framing import MAX_LINE, LineTooLong, strip_eol
from wire.hello import MAXDATASIZE, HelloSession
from wire.services import HELLO_PORT
from wire.streamio import Reader, writen

log = logging.getLogger("selectlab")


def _log_messages(messages):
    for message in messages:
        log.info("Message received: %s", message.decode("utf-8", "backslashreplace"))


def serve_blocking(sock, addr, options):
    """The session with blocking calls (the fork model's child): UNP's ``readline`` loop.

    Returns ``(bytes_in, bytes_out, reason)`` as ``serve_connection`` does.
    """
    host = peer_host(addr)
    log.info("got connection from %s", host)
    session = HelloSession(host, **options)
    reader = Reader(sock, max_line=session.piece_size)
    bytes_out = 0
    try:
        while not session.done:
            item = reader.readline()
            if isinstance(item, LineTooLong):
                reply, messages = session.piece(item.data)
            elif item.endswith(b"\n"):
                reply, messages = session.line(strip_eol(item))
            else:       # the client's EOF, after a last unterminated line if any
                reply, messages = session.line(item) if item else (b"", [])
                session.eof()
            _log_messages(messages)
            if reply:
                bytes_out += writen(sock, reply)
    except OSError as exc:
        if errors.classify(exc) is not errors.Kind.PEER_GONE:
            raise
        return reader.bytes_read, bytes_out, errors.describe(exc)
    if not reader.at_eof:
        # quit or refused: the client may still be sending, and a plain
        # close() with unread input would reset the connection under the reply.
        linger_close(sock, LINGER_TIMEOUT)
    return reader.bytes_read, bytes_out, session.end_reason


class HelloProtocol(LineProtocol):
    """The session on the reactor: one :class:`HelloSession` per connection, fed lines."""

    def __init__(self, options):
        self.options = options
        self.session = None

    def connection_made(self, conn):
        host = peer_host(conn.address)
        log.info("got connection from %s", host)
        self.session = HelloSession(host, **self.options)
        self.max_line = self.session.piece_size

    def line_received(self, conn, line):
        self._answer(conn, *self.session.line(line))

    def line_too_long(self, conn, piece):
        self._answer(conn, *self.session.piece(piece))

    def eof_received(self, conn):
        super().eof_received(conn)      # a last unterminated line is a message too
        self.session.eof()

    def _answer(self, conn, reply, messages):
        _log_messages(messages)
        if reply:
            conn.write(reply)
        if self.session.done:
            conn.close(timeout=LINGER_TIMEOUT, reason=self.session.end_reason)


def build_parser():
    parser = server_parser(
        "python -m servers.hello",
        "The worksheet's server: answers 'Hello, World!' to every message (line) until the "
        "client sends 'quit'.")
    add_server_arguments(parser, HELLO_PORT, trace=False)
    parser.add_argument("--model", choices=("fork", "select"), default="fork",
                        help="fork: a child process per client, as in the worksheet (the "
                             "default); select: every client on the reactor")
    parser.add_argument("--goodbye", action="store_true",
                        help="answer 'quit' with 'Goodbye, ADDR' (the worksheet's first change)")
    parser.add_argument("--echo", action="store_true",
                        help="answer each message with itself instead of 'Hello, World!'")
    parser.add_argument("--maxdatasize", type=_MAXDATASIZE, default=MAXDATASIZE, metavar="N",
                        help=f"the worksheet's MAXDATASIZE (default {MAXDATASIZE}): a message "
                             f"is taken N-1 bytes at a time, so a longer line gets one answer "
                             f"per piece. A line over {MAX_LINE} bytes in all gets an error "
                             f"line and the connection ends.")
    parser.add_argument("--trace", action="store_true",
                        help="(--model select) log every state transition of the listener and "
                             "the connections")
    fork = parser.add_argument_group("--model fork")
    add_fork_arguments(fork)
    select = parser.add_argument_group("--model select")
    add_reactor_arguments(select)
    return parser


# The worksheet's recv() leaves a byte for the C string's NUL: at least 1 of message, 1 of NUL.
_MAXDATASIZE = cli.whole_number_from(2, " (N-1 bytes of message per recv, and the NUL)")


# Each model's own options, and their defaults.
_MODEL_OPTIONS = {"fork": add_fork_arguments, "select": add_reactor_arguments}


def _model_only(parser, args):
    """Options of the other model given anyway: one line saying so, rather than ignored."""
    other = "select" if args.model == "fork" else "fork"
    alone = argparse.ArgumentParser(add_help=False)
    _MODEL_OPTIONS[other](alone)
    given = [f"--{dest.replace('_', '-')}" for dest, default in vars(alone.parse_args([])).items()
             if getattr(args, dest) != default]
    if args.trace and args.model == "fork":
        given.append("--trace")
    if given:
        parser.error(f"{', '.join(given)}: for --model {other} only, and the model is "
                     f"{args.model}")


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    _model_only(parser, args)
    options = dict(maxdatasize=args.maxdatasize, goodbye=args.goodbye, echo=args.echo)
    if args.model == "select":
        return run_stream_server(args, lambda: HelloProtocol(options))
    design = Forking(lambda sock, addr: serve_blocking(sock, addr, options), reap=args.reap,
                     max_children=args.max_children, children=args.children)
    return run_classic(args, design)


def cli_main():
    """Entry point of the console script."""
    cli.run(main)


if __name__ == "__main__":
    cli_main()
