"""The "Concurrent Servers" worksheet's experiments: the Hello server and its msgclient.

E13 and E3 run selectlab's ``servers.hello``.  The others run the worksheet's
own ``serverFork.c``, translated line for line (``bench.scenarios.texts_worksheet``),
beside selectlab's server where they contrast them: its running (E1 E2 E5 E6,
and the SIGCHLD handler that blocks the parent), its ``quit`` (E4 X23), its
parent killed (X17 E7 E8 E9), its handler commented out (E10), and a client
that leaves without ``quit`` (X24).

The worksheet's msgclient is shown by a socket of the scenario's own that
sends as ``msgclient.c`` does, ``send( sockfd, msg, strlen( msg), 0)``: the
word, no newline.  selectlab's ``clients.msgclient`` sends a line (the word
and ``\\n``), which the C server takes as a different message.
"""

import errno
import os
import signal
import socket
import time

from bench.process import stat
from bench.scenarios import observe
from bench.scenarios.harness import ScenarioError, recv_to_eof, recv_until, scenario
from servers.forking import describe_exit

WORKSHEET = "\"Concurrent Servers\" worksheet"
UNP = "Stevens, UNIX Network Programming, ch. 5"
CSAPP = "Bryant & O'Hallaron, CS:APP ch. 11"
HELLO = b"Hello, World!\n"
TEXTS = "bench.scenarios.texts_worksheet"


@scenario("E13", "maxdatasize-20", "The worksheet's MAXDATASIZE 20 exercise",
          f"{WORKSHEET}, suggested changes", """\
"Change the MAXDATASIZE in the server to just 20 and send messages longer than 20 characters.
What happens?"
The server's recv( connfd, msg, MAXDATASIZE -1, 0): each recv takes at most 19 bytes, and
every recv gets its own 'Hello, World!' -- a long message gets several replies.
""")
def maxdatasize(r):
    server = r.server("servers.hello", "--maxdatasize", "20")
    message = b"this message is longer than twenty bytes"
    with r.connect(server.address) as sock:
        sock.sendall(message + b"\n")
        r.say(f"[client] sent {len(message)} bytes and a newline: {message.decode()!r}")
        pieces = -(-len(message) // 19)
        data = recv_until(sock, lambda d: d.count(HELLO) >= pieces)
        r.say(f"[client] read {data!r}")
        r.netstat(server.port, "connected")
        r.ps([server], "connected: the worksheet's parent and its child for this client")
        sock.sendall(b"quit\n")
        rest, how = recv_to_eof(sock)
        r.say(f"[client] sent b'quit\\n', read {rest!r} then {how}")
    server.wait_for("Message received: quit")
    received = [line.split("Message received: ", 1)[1] for line in server.output()
                if "Message received: " in line]
    r.expect(data == HELLO * pieces,
             f"a {len(message)}-byte message gets {pieces} replies, one per 19-byte piece")
    r.expect([len(m) for m in received[:pieces]] == [19] * (pieces - 1)
             + [len(message) - 19 * (pieces - 1)],
             "the server logs the message as pieces of at most 19 bytes")
    r.expect(how == "EOF" and rest == b"", "a short 'quit' still ends the session")


@scenario("E3", "how-are-you", "The worksheet's 'How are you' exercise: telnet and msgclient",
          f"{WORKSHEET}, running the server", """\
"type 'hello', the response 'Hello, World!' should be displayed. Meanwhile the server should
display the message it received ... Try entering the message 'How are you' in the telnet
session. What happens at the server end? How does this affect the client end?"
The worksheet's msgclient reads with scanf("%s"), one word at a time: three messages.
""")
def how_are_you(r):
    server = r.server("servers.hello")
    r.heading("telnet: the whole line, CR LF included, in one send")
    with r.connect(server.address) as sock:
        sock.sendall(b"How are you\r\n")
        data = recv_until(sock, lambda d: d.count(HELLO) >= 1)
        r.say(f"[telnet] typed 'How are you', read {data!r}")
        sock.sendall(b"quit\r\n")
        recv_to_eof(sock)
    server.wait_for("Message received: How are you")
    r.expect(data == HELLO, "telnet: one message, 'How are you', and one reply")
    r.heading("msgclient --words: scanf(\"%s\")")
    client = r.client("clients.msgclient", "--words", "127.0.0.1", server.port,
                      label="msgclient")
    client.send("How are you\n")
    r.until(lambda: sum(line.count("Received: Hello, World!") for line in client.output()) >= 3,
            timeout=3)
    client.flush()
    r.netstat(server.port, "msgclient connected")
    r.ps([server, client], "msgclient connected: two servers appear to be running")
    client.send("quit\n")
    client.wait()
    client.flush()
    replies = sum(line.count("Received: Hello, World!") for line in client.output())
    r.expect(replies == 3, f"msgclient --words: three words, three messages, three replies "
                           f"(got {replies})")
    server.flush()
    words = [w for w in ("How", "are", "you") if server.has(f"Message received: {w}$")]
    r.expect(len(words) == 3, "the server logs 'How', 'are' and 'you' as three messages")


# --- the worksheet's own server: helpers ---------------------------------------

# How long a reply that must not come is waited for: the flawed server cannot
# send it (no process is there to), so a busy machine cannot make this wrong.
NO_REPLY_WAIT = 1.0

# How long the new parent of an orphaned zombie may take to reap it.  init
# reaps at once; an init that reaps late has been seen to take 1.6 s.
REAP_WAIT = 4.0

# /proc/PID/stat's field 52, exit_code (Linux 3.5+): the wait status of a zombie.
EXIT_CODE_FIELD = 52


def _serverfork(r, *args, port="0", label="serverFork"):
    """Start the worksheet's server, translated (``args`` before the port, 0 unless given)."""
    return r.server(TEXTS, "serverfork", *args, port, label=label, loopback=False)


def _children(pid):
    """The processes whose parent is ``pid`` now, zombies included."""
    return [p for p in map(observe.process, observe.children_of(pid)) if p is not None]


# The system calls a server waiting for a client sleeps in (CPython's accept is accept4).
ACCEPTS = ("accept", "accept4")


def _asleep_in(pid):
    """The system call ``pid`` sleeps in (STAT S), or None (running, stopped, gone)."""
    p = observe.process(pid)
    return observe.syscall(pid) if p is not None and p.stat == "S" else None


def _wchan(pid):
    p = observe.process(pid)
    return p.wchan if p else None


def _connect(r, server, label):
    sock = r.connect(server.address)
    r.say(f"[{label}] connect() to port {server.port}: connected from port "
          f"{sock.getsockname()[1]}")
    return sock


def _says_quit(r, sock, label):
    """``label`` sends the bare word ``quit``, as msgclient.c does, reads to the end and closes.

    Returns ``(what it read, how the connection ended)``.
    """
    sock.sendall(b"quit")
    rest, how = recv_to_eof(sock)
    sock.close()
    r.say(f"[{label}] sent b'quit', read {rest!r}, then {how}")
    return rest, how


def _hello_reply(r, sock, label, data):
    """One ``send`` of ``data``, then read until one 'Hello, World!' has come; both shown."""
    sock.sendall(data)
    reply = recv_until(sock, lambda d: HELLO in d)
    r.say(f"[{label}] sent {data!r}, read {reply!r}")
    return reply


def _quiet(sock, seconds):
    """What ``sock`` reads within ``seconds``: b"" if nothing came (for a reply that must not)."""
    sock.settimeout(seconds)
    try:
        return sock.recv(4096) or b"(EOF)"
    except TimeoutError:
        return b""
    finally:
        sock.settimeout(3)


def _new_live_child(r, server, known, what):
    """The server's live child that is not in ``known``, once it is there."""
    def found():
        return next((p for p in _children(server.pid) if p.pid not in known and not p.zombie),
                    None)
    child = r.until(found, timeout=3)
    if child is None:
        raise ScenarioError(f"{server.label} forked no child for {what}")
    r.remember_children(server)
    return child


def _gone(pid):
    """Whether ``pid`` has gone from the process table (reaped)."""
    return observe.process(pid) is None


def _wait_gone(r, pid, what):
    """Wait until the server's child ``pid`` has ended and been reaped."""
    if not r.until(lambda: _gone(pid), timeout=3):
        raise ScenarioError(f"{what} (pid {pid}) did not end within 3 s")


def _ancestors(pid):
    """``pid``'s parent, grandparent, ... up to PID 1."""
    found = []
    while (s := stat(pid)) is not None and s.ppid > 0:
        found.append(s.ppid)
        pid = s.ppid
    return found


def _who(pid):
    """``PID (name)``, from /proc/PID/comm."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f"{pid} ({f.read().strip()})"
    except OSError:
        return str(pid)


def _adopter(ppid):
    """What the new parent of an orphan is: init, or a child subreaper above the scenario."""
    if ppid == 1:
        return "PID 1, the init process of this machine"
    if ppid in (os.getpid(), *_ancestors(os.getpid())):
        return "a child subreaper (PR_SET_CHILD_SUBREAPER) above the killed server"
    return None


def _wait_status(pid):
    """The wait status of zombie ``pid`` (/proc/PID/stat field 52, exit_code), or None."""
    s = stat(pid)
    return s.exit_code if s else None


def _messages_logged(server):
    """The messages the worksheet's server logged, as printed (a CR kept)."""
    return [line.split("Message received: ", 1)[1] for line in server.output()
            if line.startswith("Message received: ")]


# --- E1 E2 E5 E6: running it, telnet, three clients, one quits -----------------

@scenario("E1 E2 E5 E6", "serverfork-clients", "The worksheet's fork()ing server: ps, telnet's "
          "hello, three clients, one quits -- and the parent stops accepting",
          f"{WORKSHEET}, A fork()ing Server! and A Message Client; {UNP}, 5.10 wait and waitpid "
          f"Functions", """\
"Run the server in the background ... Check that it is running by using ps."
"In the telnet session type 'hello', the response 'Hello, World!' should be displayed.
Meanwhile the server should display the message it received, i.e. hello!"
"open two or three new windows and start a client in each one ... How many servers appear to
be running? Use each client to send some messages. Terminate one of the clients (quit)
determine how many servers are now running."
serverFork.c's SIGCHLD handler: "while( wait( NULL) > 0); /* wait for any child to finish */"
UNP 5.10: "We cannot call wait in a loop, because there is no way to prevent wait from
blocking if there are running children that have not yet terminated."
So once one client quits, the parent waits in its handler, accepting nobody, until every other
child has ended; selectlab's servers.hello (waitpid with WNOHANG) goes on.
""", limit=30.0)
def serverfork_clients(r):
    server = _serverfork(r)
    # It prints its listening line just before it calls accept.
    r.until(lambda: _asleep_in(server.pid) in ACCEPTS, timeout=3)
    rows = r.ps([server], "serverFork & -- is it running?")
    call = _asleep_in(server.pid)
    r.expect(len(rows) == 1 and rows[0].stat == "S" and call in ACCEPTS,
             f"one server process, asleep (STAT S) in accept (found {len(rows)}: STAT "
             f"{rows[0].stat if rows else '-'}, WCHAN {rows[0].wchan if rows else '-'}, in "
             f"{call or 'no system call'})")

    r.heading("telnet localhost PORT; type 'hello' (telnet sends hello\\r\\n)")
    telnet = _connect(r, server, "telnet")
    reply = _hello_reply(r, telnet, "telnet", b"hello\r\n")
    server.wait_for("^Message received: hello")
    got = _messages_logged(server)
    r.say(f"the server printed {('Message received: ' + got[0] + chr(10) * 2).encode()!r}: the "
          f"CR LF telnet sent, kept, then the format's own \\n")
    r.expect(reply == HELLO, f"telnet reads 'Hello, World!' (read {reply!r})")
    r.expect(server.has("^Server: got connection from 127.0.0.1$"),
             "the server says 'Server: got connection from 127.0.0.1'")
    r.expect(got[0] == "hello\r",
             f"it prints 'Message received: hello' with the CR telnet sent still in it "
             f"(message {got[0]!r})")

    r.heading("two more clients, each sending as msgclient.c does (the word, no newline)")
    clients = {"telnet": telnet}
    known = {_new_live_child(r, server, set(), "telnet").pid}
    pids = {}
    for label in ("msgclient 1", "msgclient 2"):
        clients[label] = _connect(r, server, label)
        _hello_reply(r, clients[label], label, b"hi")
        pids[label] = _new_live_child(r, server, known, label).pid
        known.add(pids[label])
    r.netstat(server.port, "three clients connected")
    rows = r.ps([server], "three clients: how many servers appear to be running?")
    children = [p for p in rows if p.ppid == server.pid]
    r.expect(len(rows) == 4 and len(children) == 3,
             f"three clients: four servers appear to be running, the parent and one child per "
             f"client (found {len(rows)}: {len(children)} children)")

    r.heading("msgclient 1 quits (sends quit, as msgclient.c does)")
    _says_quit(r, clients.pop("msgclient 1"), "msgclient 1")
    reaped = r.until(lambda: _gone(pids["msgclient 1"]), timeout=3)
    blocked = r.until(lambda: _wchan(server.pid) == "do_wait", timeout=3)
    rows = r.ps([server], "one client has quit: how many servers are running now?")
    r.expect(reaped and len(rows) == 3,
             f"after the quit: the parent and two children, the quitter's child reaped (no "
             f"zombie); {len(rows)} processes")
    r.expect(blocked, f"and the parent sleeps in wait() (WCHAN do_wait), inside its SIGCHLD "
                      f"handler, not in accept (WCHAN {_wchan(server.pid)})")

    r.heading("a new client comes while the handler waits")
    late = _connect(r, server, "msgclient 3")
    late.sendall(b"hello")
    r.say("[msgclient 3] sent b'hello'")
    silence = _quiet(late, NO_REPLY_WAIT)
    r.say(f"[msgclient 3] read {silence!r} within {NO_REPLY_WAIT:g} s")
    rows = r.netstat(server.port, "msgclient 3 connected, not accepted")
    listen = [x for x in rows if x.state == "LISTEN"]
    accepted = sum(line.startswith("Server: got connection") for line in server.output())
    r.expect(silence == b"" and accepted == 3,
             f"connect() succeeds (the kernel completes it) but nobody accepts it: no reply "
             f"within {NO_REPLY_WAIT:g} s, and still {accepted} 'got connection' lines")
    r.expect(listen and listen[0].recv_q == 1,
             f"the connection waits in the listen queue (the LISTEN line's Recv-Q is "
             f"{listen[0].recv_q if listen else '-'})")

    r.heading("msgclient 2 quits: one child (telnet's) still runs")
    _says_quit(r, clients.pop("msgclient 2"), "msgclient 2")
    r.until(lambda: _gone(pids["msgclient 2"]) and _wchan(server.pid) == "do_wait", timeout=3)
    r.ps([server], "msgclient 2 gone; telnet's child is the last")
    still = _wchan(server.pid)
    r.expect(still == "do_wait" and _quiet(late, 0.1) == b"",
             f"the parent still waits in wait() while telnet's child runs (WCHAN {still}); "
             f"msgclient 3 still has no reply")

    r.heading("telnet: ^] quit -- telnet closes; its child ends (recv 0, then SIGPIPE: see X24)")
    clients.pop("telnet").close()
    reply = recv_until(late, lambda d: HELLO in d, timeout=3)
    r.say(f"[msgclient 3] read {reply!r}")
    server.wait_for("^Message received: hello$")
    r.ps([server], "the last old child has ended: the parent is back in accept")
    r.expect(reply == HELLO and sum(line.startswith("Server: got connection")
                                    for line in server.output()) == 4,
             "only when the last other child has ended does wait() return -1, the handler "
             "return and accept take msgclient 3, whose 'hello' is answered at last")
    late.close()

    r.heading("selectlab's servers.hello (waitpid with WNOHANG), the same clients")
    ours = r.server("servers.hello", "-v", label="hello")
    socks = {}
    for label in ("telnet", "msgclient 1", "msgclient 2"):
        socks[label] = _connect(r, ours, label)
        _hello_reply(r, socks[label], label, b"hello\r\n")
    socks["msgclient 1"].sendall(b"quit\n")
    rest, how = recv_to_eof(socks.pop("msgclient 1"))
    r.say(f"[msgclient 1] sent b'quit\\n', read {rest!r}, then {how}")
    ours.wait_for(r"child \d+ terminated")
    late = _connect(r, ours, "msgclient 3")
    reply = _hello_reply(r, late, "msgclient 3", b"hello\r\n")
    r.remember_children(ours)
    rows = r.ps([ours], "one client quit, a new one answered")
    r.expect(reply == HELLO and len([p for p in rows if p.ppid == ours.pid]) == 3,
             f"servers.hello answers the new client at once, beside the two still connected "
             f"(parent WCHAN {rows[0].wchan if rows else '-'}, not do_wait)")
    for sock in (*socks.values(), late):
        sock.close()


# --- E4 X23: telnet's quit\r\n and strcmp -------------------------------------

@scenario("E4 X23", "quit-crlf", "telnet's quit never ends the worksheet's child; the word "
          "alone does; servers.hello ends on either", f"{WORKSHEET}, A fork()ing Server!", """\
"Use 'quit' to close down the spawned server, Ctrl=] to end the telnet session then quit
telnet."
serverFork.c's child loops "} while( strcmp( msg, "quit") != 0);" on what recv() gave it, and
telnet sends a line as you typed it and CR LF: quit\\r\\n is not "quit", so the child answers
and goes on. The worksheet's msgclient sends the word alone (scanf("%s"), send(strlen)), which
ends it. selectlab's servers.hello takes a message as a line, CR LF stripped.
""", limit=30.0)
def quit_crlf(r):
    server = _serverfork(r)
    telnet = _connect(r, server, "telnet")
    _hello_reply(r, telnet, "telnet", b"hello\r\n")
    child = _new_live_child(r, server, set(), "telnet")
    reply = _hello_reply(r, telnet, "telnet", b"quit\r\n")
    try:
        again = _hello_reply(r, telnet, "telnet", b"still there?\r\n")
    except OSError as exc:          # what it would be if quit\r\n had ended the child
        again = exc.strerror
    r.netstat(server.port, "telnet has typed quit")
    rows = r.ps([server], "telnet has typed quit: its child is still there")
    r.expect(reply == HELLO and "quit\r" in _messages_logged(server),
             f"telnet's quit\\r\\n is a message like any other, 'quit\\r\\n' (CR and LF kept), "
             f"answered 'Hello, World!' (read {reply!r})")
    r.expect(again == HELLO and child.pid in [p.pid for p in rows],
             f"and the child (pid {child.pid}) goes on answering (the next line read "
             f"{again!r})")
    # One client at a time from here: while one child runs, the end of another
    # keeps the parent in its handler's wait(), accepting nobody (E1).
    telnet.close()
    r.say("[telnet] ^] quit: close(); the child ends (recv 0, then SIGPIPE: see X24)")
    _wait_gone(r, child.pid, "telnet's child")

    r.heading("selectlab's msgclient types quit (it sends quit\\n, a line)")
    client = r.client("clients.msgclient", "--timeout", "2", "127.0.0.1", server.port,
                      label="msgclient")
    client.send("quit\n")
    its = _new_live_child(r, server, {child.pid}, "msgclient")
    status = client.wait(timeout=6)
    r.expect(status == 1 and client.has("Received: Hello, World!")
             and client.has("no answer from the server"),
             f"msgclient's quit\\n is not 'quit' either: answered, and the connection stays "
             f"open until msgclient gives up waiting for the server to close (exit {status})")
    _wait_gone(r, its.pid, "msgclient's child")

    r.heading("the worksheet's msgclient: send( sockfd, \"quit\", strlen( \"quit\"), 0)")
    known = {p.pid for p in _children(server.pid)}
    worksheet = _connect(r, server, "msgclient.c")
    _hello_reply(r, worksheet, "msgclient.c", b"hello")
    its = _new_live_child(r, server, known, "msgclient.c")
    rest, how = _says_quit(r, worksheet, "msgclient.c")
    ended = r.until(lambda: _gone(its.pid), timeout=3)
    r.ps([server], "msgclient.c has quit")
    r.expect(rest == HELLO and how == "EOF" and ended,
             f"the word alone ends the child (pid {its.pid}): its last 'Hello, World!', then "
             f"close, and the handler reaps it")

    r.heading("selectlab's servers.hello")
    ours = r.server("servers.hello", "-v", label="hello")
    telnet = _connect(r, ours, "telnet")
    _hello_reply(r, telnet, "telnet", b"hello\r\n")
    telnet.sendall(b"quit\r\n")
    rest, how = recv_to_eof(telnet)
    telnet.close()
    r.say(f"[telnet] sent b'quit\\r\\n', read {rest!r}, then {how}")
    client = r.client("clients.msgclient", "127.0.0.1", ours.port, label="msgclient")
    client.send("quit\n")
    status = client.wait()
    r.until(lambda: len(_received_quits(ours)) == 2, timeout=3)
    r.remember_children(ours)
    r.ps([ours], "both have quit")
    r.netstat(ours.port, "both have quit")
    r.expect(how == "EOF" and status == 0 and len(_received_quits(ours)) == 2,
             f"servers.hello ends the session on telnet's quit\\r\\n and on msgclient's quit\\n "
             f"alike (telnet: {how}; msgclient exit {status})")


def _received_quits(server):
    return [line for line in server.output() if "closed (quit)" in line]


# --- X17 E7 E8 E9: the original server killed ----------------------------------

@scenario("X17 E7 E8 E9", "parent-killed", "Kill the original server: its children serve on, "
          "a new client is refused, a new server binds", f"{WORKSHEET}, A Message Client and "
          f"A fork()ing Server!", """\
"Kill the original server and try sending more messages with one of the running clients. What
happens? Try starting a new client. What happens? Try starting a new server, etc., etc."
"The setsockopt() function is used to enable us to reuse the socket address if the server fails
(or more likely killed by us) without having to wait for any garbage collection!"
Killing the parent leaves its children, who hold the connections: the clients are still
answered; nothing listens, so a new client is refused; a new server binds the same port.
""", limit=30.0)
def parent_killed(r):
    server = _serverfork(r)
    port = server.port
    socks, pids = {}, {}
    for label in ("msgclient 1", "msgclient 2"):
        socks[label] = _connect(r, server, label)
        _hello_reply(r, socks[label], label, b"hello")
        pids[label] = _new_live_child(r, server, set(pids.values()), label).pid
    r.ps([server], "two clients connected")

    server.signal(signal.SIGTERM)
    status = server.wait()
    orphans = list(pids.values())
    adopted = r.until(lambda: all((s := stat(pid)) and s.ppid != server.pid for pid in orphans),
                      timeout=3)
    ppids = {stat(pid).ppid for pid in orphans if stat(pid)}
    rows = r.ps_of(orphans, "the original server killed: its children",
                   {pid: f"child for {label}" for label, pid in pids.items()})
    adopter = _adopter(next(iter(ppids))) if len(ppids) == 1 else None
    r.say(f"the children's new parent: {', '.join(map(_who, sorted(ppids)))}"
          f"{' -- ' + adopter if adopter else ''}")
    r.expect(status == -15 and adopted and len(rows) == 2 and adopter,
             f"the server is dead (status {status}); its two children live on, re-parented "
             f"(PPID now {sorted(ppids)}: {adopter or 'neither init nor a subreaper'})")

    r.heading("E7: more messages from a running client")
    reply = _hello_reply(r, socks["msgclient 1"], "msgclient 1", b"more")
    r.expect(reply == HELLO, f"a running client is still answered, by its child (read {reply!r})")

    r.heading("E8: a new client")
    client = r.client("clients.msgclient", "127.0.0.1", port, label="new msgclient")
    status = client.wait()
    client.flush()
    try:
        r.connect(("127.0.0.1", port)).close()
        refused = "connected"
    except ConnectionRefusedError as exc:
        refused = f"ECONNREFUSED ({exc.strerror})"
    r.say(f"[client] connect() to port {port}: {refused}")
    rows = r.netstat(port, "no server: the children's connections only")
    r.expect(status == 1 and refused.startswith("ECONNREFUSED")
             and not [x for x in rows if x.state == "LISTEN"],
             f"a new client is refused (connect: {refused}; msgclient exit {status}): nothing "
             f"listens on port {port}, each child closed its copy of the listener")

    r.heading("E9: a new server on the same port")
    plain = socket.socket()
    try:
        plain.bind(("127.0.0.1", port))
        bound = "bound"
    except OSError as exc:
        bound = f"{os.strerror(exc.errno)} (errno {exc.errno})"
    finally:
        plain.close()
    r.say(f"bind(127.0.0.1:{port}) without SO_REUSEADDR: {bound}")
    r.expect(bound.startswith(os.strerror(errno.EADDRINUSE)),
             f"without SO_REUSEADDR, bind fails while the old children's ESTABLISHED sockets "
             f"hold port {port}: {bound}")
    try:
        again = _serverfork(r, port=port, label="new serverFork")
    except ScenarioError as exc:
        r.expect(False, f"with SO_REUSEADDR the new server binds port {port}: it did not ({exc})")
        return
    newcomer = _connect(r, again, "msgclient 3")
    reply = _hello_reply(r, newcomer, "msgclient 3", b"hello")
    r.remember_children(again)
    r.netstat(port, "the new server, its client, and the old children's clients", every=True)
    r.ps([again], "the new server and its child")
    r.ps_of(orphans, "the old server's children, still serving")
    older = _hello_reply(r, socks["msgclient 2"], "msgclient 2", b"still?")
    r.expect(reply == HELLO and again.has("^Server: got connection from 127.0.0.1$"),
             f"with SO_REUSEADDR (as serverFork.c sets it) the new server binds port {port} and "
             f"serves a new client")
    r.expect(older == HELLO, "and the old children go on serving their clients beside it")
    for sock in (*socks.values(), newcomer):
        sock.close()


# --- E10: the signal handler stuff commented out -------------------------------

@scenario("E10", "no-handler-zombies", "The signal handler commented out: zombies, and what "
          "becomes of them when the server is killed", f"{WORKSHEET}, Catching Signals; {UNP}, "
          f"5.7 Normal Termination and 5.9 Handling SIGCHLD Signals", """\
"To see the effect of not dealing with dying children comment out the signal handler stuff in
the server and re-compile it. Test this new version with several clients as before checking
the process status of the server (by ps) as clients die. What happens when the server itself
is eventually killed?"
UNP 5.7: "the default action of the signal is to be ignored. Thus, the child enters the zombie
state."
UNP 5.9: "If a parent process of zombie children terminates, the parent process ID of all the
zombie children is set to 1 (the init process), which will inherit the children and clean them
up (init will wait for them, which removes the zombie)."
""", limit=30.0)
def no_handler_zombies(r):
    server = _serverfork(r, "--no-handler", label="serverFork --no-handler")
    for n in range(1, 4):
        label = f"msgclient {n}"
        sock = _connect(r, server, label)
        _hello_reply(r, sock, label, b"hello")
        _says_quit(r, sock, label)
        count = r.until(lambda: sum(p.zombie for p in _children(server.pid)) >= n, timeout=3)
        r.say(f"zombies now: {sum(p.zombie for p in _children(server.pid))}")
        if not count:
            break
    r.remember_children(server)
    r.netstat(server.port, "three clients come and gone")
    rows = r.ps([server], "three clients have died")
    zombies = [p for p in rows if p.ppid == server.pid and p.zombie]
    statuses = [_wait_status(z.pid) for z in zombies]
    r.say("their wait status, kept for a parent that never asks (/proc/PID/stat field "
          f"{EXIT_CODE_FIELD}): " + ", ".join(f"{z.pid} {describe_exit(st)}"
                                            for z, st in zip(zombies, statuses) if st is not None))
    r.expect(len(zombies) == 3 and all(p.args.endswith("<defunct>") for p in zombies),
             f"each finished child stays a zombie (STAT Z, <defunct>): {len(zombies)} after "
             f"three clients")

    server.signal(signal.SIGTERM)
    status = server.wait()
    killed = time.monotonic()
    pids = [z.pid for z in zombies]
    adopted = r.until(lambda: all((s := stat(pid)) is None or s.ppid != server.pid
                                  for pid in pids), timeout=3)
    rows = r.ps_of(pids, "the server killed: its zombies")
    ppids = sorted({p.ppid for p in rows})
    adopter = _adopter(ppids[0]) if len(ppids) == 1 else None
    r.say(f"their new parent: {', '.join(map(_who, ppids)) or '(already reaped)'}"
          f"{' -- ' + adopter if adopter else ''}")
    r.expect(status == -15 and adopted and (not rows or adopter),
             f"the server killed (status {status}), the zombies' parent is now "
             f"{ppids or 'gone'}: {adopter or 'neither init nor a subreaper'}")
    reaped = r.until(lambda: all(_gone(pid) for pid in pids), timeout=REAP_WAIT)
    took = time.monotonic() - killed
    r.ps_of(pids, f"{took:.1f} s later")
    r.say(f"the zombies {'were reaped' if reaped else 'are still there'} after {took:.1f} s")
    r.expect(reaped, f"their new parent waits for them: all three reaped within {took:.1f} s "
                     f"of the server's death (at most {REAP_WAIT:g} s waited)")


# --- X24: a client leaves without quit -----------------------------------------

@scenario("X24", "client-vanishes", "A client leaves without quit: the worksheet's child sends "
          "into the closed connection and SIGPIPE kills it; selectlab's ends on EOF",
          f"{WORKSHEET}, A fork()ing Server!; {CSAPP}, Dealing with prematurely closed "
          f"connections", """\
"The server's child remains actively listening on the connected socket until the client sends
the message 'quit'." A client that closes without it: recv() returns 0, msg is "", which is not
"quit", so the child sends 'Hello, World!' into the closed connection, and again.
CS:APP: "the first such write returns normally, but the second write causes the delivery of a
SIGPIPE signal whose default behavior is to terminate the process."
""", limit=30.0)
def client_vanishes(r):
    # Without the handler the child stays a zombie, so how it ended can be read.
    server = _serverfork(r, "--no-handler", label="serverFork --no-handler")
    sock = _connect(r, server, "telnet")
    _hello_reply(r, sock, "telnet", b"hello\r\n")
    child = _new_live_child(r, server, set(), "telnet")
    r.netstat(server.port, "connected")
    r.ps([server], "connected: the child waits in recv")
    sock.close()
    r.say("[telnet] ^] quit: close(), no quit sent")
    dead = r.until(lambda: (p := observe.process(child.pid)) is not None and p.zombie,
                   timeout=3)
    status = _wait_status(child.pid)
    server.flush()
    after = _messages_logged(server)[1:]
    r.netstat(server.port, "the child has ended")
    r.ps([server], "the child has ended: a zombie, its wait status kept")
    how = describe_exit(status) if status is not None else "unknown"
    r.say(f"/proc/{child.pid}/stat field {EXIT_CODE_FIELD} (exit_code): {status}: {how}")
    r.say(f"after the client left, the child printed 'Message received: ' {len(after)} times "
          f"with {after!r}: one send each, the last one killed it")
    r.expect(dead and how == "killed by SIGPIPE",
             f"the child is killed by SIGPIPE, not ended by exit() (wait status {status}: {how})")
    if len(after) > 2:
        r.say(f"(the client's reset came after the second send here: send {len(after)} was the "
              f"first after it)")
    r.expect(len(after) >= 2 and set(after) == {""},
             f"recv returned 0 and msg was \"\" each time: {len(after)} empty messages, each "
             f"answered by a send; the first send returned normally, send {len(after)} raised "
             f"SIGPIPE")
    r.expect(not server.has("Server send|Server recv"),
             "no perror line: the error trap on send never runs, the signal ends the child first")

    r.heading("selectlab's servers.hello")
    ours = r.server("servers.hello", "-v", label="hello")
    sock = _connect(r, ours, "telnet")
    _hello_reply(r, sock, "telnet", b"hello\r\n")
    child = _new_live_child(r, ours, set(), "telnet")
    sock.close()
    r.say("[telnet] ^] quit: close(), no quit sent")
    ours.wait_for(rf"child {child.pid} terminated", timeout=3)
    r.ps([ours], "the client has left")
    r.expect(ours.has(rf"\[{child.pid}\] .*closed \(peer eof\)")
             and ours.has(rf"child {child.pid} terminated \(exit 0\)"),
             "servers.hello's child takes the EOF as the end of the session (closed (peer eof)) "
             "and exits 0, sending nothing into the closed connection")
