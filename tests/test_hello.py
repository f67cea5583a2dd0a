"""The worksheet's Hello server: the session without sockets (tier 1), then both models
over loopback (tier 4)."""

import socket
import subprocess
import sys

import pytest

from conftest import DEADLINE, ROOT, recv_all, reset
from reactor.states import IllegalTransition
from wire.hello import GREETING, SESSION, HelloEvent, HelloSession

HELLO = GREETING


# --- the session, bytes in, bytes out -----------------------------------------

def test_every_message_gets_hello_until_quit():
    """The worksheet's session: a greeting per message; quit ends it, with nothing more sent."""
    s = HelloSession("127.0.0.1")
    assert s.feed(b"hello\n") == (HELLO, [b"hello"])
    assert s.feed(b"How are you\r\n") == (HELLO, [b"How are you"])
    assert s.feed(b"quit\r\n") == (b"", [b"quit"])
    assert s.done and s.end_reason == "quit"
    assert s.feed(b"more\n") == (b"", [])


def test_messages_are_lines_however_the_bytes_arrive():
    """Two lines in one recv get two greetings; a line split over recvs gets one."""
    s = HelloSession("h")
    assert s.feed(b"a\nb\n") == (HELLO * 2, [b"a", b"b"])
    assert s.feed(b"hel") == (b"", [])
    assert s.feed(b"lo\n") == (HELLO, [b"hello"])


def test_goodbye_names_the_client_and_echo_returns_the_message():
    """--goodbye answers quit with 'Goodbye, ADDR'; --echo answers each message with itself."""
    s = HelloSession("10.0.0.7", goodbye=True, echo=True)
    assert s.feed(b"ping\r\nquit\n") == (b"ping\nGoodbye, 10.0.0.7\n", [b"ping", b"quit"])


def test_maxdatasize_20_answers_a_long_message_once_per_piece():
    """The worksheet's exercise: with MAXDATASIZE 20 a 45-byte message is taken 19 bytes at a
    time, and each piece gets its own greeting; a quit split across pieces is missed."""
    s = HelloSession("h", maxdatasize=20)
    message = b"x" * 45
    reply, messages = s.feed(message + b"\n")
    assert messages == [b"x" * 19, b"x" * 19, b"x" * 7]
    assert reply == HELLO * 3
    s = HelloSession("h", maxdatasize=3)
    assert s.feed(b"quit\n") == (HELLO * 2, [b"qu", b"it"])
    assert not s.done


def test_an_endless_line_is_refused_and_ends_the_session():
    """A line longer than max_line in all gets one error line, and the session is over."""
    s = HelloSession("h", maxdatasize=200, max_line=1000)
    reply, messages = s.feed(b"y" * 1500)
    assert reply.startswith(HELLO) and reply.endswith(b"error: line longer than 1000 bytes; "
                                                      b"closing\n")
    assert s.done and s.end_reason == "line too long"


def test_a_last_line_without_newline_is_answered_at_eof():
    """`printf hello | nc`: the unterminated last message still gets its greeting."""
    s = HelloSession("h")
    assert s.feed(b"hello") == (b"", [])
    assert s.feed_eof() == (HELLO, [b"hello"])
    assert s.done and s.end_reason == "peer eof"


def test_every_row_of_the_session_table_is_reachable_and_others_raise():
    """Each transition happens for its reason; an event after DONE is a bug that names itself."""
    seen = set()
    for script in ([b"a\n", b"quit\n"], [b"z" * 5000], [b"a\n", None]):
        s = HelloSession("h", max_line=4096)
        assert s.state is SESSION.initial
        fire = s._fire

        def recording(event, s=s, fire=fire):
            seen.add((s.state, event))
            return fire(event)

        s._fire = recording
        for data in script:
            if data is None:
                s.eof()
            else:
                s.feed(data)
        assert s.done
    assert seen == set(SESSION.table)
    with pytest.raises(IllegalTransition, match="hello session: no transition from DONE"):
        s._fire(HelloEvent.MESSAGE)


# --- both models, on loopback -------------------------------------------------

def converse(address, lines):
    """Send each piece, then read everything the server sends until it closes."""
    with socket.create_connection(address, timeout=DEADLINE) as c:
        for line in lines:
            c.sendall(line)
        return recv_all(c)


@pytest.mark.parametrize("model", ["fork", "select"])
def test_the_worksheet_session_over_tcp(start_server, model):
    """hello -> Hello, World!; 'How are you' -> Hello, World!; quit ends the connection;
    the server logs the connection and each message."""
    server = start_server("servers.hello", "--model", model)
    out = converse(server.address, [b"hello\n", b"How are you\r\n", b"quit\r\n"])
    assert out == HELLO * 2
    server.wait_for_log("Message received: quit")    # the log comes through its own pipe
    log = server.log()
    assert "got connection from 127.0.0.1" in log
    assert "Message received: hello\n" in log
    assert "Message received: How are you\n" in log


@pytest.mark.parametrize("model", ["fork", "select"])
def test_goodbye_replies_with_the_clients_address(start_server, model):
    """--goodbye: quit is answered 'Goodbye, 127.0.0.1', then the server closes."""
    server = start_server("servers.hello", "--model", model, "--goodbye")
    assert converse(server.address, [b"hi\n", b"quit\n"]) == HELLO + b"Goodbye, 127.0.0.1\n"


def test_both_models_give_identical_transcripts(start_server):
    """The fork model and the reactor model answer the same script byte for byte, for every
    option of the worksheet."""
    script = [b"hello\n", b"a\nb\n", b"x" * 50 + b"\r\n", b"qu", b"it\n", b"after quit\n"]
    for options in ([], ["--goodbye"], ["--echo"], ["--maxdatasize", "20"], ["--echo",
                    "--maxdatasize", "8", "--goodbye"]):
        transcripts = []
        for model in ("fork", "select"):
            server = start_server("servers.hello", "--model", model, *options)
            transcripts.append(converse(server.address, script))
        assert transcripts[0] == transcripts[1], options
        assert transcripts[0], options


@pytest.mark.parametrize("model", ["fork", "select"])
def test_an_endless_line_gets_an_error_and_the_connection_ends(start_server, model):
    """A client sending one line without end is told so and disconnected (FIN, not reset),
    without the server holding the line."""
    server = start_server("servers.hello", "--model", model)
    with socket.create_connection(server.address, timeout=DEADLINE) as c:
        c.sendall(b"z" * 5000)
        out = recv_all(c)
    assert out.endswith(b"error: line longer than 4096 bytes; closing\n")
    assert out.count(HELLO) == 4096 // 199


@pytest.mark.parametrize("value", ["1", "0", "x"])
def test_bad_maxdatasize_is_a_usage_error(value):
    """--maxdatasize needs a number from 2 up (one byte of message plus the C string's NUL),
    and says so the same way for every value it refuses: `--maxdatasize 0` answered "from 1
    up", and then 1 was refused too."""
    proc = subprocess.run([sys.executable, "-m", "servers.hello", "--maxdatasize", value],
                          cwd=ROOT, capture_output=True, timeout=DEADLINE)
    assert proc.returncode == 2
    assert proc.stderr.decode() == (
        f"python -m servers.hello: error: argument --maxdatasize: invalid value {value!r}: "
        f"expected a whole number from 2 up (N-1 bytes of message per recv, and the NUL) "
        f"(see --help)\n")


@pytest.mark.parametrize("model", ["fork", "select"])
def test_a_client_that_resets_is_not_a_server_error(start_server, model):
    """A client that vanishes with a reset mid-session ends its session quietly: no error,
    no traceback, and the next client is greeted."""
    server = start_server("servers.hello", "-v", "--model", model)
    for _ in range(3):
        c = socket.create_connection(server.address, timeout=DEADLINE)
        c.sendall(b"hello\n" * 30000)     # 420 KB of greetings owed, never read
        reset(c)
    assert converse(server.address, [b"hi\n", b"quit\n"]) == HELLO
    # The three resets have been dealt with.
    server.wait_for_log(lambda log: log.count(" closed (") >= 4, "four connections closed")
    assert "Traceback" not in server.log() and "ERROR" not in server.log()


@pytest.mark.parametrize("args, named", [
    (["--proxy-protocol"], "--proxy-protocol: for --model select only"),
    (["--idle-timeout", "1"], "--idle-timeout: for --model select only"),
    (["--model", "select", "--reap", "none"], "--reap: for --model fork only"),
])
def test_an_option_of_the_other_model_is_a_usage_error(args, named):
    """An option the chosen model does not have is refused in one line, not silently ignored
    (a fork-model server behind HAProxy would otherwise take the PROXY header for a message)."""
    proc = subprocess.run([sys.executable, "-m", "servers.hello", *args, "0"], cwd=ROOT,
                          capture_output=True, timeout=DEADLINE)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and err.count("\n") == 1 and named in err, err
