"""What the blocking clients share: connecting, with errors a user can act on."""

import socket
import time

from cli import Fatal, Parser, port, positive_float, positive_int
from wire.streamio import RECV_BUFFER, RECV_SIZE, Reader

DEFAULT_TIMEOUT = 10.0      # to connect over TCP, or for a TCP reply
# Over UDP, per try: a reply on loopback or a LAN comes in milliseconds, and 3 tries of
# 1 s tell a user in 3 s that nobody answers (the quick guide's answer 1).
UDP_TIMEOUT = 1.0
UDP_TRIES = 3


def _lookup(host, port, socktype):
    """``getaddrinfo``, or :class:`Fatal` for a name that does not resolve (or cannot be a name)."""
    try:
        return socket.getaddrinfo(host, port, type=socktype)
    except socket.gaierror as exc:
        reason = exc.strerror
    except UnicodeError:        # e.g. "a..b": an empty label, refused by the IDNA codec
        reason = "not a valid host name"
    raise Fatal(f"unknown host {host!r}: {reason}; check the name, or give an address such "
                f"as 127.0.0.1")


def connect_tcp(host, port, timeout=DEFAULT_TIMEOUT):
    """A connected, blocking TCP socket to ``host``:``port``.

    Tries every address the name resolves to, in order (``localhost`` may be
    ::1 then 127.0.0.1), like ``socket.create_connection``.

    Raises
    ------
    cli.Fatal
        unknown host, connection refused, timed out, unreachable: one line
        saying what to check.
    """
    infos = _lookup(host, port, socket.SOCK_STREAM)
    last = None
    for family, type_, proto, _name, sockaddr in infos:
        sock = socket.socket(family, type_, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        sock.settimeout(None)
        return sock
    where = f"{host} port {port}"
    if isinstance(last, ConnectionRefusedError):
        raise Fatal(f"connection refused by {where}: is the server running, on that port?")
    if isinstance(last, TimeoutError):
        raise Fatal(f"no answer from {where} within {timeout:g} s; is the host up and the "
                    f"port reachable? (--timeout sets the wait)")
    raise Fatal(f"cannot connect to {where}: {last.strerror or last}")


def resolve_udp(host, port):
    """The first ``(family, sockaddr)`` for a UDP peer, or :class:`Fatal` for an unknown host."""
    infos = _lookup(host, port, socket.SOCK_DGRAM)
    family, _type, _proto, _name, sockaddr = infos[0]
    return family, sockaddr


class NoAnswer(Exception):
    """No reply came within the tries allowed."""


def udp_exchange(sock, server, payload, timeout, tries):
    """Send ``payload`` to ``server`` and return ``(reply, sender)``.

    Each try sends the datagram again (it or its reply may have been lost:
    UDP does not resend) and waits up to ``timeout`` seconds for a reply
    from ``server``.

    Raises
    ------
    NoAnswer
        after ``tries`` tries without a reply from the server.
    """
    for _ in range(tries):
        sock.sendto(payload, server)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                data, sender = sock.recvfrom(RECV_BUFFER)
            except TimeoutError:
                break
            except ConnectionRefusedError:
                continue    # an ICMP error for this socket: nobody there (yet); keep waiting
            if sender[:2] == server[:2]:
                return data, sender
    raise NoAnswer()


def no_answer(host, port, tries, timeout):
    """The :class:`Fatal` for a UDP request that got no reply."""
    return Fatal(f"no answer from {host} port {port} after {tries} tries of {timeout:g} s: UDP "
                 f"does not say whether anyone is listening (the quick guide's answer 1); is "
                 f"the server running?")


def add_udp_arguments(parser, timeout=UDP_TIMEOUT, tries=UDP_TRIES):
    """``--timeout`` and ``--tries`` for a client that asks over UDP."""
    parser.add_argument("--timeout", type=positive_float, default=timeout, metavar="SECS",
                        help=f"how long to wait for an answer: over UDP per try, over TCP to "
                             f"connect (default {timeout:g})")
    parser.add_argument("--tries", type=positive_int, default=tries, metavar="N",
                        help=f"over UDP, how many times to send before giving up "
                             f"(default {tries})")


def udp_request(host, port, payload, timeout, tries):
    """Send ``payload`` over UDP and return ``(reply, sender)``, or raise :class:`Fatal`."""
    family, server = resolve_udp(host, port)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            return udp_exchange(sock, server, payload, timeout, tries)
        except NoAnswer:
            raise no_answer(host, port, tries, timeout) from None
        except OSError as exc:
            raise Fatal(f"cannot send {len(payload)} bytes to {host} port {port}: "
                        f"{exc.strerror or exc}") from None


def tcp_read(host, port, timeout, size=None):
    """Connect and read the reply: ``size`` bytes, or (None) until the server closes.

    Reading to EOF takes a loop, since one reply may arrive in several pieces
    (Comer 7.11).  A fixed-size reply (TIME's 4 bytes) is read with UNP's
    ``readn``, without waiting for the server to close (RFC 868: the client
    closes).
    """
    sock = connect_tcp(host, port, timeout)
    sock.settimeout(timeout)
    chunks = []
    try:
        if size is not None:
            return Reader(sock).readn(size)
        while data := sock.recv(RECV_SIZE):
            chunks.append(data)
        return b"".join(chunks)
    except TimeoutError:
        raise Fatal(f"{host} port {port} did not finish its reply within {timeout:g} s; is it "
                    f"the right service?") from None
    except ConnectionError as exc:
        raise Fatal(f"{host} port {port} broke the connection: {exc.strerror or exc}") from None
    finally:
        sock.close()


def add_server_address(parser, default_port, whose=""):
    """``[host] [port]``, defaulting to localhost and ``default_port`` (``whose``: "the guide's")."""
    parser.add_argument("host", nargs="?", default="localhost",
                        help="server host (default localhost)")
    parser.add_argument("port", nargs="?", type=port, default=default_port,
                        help=f"server port (default {default_port}{', ' + whose if whose else ''})")


def service_parser(prog, description, default_port, standard_port):
    """The parser of a client for a one-reply service (DAYTIME, TIME), over TCP or UDP."""
    parser = Parser(prog=prog, description=description)
    add_server_address(parser, default_port, f"selectlab's; the standard one is {standard_port}")
    parser.add_argument("--udp", action="store_true", help="ask over UDP instead of TCP")
    add_udp_arguments(parser)
    return parser


def ask(args, udp_request_bytes=b"", size=None):
    """The service's reply: over UDP, one datagram; over TCP, ``size`` bytes or all until EOF."""
    if args.udp:
        return udp_request(args.host, args.port, udp_request_bytes, args.timeout, args.tries)[0]
    return tcp_read(args.host, args.port, args.timeout, size)
