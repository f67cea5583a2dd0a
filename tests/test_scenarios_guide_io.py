"""The quick guide's I/O scenarios' own parts: the translated client and server behave as the
guide's C does, and the UDP table, the socket lookup and the counting socket read what is there."""

import errno
import socket
import subprocess
import sys

import pytest

from conftest import ROOT
from bench.process import python_env
from bench.scenarios import guide_io, observe
from wire.streamio import Reader, writen

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 10


def texts(*args):
    return [sys.executable, "-m", "bench.scenarios.texts_guide", *map(str, args)]


def run_texts(*args):
    return subprocess.run(texts(*args), cwd=ROOT, env=python_env(), capture_output=True,
                          timeout=TIMEOUT)


def guide_client(answer):
    """Run the guide's client against a listener of the test's own that reads its 7 bytes, then
    ``answer(conn, got)``s and closes; returns (the bytes it got, exit status, lines printed)."""
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        lsock.settimeout(TIMEOUT)
        proc = subprocess.Popen(texts("tcpcli", "127.0.0.1", lsock.getsockname()[1]), cwd=ROOT,
                                env=python_env(), stdout=subprocess.PIPE)
        try:
            conn, _ = lsock.accept()
            with conn:
                # All of Hello!\n read first: closing with bytes unread would be a reset.
                conn.settimeout(TIMEOUT)
                got = b""
                while len(got) < 7:
                    got += conn.recv(7)
                answer(conn, got)
            out, _ = proc.communicate(timeout=TIMEOUT)
        finally:
            proc.kill()
    return got, proc.returncode, out.decode().splitlines()


def test_the_guide_client_reads_its_echo_back():
    """The guide's client writes Hello!\\n with its write loop, reads the 7 bytes back with its
    read loop, prints 'echo: Hello!' and exits 0."""
    def echo_in_two_pieces(conn, got):
        conn.sendall(got[:3])
        conn.sendall(got[3:])
    got, status, lines = guide_client(echo_in_two_pieces)
    assert got == b"Hello!\n"
    assert status == 0
    assert "write(fd,ptr,7) returned 7" in lines
    assert "echo: Hello!" in lines
    assert "closed by peer" not in lines


def test_the_guide_client_sees_an_orderly_close_as_read_returning_0():
    """When the peer closes without answering, the client's read returns 0: its loop ends early,
    it prints an empty echo, closes and exits 0 (no error)."""
    _got, status, lines = guide_client(lambda conn, got: None)
    assert status == 0
    assert "read(fd,ptr,7) returned 0 b''" in lines
    assert lines[-3:] == ["closed by peer", "echo: ", "close(fd); exit(0)"]


def test_the_guide_client_exits_1_when_connect_fails():
    """connect to a port where nobody listens: the guide's exit(1), with the call and errno."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = run_texts("tcpcli", "127.0.0.1", port)
    assert proc.returncode == 1
    assert proc.stdout.decode() == ("connect: -1, errno ECONNREFUSED (Connection refused): "
                                    "exit(1)\n")


@pytest.mark.parametrize("rcvbuf", [0, 4096])
def test_the_guide_server_echoes_everything_in_128_byte_reads(texts_guide, rcvbuf):
    """The guide's server echoes a message much bigger than its buffer (and, with --rcvbuf,
    than its receive buffer) byte for byte, and reports the reads it took when the client
    closes."""
    args = ("--rcvbuf", rcvbuf) if rcvbuf else ()
    proc, port = texts_guide("iterative", *args)
    message = bytes(range(256)) * 64            # 16 KiB
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(message)
        sock.shutdown(socket.SHUT_WR)
        echo = Reader(sock).readn(len(message) + 1)
    line = proc.stdout.readline().decode()
    assert echo == message
    assert line.startswith(f"close(newfd): {len(message)} bytes echoed, ")
    reads = int(line.split(", ")[1].split()[0])
    assert reads >= len(message) // 128 + 1, "at most 128 bytes a read, and the last one 0"


def test_the_guide_server_cannot_bind_a_port_in_use(texts_guide):
    """The guide's server on a port already listened on: 'bind: -1, errno EADDRINUSE', exit 1."""
    _proc, port = texts_guide("iterative")
    proc = run_texts("iterative", port)
    assert proc.returncode == 1
    assert proc.stdout.decode() == ("bind: -1, errno EADDRINUSE (Address already in use): "
                                    "exit(1)\n")


def test_the_guide_server_sets_no_so_reuseaddr(texts_guide):
    """The guide's server does not set SO_REUSEADDR (its code has no setsockopt): the TIME_WAIT
    it leaves when killed refuses a later bind even with SO_REUSEADDR (Linux)."""
    proc, port = texts_guide("iterative")
    overflows = observe.timewait_overflows()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
        proc.kill()
        proc.wait(TIMEOUT)
        assert sock.recv(1) == b""
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            again.bind(("127.0.0.1", port))
            result = 0
        except OSError as exc:
            result = exc.errno
    if result == 0 and observe.timewait_overflows() > overflows:
        pytest.skip("the host's TIME_WAIT table was full: the kernel kept no TIME_WAIT")
    assert result == errno.EADDRINUSE


def test_the_udp_table_tells_connected_sockets_and_queued_datagrams():
    """udp_sockets reads /proc/net/udp: a connected socket shows its foreign address and
    ESTABLISHED, an unconnected one *:* and no state, and a queued datagram a Recv-Q."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        b.connect(a.getsockname())
        b.send(b"queued")
        aport, bport = a.getsockname()[1], b.getsockname()[1]
        rows = {r.local[1]: r for r in observe.udp_sockets({aport, bport})}
        lines = observe.format_udp_netstat(rows.values())
    assert set(rows) == {aport, bport}
    assert rows[bport].connected and rows[bport].remote == ("127.0.0.1", aport)
    assert not rows[aport].connected and rows[aport].remote == ("0.0.0.0", 0)
    assert rows[aport].recv_q > 0 and rows[bport].recv_q == 0
    shown = {line.split()[3]: line.split()[4:] for line in lines[1:]}
    assert shown[f"127.0.0.1:{aport}"] == ["*:*"]
    assert shown[f"127.0.0.1:{bport}"] == [f"127.0.0.1:{aport}", "ESTABLISHED"]


def test_a_process_udp_port_is_found_from_its_descriptors():
    """udp_port_of finds the port another process's UDP socket was given by its first sendto,
    and None before it has one."""
    code = ("import socket, sys\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "print('made', flush=True); sys.stdin.readline()\n"
            "s.sendto(b'x', ('127.0.0.1', 9))\n"
            "print(s.getsockname()[1], flush=True); sys.stdin.readline()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"made\n"
        before = guide_io.udp_port_of(proc.pid)
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        port = int(proc.stdout.readline())
        after = guide_io.udp_port_of(proc.pid)
    finally:
        proc.kill()
        proc.wait(TIMEOUT)
        proc.stdin.close()
        proc.stdout.close()
    assert before is None
    assert after == port


def test_the_counted_socket_notes_each_call_of_writen_and_readn():
    """Counted passes sends and recvs through and notes what each returned, so a scenario can
    say how many calls writen and readn needed."""
    a, b = socket.socketpair()
    with a, b:
        counted = guide_io.Counted(a)
        assert writen(counted, b"hello") == 5
        b.sendall(b"wor")
        b.sendall(b"ld")
        b.shutdown(socket.SHUT_WR)
        data = Reader(counted).readn(10)
        assert b.recv(5) == b"hello"
    assert counted.sends == [5]
    assert data == b"world" and sum(counted.recvs) == 5 and counted.recvs[-1] == 0
