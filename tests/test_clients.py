"""The blocking clients against selectlab's servers, on loopback (tier 4): msgclient,
daytime, time, hostinfo, and the echo client's --udp, --connections and --linger-rst."""

import os
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from clients import time as time_client
from conftest import DEADLINE, ROOT, readline_within
import cli
from wire.services import UNIXEPOCH, decode_time


def run(module, *args, stdin=b""):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT,
                          input=stdin, capture_output=True, timeout=DEADLINE)


def unused_port():
    """A port that nobody listens on (bound for a moment by the kernel's choice, then freed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- msgclient ----------------------------------------------------------------------

def test_msgclient_session_with_the_hello_server(start_server):
    """The worksheet's session: each line gets 'Received: Hello, World!'; after quit the
    client prints the goodbye and ends with status 0."""
    server = start_server("servers.hello", "--model", "select", "--goodbye")
    proc = run("clients.msgclient", "127.0.0.1", server.port, stdin=b"hello\nHow are you\nquit\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode() == ("Message to send: Received: Hello, World!\n"
                                    "Message to send: Received: Hello, World!\n"
                                    "Message to send: Received: Goodbye, 127.0.0.1\n")


def test_msgclient_words_sends_each_word_as_scanf_does(start_server):
    """--words: 'How are you' is three messages and three answers, as with scanf("%s")."""
    server = start_server("servers.hello", "--echo")
    proc = run("clients.msgclient", "--words", "127.0.0.1", server.port,
               stdin=b"How are you\nquit\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().split("Message to send: ")[1] == (
        "Received: How\nReceived: are\nReceived: you\n")


def test_msgclient_connection_refused_is_one_line():
    """No server on the port: one line saying so, exit 1."""
    proc = run("clients.msgclient", "127.0.0.1", unused_port())
    assert proc.returncode == 1
    assert proc.stderr.decode().count("\n") == 1 and "connection refused" in proc.stderr.decode()


# --- daytime and time -----------------------------------------------------------------

@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
def test_daytime_client_prints_the_servers_line(start_server, udp):
    """The DAYTIME reply is today's ctime() line, over TCP and over UDP."""
    server = start_server("servers.daytime")
    proc = run("clients.daytime", *(["--udp"] if udp else []), "127.0.0.1", server.port)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.decode()
    assert line.endswith("\n") and line.count("\n") == 1
    assert time.strptime(line.strip(), "%a %b %d %H:%M:%S %Y")


@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
def test_time_decodes_to_within_a_second_of_the_local_clock(start_server, udp):
    """The 4 bytes of TIME, decoded, are the local time to within a second (the protocol's
    resolution), over TCP and over UDP."""
    server = start_server("servers.time")
    if udp:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(DEADLINE)
            c.sendto(time_client.ASK, server.address)
            reply = c.recvfrom(16)[0]
    else:
        with socket.create_connection(server.address, timeout=DEADLINE) as c:
            reply = b""
            while chunk := c.recv(16):
                reply += chunk
    now = time.time()
    assert len(reply) == 4
    assert -1.0 <= now - decode_time(reply, now) <= 2.0
    proc = run("clients.time", *(["--udp"] if udp else []), "127.0.0.1", server.port)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().startswith("server time: ")


def test_time_decoding_survives_the_2036_wrap():
    """After 2036-02-07 the 32-bit count wraps to 0; a clock that knows the year decodes it."""
    after_wrap = 2**32 - UNIXEPOCH + 1000          # Unix time 1000 s after the wrap
    reply = struct.pack("!I", (after_wrap + UNIXEPOCH) % 2**32)
    assert decode_time(reply, now=after_wrap + 5) == after_wrap
    before_wrap = 1_800_000_000                      # 2027, in the first era
    reply = struct.pack("!I", before_wrap + UNIXEPOCH)
    assert decode_time(reply, now=before_wrap + 5) == before_wrap


def test_udp_clients_report_no_answer_instead_of_hanging():
    """DAYTIME and TIME over UDP against a silent port give up after their tries, exit 1."""
    port = unused_port()
    for module in ("clients.daytime", "clients.time"):
        proc = run(module, "--udp", "--timeout", "0.2", "--tries", "2", "127.0.0.1", port)
        assert proc.returncode == 1
        assert "no answer from 127.0.0.1 port" in proc.stderr.decode()


def test_time_client_unknown_host_is_one_clear_error(no_dns):
    """An unknown host is one line naming it, not a traceback."""
    with pytest.raises(cli.Fatal, match="unknown host 'nowhere.invalid'"):
        time_client.main(["nowhere.invalid"])


# --- hostinfo -------------------------------------------------------------------------

def test_hostinfo_localhost_lists_127_0_0_1_with_its_hex():
    """The guide's format: 'internet address: 127.0.0.1 (7F000001)'."""
    proc = run("clients.hostinfo", "localhost")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode().splitlines()
    assert out[0].startswith("host name: ")
    assert "canonical hostname: localhost" in out
    assert "internet address: 127.0.0.1 (7F000001)" in out


def test_hostinfo_gives_ipv6_addresses_in_full_hex():
    """IPv6 addresses get all 128 bits in hex."""
    proc = run("clients.hostinfo", "::1")
    assert proc.returncode == 0, proc.stderr
    assert "internet address: ::1 (00000000000000000000000000000001)" in proc.stdout.decode()


def test_hostinfo_unknown_name_is_an_error_line_and_status_1(no_dns, capsys):
    """A name that does not resolve: the guide's 'error: getaddrinfo: ...', after the prefix
    every command's errors start with, so a script's log says which command failed; exit 1."""
    from clients import hostinfo

    assert hostinfo.main(["nowhere.invalid"]) == 1
    assert capsys.readouterr().err == ("python -m clients.hostinfo: error: getaddrinfo: "
                                       "nowhere.invalid: Name or service not known\n")


# --- clients.echo's new options ---------------------------------------------------------

def test_echo_client_udp_echoes_each_line(start_server):
    """--udp: each line goes as a datagram and its echo is printed, against echo_select --udp."""
    server = start_server("servers.echo_select", "--udp")
    proc = run("clients.echo", "--udp", "127.0.0.1", server.port, stdin=b"one\ntwo\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"one\ntwo\n"


def test_echo_client_connections_opens_n_and_uses_the_first(start_server):
    """--connections 5 (UNP tcpcli04): five connections are opened, the echo goes over one,
    and all five close together when the client ends."""
    server = start_server("servers.echo_select", "-v")
    proc = run("clients.echo", "--connections", "5", "127.0.0.1", server.port, stdin=b"hi\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"hi\n"
    server.wait_for_log(lambda log: log.count(" closed (") == 5, "five connections closed")
    stats = server.stats()
    assert stats["accepted"] == 5 and stats["bytes_in"] == 3


def test_echo_client_linger_rst_ends_with_a_reset(start_server):
    """--linger-rst: once its echo is back the client resets the connection instead of
    half-closing, and the server sees ECONNRESET, not EOF."""
    server = start_server("servers.echo_select", "-v")
    proc = run("clients.echo", "--linger-rst", "127.0.0.1", server.port, stdin=b"x\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"x\n"
    server.wait_for_log(" closed (")
    assert "closed (ECONNRESET" in server.log(), server.log()


def test_time_client_reads_four_bytes_without_waiting_for_the_server_to_close():
    """RFC 868: the client closes after the 4 bytes; a server that keeps the connection open
    does not make it wait or fail."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        done = threading.Event()

        def serve():
            conn, _ = listener.accept()
            conn.sendall(struct.pack("!I", int(time.time()) + UNIXEPOCH))
            done.wait(DEADLINE)         # keeps it open until the client has finished
            conn.close()
        thread = threading.Thread(target=serve)
        thread.start()
        try:
            proc = run("clients.time", "--timeout", "5", "127.0.0.1", port)
        finally:
            done.set()
            thread.join()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().startswith("server time: ")


def test_a_name_that_cannot_be_a_host_name_is_one_line():
    """'a..b' is refused by the IDNA codec before any lookup: one line, exit 1, no traceback."""
    for module in ("clients.msgclient", "clients.daytime"):
        proc = run(module, "a..b")
        assert proc.returncode == 1
        err = proc.stderr.decode()
        assert err.count("\n") == 1 and "unknown host 'a..b'" in err, err


def test_echo_client_linger_rst_keeps_a_last_line_without_newline(start_server):
    """--linger-rst still prints a last unterminated line when input ends after its echo."""
    server = start_server("servers.echo_select")
    proc = subprocess.Popen([sys.executable, "-m", "clients.echo", "--linger-rst", "127.0.0.1",
                             str(server.port)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(b"one\ntwo-without-newline")
    proc.stdin.flush()
    assert readline_within(proc.stdout) == b"one\n"
    # The 23 bytes went in one write, so the echo of all of them, read with "one\n",
    # is back before the input ends.
    assert server.stats()["bytes_out"] == 23
    proc.stdin.close()
    proc.wait(timeout=DEADLINE)
    out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 0, err
    assert out == b"two-without-newline"      # after the "one\n" read above


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_an_output_that_cannot_be_written_is_one_line_not_a_traceback(start_server):
    """`clients.echo ... > /dev/full` (a full disk) says so in one line and exits 1."""
    server = start_server()
    with open("/dev/full", "wb") as full:
        proc = subprocess.run([sys.executable, "-m", "clients.echo", "127.0.0.1",
                               str(server.port)], input=b"hello\n", stdout=full,
                              stderr=subprocess.PIPE, cwd=ROOT, timeout=DEADLINE)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and err.count("\n") == 1, err
    assert "cannot write the output: No space left on device" in err and "Traceback" not in err
