"""`python -m clients.echo` against the reactor echo server, on loopback (tier 4), and its
machine row by row, in this process."""

import io
import os
import signal
import socket
import subprocess
import sys

import pytest

from conftest import DEADLINE, ROOT, readline_within, reset, tcp_pair
import cli
from clients import echo
from clients.echo import ECHO_CLIENT, EchoState


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


def str_cli_here(sock, tmp_path, data=None, half_close=True, on_enter=None):
    """Run str_cli in this process on ``data`` (from a file), or on a pipe nobody writes to.

    ``on_enter(state)`` runs after each transition.  Returns (what was printed, the
    (state, event) pairs seen, the ServerGone raised or None).
    """
    seen = set()

    def tracer(old, event, new):
        seen.add((old, event))
        if on_enter is not None:
            on_enter(new)

    if data is None:
        in_fd, writer = os.pipe()
    else:
        (tmp_path / "input").write_bytes(data)
        in_fd, writer = os.open(tmp_path / "input", os.O_RDONLY), None
    out, error = io.BytesIO(), None
    try:
        echo.str_cli(in_fd, sock, out, half_close, tracer)
    except echo.ServerGone as exc:
        error = str(exc)
    finally:
        os.close(in_fd)
        if writer is not None:
            os.close(writer)
    return out.getvalue(), seen, error


def fin(peer):
    """The server's FIN, as a server that ends sends it."""
    peer.shutdown(socket.SHUT_WR)


def when(state, act):
    """An ``on_enter`` for against_a_silent_peer: ``act(peer)`` once the client is in ``state``."""
    return lambda entered, peer: act(peer) if entered is state else None


def against_a_silent_peer(tmp_path, data, before=None, on_enter=None):
    """str_cli_here against a peer that echoes nothing, after ``before(peer)``: (seen, error)."""
    peer, ours = tcp_pair()
    try:
        if before is not None:
            before(peer)
        _out, seen, error = str_cli_here(
            ours, tmp_path, data, on_enter=on_enter and (lambda state: on_enter(state, peer)))
    finally:
        ours.close()
        peer.close()
    return seen, error


def test_every_row_of_the_clients_machine_is_reached(start_server, tmp_path, monkeypatch):
    """Each transition of the echo client happens for the reason it names: a full window waits
    for the echo, the end of input half-closes (or, with --linger-rst, ends once all is
    echoed), and a server that ends first, by FIN or reset, at any stage, is reported."""
    server = start_server()
    big = os.urandom(3 * echo.WINDOW)
    with socket.create_connection(server.address, timeout=DEADLINE) as sock:
        out, seen, error = str_cli_here(sock, tmp_path, big)
    assert (out == big, error) == (True, None)
    with socket.create_connection(server.address, timeout=DEADLINE) as sock:
        out, rows, error = str_cli_here(sock, tmp_path, b"x\nlast", half_close=False)
    assert (out, error) == (b"x\nlast", None)
    seen |= rows

    monkeypatch.setattr(echo, "WINDOW", 1024)       # what a silent peer's buffers hold at once
    premature = "server terminated prematurely"
    was_reset = "server reset the connection (Connection reset by peer)"
    for data, before, on_enter, expected in [
        (None, fin, None, premature),               # it ends while the user is still typing
        (None, reset, None, was_reset),             # ... or resets
        (b"y" * 4096, None, when(EchoState.PAUSED, reset), was_reset),   # while the window is full
        (b"abc\n", None, when(EchoState.INPUT_DONE, fin), premature),    # with echo still owed
    ]:
        rows, error = against_a_silent_peer(tmp_path, data, before, on_enter)
        assert error == expected
        seen |= rows
    assert seen == set(ECHO_CLIENT.table)


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
