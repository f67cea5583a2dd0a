"""The worksheet's message client (``msgclient.c``), for the Hello server.

    python -m clients.msgclient HOST [PORT]         # default port 3490

Prompts ``Message to send: ``, sends what you type as one line, prints the
server's answer as ``Received: ...``, and ends after ``quit`` (printing any
last words, such as ``--goodbye``'s ``Goodbye, ADDR``, until the server
closes).  The answer is read a line at a time through the shared line
framer (``wire.streamio.Reader``), so a reply split over several
``recv``s is still one reply.

``--words`` reproduces the worksheet's ``scanf("%s", msg)``, which reads one
word at a time: ``How are you`` becomes three messages and three answers
(the worksheet's "How are you" exercise).
"""

import sys

import cli
from clients.common import DEFAULT_TIMEOUT, connect_tcp
from wire.framing import LineTooLong, strip_eol
from wire.hello import QUIT
from wire.services import HELLO_PORT
from wire.streamio import Reader, writen



def build_parser():
    parser = cli.Parser(
        prog="python -m clients.msgclient",
        description="The worksheet's message client: sends each line you type to the Hello "
                    "server and prints 'Received: ...'; ends after 'quit'.")
    parser.add_argument("host", help="server host name or address")
    parser.add_argument("port", nargs="?", type=cli.port, default=HELLO_PORT,
                        help=f"server port (default {HELLO_PORT}, the worksheet's)")
    parser.add_argument("--words", action="store_true",
                        help="send each word as its own message, as the worksheet's "
                             "scanf(\"%%s\") does")
    parser.add_argument("--timeout", type=cli.positive_float, default=DEFAULT_TIMEOUT,
                        metavar="SECS",
                        help=f"give up connecting, or waiting for an answer, after SECS "
                             f"(default {DEFAULT_TIMEOUT:g})")
    return parser


def _messages(line, words):
    text = line.rstrip("\r\n")
    return text.split() if words else [text]


def _print_reply(item):
    data = item.data if isinstance(item, LineTooLong) else strip_eol(item)
    sys.stdout.write(f"Received: {data.decode('utf-8', 'backslashreplace')}\n")


def main(argv=None):
    args = build_parser().parse_args(argv)
    sock = connect_tcp(args.host, args.port, args.timeout)
    sock.settimeout(args.timeout)
    reader = Reader(sock)
    try:
        while True:
            sys.stdout.write("Message to send: ")
            sys.stdout.flush()
            line = sys.stdin.readline()
            if not line:
                sys.stdout.write("\n")
                return 0
            for message in _messages(line, args.words):
                _send(sock, message.encode() + b"\n")
                if message.encode() == QUIT:
                    while item := reader.readline():    # last words, until the server closes
                        _print_reply(item)
                    return 0
                item = reader.readline()
                if not item:
                    raise cli.Fatal("the server closed the connection")
                _print_reply(item)
    except TimeoutError:
        raise cli.Fatal(f"no answer from the server within {args.timeout:g} s") from None
    except ConnectionResetError:
        raise cli.Fatal("the server reset the connection") from None
    finally:
        sock.close()


def _send(sock, data):
    """``writen``, the server's reset as :class:`cli.Fatal`.

    Only here: a ``BrokenPipeError`` from writing stdout (``| head -1``) is
    not the server's doing, and ``cli.run`` ends quietly on it.
    """
    try:
        writen(sock, data)
    except (ConnectionResetError, BrokenPipeError):
        raise cli.Fatal("the server reset the connection") from None


def cli_main():
    """Entry point of the console script."""
    cli.run(main)


if __name__ == "__main__":
    cli_main()
