"""The worksheet's suggested changes and error paths.

Goodbye, echo, forced errors, and messages split and merged.

Three experiments on the "Concurrent Servers" worksheet's Hello server:

* E11 E12: its two alterations, ``--goodbye`` and ``--echo`` of
  ``servers.hello``, in both models, byte for byte.
* E14: its error traps, forced one by one (a reset while the child waits in
  ``recv``, a reset under a reply, a client that leaves without ``quit``, a
  line too long), in the worksheet's own server (``texts_worksheet``, whose
  parent prints each child's exit code) and in selectlab's.
* X22: TCP keeps no message boundaries: a message split over several
  ``recv``s gets several replies, which the worksheet's client, reading once
  per message, takes merged or late; two sends that arrive before the server
  reads are one ``recv``, one message, one reply.

How the timing is taken out of it: the scenario never sleeps.  It waits for
what the kernel shows (bytes queued on a socket, a socket gone from
/proc/net/tcp, a process stopped), and where the text's point is "before
the server reads", it holds the server with SIGSTOP until the bytes are
there, then lets it go with SIGCONT.
"""

import fcntl
import re
import signal
import socket
import struct
import termios

from bench.scenarios import observe
from bench.scenarios.harness import ScenarioError, recv_to_eof, recv_until, reset, scenario

WORKSHEET = "\"Concurrent Servers\" worksheet"
HELLO = b"Hello, World!\n"
GOODBYE = b"Goodbye, 127.0.0.1\n"
# The worksheet's msgclient: char buf[ MAXDATASIZE] with MAXDATASIZE 100,
# recv( ..., MAXDATASIZE - 1, 0).
CLIENT_RECV = 99
SIGPIPE = int(signal.SIGPIPE)


# --- helpers of this module's own ---------------------------------------------

def _unread(sock):
    """Bytes waiting in ``sock``'s receive queue (``ioctl(FIONREAD)``, the kernel's SIOCINQ)."""
    return struct.unpack("i", fcntl.ioctl(sock, termios.FIONREAD, b"\0\0\0\0"))[0]


def _wait_unread(r, sock, n, what):
    """Until at least ``n`` bytes wait in ``sock``; ScenarioError if they do not come."""
    if not r.until(lambda: _unread(sock) >= n, timeout=3):
        raise ScenarioError(f"{what}: {_unread(sock)} bytes queued, not {n}")


def _unacked(sock):
    """Bytes ``sock`` has sent that the peer's TCP has not acknowledged (``ioctl(SIOCOUTQ)``)."""
    return struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0\0\0\0"))[0]


def _wait_acked(r, sock, what):
    """Until the peer's TCP has acknowledged all ``sock`` sent: then it waits in the peer's queue.
    """
    if not r.until(lambda: _unacked(sock) == 0, timeout=3):
        raise ScenarioError(f"{what}: {_unacked(sock)} bytes never acknowledged")


def _server_side(r, server, sock_name):
    """The server's socket of the connection whose client end is ``sock_name``, or None."""
    rows = [x for x in r.tcp_sockets(server.port)
            if x.local[1] == server.port and x.remote == sock_name]
    return rows[0] if rows else None


def _count(proc, pattern):
    regex = re.compile(pattern)
    return sum(1 for line in proc.output() if regex.search(line))


def _wait_count(r, proc, pattern, n, what):
    """Until ``n`` of ``proc``'s lines match ``pattern``; the matching lines."""
    if not r.until(lambda: _count(proc, pattern) >= n, timeout=4):
        raise ScenarioError(f"{proc.label} did not print {what} ({n} lines matching {pattern!r})")
    proc.flush()
    return [line for line in proc.output() if re.search(pattern, line)]


def _lines_after(proc, start):
    """``proc``'s lines from the ``start``-th on (a mark taken with ``len(proc.output())``)."""
    return proc.output()[start:]


def _new_sleeping_child(r, server, known):
    """The server's child that is not in ``known``, once it is there and asleep (in recv)."""
    def found():
        for pid in observe.children_of(server.pid):
            p = observe.process(pid)
            if pid not in known and p is not None and p.stat == "S":
                return p
        return None
    child = r.until(found, timeout=3)
    if child is None:
        raise ScenarioError(f"{server.label} forked no child for the client")
    r.remember_children(server)
    return child


# --- E11 E12: Goodbye, clientaddr; echo ----------------------------------------

def _line_reply(r, sock, data):
    """Send ``data`` (one line), read one line back; both shown."""
    sock.sendall(data)
    reply = recv_until(sock, lambda d: d.endswith(b"\n"))
    r.say(f"[client] sent {data!r}, read {reply!r}")
    return reply


def _quit(r, sock):
    """Send ``quit``, read to the server's EOF; ``(bytes, how it ended)``."""
    sock.sendall(b"quit\n")
    rest, how = recv_to_eof(sock)
    r.say(f"[client] sent b'quit\\n', read {rest!r}, then {how}")
    return rest, how


@scenario("E11 E12", "goodbye-and-echo", "The worksheet's changes: 'Goodbye, clientaddr' on "
          "quit, and echo instead of 'Hello, World!'", f"{WORKSHEET}, some alterations to try",
          """\
"Modify the server so that the child process responds with 'Goodbye, clientaddr' when the
client 'quits'. Further modify it so that it echoes the message it was sent rather than
'Hello, World!'."
clientaddr is the server's clientAddr, "holds ascii dotted quad address": what inet_ntoa gives,
so a client on loopback reads 'Goodbye, 127.0.0.1'. servers.hello --goodbye is the first
change, --goodbye --echo both ("further"); --model fork (the worksheet's) and --model select
send the same bytes.
""")
def goodbye_and_echo(r):
    seen = {}
    for model in ("fork", "select"):
        r.heading(f"--model {model} --goodbye: the first change")
        server = r.server("servers.hello", "--model", model, "-v", "--goodbye",
                          label=f"hello {model}")
        with r.connect(server.address) as sock:
            hello = _line_reply(r, sock, b"hello\n")
            if model == "fork":
                r.until(lambda: observe.children_of(server.pid), timeout=3)
                r.remember_children(server)
                r.netstat(server.port, "a client connected to the fork server")
                r.ps([server], "the parent, and the child that will say Goodbye")
            bye, how = _quit(r, sock)
        server.wait_for(r"closed \(quit\)", what="'closed (quit)'")
        r.expect(hello == HELLO and bye == GOODBYE and how == "EOF",
                 f"--model {model} --goodbye: 'hello' is answered {hello!r}, 'quit' "
                 f"{bye!r} (the dotted quad of the client), then the server closes ({how})")
        r.expect(server.has(r"Message received: quit$"),
                 f"--model {model}: the server logs 'Message received: quit' before it says "
                 f"Goodbye")

        r.heading(f"--model {model} --goodbye --echo: both changes")
        server = r.server("servers.hello", "--model", model, "-v", "--goodbye", "--echo",
                          label=f"hello {model} echo")
        with r.connect(server.address) as sock:
            echoed = [_line_reply(r, sock, m) for m in (b"hello\n", b"How are you\n")]
            bye_echo, how_echo = _quit(r, sock)
        server.wait_for(r"closed \(quit\)", what="'closed (quit)'")
        r.expect(echoed == [b"hello\n", b"How are you\n"],
                 f"--model {model} --echo: each message comes back as it was sent, no "
                 f"'Hello, World!' ({echoed!r})")
        r.expect(bye_echo == GOODBYE and how_echo == "EOF",
                 f"--model {model} --echo --goodbye: 'quit' is not echoed but answered "
                 f"{bye_echo!r}, then EOF")
        seen[model] = (hello, bye, how, echoed, bye_echo, how_echo)
    r.expect(seen["fork"] == seen["select"],
             "the fork model and the select model send the very same bytes")


# --- E14: the error traps, forced ------------------------------------------------

# The worksheet's server's lines (texts_worksheet): the parent's, then the child's perror.
_ENDED = r"Server: child \d+ (exit status \d+|killed by signal \d+)"
_TERMINATED = r"child \d+ terminated \("


def _hold_and_reset(r, server, message, snapshot=False):
    """Fault: ``message`` sent, then the connection reset, all before the server accepts it.

    The server, held meanwhile, accepts a connection that is already gone;
    its child reads ``message`` (the kernel kept it) and its reply is the
    first write to a reset connection.
    """
    with r.held(server):
        sock = r.connect(server.address)
        name = sock.getsockname()
        sock.sendall(message)
        _wait_acked(r, sock, "the message")
        r.say(f"[client] sent {message!r} to the held server; its TCP has acknowledged it")
        if snapshot:
            r.netstat(server.port, f"held: the connection waits to be accepted, with "
                                   f"{len(message)} bytes unread")
        reset(sock)
        r.say("[client] close() with SO_LINGER {on, 0}: RST")
        if not r.until(lambda: _server_side(r, server, name) is None, timeout=3):
            raise ScenarioError("the reset did not close the server's socket")
        r.say("[client] the server's socket is gone from /proc/net/tcp: the reset is in")


def _leave_without_quit(r, server, message):
    """Fault: send ``message``, read its answer, close (FIN) without ``quit``."""
    with r.connect(server.address) as sock:
        sock.sendall(message)
        reply = recv_until(sock, lambda d: d.endswith(b"\n"))
        r.say(f"[client] sent {message!r}, read {reply!r}, then close() (FIN), no quit")
    return reply


def _one_normal_client(r, server, hello, quit):
    """The next client after the faults: served as if nothing had happened."""
    with r.connect(server.address) as sock:
        sock.sendall(hello)
        reply = recv_until(sock, lambda d: d.endswith(b"\n"))
        sock.sendall(quit)
        rest, how = recv_to_eof(sock)
        r.say(f"[next client] sent {hello!r}, read {reply!r}; sent {quit!r}, read {rest!r}, "
              f"then {how}")
    return reply, how


def _reset_in_recv(r, server, known):
    """Fault: connect, wait until the child sleeps in recv, then reset."""
    sock = r.connect(server.address)
    child = _new_sleeping_child(r, server, known)
    known.add(child.pid)
    r.ps([server], "connected: the child sleeps in recv")
    reset(sock)
    r.say("[client] close() with SO_LINGER {on, 0}: RST while the child waits in recv")
    return child


@scenario("E14", "forcing-error-messages", "The worksheet's error trapping, forced: recv and "
          "send errors, exit codes, and the next client", f"{WORKSHEET}, some alterations to "
          "try, and catching signals", """\
"Try any modifications that you can think of to attempt to force error messages to check that
error trapping works."
"Hence the use of exit(1) for a child error and exit(0) for a normal end of the child. The
parent needs to catch the signal and examine the exit code to determine if any action needs to
be taken."
The worksheet's child: perror("Server recv") or perror("Server send"), then exit(1); its parent
(here printing each exit code, as that passage asks) goes on. A client that resets ends its
child with "Server recv: Connection reset by peer" and exit status 1, and so does a reset under
a reply, in send. Each error costs that one client; the next one is served.
""")
def forcing_error_messages(r):
    r.heading("the worksheet's serverFork.c, its parent printing each child's exit code")
    ws = r.server("bench.scenarios.texts_worksheet", "serverfork", "--status", "0",
                  label="serverFork", loopback=False)
    known = set()

    r.heading("fault 1: the client resets while the child waits in recv")
    child = _reset_in_recv(r, ws, known)
    ended = _wait_count(r, ws, _ENDED, 1, "how the child ended")
    r.expect(ws.has(r"^Server recv: Connection reset by peer$")
             and ended[-1] == f"Server: child {child.pid} exit status 1",
             f"a reset while the child waits in recv: 'Server recv: Connection reset by peer', "
             f"and the parent reads exit status 1 ({ended[-1]!r})")

    r.heading("fault 2: a message, then a reset, before the server has even accepted")
    mark = len(ws.output())
    _hold_and_reset(r, ws, b"hello", snapshot=True)
    ended = _wait_count(r, ws, _ENDED, 2, "how the child ended")
    after = _lines_after(ws, mark)
    r.expect("Message received: hello" in after
             and "Server send: Connection reset by peer" in after
             and ended[-1].endswith("exit status 1"),
             f"the child reads the message the kernel kept, and its reply is the error: 'Server "
             f"send: Connection reset by peer', exit status 1 ({ended[-1]!r})")

    r.heading("fault 3: a client that leaves without quit")
    mark = len(ws.output())
    _leave_without_quit(r, ws, b"hello")
    ended = _wait_count(r, ws, _ENDED, 3, "how the child ended")
    after = _lines_after(ws, mark)
    empty = after.count("Message received: ")
    r.say(f"Linux: recv() returns 0 at the client's FIN, which the worksheet's loop takes for a "
          f"message, \"\", answered; the client's TCP answers that reply with RST, and the "
          f"next send() into the reset connection raises SIGPIPE ({SIGPIPE}), whose default "
          f"action ends the child before send() returns: perror(\"Server send\") never runs")
    r.expect(empty >= 1 and not any(line.startswith("Server send") for line in after)
             and ended[-1].endswith(f"killed by signal {SIGPIPE}"),
             f"leaving without quit: {empty} empty message(s) answered, then the child is "
             f"killed by SIGPIPE with no error message: this error the trap does not catch "
             f"({ended[-1]!r})")

    r.heading("the next client")
    reply, how = _one_normal_client(r, ws, b"hello", b"quit")
    ended = _wait_count(r, ws, _ENDED, 4, "how the child ended")
    r.expect(reply == HELLO and how == "EOF" and ended[-1].endswith("exit status 0")
             and ws.alive() and _count(ws, r"^Server: got connection from 127\.0\.0\.1$") == 4,
             "each error cost its one client only: the server accepted all four, and serves "
             "the next one ('Hello, World!', then 'quit' ends it with exit status 0)")

    r.heading("selectlab's servers.hello --model fork, the same faults")
    hello = r.server("servers.hello", "--model", "fork", "-v", label="hello fork")
    known = set()
    r.heading("fault 1: reset while the child waits in recv")
    child = _reset_in_recv(r, hello, known)
    lines = _wait_count(r, hello, _TERMINATED, 1, "'child N terminated'")
    r.expect(hello.has(rf"\[{child.pid}\] .* closed \(ECONNRESET ") and
             lines[-1].endswith(f"child {child.pid} terminated (exit 0)"),
             "selectlab's child logs the reset as the reason its client's connection closed "
             "(ECONNRESET) and exits 0: a client's fault is not the child's error")
    r.heading("fault 2: a message, then a reset, before the server accepts")
    _hold_and_reset(r, hello, b"hello\n")
    lines = _wait_count(r, hello, _TERMINATED, 2, "'child N terminated'")
    r.expect(hello.has(r"closed \(ECONNRESET .*\): in 6 B, out 0 B") and
             lines[-1].endswith("(exit 0)"),
             "the reply to the message fails (out 0 B) and the child logs ECONNRESET, exit 0")
    r.heading("fault 3: leaving without quit")
    _leave_without_quit(r, hello, b"hello\n")
    lines = _wait_count(r, hello, _TERMINATED, 3, "'child N terminated'")
    r.expect(hello.has(r"closed \(peer eof\)") and lines[-1].endswith("(exit 0)"),
             "recv() returning 0 is the client's EOF, the end of its session ('peer eof'): "
             "no empty message, no write into a closed connection, exit 0")
    reply, how = _one_normal_client(r, hello, b"hello\n", b"quit\n")
    _wait_count(r, hello, _TERMINATED, 4, "'child N terminated'")
    r.expect(reply == HELLO and how == "EOF" and hello.alive(),
             "the next client is served")

    r.heading("--model select: a line over 4096 bytes in all")
    r.say("(MAXDATASIZE 4098: the whole line is one piece, refused before any piece is "
          "answered; at the default 200 its first 199-byte pieces are answered first)")
    sel = r.server("servers.hello", "--model", "select", "-v", "--maxdatasize", "4098",
                   label="hello select")
    with r.connect(sel.address) as sock:
        sock.sendall(b"x" * 4097 + b"\n")
        data, how = recv_to_eof(sock)
        r.say(f"[client] sent 4097 bytes and a newline, read {data!r}, then {how}")
    sel.wait_for(r"closed \(line too long\)", what="'closed (line too long)'")
    r.expect(data == b"error: line longer than 4096 bytes; closing\n" and how == "EOF",
             "a line too long gets the error line, and the connection ends")
    reply, how = _one_normal_client(r, sel, b"hello\n", b"quit\n")
    r.ps([sel], "after the refused line: one process, serving on")
    r.expect(reply == HELLO and how == "EOF" and sel.alive(), "the next client is served")


# --- X22: messages split and merged ----------------------------------------------

WORD = b"Supercalifragilisticexpialidocious"       # 34 bytes: two recv()s of 19 and 15
LONG_WORD = WORD * 4            # 136 bytes: eight recv()s, 112 bytes of replies


def _pieces(n, size=19):
    return [size] * (n // size) + ([n % size] if n % size else [])


def _msgclient_step(r, sock, msg, replies):
    """One turn of the worksheet's msgclient loop, with the client slower than the server.

    ``send( sockfd, msg, strlen( msg), 0)`` (no newline), then, once the
    server's ``replies`` answers to it are all queued here, the one
    ``recv( sockfd, buf, 99, 0)`` and ``printf( "Received: %s\\n", buf)``.
    """
    before = _unread(sock)          # what the last recv left
    sock.sendall(msg)
    r.say(f"[msgclient] send(sockfd, {_short(msg)}, {len(msg)}, 0) = {len(msg)}")
    _wait_unread(r, sock, before + replies * len(HELLO), f"replies to {_short(msg)}")
    queued = _unread(sock)
    buf = sock.recv(CLIENT_RECV)
    r.say(f"[msgclient] {queued} bytes queued; recv(sockfd, buf, {CLIENT_RECV}, 0) = {len(buf)}")
    r.say(f"[msgclient] printf: Received: {buf.decode()!r}")
    return buf


def _short(data):
    return repr(data) if len(data) <= 40 else f"{data[:34]!r}...({len(data)} bytes)"


def _replies_received(proc):
    """What a msgclient printed after each ``Received: ``: the replies it read."""
    return [line.split("Received: ", 1)[1] for line in proc.output() if "Received: " in line]


@scenario("X22", "messages-split-and-merged", "Messages split and merged: one recv is not one "
          "message (MAXDATASIZE 20, scanf(\"%s\"), two quick sends)",
          f"{WORKSHEET}, running the server and some alterations to try", """\
"Change the MAXDATASIZE in the server to just 20 and send messages longer than 20 characters.
What happens?"
"Try entering the message 'How are you' in the telnet session. What happens at the server end?
How does this affect the client end?"
TCP keeps no message boundaries. The server answers each recv( connfd, msg, MAXDATASIZE -1, 0),
so a long message gets one reply per 19-byte piece; the msgclient sends a word and reads once
(recv of 99 bytes), so it takes several replies merged in one recv, or the tail of one reply as
the answer to its next word. Two sends that arrive before the server reads are one recv: one
"Message received", one reply.
""")
def messages_split_and_merged(r):
    r.heading("the worksheet's server, MAXDATASIZE 20; the worksheet's msgclient's calls")
    ws = r.server("bench.scenarios.texts_worksheet", "serverfork", "--maxdatasize", "20", "0",
                  label="serverFork", loopback=False)
    r.say("(each recv below is made once the server's answers are all in: the client slower "
          "than the server, which takes the timing out of it)")
    with r.connect(ws.address) as sock:
        bufs = [_msgclient_step(r, sock, WORD, 2)]
        r.netstat(ws.port, "the msgclient connected to the worksheet's server")
        r.remember_children(ws)
        r.ps([ws], "the worksheet's parent, and its child for the msgclient")
        bufs.append(_msgclient_step(r, sock, LONG_WORD, 8))
        bufs.append(_msgclient_step(r, sock, b"hi", 1))
        bufs.append(_msgclient_step(r, sock, b"quit", 1))
    pieces = [len(line) - len("Message received: ")
              for line in _wait_count(r, ws, r"^Message received: ", 12, "12 messages")]
    r.say(f"the server's recv()s took {pieces} bytes, and each got its 14-byte reply")
    r.expect(pieces == _pieces(len(WORD)) + _pieces(len(LONG_WORD)) + [2, 4],
             f"the server's recv()s split the {len(WORD)}- and {len(LONG_WORD)}-byte words into "
             f"pieces of at most 19 bytes, one message each: {pieces}")
    r.expect(bufs[0] == HELLO * 2,
             f"the {len(WORD)}-byte word's two replies come merged in one recv: {bufs[0]!r}")
    r.expect(len(bufs[1]) == CLIENT_RECV and bufs[1] == (HELLO * 8)[:CLIENT_RECV],
             f"the {len(LONG_WORD)}-byte word's eight replies (112 bytes) do not fit the "
             f"client's recv of {CLIENT_RECV}: it takes 7 and 'H'")
    r.expect(bufs[2] == HELLO[1:] + HELLO,
             f"so the answer the client prints for 'hi' starts with the rest of an old reply: "
             f"{bufs[2]!r}")

    r.heading("selectlab's msgclient --words against servers.hello --maxdatasize 20 --echo")
    hello = r.server("servers.hello", "--model", "select", "--maxdatasize", "20", "--echo",
                     "--goodbye", label="hello")
    client = r.client("clients.msgclient", "--words", "127.0.0.1", hello.port,
                      label="msgclient")
    words = [WORD.decode(), "How", "are", "you"]
    client.send(" ".join(words) + "\n")
    r.until(lambda: len(_replies_received(client)) >= 4, timeout=3)
    client.flush()
    client.send("quit\n")
    status = client.wait()
    client.flush()
    got = _replies_received(client)
    sent = words + ["quit"]
    for i, word in enumerate(sent):
        printed = got[i:] if word == "quit" else got[i:i + 1]     # after quit, to the EOF
        r.say(f"sent {word!r:38} printed {', '.join(map(repr, printed))}")
    want = [WORD[:19].decode(), WORD[19:].decode(), "How", "are", "you", "Goodbye, 127.0.0.1"]
    r.expect(status == 0 and got == want,
             f"one reply per 19-byte piece, one line read per word: from the long word on, "
             f"each word is answered with the echo of the one before ({got!r})")

    r.heading("two quick sends before the server reads: the worksheet's server (the same one)")
    # Its SIGCHLD handler waits for every child: let the msgclient's child end first.
    if not r.until(lambda: not observe.children_of(ws.pid), timeout=3):
        raise ScenarioError("the msgclient's child did not end")
    received, data = _two_sends(r, ws, [b"How", b"are"], b"quit")
    r.expect(received == ["Howare"] and data == HELLO * 2,
             f"two sends, 'How' and 'are', queued before the server reads: one recv, one "
             f"'Message received: Howare', one reply; with the one to 'quit', {data!r}")
    r.heading("two quick sends before the server reads: servers.hello --model select")
    plain = r.server("servers.hello", "--model", "select", label="hello select")
    received, data = _two_sends(r, plain, [b"How\n", b"are\n"], b"quit\n")
    r.expect(received == ["How", "are"] and data == HELLO * 2,
             f"selectlab's messages are lines: the same two sends, read together, are two "
             f"messages and two replies (and 'quit' none), {data!r}")


def _two_sends(r, server, sends, quit):
    """Send ``sends`` to the held ``server``, then let it read them together, then ``quit``.

    Returns the messages it logged before ``quit``, and every byte it sent until its EOF.
    """
    mark = len(server.output())
    quits = _count(server, r"Message received: quit$")
    total = sum(map(len, sends))
    with r.held(server):
        sock = r.connect(server.address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)    # each send a segment
        name = sock.getsockname()
        for data in sends:
            sock.sendall(data)
            r.say(f"[client] send({data!r})")
        _wait_acked(r, sock, "the two sends")
        rows = r.netstat(server.port, f"server held: {total} bytes from two sends wait unread")
        if [x.recv_q for x in rows if x.local[1] == server.port and x.remote == name] != [total]:
            raise ScenarioError(f"the server's socket does not hold the {total} bytes")
        r.ps([server], "the server held (STAT T)")
    with sock:
        _wait_unread(r, sock, len(HELLO), "the first reply")
        r.say(f"[client] {_unread(sock)} bytes queued after the server's read")
        sock.sendall(quit)
        data, how = recv_to_eof(sock)
        r.say(f"[client] sent {quit!r}; everything the server sent: {data!r}, then {how}")
    _wait_count(r, server, r"Message received: quit$", quits + 1, "'Message received: quit'")
    received = [line.split("Message received: ", 1)[1] for line in _lines_after(server, mark)
                if "Message received: " in line]
    return received[:-1], data
