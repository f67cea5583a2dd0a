"""UDP on the reactor: servers.udp_echo, and echo_select --udp serving both protocols from one
loop (tier 4, loopback only)."""

import contextlib
import errno
import signal
import socket
import subprocess
import sys
import time

import pytest

from clients import udp_echo as udp_echo_client
from conftest import DEADLINE, ROOT, recv_all, recv_exactly, run_until
import cli
from reactor.datagram import DatagramEndpoint
from reactor.loop import Reactor
from servers.udp_echo import UDP_ECHO
from wire.streamio import MAX_DATAGRAM


def udp_client():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(DEADLINE)
    return sock


@pytest.mark.parametrize("size", [0, 1, 1472, 9000, MAX_DATAGRAM])
def test_datagrams_come_back_whole_to_their_sender(start_server, size):
    """Every datagram, from empty to the 65,507-byte maximum, comes back byte for byte, to the
    socket that sent it."""
    server = start_server("servers.udp_echo")
    payload = bytes(i % 251 for i in range(size))
    with udp_client() as c:
        c.sendto(payload, server.address)
        data, addr = c.recvfrom(MAX_DATAGRAM + 1)
    assert data == payload
    assert addr == server.address


def test_the_first_line_names_the_udp_port(start_server):
    """udp_echo announces 'listening on HOST:PORT (UDP)', so scripts can tell the protocol."""
    server = start_server("servers.udp_echo")
    assert server.udp and server.port > 0


def test_udp_echo_help_speaks_of_datagrams_and_senders_not_tcp_clients():
    """`servers.udp_echo --help` describes what this server has: datagrams and their senders,
    no TCP, no clients, nothing accepted (the shared options' texts are a TCP server's)."""
    proc = subprocess.run([sys.executable, "-m", "servers.udp_echo", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=DEADLINE)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    for word in ("TCP", "client", "accept"):
        assert word not in text, f"{word!r} in: {text}"
    assert "datagram" in text and "sender" in text


@contextlib.contextmanager
def udp_port_taken_tcp_free():
    """A port on 127.0.0.1 bound for UDP here, whose TCP port was just free (a port the kernel
    picked for UDP alone may be a TCP client's local port)."""
    for _ in range(20):
        with socket.create_server(("127.0.0.1", 0)) as tcp:
            port = tcp.getsockname()[1]
            taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                taken.bind(("127.0.0.1", port))
            except OSError:
                taken.close()
                continue
        with taken:
            yield port
        return
    raise AssertionError("no port free for both TCP and UDP in 20 tries")


@pytest.mark.parametrize("module, args", [("servers.daytime", []), ("servers.time", []),
                                          ("servers.echo_select", ["--udp"])])
def test_a_taken_udp_port_is_named_udp_in_the_error(module, args):
    """A server of both protocols whose TCP port is free but whose UDP port is taken says
    which: without 'UDP', the user looks for a TCP server that is not there."""
    with udp_port_taken_tcp_free() as port:
        proc = subprocess.run([sys.executable, "-m", module, *args, "-b", "127.0.0.1",
                               str(port)], cwd=ROOT, capture_output=True, text=True,
                              timeout=DEADLINE)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == (f"python -m {module}: error: cannot listen on 127.0.0.1:{port} (UDP): "
                           f"address already in use; is another server running there? stop "
                           f"it, or choose another port (0 picks a free one)\n")


def test_echo_select_udp_serves_both_protocols_on_one_port(start_server):
    """--udp: the same port number echoes over TCP and over UDP, from the same loop."""
    server = start_server("servers.echo_select", "--udp")
    with socket.create_connection(server.address, timeout=DEADLINE) as tcp, udp_client() as udp:
        tcp.sendall(b"over tcp\n")
        udp.sendto(b"over udp\n", server.address)
        assert recv_exactly(tcp, 9) == b"over tcp\n"
        assert udp.recvfrom(100)[0] == b"over udp\n"
    stats = server.stats()
    assert stats["udp_datagrams_in"] == stats["udp_datagrams_out"] == 1
    assert stats["accepted"] == 1


def test_a_flood_from_vanished_senders_leaves_tcp_and_udp_served(start_server):
    """Datagrams from 200 sockets that close at once (so every reply goes to a closed port)
    do not stop the loop: a TCP client and a new UDP client are still echoed."""
    server = start_server("servers.echo_select", "--udp", "-q")
    tcp = socket.create_connection(server.address, timeout=DEADLINE)
    senders = [udp_client() for _ in range(200)]
    for s in senders:
        for _ in range(10):
            s.sendto(b"x" * 512, server.address)
    for s in senders:
        s.close()
    tcp.sendall(b"still here\n")
    assert recv_exactly(tcp, 11) == b"still here\n"
    with udp_client() as c:
        c.sendto(b"me too", server.address)
        assert c.recvfrom(100)[0] == b"me too"
    stats = server.stats()
    assert stats["udp_datagrams_in"] >= 1 and server.proc.poll() is None
    assert "Traceback" not in server.log()
    tcp.close()


def test_udp_echo_stops_on_sigterm(start_server):
    """SIGTERM stops the UDP server at once (nothing is pending on UDP) with status 0."""
    server = start_server("servers.udp_echo")
    server.signal(signal.SIGTERM)
    assert server.wait() == 0


# --- the guide's UDP client -------------------------------------------------------

def udp_client_run(*args):
    return subprocess.run([sys.executable, "-m", "clients.udp_echo", *map(str, args)],
                          cwd=ROOT, capture_output=True, timeout=DEADLINE)


def test_udp_client_prints_the_echo_and_who_sent_it(start_server):
    """The guide's output: 'echo: Hello!' then 'sent by [host:service]' for the server."""
    server = start_server("servers.udp_echo")
    proc = udp_client_run("-n", "127.0.0.1", server.port)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode() == f"echo: Hello!\nsent by [127.0.0.1:{server.port}]\n"


def test_udp_client_gives_up_after_its_tries_instead_of_blocking(start_server):
    """Against a port where nobody listens, the client waits --timeout per try, --tries times,
    then says there was no answer and exits 1 (the guide's answer 1), instead of hanging."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    start = time.monotonic()
    proc = udp_client_run("127.0.0.1", port, "--timeout", "0.3", "--tries", "2")
    waited = time.monotonic() - start
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err.count("\n") == 1 and "no answer from 127.0.0.1 port" in err
    assert "after 2 tries of 0.3 s" in err
    assert waited >= 0.6        # it did wait as asked; the hang guard is the timeout above


def test_udp_client_unknown_host_is_one_clear_error(no_dns):
    """An unknown host name is reported in one line that says what to check."""
    with pytest.raises(cli.Fatal, match="unknown host 'nowhere.invalid'"):
        udp_echo_client.main(["nowhere.invalid"])


class RefusingSocket:
    """A UDP socket whose sendto fails as for a forged source address (port 0)."""

    def __init__(self, sock):
        self.sock = sock

    def recvfrom(self, size):
        return self.sock.recvfrom(size)

    def sendto(self, data, addr):
        raise OSError(errno.EINVAL, "Invalid argument")


def test_a_reply_that_cannot_be_sent_is_counted_and_serving_goes_on():
    """sendto failing for one peer's address (EINVAL, as for a forged source port 0) drops
    that reply only: the endpoint keeps serving; only a broken socket of ours stops it."""
    reactor = Reactor()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    failed = []
    endpoint = DatagramEndpoint(reactor, sock, UDP_ECHO, on_failed=failed.append)
    try:
        with udp_client() as c:
            endpoint.sock = RefusingSocket(sock)
            c.sendto(b"lost", sock.getsockname())
            run_until(reactor, lambda: endpoint.stats.datagrams_in == 1)
            assert (endpoint.stats.errors, endpoint.serving, failed) == (1, True, [])
            endpoint.sock = sock
            c.sendto(b"kept", sock.getsockname())
            run_until(reactor, lambda: endpoint.stats.datagrams_out == 1)
            assert c.recvfrom(100)[0] == b"kept"
            endpoint._error(OSError(errno.EBADF, "Bad file descriptor"), "recvfrom")
            assert failed == [endpoint] and not endpoint.serving
    finally:
        reactor.close()
        sock.close()


def test_the_largest_ipv6_datagram_comes_back_whole(start_server):
    """Over IPv6 a datagram may carry 65,527 bytes, 20 more than over IPv4; all come back."""
    server = start_server("servers.udp_echo", bind="::1")
    payload = bytes(i % 253 for i in range(65527))
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c:
        c.settimeout(DEADLINE)
        c.sendto(payload, ("::1", server.port))
        assert c.recvfrom(65535)[0] == payload


def test_udp_stops_at_the_first_signal_while_tcp_clients_finish(start_server):
    """On SIGTERM, UDP (nothing pending) stops at once, while the server is still waiting,
    within its grace period, for a TCP client to close."""
    server = start_server("servers.echo_select", "--udp", "--grace", "30")
    tcp = socket.create_connection(server.address, timeout=DEADLINE)
    with udp_client() as udp:
        udp.sendto(b"before", server.address)
        assert udp.recvfrom(100)[0] == b"before"
        server.signal(signal.SIGTERM)
        assert recv_all(tcp) == b""             # the server's FIN: it is shutting down
        udp.sendto(b"after", server.address)
        udp.settimeout(1.0)
        with pytest.raises((TimeoutError, ConnectionRefusedError)):
            udp.recvfrom(100)
    assert server.proc.poll() is None           # still waiting for the TCP client's end
    tcp.close()
    assert server.wait() == 0
