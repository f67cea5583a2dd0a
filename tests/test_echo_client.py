"""`python -m clients.echo` against the reactor echo server, on loopback (tier 4)."""

import os
import signal
import socket
import subprocess
import sys

import pytest

from conftest import DEADLINE, ROOT, readline_within
import cli
from clients import echo


def client(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "clients.echo", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def test_a_big_binary_file_comes_back_identical(start_server, tmp_path):
    """`python -m clients.echo < bigfile > out` leaves out equal to bigfile, byte for byte."""
    server = start_server()
    big = tmp_path / "big"
    big.write_bytes(os.urandom(3 * 1024 * 1024) + bytes(range(256)) * 100 + b"no newline at end")
    with open(big, "rb") as stdin:
        proc = client("127.0.0.1", server.port, stdin=stdin)
        out, err = proc.communicate(timeout=DEADLINE * 3)
    assert proc.returncode == 0, err
    assert out == big.read_bytes()


def test_typed_lines_are_echoed_in_order(start_server):
    """What a user types comes back line by line, in order, and the client exits 0 at end of input."""
    server = start_server()
    proc = client("127.0.0.1", server.port, stdin=subprocess.PIPE)
    out, err = proc.communicate(b"hello, world\ngood bye\n", timeout=DEADLINE)
    assert (proc.returncode, out, err) == (0, b"hello, world\ngood bye\n", b"")


def test_a_server_that_dies_while_the_user_is_typing_is_noticed_at_once(start_server):
    """UNP's "server terminated prematurely" comes at once, not after the user's next line."""
    server = start_server()
    proc = client("127.0.0.1", server.port, stdin=subprocess.PIPE)
    try:
        proc.stdin.write(b"first line\n")
        proc.stdin.flush()
        assert readline_within(proc.stdout) == b"first line\n"   # connected and echoing
        server.proc.send_signal(signal.SIGKILL)               # the server we started, by pid
        assert proc.wait(timeout=DEADLINE) == 1               # stdin is still open
        assert b"server terminated prematurely" in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()


def test_plain_client_echoes_line_by_line(start_server):
    """--plain (UNP 5.5's str_cli) echoes each typed line and exits 0 at end of input."""
    server = start_server()
    proc = client("--plain", "127.0.0.1", server.port, stdin=subprocess.PIPE)
    out, err = proc.communicate(b"hello, world\ngood bye\n", timeout=DEADLINE)
    assert (proc.returncode, out, err) == (0, b"hello, world\ngood bye\n", b"")


def test_plain_client_returns_a_long_line_and_a_last_line_without_newline_whole(start_server):
    """--plain reads back as many bytes as it sent: a 200,000-byte line, and a last line with
    no newline, come back whole and the client ends (it neither cuts nor hangs)."""
    server = start_server()
    data = b"y" * 200_000 + b"\nno newline at end"
    proc = client("--plain", "127.0.0.1", server.port, stdin=subprocess.PIPE)
    out, err = proc.communicate(data, timeout=DEADLINE)
    assert (proc.returncode, out, err) == (0, data, b"")


def test_plain_client_notices_a_dead_server_only_at_its_next_line(start_server):
    """--plain blocks reading input, so a server killed meanwhile is reported only when the
    next line gets no echo: 'str_cli: server terminated prematurely' (UNP 5.12)."""
    server = start_server()
    proc = client("--plain", "127.0.0.1", server.port, stdin=subprocess.PIPE)
    try:
        proc.stdin.write(b"first line\n")
        proc.stdin.flush()
        assert readline_within(proc.stdout) == b"first line\n"
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=DEADLINE)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)          # it has noticed nothing: still reading stdin
        proc.stdin.write(b"another line\n")
        proc.stdin.flush()
        assert proc.wait(timeout=DEADLINE) == 1
        err = proc.stderr.read()
        assert b"server terminated prematurely" in err or b"reset" in err
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()


def test_connection_refused_is_one_line():
    """No server on the port: one line saying so, exit status 1, no traceback."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]      # free once closed
    proc = client("127.0.0.1", port, stdin=subprocess.DEVNULL)
    out, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 1
    assert err.count(b"\n") == 1 and b"connection refused by 127.0.0.1 port" in err


def test_an_unknown_host_is_one_line(monkeypatch, capsys):
    """A misspelt host name is reported in one line (the lookup is faked: nothing leaves loopback)."""
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(SystemExit) as exit_info:
        cli.run(echo.main, ["nosuchhost", "9877"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "error: unknown host 'nosuchhost': Name or service not known" in err


def test_a_bad_port_is_a_usage_error():
    """A port that is not a number is refused before connecting, exit status 2."""
    proc = client("127.0.0.1", "http", stdin=subprocess.DEVNULL)
    out, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 2 and b"invalid port 'http'" in err and err.count(b"\n") == 1
