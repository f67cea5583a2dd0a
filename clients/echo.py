"""The echo client (UNP's ``tcpcli``/``str_cli``), watching stdin and the socket together.

    python -m clients.echo [host] [port]        # default localhost 9877

Reads what you type (or a file on stdin), sends it, prints the echo.  It
waits on stdin *and* the socket with a selector (UNP 6.4's ``str_cli`` with
``select``), so a server that dies while you are typing is reported at once
("server terminated prematurely"), not after your next line as with UNP's
first ``str_cli``, which blocks in ``fgets``.  At the end of stdin it
half-closes (``shutdown(SHUT_WR)``, UNP 6.7) and keeps reading until the
server's EOF, so ``python -m clients.echo < bigfile > out`` makes ``out``
equal to ``bigfile``.

``--plain`` is UNP 5.5's first ``str_cli`` instead, kept for the
boundary-condition demos: it blocks in reading a line of input, writes it,
then blocks in reading the echoed line.  While it waits for your next line
it cannot notice that the server has gone; it finds out when it reads the
echo of that line (UNP 5.12).

``--udp`` sends each line as a datagram instead (Comer's UDP ECHO client),
and gives up as ``clients.udp_echo`` does (3 tries of 1 s, by default);
``--connections N`` opens N connections and uses the first (UNP's
``tcpcli04``: when it exits, N server children end at once);
``--linger-rst`` ends with a reset instead of a FIN.

Its lifecycle is the table ``ECHO_CLIENT`` (drawn in ``docs/architecture.md``):
OPEN, PAUSED while ``WINDOW`` bytes wait for their echo, INPUT_DONE once the
input has ended, then DONE -- or GONE, if the server ends first.

Echoed bytes go through the shared line framer and are printed a whole line
at a time (a line over the framer's limit is printed in pieces), so output
never stops in the middle of a line while more of it is on its way.

Flow control: at most ``WINDOW`` bytes are ever sent and not yet echoed
back.  That is what makes the blocking ``writen`` safe: an echo server
stops reading when its output is full (ours does, at its high-water mark),
and a client that kept writing without reading would then block in
``send`` for ever -- the deadlock Comer warns about (8.29), on the client
side.
"""

import enum
import os
import selectors
import socket
import struct
import sys

import cli
from clients.common import (
    DEFAULT_TIMEOUT, UDP_TIMEOUT, UDP_TRIES, add_server_address, connect_tcp, udp_request,
)
from reactor.states import Machine
from wire.framing import LineFramer, LineTooLong
from wire.services import SERV_PORT
from wire.streamio import RECV_SIZE, Reader, writen


# Bytes sent and not yet echoed, at most.  Far below what the kernel buffers
# on both sides plus the server's high-water mark hold, so every writen of
# at most this much completes even if the server stops reading meanwhile.
WINDOW = 64 * 1024


class ServerGone(Exception):
    """The server closed or reset the connection before the client was done."""


class EchoState(enum.Enum):
    OPEN = "open"                # input and connection open: input is sent, the echo printed
    PAUSED = "paused"            # WINDOW bytes unechoed: input waits until the echo catches up
    INPUT_DONE = "input done"    # input at EOF, our FIN sent (not with --linger-rst): echo due
    DONE = "done"                # everything came back (and, after our FIN, the server's FIN)
    GONE = "gone"                # the server ended first: ServerGone


class EchoEvent(enum.Enum):
    WINDOW_FULL = "window full"  # WINDOW bytes sent and not yet echoed
    WINDOW_OPEN = "window open"  # the echo brought them below WINDOW
    INPUT_EOF = "input eof"      # reading the input returned b""
    ALL_ECHOED = "all echoed"    # --linger-rst: everything sent came back (no FIN is awaited)
    SERVER_EOF = "server eof"    # the server's FIN, with nothing left to echo
    SERVER_GONE = "server gone"  # a reset, a broken pipe, or the server's FIN with echo still owed


class EchoAction(enum.Enum):
    PAUSE_INPUT = "stop reading input"
    RESUME_INPUT = "read input again"
    END_INPUT = "half close"     # stop watching the input; shutdown(SHUT_WR), unless --linger-rst


_S, _E, _A = EchoState, EchoEvent, EchoAction

ECHO_CLIENT = Machine("echo client", EchoState, EchoEvent, EchoState.OPEN, {
    (_S.OPEN, _E.WINDOW_FULL): (_S.PAUSED, _A.PAUSE_INPUT),
    (_S.OPEN, _E.INPUT_EOF): (_S.INPUT_DONE, _A.END_INPUT),
    # All echoed, but more input may come: the server must not end first.
    (_S.OPEN, _E.SERVER_EOF): (_S.GONE, None),
    (_S.OPEN, _E.SERVER_GONE): (_S.GONE, None),
    (_S.PAUSED, _E.WINDOW_OPEN): (_S.OPEN, _A.RESUME_INPUT),
    (_S.PAUSED, _E.SERVER_GONE): (_S.GONE, None),
    (_S.INPUT_DONE, _E.ALL_ECHOED): (_S.DONE, None),
    (_S.INPUT_DONE, _E.SERVER_EOF): (_S.DONE, None),
    (_S.INPUT_DONE, _E.SERVER_GONE): (_S.GONE, None),
})


def str_cli(in_fd, sock, out, half_close=True, tracer=None):
    """Copy ``in_fd`` to ``sock`` and the echo from ``sock`` to ``out``.

    Parameters
    ----------
    in_fd : int
        a readable descriptor (a terminal, a pipe, a file).
    sock : socket.socket
        a connected blocking socket.
    out : binary file
        where the echo goes; flushed after each batch of lines.
    half_close : bool
        at the end of input, send our FIN and read to the server's EOF (the
        default); if False, return as soon as everything sent has come back,
        leaving the connection open (for ``--linger-rst`` to reset it).
    tracer : callable, optional
        ``tracer(old_state, event, new_state)`` after every transition of
        ``ECHO_CLIENT``, once its action is done.

    Raises
    ------
    ServerGone
        if the server ended the connection before echoing everything.
    """
    session = _StrCli(in_fd, sock, out, half_close, tracer)
    try:
        session.run()
    finally:
        session.selector.close()


class _StrCli:
    """One run of :func:`str_cli`: the ``ECHO_CLIENT`` machine and what its actions act on."""

    def __init__(self, in_fd, sock, out, half_close, tracer):
        # poll, not epoll: epoll refuses regular files, and stdin may be one.
        self.selector = selectors.PollSelector()
        self.selector.register(sock, selectors.EVENT_READ)
        self.selector.register(in_fd, selectors.EVENT_READ)
        self.in_fd, self.sock, self.out = in_fd, sock, out
        self.half_close = half_close
        self.tracer = tracer
        self.framer = LineFramer()
        self.in_flight = 0          # sent, not yet echoed
        self.state = ECHO_CLIENT.initial

    def run(self):
        while True:
            for key, _ in self.selector.select():
                if key.fileobj is self.sock:
                    self.on_echo()
                else:
                    self.on_input()
                if self.state is _S.DONE:
                    return

    def on_echo(self):
        try:
            data = self.sock.recv(RECV_SIZE)
        except ConnectionResetError:
            self._fire(_E.SERVER_GONE)
            raise ServerGone("server reset the connection (Connection reset by peer)") from None
        if not data:
            self._print_rest()
            self._fire(_E.SERVER_GONE if self.in_flight else _E.SERVER_EOF)
            if self.state is _S.GONE:
                raise ServerGone("server terminated prematurely")
            return
        self.in_flight -= len(data)
        self.framer.feed(data)
        for item in self.framer.lines():
            self.out.write(item.data if isinstance(item, LineTooLong) else item)
        self.out.flush()
        if self.state is _S.PAUSED and self.in_flight < WINDOW:
            self._fire(_E.WINDOW_OPEN)
        elif self.state is _S.INPUT_DONE and not self.half_close and not self.in_flight:
            self._all_echoed()

    def on_input(self):
        chunk = os.read(self.in_fd, WINDOW - self.in_flight)
        if not chunk:
            self._fire(_E.INPUT_EOF)
            if not self.half_close and not self.in_flight:
                self._all_echoed()
            return
        try:
            writen(self.sock, chunk)
        except (BrokenPipeError, ConnectionResetError):
            self._fire(_E.SERVER_GONE)
            raise ServerGone("server terminated prematurely") from None
        self.in_flight += len(chunk)
        if self.in_flight >= WINDOW:
            self._fire(_E.WINDOW_FULL)

    def _all_echoed(self):
        self._print_rest()      # a last line without newline
        self._fire(_E.ALL_ECHOED)

    def _print_rest(self):
        self.out.write(self.framer.eof())
        self.out.flush()

    def _fire(self, event):
        """Apply one transition and carry out its action.  The only code that assigns ``state``."""
        old = self.state
        self.state, action = ECHO_CLIENT.apply(old, event)
        if action is _A.PAUSE_INPUT or action is _A.END_INPUT:
            self.selector.unregister(self.in_fd)
        elif action is _A.RESUME_INPUT:
            self.selector.register(self.in_fd, selectors.EVENT_READ)
        if action is _A.END_INPUT and self.half_close:
            self.sock.shutdown(socket.SHUT_WR)      # "I am done"; keep reading (UNP 6.7)
        if self.tracer is not None:
            self.tracer(old, event, self.state)


def str_cli_plain(in_file, sock, out):
    """UNP 5.5's ``str_cli``: a line from ``in_file``, ``writen`` it, read back its echo.

    Blocks in one place at a time, so a server that ends while it waits for
    input goes unnoticed until the next line is sent and its echo read.

    Raises
    ------
    ServerGone
        when the echo does not come ("server terminated prematurely", or
        "Connection reset by peer" if the server's reset arrived first).
    """
    reader = Reader(sock)
    for line in iter(in_file.readline, b""):
        try:
            writen(sock, line)
            # As many bytes as were sent: a last line without a newline, or
            # one longer than the framer's limit, comes back whole too.
            echoed = reader.readn(len(line))
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ServerGone(f"str_cli: {exc.strerror} (the server reset the "
                             f"connection)") from None
        out.write(echoed)
        out.flush()
        if len(echoed) < len(line):
            raise ServerGone("str_cli: server terminated prematurely")


def build_parser():
    parser = cli.Parser(
        prog="python -m clients.echo",
        description="Echo client (UNP's str_cli): sends what it reads on stdin to an echo "
                    "server and prints what comes back. At the end of input it half-closes "
                    "and prints the rest of the echo. Exits 1 if the server goes away first.")
    add_server_address(parser, SERV_PORT, "UNP's SERV_PORT")
    parser.add_argument("--timeout", type=cli.positive_float, default=None, metavar="SECS",
                        help=f"give up connecting after SECS (default {DEFAULT_TIMEOUT:g}); "
                             f"with --udp, how long to wait for each echo, per try (default "
                             f"{UDP_TIMEOUT:g}, as clients.udp_echo)")
    parser.add_argument("--udp", action="store_true",
                        help="send each line of input as a UDP datagram and print its echo "
                             "(retrying --tries times, then giving up with exit status 1)")
    parser.add_argument("--tries", type=cli.positive_int, default=UDP_TRIES, metavar="N",
                        help=f"with --udp, how many times to send a line before giving up "
                             f"(default {UDP_TRIES})")
    parser.add_argument("--connections", type=cli.positive_int, default=1, metavar="N",
                        help="open N connections and use only the first; all close together "
                             "at the end (UNP's tcpcli04, which makes N server children end "
                             "at once)")
    parser.add_argument("--plain", action="store_true",
                        help="UNP 5.5's first str_cli: block reading a line of input, send it, "
                             "block reading its echo. It notices a server that has gone only "
                             "after your next line (UNP 5.12); the default watches the socket "
                             "and your input together and reports it at once")
    parser.add_argument("--linger-rst", action="store_true",
                        help="at the end of input, once the echo is back, end every "
                             "connection with a reset (SO_LINGER 0) instead of a FIN, for the "
                             "boundary-condition demos")
    return parser


def udp_cli(stdin, host, port, out, timeout, tries):
    """Send each line of ``stdin`` as a datagram and write its echo (Comer's UDP ECHO client)."""
    for line in stdin:
        data, _sender = udp_request(host, port, line, timeout, tries)
        out.write(data)
        out.flush()


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.udp:
        timeout = UDP_TIMEOUT if args.timeout is None else args.timeout
        udp_cli(sys.stdin.buffer, args.host, args.port, sys.stdout.buffer, timeout, args.tries)
        return 0
    timeout = DEFAULT_TIMEOUT if args.timeout is None else args.timeout
    socks = [connect_tcp(args.host, args.port, timeout) for _ in range(args.connections)]
    try:
        if args.plain:
            str_cli_plain(sys.stdin.buffer, socks[0], sys.stdout.buffer)
        else:
            str_cli(sys.stdin.fileno(), socks[0], sys.stdout.buffer,
                    half_close=not args.linger_rst)
    except ServerGone as exc:
        raise cli.Fatal(str(exc)) from None
    finally:
        for sock in socks:
            if args.linger_rst:
                # UNP 5.11: SO_LINGER on with a zero timeout makes close() send RST.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
    return 0


def cli_main():
    """Entry point of the console script."""
    cli.run(main)


if __name__ == "__main__":
    cli_main()
