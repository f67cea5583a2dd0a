"""What the blocking clients share: connecting, with errors a user can act on."""

import socket

from reactor.cli import Fatal

DEFAULT_TIMEOUT = 10.0


def connect_tcp(host, port, timeout=DEFAULT_TIMEOUT):
    """A connected, blocking TCP socket to ``host``:``port``.

    Tries every address the name resolves to, in order (``localhost`` may be
    ::1 then 127.0.0.1), like ``socket.create_connection``.

    Raises
    ------
    reactor.cli.Fatal
        unknown host, connection refused, timed out, unreachable: one line
        saying what to check.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise Fatal(f"unknown host {host!r}: {exc.strerror}; check the name, "
                    f"or give an address such as 127.0.0.1") from None
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
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise Fatal(f"unknown host {host!r}: {exc.strerror}; check the name, "
                    f"or give an address such as 127.0.0.1") from None
    family, _type, _proto, _name, sockaddr = infos[0]
    return family, sockaddr
