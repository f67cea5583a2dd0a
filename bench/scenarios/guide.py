"""The quick guide's experiments: its tasks and its questions and answers."""

import socket
import time

from bench.scenarios.harness import recv_to_eof, recv_until, scenario

GUIDE = "Sanguino, A Quick Guide to Networking Software"


@scenario("X16", "busy", "The select() server that answers busy (guide task 11)",
          f"{GUIDE}, 11th task", """\
"If you are already serving a client, send "busy\\n" to new incoming clients."
The guide's server: "enum {idle,busy} state; ... case busy: ... /* ... write "busy\\n" in
newfd */" -- the second client reads busy and is closed; the first one is still served.
""")
def busy(r):
    server = r.server("servers.busy_select", "--trace")
    first = r.connect(server.address)
    first.sendall(b"hello\n")
    echo = recv_until(first, lambda d: d.endswith(b"\n"))
    r.say(f"[client 1] sent b'hello\\n', read {echo!r}")
    server.wait_for("IDLE --full--> BUSY")
    r.ps([server], "serving client 1: one process, asleep in the loop's wait")
    second = r.connect(server.address)
    rejected = second.getsockname()
    data, how = recv_to_eof(second)
    r.say(f"[client 2] read {data!r}, then {how}")
    r.expect(data == b"busy\n" and how == "EOF",
             "the second client reads exactly the 5 bytes busy\\n, then a clean end of stream")
    second.close()
    first.sendall(b"again\n")
    echo2 = recv_until(first, lambda d: d.endswith(b"\n"))
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
    third = r.connect(server.address)
    third.sendall(b"my turn\n")
    echo3 = recv_until(third, lambda d: d.endswith(b"\n"))
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
    probe = r.keep(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
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
