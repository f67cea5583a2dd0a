"""The "Concurrent Servers" worksheet's experiments: the Hello server and its msgclient."""

import socket

from bench.scenarios.harness import recv_to_eof, recv_until, scenario

WORKSHEET = "\"Concurrent Servers\" worksheet"
HELLO = b"Hello, World!\n"


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
    with socket.create_connection(server.address, timeout=3) as sock:
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
