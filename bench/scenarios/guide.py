"""The quick guide's and the "Concurrent Servers" worksheet's experiments."""

import socket
import time

from bench.scenarios.harness import ScenarioError, scenario

GUIDE = "Sanguino, A Quick Guide to Networking Software"
WORKSHEET = "\"Concurrent Servers\" worksheet"
HELLO = b"Hello, World!\n"


def _recv_until(sock, predicate, timeout=3.0):
    """Bytes from ``sock`` until ``predicate(data)`` or EOF; ScenarioError after ``timeout``."""
    data = b""
    end = time.monotonic() + timeout
    while not predicate(data):
        left = end - time.monotonic()
        if left <= 0:
            raise ScenarioError(f"no more bytes within {timeout:g} s (have {data!r})")
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        if not chunk:
            break
        data += chunk
    return data


def _recv_to_eof(sock, timeout=3.0):
    """Everything until the server's EOF; ``(data, how it ended)``."""
    try:
        data = _recv_until(sock, lambda d: False, timeout)
    except ConnectionResetError:
        return b"", "reset"
    return data, "EOF"


@scenario("X16", "busy", "The select() server that answers busy (guide task 11)",
          f"{GUIDE}, 11th task", """\
"If you are already serving a client, send "busy\\n" to new incoming clients."
The guide's server: "enum {idle,busy} state; ... case busy: ... /* ... write "busy\\n" in
newfd */" -- the second client reads busy and is closed; the first one is still served.
""")
def busy(r):
    server = r.server("servers.busy_select", "--trace")
    first = socket.create_connection(server.address, timeout=3)
    first.sendall(b"hello\n")
    echo = _recv_until(first, lambda d: d.endswith(b"\n"))
    r.say(f"[client 1] sent b'hello\\n', read {echo!r}")
    server.wait_for("IDLE --full--> BUSY")
    r.ps([server], "serving client 1: one process, asleep in the loop's wait")
    second = socket.create_connection(server.address, timeout=3)
    rejected = second.getsockname()
    data, how = _recv_to_eof(second)
    r.say(f"[client 2] read {data!r}, then {how}")
    r.expect(data == b"busy\n" and how == "EOF",
             "the second client reads exactly the 5 bytes busy\\n, then a clean end of stream")
    second.close()
    first.sendall(b"again\n")
    echo2 = _recv_until(first, lambda d: d.endswith(b"\n"))
    r.say(f"[client 1] sent b'again\\n', read {echo2!r}")
    r.expect(echo == b"hello\n" and echo2 == b"again\n",
             "the first client is echoed before and after, unaffected")
    server.wait_for(r"#2 .*DRAINING --peer_eof--> CLOSED")
    rows = r.netstat(server.port, "client 1 served, client 2 gone")
    # Only the rejected connection's two ends: a TIME_WAIT from an earlier
    # server on the same port number is not this one.
    ends = [x for x in rows if rejected in (x.local, x.remote)]
    r.expect_timewait([(x.state, x.local[1]) for x in ends] == [("TIME_WAIT", server.port)],
                      "the rejected connection's TIME_WAIT is on the server's side: the server "
                      "closed first (busy\\n, then its FIN)")
    first.close()
    server.wait_for("BUSY --slot_freed--> IDLE")
    third = socket.create_connection(server.address, timeout=3)
    third.sendall(b"my turn\n")
    echo3 = _recv_until(third, lambda d: d.endswith(b"\n"))
    r.say(f"[client 3] after client 1 left: sent b'my turn\\n', read {echo3!r}")
    third.close()
    r.expect(echo3 == b"my turn\n", "once the first client leaves, the next one is served")
    server.wait_for(r"#3 .*--peer_eof--> CLOSED")
    trace = [line for line in server.output() if "-->" in line]
    order = [("listener IDLE --full--> BUSY",), ("listener BUSY --connection--> BUSY",),
             ("#2 ", "IDLE --close--> DRAINING"), ("#2 ", "DRAINING --peer_eof--> CLOSED"),
             ("listener BUSY --slot_freed--> IDLE",)]
    position = 0
    for line in trace:
        if position < len(order) and all(part in line for part in order[position]):
            position += 1
    r.expect(position == len(order),
             "the trace shows the listener IDLE --full--> BUSY, BUSY --connection--> BUSY, the "
             "rejected connection's IDLE --close--> DRAINING --peer_eof--> CLOSED, then BUSY "
             "--slot_freed--> IDLE, in that order")


@scenario("X11", "udp-dead-port", "UDP to a port where nobody listens, without and with a "
          "timeout", f"{GUIDE}, question and answer 1", """\
"What happens if the messages do not arrive at the destination? Try specifying a wrong port
number for the destination echo server. Did you get an error message?"
"No message will be received back at the client and it will block in recvfrom. No error will
be detected unless timeouts are used."
""")
def udp_dead_port(r):
    # A port nobody listens on: bind one, note it, close it.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    r.say(f"UDP port {port} on 127.0.0.1: nobody listens there")
    r.heading("the guide's client: recvfrom with no timeout")
    blocked = r.client("bench.scenarios.texts", "udpcli", "127.0.0.1", port,
                       label="guide's udp client")
    blocked.wait_for("waiting in recvfrom")
    r.until(lambda: False, timeout=1.5)
    rows = r.ps([blocked], "1.5 s later")
    r.expect(blocked.alive() and rows and rows[0].stat == "S" and not blocked.has("echo:"),
             "1.5 s later it is still asleep in recvfrom, and no error was reported "
             f"(wchan {rows[0].wchan if rows else '?'})")
    blocked.signal(15)
    blocked.wait()
    r.heading("selectlab's client: --timeout 0.5, --tries 2")
    start = time.monotonic()
    timed = r.client("clients.udp_echo", "127.0.0.1", port, "--timeout", "0.5", "--tries", "2",
                     label="clients.udp_echo")
    status = timed.wait(timeout=5)
    elapsed = time.monotonic() - start
    timed.flush()
    r.say(f"exit status {status} after {elapsed:.1f} s")
    r.expect(status == 1 and timed.has("no answer|did not answer"),
             "with a timeout the client gives up after its tries, says so, and exits 1")


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
    with socket.create_connection(server.address, timeout=3) as sock:
        sock.sendall(message + b"\n")
        r.say(f"[client] sent {len(message)} bytes and a newline: {message.decode()!r}")
        pieces = -(-len(message) // 19)
        data = _recv_until(sock, lambda d: d.count(HELLO) >= pieces)
        r.say(f"[client] read {data!r}")
        r.netstat(server.port, "connected")
        r.ps([server], "connected: the worksheet's parent and its child for this client")
        sock.sendall(b"quit\n")
        rest, how = _recv_to_eof(sock)
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
    with socket.create_connection(server.address, timeout=3) as sock:
        sock.sendall(b"How are you\r\n")
        data = _recv_until(sock, lambda d: d.count(HELLO) >= 1)
        r.say(f"[telnet] typed 'How are you', read {data!r}")
        sock.sendall(b"quit\r\n")
        _recv_to_eof(sock)
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
