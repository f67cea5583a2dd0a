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

``--udp`` sends each line as a datagram instead (Comer's UDP ECHO client);
``--connections N`` opens N connections and uses the first (UNP's
``tcpcli04``: when it exits, N server children end at once);
``--linger-rst`` ends with a reset instead of a FIN.

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

import os
import selectors
import socket
import struct
import sys

import cli
from clients.common import DEFAULT_TIMEOUT, add_server_address, connect_tcp, udp_request
from wire.framing import LineFramer, LineTooLong
from wire.services import SERV_PORT
from wire.streamio import RECV_SIZE, Reader, writen


# Bytes sent and not yet echoed, at most.  Far below what the kernel buffers
# on both sides plus the server's high-water mark hold, so every writen of
# at most this much completes even if the server stops reading meanwhile.
WINDOW = 64 * 1024


class ServerGone(Exception):
    """The server closed or reset the connection before the client was done."""


def str_cli(in_fd, sock, out, half_close=True):
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

    Raises
    ------
    ServerGone
        if the server ended the connection before echoing everything.
    """
    # poll, not epoll: epoll refuses regular files, and stdin may be one.
    selector = selectors.PollSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(in_fd, selectors.EVENT_READ)
    framer = LineFramer()
    in_flight = 0           # sent, not yet echoed
    input_open = True
    reading_input = True
    try:
        while True:
            for key, _ in selector.select():
                if key.fileobj is sock:
                    try:
                        data = sock.recv(RECV_SIZE)
                    except ConnectionResetError:
                        raise ServerGone("server reset the connection "
                                         "(Connection reset by peer)") from None
                    if not data:
                        out.write(framer.eof())
                        out.flush()
                        if input_open or in_flight:
                            raise ServerGone("server terminated prematurely")
                        return
                    in_flight -= len(data)
                    framer.feed(data)
                    for item in framer.lines():
                        out.write(item.data if isinstance(item, LineTooLong) else item)
                    out.flush()
                    if not input_open and not half_close and not in_flight:
                        out.write(framer.eof())
                        out.flush()
                        return
                    if input_open and not reading_input and in_flight < WINDOW:
                        selector.register(in_fd, selectors.EVENT_READ)
                        reading_input = True
                else:
                    chunk = os.read(in_fd, WINDOW - in_flight)
                    if not chunk:
                        input_open = reading_input = False
                        selector.unregister(in_fd)
                        if not half_close:
                            if not in_flight:
                                out.write(framer.eof())     # a last line without newline
                                out.flush()
                                return
                            continue            # wait for the rest of the echo
                        sock.shutdown(socket.SHUT_WR)   # "I am done"; keep reading
                        continue
                    try:
                        writen(sock, chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        raise ServerGone("server terminated prematurely") from None
                    in_flight += len(chunk)
                    if in_flight >= WINDOW:
                        selector.unregister(in_fd)
                        reading_input = False
    finally:
        selector.close()


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
    parser.add_argument("--timeout", type=cli.positive_float, default=DEFAULT_TIMEOUT,
                        metavar="SECS",
                        help=f"give up connecting after SECS (default {DEFAULT_TIMEOUT:g}); "
                             f"with --udp, how long to wait for each echo")
    parser.add_argument("--udp", action="store_true",
                        help="send each line of input as a UDP datagram and print its echo "
                             "(retrying --tries times)")
    parser.add_argument("--tries", type=cli.positive_int, default=3, metavar="N",
                        help="with --udp, how many times to send a line before giving up "
                             "(default 3)")
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
        udp_cli(sys.stdin.buffer, args.host, args.port, sys.stdout.buffer, args.timeout,
                args.tries)
        return 0
    socks = [connect_tcp(args.host, args.port, args.timeout) for _ in range(args.connections)]
    try:
        if args.plain:
            str_cli_plain(sys.stdin.buffer, socks[0], sys.stdout.buffer)
        else:
            str_cli(sys.stdin.fileno(), socks[0], sys.stdout.buffer,
                    half_close=not args.linger_rst)
    except ServerGone as exc:
        raise cli.Fatal(str(exc)) from None
    except BrokenPipeError:
        # Our stdout went away (e.g. `| head`): nothing more to show anyone.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return cli.EXIT_FAILURE
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
