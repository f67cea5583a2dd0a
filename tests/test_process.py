"""bench.process, which the tests, the benchmark and the scenarios start their processes with:
the `listening on` line, waits with a deadline, output that never fills a pipe, stopping by
pid, and /proc/PID/stat."""

import os
import socket
import subprocess
import sys
import time

import pytest

from bench.process import Child, Listening, children, descendants, parse_listening, stat
from conftest import DEADLINE, wait_exited

SLEEPER = [sys.executable, "-c", "import signal; signal.pause()"]   # until a signal ends it


def python(code):
    return [sys.executable, "-c", code]


@pytest.mark.parametrize("line, where", [
    ("listening on 127.0.0.1:9877", Listening("127.0.0.1", 9877, False)),
    ("listening on 0.0.0.0:0", Listening("0.0.0.0", 0, False)),
    ("listening on [::1]:9877", Listening("::1", 9877, False)),
    ("listening on [::]:7", Listening("::", 7, False)),
    ("listening on [::ffff:127.0.0.1]:7", Listening("::ffff:127.0.0.1", 7, False)),
    ("listening on 127.0.0.1:9879 (UDP)", Listening("127.0.0.1", 9879, True)),
    ("listening on [::1]:9879 (UDP)", Listening("::1", 9879, True)),
    ("listening on localhost:80", Listening("localhost", 80, False)),
])
def test_the_listening_line_gives_host_port_and_protocol(line, where):
    """Every form a server announces (IPv4, bracketed IPv6, either with ' (UDP)') is read back
    as host, port and whether it is UDP."""
    assert parse_listening(line) == where


@pytest.mark.parametrize("line", [
    "", "listening on", "listening on 127.0.0.1", "listening on 127.0.0.1:", "listening on :80",
    "listening on ::1:80", "listening on [::1:80", "listening on [::1]", "listening on [zz]:80",
    "listening on 127.0.0.1:port", "listening on 127.0.0.1:123456",
    "listening on 127.0.0.1:80 (TCP)", "listening on 127.0.0.1:80 ", "listening on 127.0.0.1:80x",
    " listening on 127.0.0.1:80", "Listening on 127.0.0.1:80", "server listening on 1.2.3.4:80",
    "listening on 127.0.0.1:80\n127.0.0.1:81",
])
def test_anything_else_is_not_a_listening_line(line):
    """A line that is not exactly the announcement (unbracketed IPv6, no port, a suffix other
    than ' (UDP)', text around it) is not taken for one."""
    assert parse_listening(line) is None


def test_the_pattern_reads_what_the_servers_announce(capsys):
    """The pattern reads back the address of the lines servers.sockets.announce prints, for
    IPv4 and IPv6 sockets, TCP and UDP."""
    from servers.sockets import announce

    socks = [socket.create_server(("127.0.0.1", 0))]
    if socket.has_ipv6:
        try:
            socks.append(socket.create_server(("::1", 0), family=socket.AF_INET6))
        except OSError:
            pass        # no IPv6 loopback here
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    try:
        capsys.readouterr()
        announce(socks)
        announce([udp], suffix=" (UDP)")
        lines = capsys.readouterr().out.splitlines()
        expected = [Listening(s.getsockname()[0], s.getsockname()[1], False) for s in socks]
        expected.append(Listening("127.0.0.1", udp.getsockname()[1], True))
        assert [parse_listening(line) for line in lines] == expected
    finally:
        for s in [*socks, udp]:
            s.close()


def test_the_first_line_is_waited_for_only_until_the_deadline():
    """A process that prints nothing is given up on at the deadline, without blocking."""
    child = Child(SLEEPER)
    try:
        began = time.monotonic()
        assert child.first_line(0.3) == ""
        assert time.monotonic() - began < DEADLINE / 2
        assert child.running()
    finally:
        child.kill()
        child.close()


def test_a_process_that_exits_without_a_line_is_noticed_at_once_and_its_session_ended():
    """When the process exits without a first line, the wait ends then, even though a child
    it left holds the pipe open; with a session of its own, that orphan is ended by kill()."""
    leaver = ("import subprocess, sys; kid = subprocess.Popen([sys.executable, '-c', "
              "'import signal; signal.pause()']); print(kid.pid, file=sys.stderr)")
    child = Child(python(leaver), new_session=True)
    try:
        began = time.monotonic()
        assert child.first_line(DEADLINE) == ""
        assert time.monotonic() - began < DEADLINE / 2, "waited for the pipe, not the exit"
        kid = int(child.stderr.text())
        assert stat(kid).ppid != child.pid      # an orphan: nothing but its session says whose
    finally:
        child.kill()
        child.close()
    wait_exited([kid])


def test_a_child_that_writes_more_than_a_pipe_holds_is_never_stopped_by_it(tmp_path):
    """1 MiB on stdout (a pipe holds 64 KiB) does not block the child: it goes on to write its
    stderr; all of stdout is kept, and copied to the file asked for."""
    noisy = ("import signal, sys; sys.stdout.write('x' * (1 << 20)); sys.stdout.flush(); "
             "print('done', file=sys.stderr, flush=True); signal.pause()")
    child = Child(python(noisy), copy_stdout=tmp_path / "out")
    try:
        assert child.stderr.wait(lambda: child.stderr.text() == "done\n", DEADLINE)
        assert child.stdout.wait(lambda: len(child.stdout.text()) == 1 << 20, DEADLINE)
        assert (tmp_path / "out").read_text() == "x" * (1 << 20)
    finally:
        child.kill()
        child.close()


def test_stopping_ends_the_children_it_started_and_no_process_of_the_same_name():
    """terminate() then kill() end the process and the child it made (which SIGTERM to its
    parent does not reach), by pid: a process with the same command line that it did not
    start is left running."""
    parent = ("import signal, subprocess, sys; kid = subprocess.Popen([sys.executable, '-c', "
              "'import signal; signal.pause()']); print(kid.pid, flush=True); signal.pause()")
    bystander = subprocess.Popen(SLEEPER)
    child = Child(python(parent))
    try:
        kid = int(child.first_line(DEADLINE))
        assert stat(kid).ppid == child.pid
        assert stat(kid).name == stat(bystander.pid).name
        child.terminate()
        assert child.wait(DEADLINE) == -15
        child.kill()
        wait_exited([kid])
        assert bystander.poll() is None
    finally:
        child.kill()
        child.close()
        bystander.kill()
        bystander.wait()


def test_proc_stat_is_read_right_whatever_the_program_name():
    """/proc/PID/stat is parsed from its last ')': a name with spaces and parentheses leaves
    the state, parent, session and start time right; children() and descendants() find it."""
    named = ("import signal; open('/proc/self/comm', 'w').write('a (b) c'); print('named', "
             "flush=True); signal.pause()")
    child = Child(python(named))
    try:
        assert child.first_line(DEADLINE) == "named"
        s = stat(child.pid)
        assert s.name == "a (b) c" and s.state in "RS" and s.ppid == os.getpid()
        assert s.session == os.getsid(0) and s.start >= stat(os.getpid()).start
        assert child.pid in [c.pid for c in children(os.getpid())]
        assert [d.pid for d in descendants(os.getpid())][:1] == [os.getpid()]
        assert child.pid in [d.pid for d in descendants(os.getpid())]
    finally:
        child.kill()
        child.close()
    assert stat(child.pid) is None
