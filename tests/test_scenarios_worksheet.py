"""The worksheet's serverFork.c as translated for the scenarios (``bench.scenarios.texts_worksheet
serverfork``): it behaves as the C program does -- one reply per recv, ``quit`` matched byte for
byte, SIGPIPE's default action, a SIGCHLD handler whose ``wait`` blocks the parent -- and so do its
alterations (``--no-handler``, ``--maxdatasize``, ``--status``); and the scenarios' helpers read
what the kernel shows."""

import os
import signal
import socket
import struct
import subprocess
import sys

import pytest

from conftest import DEADLINE, wait_until
from bench.process import Child, parse_listening, python_env
from bench.scenarios import observe, worksheet
from bench.scenarios.texts_worksheet import HELLO, MAXDATASIZE, build_parser

pytestmark = pytest.mark.timeout(60)


class Started:
    """A serverfork process: its port, and its stdout and stderr, merged in the order written."""

    def __init__(self, *args):
        self.child = Child([sys.executable, "-m", "bench.scenarios.texts_worksheet", "serverfork",
                            *args, "0"],
                           stderr=subprocess.STDOUT, env=python_env(),
                           new_session=True)
        self.pid = self.child.pid
        where = parse_listening(self.child.first_line(DEADLINE))
        assert where is not None, self.child.stdout.text()
        self.port = where.port

    def lines(self):
        """What it has printed so far: every byte already in the pipe read in first."""
        self.child.stdout.caught_up(DEADLINE)
        return self.child.stdout.lines()

    def wait_for_line(self, text, count=1):
        """Wait until ``text`` has been printed ``count`` times (as a whole line)."""
        found = self.child.stdout.wait(lambda: self.lines().count(text) >= count, DEADLINE)
        assert found, f"never printed {text!r} x{count}: {self.lines()}"

    def ended(self, n):
        """Wait until ``--status`` has printed ``n`` children's ends; return those lines."""
        def found():
            got = [line for line in self.lines() if line.startswith("Server: child ")]
            return got if len(got) >= n else None
        got = self.child.stdout.wait(found, DEADLINE)
        assert got, f"fewer than {n} 'Server: child' lines: {self.lines()}"
        return got

    def children(self):
        return [observe.process(pid) for pid in observe.children_of(self.pid)]

    def zombie(self):
        """A child that has ended and is not reaped yet, or None."""
        return next((p for p in self.children() if p and p.zombie), None)

    def stop(self):
        self.child.terminate()
        self.child.wait(3)
        self.child.kill()
        self.child.close()


@pytest.fixture
def serverfork():
    """Start ``python -m bench.scenarios.texts_worksheet serverfork [ARGS] 0``; everything in its
    session is ended
    by pid afterwards."""
    started = []

    def start(*args):
        started.append(Started(*args))
        return started[-1]
    yield start
    for server in started:
        server.stop()


def connect(server):
    return socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE)


def read_replies(sock, n):
    data = b""
    while data.count(HELLO) < n:
        chunk = sock.recv(4096)
        assert chunk, f"EOF after {data!r}"
        data += chunk
    return data


def read_to_eof(sock):
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def received(server):
    return [line.split("Message received: ", 1)[1] for line in server.lines()
            if line.startswith("Message received: ")]


def test_defaults_are_the_worksheets():
    """Without options it listens on MYPORT 3490 with the handler, not printing exit codes, and
    MAXDATASIZE is 200."""
    args = build_parser().parse_args(["serverfork"])
    assert (args.port, args.handler, args.status, args.maxdatasize) == (3490, True, False, 200)
    assert MAXDATASIZE == 200
    assert build_parser().parse_args(["serverfork", "--no-handler", "0"]).handler is False


@pytest.mark.parametrize("args", [["--maxdatasize", "1"], ["--maxdatasize", "0"],
                                  ["--maxdatasize", "x"], ["--no-handler", "--status"]])
def test_impossible_alterations_are_refused(args, capsys):
    """MAXDATASIZE leaves a byte for the NUL: 0 and 1 (and not-a-number) are usage errors; and
    with no handler there is nobody to print the exit codes."""
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["serverfork", *args, "0"])
    assert exc.value.code == 2


def test_it_announces_itself_and_each_connection(serverfork):
    """The first line is 'listening on 127.0.0.1:PORT'; the parent prints 'Server: got connection
    from 127.0.0.1' for each client, and the child 'Message received: MSG'."""
    server = serverfork()
    assert server.lines()[0] == f"listening on 127.0.0.1:{server.port}"
    with connect(server) as sock:
        sock.sendall(b"hello")
        assert read_replies(sock, 1) == HELLO
        server.wait_for_line("Message received: hello")
    assert "Server: got connection from 127.0.0.1" in server.lines()


def test_one_reply_per_recv_of_at_most_maxdatasize_less_one_bytes(serverfork):
    """A message longer than MAXDATASIZE - 1 (199) bytes is taken by several recvs, and every
    recv gets its own 'Hello, World!\\n' (14 bytes)."""
    server = serverfork()
    message = bytes(range(97, 123)) * 10        # 260 bytes, a-z
    with connect(server) as sock:
        sock.sendall(message)
        wait_until(lambda: sum(map(len, received(server))) == len(message), "the whole message")
        pieces = received(server)
        data = read_replies(sock, len(pieces))
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(4096)                     # no more replies than pieces
    assert len(pieces) >= 2 and all(len(p) <= MAXDATASIZE - 1 for p in pieces)
    assert "".join(pieces).encode() == message
    assert data == HELLO * len(pieces)


def test_only_quit_itself_ends_the_child(serverfork):
    """``quit\\r\\n`` (telnet) and ``quit\\n`` are answered like any message and the child goes on;
    ``quit`` alone is answered, then the child closes the connection and exits."""
    server = serverfork()
    with connect(server) as sock:
        for line in (b"quit\r\n", b"quit\n", b"still there?"):
            sock.sendall(line)
            assert read_replies(sock, 1) == HELLO
        sock.sendall(b"quit")
        assert read_to_eof(sock) == HELLO
    wait_until(lambda: not server.children(), "the child to be reaped")
    assert received(server) == ["quit\r", "quit", "still there?", "quit"]


def test_maxdatasize_20_takes_a_message_19_bytes_at_a_time(serverfork):
    """--maxdatasize 20: a 40-byte message is three recvs (19, 19, 2), three replies."""
    server = serverfork("--maxdatasize", "20")
    message = b"this message is longer than twenty bytes"
    with connect(server) as sock:
        sock.sendall(message)
        assert read_replies(sock, 3) == HELLO * 3
        sock.sendall(b"quit")
        read_to_eof(sock)
    server.wait_for_line("Message received: quit")
    assert received(server) == [message[:19].decode(), message[19:38].decode(),
                                message[38:].decode(), "quit"]


def test_the_handler_reaps_and_without_it_children_stay_zombies(serverfork):
    """With the SIGCHLD handler a child that has ended is reaped, its exit status thrown away
    (nothing printed), or with --status printed, 0; with --no-handler it stays a zombie, its exit
    status 0 kept for a wait that never comes."""
    for args in ((), ("--status",), ("--no-handler",)):
        server = serverfork(*args)
        with connect(server) as sock:
            sock.sendall(b"quit")
            read_to_eof(sock)
        server.wait_for_line("Message received: quit")
        if args == ("--status",):
            assert server.ended(1)[0].endswith("exit status 0")
        if args != ("--no-handler",):
            wait_until(lambda: not server.children(), "the child to be reaped")
            if not args:
                assert not any(line.startswith("Server: child") for line in server.lines())
        else:
            zombie = wait_until(server.zombie, "a zombie")
            assert worksheet._wait_status(zombie.pid) == 0


def test_a_client_that_leaves_without_quit_has_its_child_killed_by_sigpipe(serverfork):
    """The client's EOF is a message "" to the C child, answered into the closed connection
    until SIGPIPE (at its default action, as in C) kills the child: no 'Server send' line; the
    zombie's status, and --status's line, say killed by signal 13."""
    for args in (("--no-handler",), ("--status",)):
        server = serverfork(*args)
        with connect(server) as sock:
            sock.sendall(b"hello")
            read_replies(sock, 1)
        if args == ("--status",):
            assert server.ended(1)[0].endswith(f"killed by signal {int(signal.SIGPIPE)}")
        else:
            zombie = wait_until(server.zombie, "the child to end")
            status = worksheet._wait_status(zombie.pid)
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGPIPE
        assert received(server)[1:] and set(received(server)[1:]) == {""}
        assert not any(line.startswith("Server send") for line in server.lines())


def test_a_reset_in_recv_is_perror_and_exit_1(serverfork):
    """A reset while the child waits in recv prints 'Server recv: Connection reset by peer'
    and the child exits with status 1, as the C child's error path does."""
    server = serverfork("--no-handler")
    sock = connect(server)
    sock.sendall(b"hello")
    read_replies(sock, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    server.wait_for_line("Server recv: Connection reset by peer")
    zombie = wait_until(server.zombie, "the child to end")
    status = worksheet._wait_status(zombie.pid)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1


def test_with_status_a_reset_is_exit_status_1_and_the_next_client_is_served(serverfork):
    """--status: a client that resets while the child waits in recv has the parent print 'exit
    status 1'; the next client is served, and its child's end is 'exit status 0'."""
    server = serverfork("--status")
    sock = connect(server)
    server.wait_for_line("Server: got connection from 127.0.0.1")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    assert server.ended(1)[0].endswith("exit status 1")
    assert "Server recv: Connection reset by peer" in server.lines()
    with connect(server) as sock:
        sock.sendall(b"quit")
        assert read_to_eof(sock) == HELLO
    assert server.ended(2)[1].endswith("exit status 0")


def test_the_handlers_wait_keeps_the_parent_from_accepting(serverfork):
    """Once one child has ended while another runs, the parent waits in the handler's wait()
    (WCHAN do_wait) and a new client stays in the listen queue; it is accepted, and answered,
    only when the last other child has ended."""
    server = serverfork()
    first, second = connect(server), connect(server)
    with first, second:
        for sock in (first, second):
            sock.sendall(b"hi")
            read_replies(sock, 1)
        second.sendall(b"quit")
        read_to_eof(second)
        wait_until(lambda: worksheet._wchan(server.pid) == "do_wait", "the parent to wait")
        with connect(server) as third:
            third.sendall(b"hello")

            def queued():
                return [r.recv_q for r in observe.tcp_sockets(server.port)
                        if r.state == "LISTEN"] == [1]
            wait_until(queued, "the new connection to wait in the listen queue")
            assert worksheet._wchan(server.pid) == "do_wait"
            assert server.lines().count("Server: got connection from 127.0.0.1") == 2
            first.sendall(b"quit")
            read_to_eof(first)
            assert read_replies(third, 1) == HELLO
    assert server.lines().count("Server: got connection from 127.0.0.1") == 3


def test_the_adopter_is_init_or_a_subreaper_above_us():
    """The helper that names an orphan's new parent knows PID 1 and our own ancestors, and
    nothing else."""
    assert worksheet._adopter(1).startswith("PID 1")
    assert worksheet._adopter(os.getppid()).startswith("a child subreaper")
    child = Child([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert worksheet._adopter(child.pid) is None
    finally:
        child.kill()
        child.close()
