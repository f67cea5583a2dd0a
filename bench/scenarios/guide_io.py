"""The quick guide's questions on sockets themselves.

Orderly close, who replies, a port in use, partial reads and writes: four of
the guide's answers, each set beside what Linux does:

* X10 (answer 9): the peer closes in an orderly fashion while ``read``
  blocks, and ``read`` returns 0.
* X12 (answer 2): a UDP client's ``recvfrom`` takes a datagram from anyone;
  a connected UDP socket only the server's.
* X13 (answer 10, and the worksheet's SO_REUSEADDR): a port already in use,
  by a listener and by a TIME_WAIT.
* X18 (answer 8): ``send`` takes fewer bytes than asked, ``recv`` returns
  fewer than asked, and the loops that move everything all the same.

The guide's TCP client and server, translated, are in ``texts_guide``;
its UDP client in ``texts``.  UDP has no states for ``r.netstat``: the UDP
sockets are read from /proc/net/udp (:func:`observe.udp_sockets`).
"""

import errno
import select
import signal
import socket
import subprocess
import threading

from bench.scenarios import observe
from bench.scenarios.harness import ScenarioError, recv_until, scenario
from wire.streamio import Reader, writen

GUIDE = "Sanguino, A Quick Guide to Networking Software"
WORKSHEET = "\"Concurrent Servers\" worksheet"
TEXTS = "bench.scenarios.texts_guide"


def _stat_and_wchan(pid):
    """Process ``pid``'s (STAT, WCHAN), or (None, None) if it has gone."""
    p = observe.process(pid)
    return (p.stat, p.wchan) if p else (None, None)


def _asleep(r, proc):
    """Wait until ``proc`` sleeps (STAT S) in the kernel; its (stat, wchan)."""
    r.until(lambda: (now := _stat_and_wchan(proc.pid))[0] == "S" and now[1] != "-", timeout=3)
    return _stat_and_wchan(proc.pid)


# --- UDP sockets from /proc/net/udp --------------------------------------------

def udp_netstat(r, ports, title):
    """The UDP sockets on ``ports``, as ``netstat -a | grep -E 'P1|P2'`` shows them."""
    rows = observe.udp_sockets(set(ports))
    r.table(f"netstat -a | grep -E '{'|'.join(map(str, ports))}'  (UDP; {title})",
            observe.format_udp_netstat(rows))
    return rows


def udp_port_of(pid):
    """The local port of the UDP socket process ``pid`` has bound (sent from), or None."""
    inodes = observe.socket_inodes(pid)
    for row in observe.udp_sockets():
        if row.inode in inodes and row.local[1]:
            return row.local[1]
    return None


# --- X10 -------------------------------------------------------------------------

def _ends(rows, client):
    """The rows of the connection from ``client`` (an address), not an older one on its port."""
    return [x for x in rows if client[1] in (x.local[1], x.remote[1])]


@scenario("X10", "orderly-close", "The peer closes while read blocks: read returns 0",
          f"{GUIDE}, question and answer 9", """\
"Note however that, if the connection is closed, by the peer process, in an orderly fashion,
while read is blocking your process, then read would return 0, as a sign of EOF(end-of-file)."
The guide's 7th task: "else if(nread==0)break;/**closed by peer" -- the read loop ends early,
the client prints what it has and closes its end.
""")
def orderly_close(r):
    peer = r.keep(socket.create_server(("127.0.0.1", 0)))
    peer.settimeout(3)
    port = peer.getsockname()[1]
    with peer:
        r.say(f"[peer] listening on 127.0.0.1:{port} (a socket of the scenario's own, "
              f"which reads and never answers)")
        reader = r.client(TEXTS, "tcpcli", "127.0.0.1", port, label="guide's tcp client")
        try:
            conn, addr = peer.accept()
        except TimeoutError:
            raise ScenarioError("the guide's client did not connect within 3 s") from None
        with conn:
            got = recv_until(conn, lambda d: len(d) >= 7)
            r.say(f"[peer] accepted 127.0.0.1:{addr[1]}, read {got!r}, answers nothing")
            reader.wait_for(r"^read\(fd,ptr,7\): waiting", what="its read(fd,ptr,7) line")
            stat, wchan = _asleep(r, reader)
            r.ps([reader], "the client waits for its echo")
            r.expect(stat == "S" and reader.alive(),
                     f"the client is asleep (STAT {stat}) in read, in the kernel's {wchan}")
            rows = _ends(r.netstat(port, "connected, the client in read"), addr)
            r.expect(sorted(x.state for x in rows) == ["ESTABLISHED", "ESTABLISHED"],
                     "both ends are ESTABLISHED while it waits")
            r.say("The FIN is answered by the client's kernel at once and the client returns")
            r.say("from read and closes within microseconds; to see the states in between,")
            r.say("SIGSTOP holds it where it is (its read goes on when it is continued).")
            with r.held(reader):
                r.say("[peer] close(): an orderly close, a FIN")
                conn.close()
                r.until(lambda: {"FIN_WAIT2", "CLOSE_WAIT"}
                        <= {x.state for x in r.tcp_sockets(port)}, timeout=3)
                rows = _ends(r.netstat(port, "the peer has closed, the client not yet"), addr)
                r.ps([reader], "the client stopped (T) in the middle of its read")
                waiting = [x.recv_q for x in rows if x.state == "CLOSE_WAIT"]
                if waiting == [1]:
                    r.say("The client's Recv-Q of 1 is the FIN: it takes one sequence number.")
                r.expect(any(x.state == "FIN_WAIT2" and x.local[1] == port for x in rows)
                         and any(x.state == "CLOSE_WAIT" and x.remote[1] == port
                                 for x in rows),
                         "the peer's end is in FIN_WAIT2 (its FIN sent and ACKed), the "
                         "client's in CLOSE_WAIT (it has the FIN, its process has not read "
                         "it yet)")
        reader.wait_for(r"^read\(fd,ptr,7\) returned 0", what="read(fd,ptr,7) returned 0")
        status = reader.wait()
        reader.flush()
        r.say(f"[guide's tcp client] exit status {status}")
        r.expect(reader.has(r"^read\(fd,ptr,7\) returned 0 b''$") and reader.has(r"^echo: $"),
                 "read returns 0 (b''), no error: the loop ends ('closed by peer') and the "
                 "client prints what it got, nothing")
        r.expect(status == 0 and reader.has(r"^close\(fd\); exit\(0\)$"),
                 "then it closes its end and exits normally (status 0)")
        r.until(lambda: [x for x in _ends(r.tcp_sockets(port), addr)
                         if x.state == "TIME_WAIT"], timeout=3)
        rows = _ends(r.netstat(port, "the client has closed too"), addr)
        r.expect_timewait([(x.state, x.local[1]) for x in rows] == [("TIME_WAIT", port)],
                          "only the peer's end is left, in TIME_WAIT: it closed first; the "
                          "client's end is gone")


# --- X12 -------------------------------------------------------------------------

STRANGER = b"not the echo server\n"
HELLO = b"Hello!\n"


@scenario("X12", "udp-who-replied", "A UDP reply from somebody else: recvfrom's address, and "
          "a connected socket", f"{GUIDE}, question and answer 2", """\
"Question 2: How do you know the message you received came from the UDP echo server on
tejo:58001." -- "Answer to question 2: You have to check the recvfrom addr output argument."
"If you only want to receive messages from a specific address, then use send and recv."
A datagram from a third socket reaches an unconnected client first: recvfrom takes it, and only
its address tells; a connected socket is never given it.
""")
def udp_who_replied(r):
    server = r.server("servers.udp_echo", "-v")
    sport = server.port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind(("127.0.0.1", 0))
        tport = stranger.getsockname()[1]
        r.say(f"[stranger] a UDP socket on 127.0.0.1:{tport}, not the server's port {sport}")
        _guide_client_takes_it(r, server, stranger, tport)
        _recvfrom_tells(r, server, stranger, tport)
        _ours_ignores_it(r, server, stranger)
    _connected_never_sees_it(r, server)


def _guide_client_takes_it(r, server, stranger, tport):
    r.heading("the guide's UDP client (3rd task): recvfrom, its addr not looked at")
    r.say("The server is stopped, so that the stranger's datagram comes before the echo.")
    with r.held(server):
        guide = r.client("bench.scenarios.texts", "udpcli", "127.0.0.1", server.port,
                         label="guide's udp client")
        guide.wait_for("waiting in recvfrom")
        cport = r.until(lambda: udp_port_of(guide.pid), timeout=3)
        if not cport:
            raise ScenarioError("the guide's client has no UDP port after its sendto")
        stat, wchan = _asleep(r, guide)
        udp_netstat(r, [server.port, cport, tport], "the server stopped, its Hello! queued")
        r.ps([server, guide], "the server stopped (T), the client in recvfrom")
        r.expect(stat == "S", f"the guide's client waits in recvfrom (STAT {stat}, {wchan}), "
                              f"from port {cport}")
        r.say(f"[stranger] sendto 127.0.0.1:{cport} {STRANGER!r}")
        stranger.sendto(STRANGER, ("127.0.0.1", cport))
        guide.wait_for("^echo:", timeout=3)
        status = guide.wait()
    guide.flush()
    r.expect(status == 0 and guide.has(f"^echo: {STRANGER.decode().strip()}$"),
             "the guide's client prints the stranger's datagram as its 'echo:' and exits 0: "
             "without looking at recvfrom's addr it cannot tell")


def _recvfrom_tells(r, server, stranger, tport):
    r.heading("recvfrom's address: an unconnected socket of the scenario's own")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        cport = client.getsockname()[1]
        r.say(f"[stranger] sendto 127.0.0.1:{cport} {STRANGER!r}")
        stranger.sendto(STRANGER, ("127.0.0.1", cport))
        if not select.select([client], [], [], 2.0)[0]:
            raise ScenarioError("the stranger's datagram did not arrive within 2 s")
        r.say(f"[client 127.0.0.1:{cport}] sendto 127.0.0.1:{server.port} {HELLO!r}")
        client.sendto(HELLO, server.address)
        client.settimeout(3)
        got = []
        for _ in range(2):
            data, addr = client.recvfrom(128)
            r.say(f"[client] recvfrom: {len(data)} bytes {data!r}, addr {addr[0]}:{addr[1]}")
            got.append((data, addr[1]))
    r.expect(got[0] == (STRANGER, tport),
             f"the first recvfrom returns the stranger's datagram; its addr says port {tport}, "
             f"not the server's {server.port}")
    r.expect(got[1] == (HELLO, server.port),
             f"the second one returns the echo, and its addr is the server's, port "
             f"{server.port}: checking addr tells them apart")


def _ours_ignores_it(r, server, stranger):
    r.heading("selectlab's client: datagrams not from the server are ignored")
    with r.held(server):
        ours = r.client("clients.udp_echo", "-n", "--timeout", "3", "--tries", "1",
                        "127.0.0.1", server.port, label="clients.udp_echo")
        cport = r.until(lambda: udp_port_of(ours.pid), timeout=3)
        if not cport:
            raise ScenarioError("selectlab's client has no UDP port after its sendto")
        _asleep(r, ours)
        r.say(f"[stranger] sendto 127.0.0.1:{cport} {STRANGER!r}, before the server answers")
        stranger.sendto(STRANGER, ("127.0.0.1", cport))
    status = ours.wait()
    ours.flush()
    r.expect(status == 0 and ours.has("^echo: Hello!$")
             and ours.has(rf"^sent by \[127\.0\.0\.1:{server.port}\]$")
             and not ours.has(STRANGER.decode().strip()),
             "selectlab's client prints the server's echo, 'sent by' the server's port, and "
             "nothing of the stranger's")


def _udp_no_ports():
    """The host's count of datagrams that found no socket (/proc/net/snmp Udp: NoPorts)."""
    return observe.netstat_counter("NoPorts", "Udp", "/proc/net/snmp")


def _connected_never_sees_it(r, server):
    r.heading("connect + send/recv: a connected UDP socket")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        client.bind(("127.0.0.1", 0))
        client.connect(server.address)
        cport = client.getsockname()[1]
        stranger.bind(("127.0.0.1", 0))
        stranger.connect(("127.0.0.1", cport))
        tport = stranger.getsockname()[1]
        r.say(f"[client] connect(127.0.0.1:{server.port}) from 127.0.0.1:{cport}")
        udp_netstat(r, [server.port, cport, tport],
                    "connected sockets have a foreign address")
        before = _udp_no_ports()
        r.say(f"[stranger 127.0.0.1:{tport}] send to 127.0.0.1:{cport} {STRANGER!r}")
        stranger.send(STRANGER)
        stranger.settimeout(2)
        try:
            stranger.recv(128)
            refused = "an answer (!)"
        except ConnectionRefusedError:
            refused = "ECONNREFUSED"
        except TimeoutError:
            refused = "nothing within 2 s"
        dropped = _udp_no_ports() - before
        r.say(f"[stranger] its next recv: {refused}")
        # Host-wide: any other datagram to a closed port moves it too, so it
        # is shown, not checked.
        r.say(f"(the host's Udp NoPorts counter rose by {dropped} meanwhile: datagrams that "
              f"matched no socket, this one and any other traffic's)")
        r.say(f"[client] send {HELLO!r}")
        client.send(HELLO)
        client.settimeout(3)
        data = client.recv(128)
        r.say(f"[client] recv: {data!r}")
        client.setblocking(False)
        try:
            more = client.recv(128)
        except BlockingIOError:
            more = None
        r.say(f"[client] another recv (non-blocking): "
              f"{'EAGAIN, nothing queued' if more is None else repr(more)}")
    r.expect(refused == "ECONNREFUSED",
             f"the kernel did not deliver the stranger's datagram to the connected socket: no "
             f"socket matched it, and the stranger was told with an ICMP port unreachable "
             f"(its next recv: {refused})")
    r.expect(data == HELLO and more is None,
             "the connected socket's recv returns the server's echo, and nothing else is "
             "queued: it never sees the stranger's datagram")


# --- X13 -------------------------------------------------------------------------

def _try_bind(r, port, reuse, kind=socket.SOCK_STREAM):
    """Bind a socket of the scenario's own to 127.0.0.1:``port`` (TCP: and listen); close it.

    Returns ``"ok"`` or the errno's name, which the transcript shows.
    """
    proto = "UDP" if kind == socket.SOCK_DGRAM else "TCP"
    how = "with SO_REUSEADDR" if reuse else "without SO_REUSEADDR"
    with socket.socket(socket.AF_INET, kind) as sock:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            if kind == socket.SOCK_STREAM:
                sock.listen(5)
            result = "ok"
        except OSError as exc:
            result = errno.errorcode.get(exc.errno, str(exc.errno))
    done = "bind and listen" if kind == socket.SOCK_STREAM else "bind"
    r.say(f"[scenario] {proto} socket, {how}: {done} 127.0.0.1:{port}: {result}"
          + (" (closed again)" if result == "ok" else ""))
    return result


def _refused_start(r, module, *args, label):
    """Start a server on a taken port; its (exit status, lines printed)."""
    proc = r.client(module, *args, label=label, stdin=subprocess.DEVNULL)
    status = proc.wait(timeout=5)
    proc.flush()
    r.say(f"[{label}] exit status {status}")
    return status, proc.output()


def _killed_with_a_client(r, server):
    """Kill -9 ``server`` while a client is connected; the client reads EOF and closes.

    Returns the client's port: the server's end of that connection is left
    in TIME_WAIT, on the server's port.
    """
    with r.connect(server.address) as sock:
        sock.sendall(b"hello\n")
        echo = recv_until(sock, lambda d: d.endswith(b"\n"))
        cport = sock.getsockname()[1]
        r.say(f"[client 127.0.0.1:{cport}] sent b'hello\\n', read {echo!r}")
        server.signal(signal.SIGKILL)
        server.wait()
        data = recv_until(sock, lambda d: False)
        r.say(f"[client] read {data!r}: end of stream (the killed server's kernel sent its "
              f"FIN); close()")
    port = server.port
    r.until(lambda: [x for x in r.tcp_sockets(port)
                     if x.state == "TIME_WAIT" and x.local[1] == port], timeout=3)
    return cport


@scenario("X13", "port-in-use", "A port already in use: bind's error, SO_REUSEADDR and "
          "TIME_WAIT", f"{GUIDE}, question and answer 10, and the {WORKSHEET}", """\
"Question 10: What do you expect to happen if there is already a UDP server on port 58001?"
"Answer to question 10: You would get an error on bind."
The worksheet: "The setsockopt() function is used to enable us to reuse the socket address if
the server fails (or more likely killed by us) without having to wait for any garbage
collection!" -- with SO_REUSEADDR a server restarts at once on a port its killed predecessor
left in TIME_WAIT; without it, bind fails until the TIME_WAIT is over.
""")
def port_in_use(r):
    r.heading("a UDP server on the port (the guide's question 10)")
    udp = r.server("servers.udp_echo")
    result = _try_bind(r, udp.port, False, socket.SOCK_DGRAM)
    status, lines = _refused_start(r, "servers.udp_echo", udp.port, "-b", "127.0.0.1",
                                   label="udp_echo (2nd)")
    r.expect(result == "EADDRINUSE" and status == 1,
             f"a second UDP socket on port {udp.port}: bind fails with EADDRINUSE ({result}); "
             f"a second udp_echo exits 1")

    r.heading("a TCP server listening on the port")
    first = r.server("servers.echo_select")
    port = first.port
    r.netstat(port, "echo_select listens")
    plain = _try_bind(r, port, False)
    reuse = _try_bind(r, port, True)
    r.expect(plain == "EADDRINUSE",
             f"bind without SO_REUSEADDR on a port where a server listens: {plain}")
    r.expect(reuse == "EADDRINUSE",
             f"with SO_REUSEADDR too: {reuse} -- SO_REUSEADDR does not let a socket bind "
             f"over a LISTEN socket (only SO_REUSEPORT on both does)")
    status, lines = _refused_start(r, "servers.echo_select", port, "-b", "127.0.0.1",
                                   label="echo_select (2nd)")
    r.expect(status == 1 and len(lines) == 1 and "address already in use" in lines[0],
             f"selectlab's server on the taken port: exit status {status}, one line that says "
             f"what to do ({len(lines)} line(s))")

    _restart_with_reuseaddr(r, first)
    _restart_without_it(r)


def _timewait_left(r, port, title, what):
    """The netstat of ``port`` after its server was killed; its server-side TIME_WAIT rows.

    None when there is none: then the checks that need it are not made
    (``expect_timewait`` has said why, a full TIME_WAIT table or a contradiction).
    """
    rows = r.netstat(port, title)
    timewait = [x for x in rows if x.state == "TIME_WAIT" and x.local[1] == port]
    listening = [x for x in rows if x.state == "LISTEN"]
    r.expect_timewait(timewait and not listening,
                      f"{what}: nothing listens on {port} any more, but the server's end of "
                      f"the connection is in TIME_WAIT there (it closed first)"
                      + (f", for {timewait[0].timer:.0f} s more" if timewait else ""))
    return timewait or None


def _restart_with_reuseaddr(r, first):
    r.heading("the server killed by us, with a client: SO_REUSEADDR set (selectlab's)")
    port = first.port
    _killed_with_a_client(r, first)
    if not _timewait_left(r, port, "echo_select killed, its client gone", "echo_select"):
        return
    plain = _try_bind(r, port, False)
    reuse = _try_bind(r, port, True)
    r.expect(plain == "EADDRINUSE" and reuse == "ok",
             f"the TIME_WAIT holds the port: bind without SO_REUSEADDR fails ({plain}); with "
             f"it, bind and listen succeed ({reuse})")
    again = r.server("servers.echo_select", port, "-b", "127.0.0.1", loopback=False,
                     label="echo_select (restarted)")
    with r.connect(again.address) as sock:
        sock.sendall(b"still here\n")
        echo = recv_until(sock, lambda d: d.endswith(b"\n"))
        r.say(f"[client] sent b'still here\\n', read {echo!r}")
    r.ps([again], "restarted on the same port")
    r.expect(again.port == port and echo == b"still here\n",
             f"selectlab's server, which sets SO_REUSEADDR, restarts on port {port} at once "
             f"and serves")


def _restart_without_it(r):
    r.heading("the guide's 10th-task server killed by us: no setsockopt")
    guide = r.server(TEXTS, "iterative", "0", loopback=False, label="guide's tcp server")
    port = guide.port
    _killed_with_a_client(r, guide)
    if not _timewait_left(r, port, "the guide's server killed, its client gone",
                          "the guide's server"):
        return
    status, lines = _refused_start(r, TEXTS, "iterative", port,
                                   label="guide's tcp server (restarted)")
    r.expect(status == 1 and any(line.startswith("bind: -1, errno EADDRINUSE")
                                 for line in lines),
             f"the guide's server cannot restart: bind fails with EADDRINUSE, exit({status})")
    reuse = _try_bind(r, port, True)
    status, lines = _refused_start(r, "servers.echo_select", port, "-b", "127.0.0.1",
                                   label="echo_select")
    r.say("Linux lets a socket with SO_REUSEADDR bind over a TIME_WAIT only if the socket")
    r.say("that left it had SO_REUSEADDR too: the option must be set by the server that is")
    r.say("killed, not only by the one that restarts; here the port stays taken for 60 s.")
    r.expect(reuse == "EADDRINUSE" and status == 1 and len(lines) == 1
             and "address already in use" in lines[0],
             f"on Linux that TIME_WAIT refuses even a socket with SO_REUSEADDR ({reuse}), and "
             f"selectlab's server says so in one line (exit {status}): the killed server had "
             f"not set the option")


# --- X18 -------------------------------------------------------------------------

# The buffers asked for on both sides: small, so that a few kilobytes fill
# them.  Linux doubles what SO_SNDBUF/SO_RCVBUF is given (socket(7): room
# for its bookkeeping), so each side really has 8 KiB.
SMALL_BUFFER = 4096
# What the client asks to send: much more than both buffers hold.  Bytes of
# every value, so that an echo out of order would not compare equal.
MESSAGE = bytes(range(256)) * 1024          # 256 KiB
# At most this many sends until EAGAIN: each takes some bytes or raises, and
# 256 KiB cannot take more.
MAX_SENDS = 1000


class Counted:
    """A socket for :mod:`wire.streamio`, noting what each ``send`` and ``recv`` returned."""

    def __init__(self, sock):
        self.sock = sock
        self.sends = []     # bytes each send took
        self.recvs = []     # bytes each recv returned

    def send(self, data):
        n = self.sock.send(data)
        self.sends.append(n)
        return n

    def recv(self, size):
        data = self.sock.recv(size)
        self.recvs.append(len(data))
        return data


def _recv_q_and_send_q(r, port):
    """(the server's end's Recv-Q, the client's end's Send-Q) of the connection to ``port``."""
    rows = [x for x in r.tcp_sockets(port) if x.state == "ESTABLISHED"]
    recv_q = sum(x.recv_q for x in rows if x.local[1] == port)
    send_q = sum(x.send_q for x in rows if x.remote[1] == port)
    return recv_q, send_q


@scenario("X18", "partial-io", "send takes fewer bytes than asked, recv returns fewer: the "
          "loops that move them all", f"{GUIDE}, question and answer 8", """\
"Question 8: Did you notice that you may have to call write and read more than once?"
"There is no guarantee that write would send all the bytes you requested when you called it.
Transport layer buffers may be full. However, write returns the number of bytes that were sent
(accepted by the transport layer)."
"You may also have to call read more than once, since read would return as soon as data is
available at the socket."
""")
def partial_io(r):
    server = r.server(TEXTS, "iterative", "--rcvbuf", SMALL_BUFFER, "0", loopback=False,
                      label="guide's tcp server")
    port = server.port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
        sock.settimeout(3)
        sock.connect(server.address)
        sndbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        r.say(f"[client] connected from port {sock.getsockname()[1]}; SO_SNDBUF {SMALL_BUFFER} "
              f"(the kernel makes it {sndbuf}); the server's SO_RCVBUF is {SMALL_BUFFER} too")
        # Accepted once it holds a second socket; then it reads.
        r.until(lambda: len(observe.socket_inodes(server.pid)) >= 2, timeout=3)
        _asleep(r, server)
        r.ps([server], "the guide's server in read(newfd,buffer,128)")
        with r.held(server):
            r.say("The server is stopped: from now on it reads nothing.")
            sent, sends, full = _send_until_full(r, sock)
            r.until(lambda: sum(_recv_q_and_send_q(r, port)) == sent, timeout=3)
            rows = r.netstat(port, "the server stopped, the client's sends refused")
            r.ps([server], "stopped (T): it reads nothing")
            recv_q = sum(x.recv_q for x in rows if x.local[1] == port)
            send_q = sum(x.send_q for x in rows if x.remote[1] == port)
        first = sends[0] if sends else "-1 (EAGAIN at once)"
        r.expect(sends and 0 < sends[0] < len(MESSAGE),
                 f"send({len(MESSAGE)}) on a non-blocking socket returns {first}: fewer "
                 f"bytes than asked, and says how many")
        r.expect(full, f"after {len(sends)} sends ({sent} bytes in all) the next one fails "
                       f"with EAGAIN: the transport layer's buffers are full")
        r.expect(recv_q + send_q == sent and recv_q and send_q,
                 f"netstat shows where the {sent} bytes are: {recv_q} in the server's Recv-Q "
                 f"(its window is closed), {send_q} in the client's Send-Q")

        sock.settimeout(3)
        data = sock.recv(len(MESSAGE))
        r.say(f"[client] recv({len(MESSAGE)}) returned {len(data)} bytes")
        r.expect(0 < len(data) <= sent and len(data) < len(MESSAGE),
                 f"recv({len(MESSAGE)}) returns {len(data)} bytes, as soon as some are there: "
                 f"fewer than asked, and no more than the {sent} the server got and could echo")
        counted = Counted(sock)
        echo = _writen_readn(r, counted, MESSAGE[sent:], len(MESSAGE) - len(data))
    server.wait_for(r"^close\(newfd\):", what="its close(newfd) line")
    line = next(x for x in server.output() if x.startswith("close(newfd):"))
    r.ps([server], "the client gone: the server back in accept")
    rest = MESSAGE[sent:]
    r.expect(sum(counted.sends) == len(rest) and len(counted.sends) > 1,
             f"writen sends the other {len(rest)} bytes in {len(counted.sends)} sends, each "
             f"taking what the buffers had room for (from {min(counted.sends)} to "
             f"{max(counted.sends)} bytes)")
    r.expect(data + echo == MESSAGE and len(counted.recvs) > 1,
             f"readn reads the other {len(MESSAGE) - len(data)} bytes of the echo in "
             f"{len(counted.recvs)} recvs (from {min(counted.recvs)} to {max(counted.recvs)} "
             f"bytes): all {len(MESSAGE)} come back, in order")
    r.expect(line.startswith(f"close(newfd): {len(MESSAGE)} bytes echoed"),
             f"the guide's server, with its own read and write loops, echoed them all ({line})")


def _send_until_full(r, sock):
    """Non-blocking sends of the rest of MESSAGE until EAGAIN: (bytes taken, each send's, full?)."""
    sock.setblocking(False)
    sends = []
    sent = 0
    full = False
    for _ in range(MAX_SENDS):
        try:
            n = sock.send(MESSAGE[sent:])
        except BlockingIOError:
            full = True
            break
        sends.append(n)
        sent += n
        r.say(f"[client] send({len(MESSAGE) - sent + n}) returned {n}")
    if full:
        r.say(f"[client] send({len(MESSAGE) - sent}): EAGAIN (Resource temporarily "
              f"unavailable)")
    return sent, sends, full


def _writen_readn(r, counted, rest, want):
    """writen ``rest`` here, readn ``want`` bytes in a thread, at once: the echo, or ScenarioError.

    Both at once: the server echoes as it reads, and would stop reading once
    its echo filled the client's buffers if nobody read them.
    """
    result = {}

    def read_back():
        try:
            result["echo"] = Reader(counted).readn(want)
        except OSError as exc:
            result["error"] = exc

    r.say(f"[client] writen({len(rest)} bytes) here, readn({want}) in a thread, at once")
    counted.sock.settimeout(3)
    reader = threading.Thread(target=read_back, name="readn", daemon=True)
    reader.start()
    try:
        writen(counted, rest)
    except OSError as exc:
        raise ScenarioError(f"writen failed: {exc}") from None
    reader.join(r.within(10))
    if reader.is_alive() or "error" in result:
        raise ScenarioError(f"readn did not finish: {result.get('error', 'still reading')}")
    r.say(f"[client] writen: {len(counted.sends)} sends; readn: {len(counted.recvs)} recvs, "
          f"{len(result['echo'])} bytes")
    return result["echo"]
