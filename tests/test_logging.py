"""What the servers log, and that logging never stops them: the non-blocking log writer
(tier 2 on a pipe), the level rule, and a bug in a server's per-client code (tier 4)."""

import fcntl
import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import DEADLINE, LISTENING, ROOT, readline_within, recv_exactly
from reactor.logwriter import LogWriter
from reactor.loop import Reactor

DROPPED = re.compile(rb"log: (\d+) line\(s\) dropped")


def make_logger(writer, name):
    logger = logging.getLogger(f"test.logwriter.{name}")
    logger.handlers[:] = [writer]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def read_available(fd):
    """Everything the pipe holds now."""
    chunks = []
    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def read_until(fd, done, end):
    """Read ``fd`` as bytes arrive until ``done(received)`` or EOF; fail at ``end``."""
    received = b""
    while not done(received):
        left = end - time.monotonic()
        assert left > 0, f"never came; got {received[-500:]!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return received
            received += chunk
    return received


def test_a_pipe_nobody_reads_never_blocks_a_log_line_and_every_line_is_accounted_for():
    """10,000 lines into a pipe nobody reads: each log call returns at once, at most the
    buffer limit is held, the overflow is counted, and once the pipe is read every line is
    either there or counted as dropped, with one line saying how many."""
    r, w = os.pipe()
    writer = LogWriter(w, limit=16 * 1024)
    logger = make_logger(writer, "pipe")
    reactor = Reactor()
    try:
        for i in range(10_000):
            logger.info("line %d of the flood", i)
            assert writer.buffered <= writer.limit
        assert writer.lines_dropped > 0
        assert not fcntl.fcntl(w, fcntl.F_GETFL) & os.O_NONBLOCK   # fd 2 stays as it was
        writer.attach(reactor)
        received = b""
        end = time.monotonic() + DEADLINE
        while not DROPPED.search(received):
            assert time.monotonic() < end, "the dropped lines were never reported"
            received += read_available(r)
            reactor.run_once(timeout=0.01)
        received += read_available(r)
        lines = received.decode().splitlines()
        kept = [line for line in lines if "of the flood" in line]
        reported = int(DROPPED.search(received)[1])
        assert len(kept) + writer.lines_dropped == 10_000
        assert reported == writer.lines_dropped
        numbers = [int(line.split("line ")[1].split()[0]) for line in kept]
        assert numbers == sorted(numbers)       # what is kept stays in order
        assert all(line.endswith(" of the flood") for line in kept)    # and whole
    finally:
        writer.close()
        reactor.close()
        os.close(r)
        os.close(w)


def test_without_a_loop_the_writer_tries_again_at_each_line():
    """A server with no reactor (the classic ones): once the reader of a stalled pipe comes
    back, the next line gets out, preceded by what waited and the count of what was lost."""
    r, w = os.pipe()
    writer = LogWriter(w, limit=8 * 1024)
    logger = make_logger(writer, "noloop")
    try:
        for i in range(5_000):
            logger.info("stalled line %d", i)
        dropped = writer.lines_dropped
        assert dropped > 0
        read_available(r)                   # the reader comes back
        logger.info("after the stall")
        received = read_available(r)
        assert b"after the stall" in received
        assert int(DROPPED.search(received)[1]) == dropped
    finally:
        writer.close()
        os.close(r)
        os.close(w)


def test_a_closed_writer_writes_nowhere():
    """After close() (logging.shutdown at exit), a late line is dropped and counted, never
    written to whatever now has the descriptor's number."""
    r, w = os.pipe()
    writer = LogWriter(w)
    logger = make_logger(writer, "closed")
    writer.close()
    a, b = socket.socketpair()          # may well get the number the writer had
    try:
        logger.info("too late")
        b.setblocking(False)
        with pytest.raises(BlockingIOError):
            b.recv(100)
        assert writer.lines_dropped == 1
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()


def test_a_line_that_cannot_be_formatted_says_so():
    """log.info("%s %s", one) is the caller's bug: one ERROR line names it, with the message,
    instead of a traceback on a blocking stderr or a silent drop."""
    r, w = os.pipe()
    writer = LogWriter(w)
    logger = make_logger(writer, "format")
    try:
        logger.info("%s and %s", "one")     # noqa: PLE1206 -- the bug this test makes
        received = read_available(r).decode()
        assert " ERROR log: a line could not be formatted (TypeError" in received
        assert "'%s and %s'" in received and writer.lines_dropped == 0
    finally:
        writer.close()
        os.close(r)
        os.close(w)


def test_a_regular_file_gets_every_line(tmp_path):
    """A log file never refuses a write: nothing is buffered or dropped."""
    path = tmp_path / "server.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    writer = LogWriter(fd)
    logger = make_logger(writer, "file")
    try:
        for i in range(5000):
            logger.info("line %d", i)
        assert writer.buffered == 0 and writer.lines_dropped == 0
    finally:
        writer.close()
        os.close(fd)
    assert len(path.read_text().splitlines()) == 5000


def test_3000_clients_are_served_while_nobody_reads_the_log_even_with_trace():
    """stderr on a pipe nobody reads (a supervisor that captures output, `2>&1 | head`): the
    server serves 3,000 clients one after another with --trace on, and once the pipe is
    read it says how many lines it dropped, and its counters agree."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "servers.echo_select", "--trace", "-b", "127.0.0.1", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        port = int(LISTENING.match(readline_within(proc.stdout).rstrip())["port"])
        end = time.monotonic() + 120
        for i in range(3000):
            assert time.monotonic() < end
            with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as c:
                message = b"client %d\n" % i
                c.sendall(message)
                assert recv_exactly(c, len(message)) == message
        err = proc.stderr.fileno()
        received = read_until(err, DROPPED.search, end)
        dropped = int(DROPPED.search(received)[1])
        assert dropped > 0
        proc.send_signal(signal.SIGUSR1)
        received += read_until(err, lambda got: b"log_lines_dropped=" in got, end)
        counters = dict(field.split("=") for field in
                        re.search(rb"stats: (.*)", received)[1].decode().split())
        assert int(counters["accepted"]) == 3000
        assert int(counters["log_lines_dropped"]) >= dropped
        proc.send_signal(signal.SIGTERM)
        read_until(err, lambda got: False, end)     # to its end: the pipe closes as it exits
        assert proc.wait(DEADLINE) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(DEADLINE)
        proc.stdout.close()
        proc.stderr.close()


def test_per_client_lines_only_with_verbose(start_server):
    """The level rule (Redis's): by default the log says what the server does, not what each
    client does; -v adds a line when each client opens and closes."""
    quiet = start_server("servers.echo_select")
    verbose = start_server("servers.echo_select", "-v")
    for server in (quiet, verbose):
        with socket.create_connection(server.address, timeout=DEADLINE) as c:
            c.sendall(b"hi")
            assert recv_exactly(c, 2) == b"hi"
    verbose.wait_for_log(" closed (peer eof): in 2 B, out 2 B")
    quiet.stats()       # a line logged after the client's end: its lines would be in by now
    assert " open" not in quiet.log() and " closed (" not in quiet.log()
    assert "serving at most" in quiet.log()


@pytest.mark.parametrize("design", ["select", "iterative", "thread", "fork"])
def test_a_bug_in_the_per_client_code_ends_that_client_only(start_server, design):
    """Every design: a client that triggers a bug in the server's per-client code is dropped,
    the bug is logged once at ERROR with its traceback, and the next client is served."""
    server = start_server("tests.faulty_server", "-v", design)
    with socket.create_connection(server.address, timeout=DEADLINE) as first:
        first.sendall(b"boom")
        first.settimeout(DEADLINE)
        try:
            assert first.recv(100) == b""
        except ConnectionResetError:
            pass
    server.wait_for_log("protocol error")
    with socket.create_connection(server.address, timeout=DEADLINE) as second:
        second.sendall(b"fine")
        assert recv_exactly(second, 4) == b"fine"
    log = server.log()
    assert log.count(" ERROR ") == 1 and log.count("Traceback") == 1, log
    assert "raise Bug" in log
    if design == "select":
        assert server.stats()["protocol_errors"] == 1
    if design == "thread":
        server.signal(signal.SIGUSR1)
        server.wait_for_log("protocol_errors=1")
    if design == "fork":
        server.wait_for_log("terminated (exit 1)")
