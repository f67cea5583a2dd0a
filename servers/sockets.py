"""Opening a server's sockets, with errors that say what to do, and the line that announces them.

* :func:`open_listeners` / :func:`open_datagram_sockets`: bind (and
  listen), or raise :class:`~cli.Fatal` with a message that says what to do
  (address in use, unknown host, port needing root...).
* :func:`announce`: the ``listening on HOST:PORT`` line on stdout, flushed,
  which scripts and tests wait for, and the same in the log, with the pid
  to signal.
"""

import errno
import logging
import os
import socket

from cli import Fatal
from servers.options import DEFAULT_BACKLOG
from wire.addresses import format_address

log = logging.getLogger("selectlab")


def _listen_error(where, exc):
    if exc.errno == errno.EADDRINUSE:
        return Fatal(f"cannot listen on {where}: address already in use; is another server "
                     f"running there? stop it, or choose another port (0 picks a free one)")
    if exc.errno == errno.EACCES:
        return Fatal(f"cannot listen on {where}: permission denied; ports below 1024 need "
                     f"root, so choose a port from 1024 up")
    if exc.errno == errno.EADDRNOTAVAIL:
        return Fatal(f"cannot listen on {where}: no interface of this host has that address; "
                     f"use one of its addresses, or leave out -b to listen on all of them")
    return Fatal(f"cannot listen on {where}: {exc.strerror or exc}")


def _stream_opener(backlog, reuse_port=False):
    def open_one(family, sockaddr, dualstack=False):
        return socket.create_server(sockaddr, family=family, backlog=backlog,
                                    reuse_port=reuse_port, dualstack_ipv6=dualstack)
    return open_one


def _datagram_opener(reuse_port=False):
    def open_one(family, sockaddr, dualstack=False):
        return _open_datagram(family, sockaddr, dualstack, reuse_port)
    return open_one


def _open_datagram(family, sockaddr, dualstack=False, reuse_port=False):
    # No SO_REUSEADDR: on UDP it would let a second server share the port
    # silently instead of failing with "address in use".
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dualstack else 1)
        sock.bind(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock


def _open_all(host, port_number, open_one, socktype):
    """Sockets from ``open_one(family, sockaddr, dualstack)`` for ``host`` and a port.

    With no host: one dual-stack IPv6 socket where the host supports it (it
    takes IPv4 too), else one IPv4 socket.  With a host name: one socket per
    address it resolves to (``localhost``: 127.0.0.1 and ::1), all on the
    same port -- with port 0, the port the first one got.  An error names
    UDP when it is about a UDP socket, as the ``listening on`` line does: a
    server of both protocols may find its TCP port free and its UDP port taken.
    """
    protocol = " (UDP)" if socktype == socket.SOCK_DGRAM else ""

    def opened(family, sockaddr, dualstack=False):
        try:
            return open_one(family, sockaddr, dualstack)
        except OSError as exc:
            raise _listen_error(format_address(sockaddr) + protocol, exc) from None

    if host is None:
        if socket.has_dualstack_ipv6():
            try:
                return [open_one(socket.AF_INET6, ("::", port_number), True)]
            except OSError as exc:
                if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                    raise _listen_error(f"[::]:{port_number}{protocol}", exc) from None
                # IPv6 compiled in but switched off: IPv4 alone.
        return [opened(socket.AF_INET, ("0.0.0.0", port_number))]

    try:
        infos = socket.getaddrinfo(host, port_number, type=socktype, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not a valid host name"
        raise Fatal(f"cannot resolve bind address {host!r}: {reason}; "
                    f"give an IP address such as 127.0.0.1, or leave out -b") from None
    socks = []
    seen = set()
    try:
        for family, _type, _proto, _name, sockaddr in infos:
            if sockaddr[0] in seen:
                continue
            seen.add(sockaddr[0])
            if socks and port_number == 0:
                sockaddr = (sockaddr[0], socks[0].getsockname()[1]) + tuple(sockaddr[2:])
            socks.append(opened(family, sockaddr))
    except Fatal:
        for sock in socks:
            sock.close()
        raise
    return socks


def open_listeners(host, port_number, backlog=DEFAULT_BACKLOG, reuse_port=False):
    """Bound, listening TCP sockets for ``host`` (None: every interface) and a port.

    See :func:`_open_all` for which addresses.  ``SO_REUSEADDR`` is set (the
    worksheet's advice: restart at once, without waiting for TIME_WAIT), and
    ``SO_REUSEPORT`` if ``reuse_port`` (see :func:`open_for_workers`).

    Raises
    ------
    cli.Fatal
        with a one-line explanation when the address cannot be used.
    """
    return _open_all(host, port_number, _stream_opener(backlog, reuse_port),
                     socket.SOCK_STREAM)


def open_datagram_sockets(host, port_number, reuse_port=False):
    """Bound UDP sockets for ``host`` (None: every interface) and a port, as :func:`open_listeners`."""
    return _open_all(host, port_number, _datagram_opener(reuse_port), socket.SOCK_DGRAM)


def announce(socks, suffix=""):
    """Print ``listening on HOST:PORT`` for each socket, flushed, first thing on stdout.

    The log says it too, with the pid (``pid 4242 serving [::]:9877``): the
    process to send SIGUSR1 to, named by the server itself (a ``pkill -f``
    would also signal every other process whose command line matches).
    stdout stays the listening lines alone, for the scripts that read them.
    """
    addresses = [format_address(sock.getsockname()) + suffix for sock in socks]
    for address in addresses:
        print(f"listening on {address}", flush=True)
    if addresses:
        log.info("pid %d serving %s", os.getpid(), ", ".join(addresses))


# With port 0 and --udp, how many times to try for a port free for both protocols.
_PORT_TRIES = 10


def open_stream_and_datagram(args, with_udp):
    """Listening TCP sockets, and UDP sockets on the same port number if ``with_udp``.

    With port 0 the kernel picks the TCP port; that number may be taken for
    UDP, and then another is tried.
    """
    for attempt in range(_PORT_TRIES):
        socks = open_listeners(args.bind, args.port, args.backlog)
        if not with_udp:
            return socks, []
        try:
            return socks, open_datagram_sockets(args.bind, socks[0].getsockname()[1])
        except Fatal:
            for sock in socks:
                sock.close()
            if args.port != 0 or attempt == _PORT_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def open_for_workers(args, with_udp, count, reuse_port, with_tcp=True):
    """The sockets of ``count`` workers: a list of ``(tcp_sockets, udp_sockets)``, one per worker.

    With ``reuse_port`` each worker gets sockets of its own, every one bound
    with ``SO_REUSEPORT`` to the same port, and the kernel spreads new
    connections (and datagrams) over them by a hash of the client's address
    and port.  Without it, every worker gets the same sockets, and whichever
    worker calls ``accept()`` first has the client.

    The master opens them all, and keeps them while a worker restarts, so
    clients that arrive meanwhile wait in that socket's backlog instead of
    being refused.  ``SO_REUSEPORT`` would let another server of the same
    user share the port silently, so the port is first bound without it: a
    port already in use fails as it does without workers.  ``with_tcp=False``:
    UDP sockets alone (``servers.udp_echo``).
    """
    if with_tcp:
        socks, udp_socks = open_stream_and_datagram(args, with_udp)
    else:
        socks, udp_socks = [], open_datagram_sockets(args.bind, args.port)
    if not reuse_port:
        return [(socks, udp_socks)] * count
    port_number = (socks or udp_socks)[0].getsockname()[1]
    for sock in socks + udp_socks:
        sock.close()
    slots = []
    try:
        for _ in range(count):
            slots.append(([], []))
            if with_tcp:
                slots[-1][0].extend(open_listeners(args.bind, port_number, args.backlog, True))
            if with_udp or not with_tcp:
                slots[-1][1].extend(open_datagram_sockets(args.bind, port_number, True))
    except Fatal:
        for tcp, udp in slots:
            for sock in tcp + udp:
                sock.close()
        raise
    return slots
