"""The quick guide's servers under load and under a bad client.

The listen queue full (X14), the iterative server's queue (X15), and exit(1)
on any error (X25).

The guide's own servers (10th and 12th tasks) run as translated in
``texts_guide``; selectlab's beside them where the scenario contrasts them.
What the kernel does is read where it keeps it: the sockets from
/proc/net/tcp, the counters of dropped SYNs from /proc/net/netstat, a
socket's retransmissions from ``TCP_INFO``, and the system call a process
waits in from /proc/PID/syscall (WCHAN says ``wait_woken`` for a read and
a write alike).
"""

import errno
import os
import select
import signal
import socket
import struct
import time

from bench.scenarios import observe
from bench.scenarios.harness import ScenarioError, recv_until, reset, scenario

GUIDE = "Sanguino, A Quick Guide to Networking Software"
WORKSHEET = "\"Concurrent Servers\" worksheet"
TEXTS = "bench.scenarios.texts_guide"

WRITES = ("write", "sendto")


def _ps(r, procs, title, names=None):
    """``r.ps``, then the system call each process waits in (WCHAN does not tell read from write).
    """
    rows = r.ps(procs, title)
    names = names or {}
    calls = [f"{p.pid}{' (' + names[p.pid] + ')' if p.pid in names else ''} "
             f"{observe.syscall(p.pid) or 'running'}()" for p in rows if not p.zombie]
    r.say("in the system call (/proc/PID/syscall): " + ", ".join(calls))
    return rows


def _blocked_writing(server):
    """Whether a process of ``server``'s family sleeps in write or send (its client does not read).
    """
    return any(p.stat == "S" and observe.syscall(p.pid) in WRITES
               for p in observe.family([server.pid]))


def _ignores(pid, signum):
    """Whether process ``pid`` ignores ``signum`` (its SigIgn mask in /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        mask = next(line.split()[1] for line in f if line.startswith("SigIgn:"))
    return bool(int(mask, 16) >> (signum - 1) & 1)


def _retransmissions(sock):
    """(``tcpi_retransmits``, ``tcpi_total_retrans``) from TCP_INFO: now, and in all."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return info[2], struct.unpack_from("I", info, 100)[0]


def _rto(sock):
    """``tcpi_rto`` from TCP_INFO, in seconds: how long after its last segment it resends."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("I", info, 8)[0] / 1e6


def _tcp_state_name(sock):
    """The socket's TCP state as /proc/net/tcp names it (SYN_SENT, ESTABLISHED...)."""
    code = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    return observe.TCP_STATES.get(code, str(code))


def _connect_nowait(r, address, syn_retries=None):
    """A connect that returns at once (non-blocking): its SYN is sent, the handshake goes on."""
    sock = r.keep(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    if syn_retries is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, syn_retries)
    sock.setblocking(False)
    err = sock.connect_ex(address)
    if err not in (0, errno.EINPROGRESS):
        raise ScenarioError(f"connect failed at once: {errno.errorcode.get(err, err)}")
    return sock


def _connect_outcome(r, sock, timeout):
    """Wait (at most ``timeout``) for a non-blocking connect to end: 0 (connected), an errno, or
    None."""
    if not r.until(lambda: select.select([], [sock], [], 0)[1], timeout):
        return None
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


def _errname(code):
    if code == 0:
        return "0 (connected)"
    return f"{errno.errorcode.get(code, code)} ({os.strerror(code)})"


def _silent(sock, seconds):
    """Whether nothing arrives on ``sock`` for ``seconds``: what a client waiting its turn sees."""
    ready, _, _ = select.select([sock], [], [], seconds)
    return not ready


def _rest(sock, timeout=2.0):
    """What comes on ``sock`` until it ends: ``(data, "EOF" | "reset" | "no end within N s")``."""
    data = b""
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            break
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return data, "reset"
        if not chunk:
            return data, "EOF"
        data += chunk
    return data, f"no end within {timeout:g} s"


def _line(data):
    return data.endswith(b"\n")


# --- X14 --------------------------------------------------------------------

# How late past its retransmission timeout a SYN may come, and the scenario's
# poll see it (every 20 ms): a busy machine's scheduling, not TCP's.
SCHEDULING_SLACK = 0.5

def _listen_queue(rows):
    """The LISTEN line's Recv-Q: connections in the accept queue (None if nothing listens)."""
    queue = [x.recv_q for x in rows if x.state == "LISTEN"]
    return queue[0] if queue else None


@scenario("X14", "listen-queue-full", "The listen queue full: the next connect waits, neither "
          "refused nor lost at once", f"{WORKSHEET}, Using fork(); {GUIDE}, answer 12", """\
The worksheet: "If any more client requests arrive these are queued up to the maximum
specified in the listening queue. If the queue is full then any extra requests will be 'lost'."
The guide's iterative server, "listen(fd,5)", answer 12: "In the meantime, connections from
other clients would become pending or would be rejected. The number of pending connections
depends on the listen backlog argument."
""")
def listen_queue_full(r):
    # The guide's listen(fd,5), from its translation.  Imported here, not at the top:
    # bench.scenarios imports this module, and `python -m bench.scenarios.texts_guide` would
    # find texts_guide imported before it runs (runpy's RuntimeWarning, in the transcript).
    from bench.scenarios.texts_guide import GUIDE_BACKLOG
    server = r.server(TEXTS, "iterative", "0", label="guide's iterative server", loopback=False)
    address = server.address
    abort = observe.sysctl("net.ipv4.tcp_abort_on_overflow")
    retries = observe.sysctl("net.ipv4.tcp_syn_retries")
    linear = observe.sysctl("net.ipv4.tcp_syn_linear_timeouts")        # recent kernels only
    r.say(f"/proc/sys/net/ipv4/: tcp_abort_on_overflow = {abort}, tcp_syn_retries = {retries}"
          + (f", tcp_syn_linear_timeouts = {linear}" if linear is not None else ""))

    first = r.connect(address)
    first.sendall(b"hello\n")
    echo = recv_until(first, _line)
    r.say(f"[client 1] sent b'hello\\n', read {echo!r}: the server now waits in read for it")
    queued = [r.connect(address, timeout=2) for _ in range(GUIDE_BACKLOG + 1)]
    queued[0].sendall(b"two\n")
    r.say(f"[clients 2-{GUIDE_BACKLOG + 2}] connect() returned for all {len(queued)}: the kernel "
          f"completed their handshakes; nobody has accepted them. Client 2 sent b'two\\n'")
    rows = r.netstat(server.port, f"1 served, {len(queued)} in the accept queue (its Recv-Q)")
    if _listen_queue(rows) != GUIDE_BACKLOG + 1:        # the last ACK still on its way
        r.until(lambda: _listen_queue(r.tcp_sockets(server.port)) == GUIDE_BACKLOG + 1)
        rows = r.netstat(server.port, "again")
    _ps(r, [server], "the guide's server, busy with client 1")
    r.expect(_listen_queue(rows) == GUIDE_BACKLOG + 1 and echo == b"hello\n",
             f"with listen(fd,{GUIDE_BACKLOG}) and the server busy with one client, Linux "
             f"completes backlog + 1 = {GUIDE_BACKLOG + 1} handshakes into the accept queue (the "
             f"LISTEN line's Recv-Q is {_listen_queue(rows)})")

    r.heading("two more clients: one with its SYN retries cut to 1 (TCP_SYNCNT), one as usual")
    dropped = observe.netstat_counter("ListenOverflows")
    started = time.monotonic()
    giving_up = _connect_nowait(r, address, syn_retries=1)
    pending = _connect_nowait(r, address)
    ports = sorted(s.getsockname()[1] for s in (giving_up, pending))
    r.say(f"[client {GUIDE_BACKLOG + 3}] connect() started from port "
          f"{giving_up.getsockname()[1]}, TCP_SYNCNT 1 (non-blocking)")
    r.say(f"[client {GUIDE_BACKLOG + 4}] connect() started from port "
          f"{pending.getsockname()[1]} (non-blocking)")
    r.until(lambda: observe.netstat_counter("ListenOverflows") - dropped >= 2, timeout=2)
    overflows = observe.netstat_counter("ListenOverflows") - dropped
    rows = r.netstat(server.port, "the queue full: two connects pending")
    syn_sent = sorted(x.local[1] for x in rows if x.state == "SYN_SENT")
    server_side = [x for x in rows if x.remote[1] in ports]
    r.expect(syn_sent == ports and not server_side and overflows >= 2,
             f"the queue full, Linux drops each new SYN unanswered (ListenOverflows +{overflows}; "
             f"no RST: tcp_abort_on_overflow concerns a handshake's last ACK, not a SYN): both "
             f"connects are pending in SYN_SENT (ports {syn_sent}), with no socket on the "
             f"server's side, neither refused nor accepted")

    outcome = _connect_outcome(r, giving_up, timeout=6)
    gave_up = time.monotonic() - started
    sent = 1 + _retransmissions(pending)[0]
    r.say(f"[client {GUIDE_BACKLOG + 3}] connect() ended {gave_up:.1f} s after it started: "
          f"{_errname(outcome) if outcome is not None else 'still pending'}")
    r.say(f"[client {GUIDE_BACKLOG + 4}] meanwhile: {_tcp_state_name(pending)}, its SYN sent "
          f"{sent} times")
    r.expect(outcome == errno.ETIMEDOUT and _tcp_state_name(pending) == "SYN_SENT",
             f"a connect whose SYNs all meet a full queue fails only when its time runs out, "
             f"with ETIMEDOUT (here after {gave_up:.1f} s: TCP_SYNCNT 1 allows 3 s in all; "
             f"tcp_syn_retries = {retries} allows {2 ** (retries + 1) - 1} s), never ECONNREFUSED; "
             f"the other one is still pending, its SYN resent {sent - 1} times")

    r.heading("the server accepts")
    first.close()
    r.say("[client 1] close(): the server reads 0, closes, and accepts client 2")
    two = recv_until(queued[0], _line)
    # Client 2 is accepted by now: the pending client's next SYN, at most one
    # retransmission timeout from now, finds room.
    accepted = time.monotonic()
    rto = _rto(pending) if _tcp_state_name(pending) == "SYN_SENT" else 0.0
    r.say(f"[client 2] read {two!r}: accepted, so the queue has room for one")
    r.say(f"[client {GUIDE_BACKLOG + 4}] {_tcp_state_name(pending)}, its retransmission timeout "
          f"{rto:g} s")
    outcome = _connect_outcome(r, pending, timeout=8)
    done = time.monotonic()
    waited, after = done - started, done - accepted
    total = _retransmissions(pending)[1] if outcome == 0 else None
    r.say(f"[client {GUIDE_BACKLOG + 4}] connect() ended {waited:.1f} s after it started, "
          f"{after:.2f} s after client 2 was accepted: "
          f"{_errname(outcome) if outcome is not None else 'still pending'}; its SYN was resent "
          f"{total} times")
    r.netstat(server.port, "client 2 accepted; the pending client got in")
    r.expect(two == b"two\n" and outcome == 0 and after <= rto + SCHEDULING_SLACK,
             f"once the server accepts, the pending client gets in at its next SYN "
             f"retransmission: {after:.2f} s after the accept, within its retransmission "
             f"timeout ({rto:g} s, and {SCHEDULING_SLACK:g} s for scheduling); it was pending, "
             f"not lost")
    if linear:
        spacing = (f"every second for its first {linear} retransmissions "
                   f"(tcp_syn_linear_timeouts = {linear}), then 2, 4... s apart")
    else:
        spacing = "1, 2, 4... s apart, each wait twice the last"
    r.say("Linux differs from both texts: an extra request is neither 'lost' nor 'rejected'")
    r.say("at once. Its SYN is dropped, unanswered, and the client's TCP sends it again")
    r.say(f"(here {spacing});")
    r.say("it gets in with the first SYN that finds room in the queue, and is lost only if none")
    r.say("does before its time is up (ETIMEDOUT, Connection timed out). 'Rejected' (an RST,")
    r.say("ECONNREFUSED) is what a port where nobody listens answers, not a full queue.")
    for sock in (pending, giving_up, *queued):
        sock.close()


# --- X15 --------------------------------------------------------------------

def _second_client(r, server, label, concurrent):
    """Client 1 is served; client 2 connects and sends: does its echo wait for client 1's end?"""
    first = r.connect(server.address)
    first.sendall(b"one\n")
    echo1 = recv_until(first, _line)
    r.say(f"[client 1] sent b'one\\n', read {echo1!r}")
    second = r.connect(server.address)
    port2 = second.getsockname()[1]
    r.say(f"[client 2] connect() returned (port {port2}); sent b'two\\n'")
    second.sendall(b"two\n")
    started = time.monotonic()
    silent = _silent(second, 0.5)
    r.say(f"[client 2] {'nothing' if silent else 'its echo'} within 0.5 s")
    rows = r.netstat(server.port, f"{label}: client 1 connected, client 2 has sent")
    _ps(r, [server], f"{label}, client 1 still connected")
    theirs = [x for x in rows if x.remote == ("127.0.0.1", port2)]
    listen_q = [x.recv_q for x in rows if x.state == "LISTEN"]
    if not concurrent:
        r.expect(_tcp_state_name(second) == "ESTABLISHED"
                 and [x.state for x in theirs] == ["ESTABLISHED"] and listen_q == [1],
                 f"{label}: client 2's connection is ESTABLISHED on both sides (the kernel "
                 f"completed the handshake) and waits in the accept queue (LISTEN Recv-Q "
                 f"{listen_q[0] if listen_q else '?'})")
        r.expect(silent and [x.recv_q for x in theirs] == [4],
                 f"{label}: client 2 gets no echo while client 1 is connected; its 4 bytes wait "
                 f"unread in the kernel (Recv-Q {theirs[0].recv_q if theirs else '?'} on the "
                 f"server's side)")
    else:
        echo2 = recv_until(second, _line)
        r.say(f"[client 2] read {echo2!r}, {time.monotonic() - started:.2f} s after sending it, "
              f"client 1 still connected")
        r.expect(echo2 == b"two\n" and [x.state for x in theirs] == ["ESTABLISHED"]
                 and listen_q == [0],
                 f"{label}: client 2 is accepted at once (LISTEN Recv-Q "
                 f"{listen_q[0] if listen_q else '?'}) and echoed while client 1 is connected")
    first.sendall(b"one again\n")
    echo1 = recv_until(first, _line)
    r.say(f"[client 1] sent b'one again\\n', read {echo1!r}")
    first.close()
    left = time.monotonic()
    r.say("[client 1] close()")
    if not concurrent:
        echo2 = recv_until(second, _line)
        now = time.monotonic()
        r.say(f"[client 2] read {echo2!r}, {now - started:.2f} s after sending it, "
              f"{now - left:.2f} s after client 1 left")
    second.close()
    return echo1 == b"one again\n" and echo2 == b"two\n"


@scenario("X15", "iterative-queue", "The iterative server makes the second client wait",
          f"{GUIDE}, answers 11 and 12; {WORKSHEET}, Using fork()", """\
The guide's iterative server, answer 11: "it would block in the read call, until data is
available at the newfd socket. Only after this connection is finished, the program would
return to the accept call". Answer 12: "this program can only serve a client at a time."
The worksheet: "the server will deal with the first one and the others are queued while this
is done. Having finished with the first client the next is dealt with." ... "some clients may
have to wait a long time."
""")
def iterative_queue(r):
    for module, args, label in ((TEXTS, ("iterative", "0"), "the guide's iterative server"),
                                ("servers.echo_iterative", (), "echo_iterative")):
        r.heading(label)
        server = r.server(module, *args, label=label, loopback=module.startswith("servers"))
        served = _second_client(r, server, label, concurrent=False)
        r.expect(served, f"{label}: client 2's echo arrives once client 1 has left; client 1 "
                         f"was served throughout")
    r.heading("echo_select, for contrast")
    server = r.server("servers.echo_select", label="echo_select")
    served = _second_client(r, server, "echo_select", concurrent=True)
    r.expect(served, "echo_select serves both clients at once, in one process (asleep in "
                     "epoll_wait between their messages)")


# --- X25 --------------------------------------------------------------------

def _bad_client(r, server, blocked):
    """A client that sends, never reading, until ``blocked()``: the server cannot write to it.

    Its receive buffer is kept small (SO_RCVBUF before connect), so that
    once the server's echoes fill it the window is closed and whatever
    the server writes stays in the server's send buffer; once that is full
    too, the server's write sleeps, and nothing will wake it but the
    client's reading or going.
    """
    bad = r.keep(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    bad.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    bad.settimeout(3)
    bad.connect(server.address)
    bad.setblocking(False)
    chunk = b"x" * 65536
    sent = 0

    def fill():
        nonlocal sent
        try:
            while True:
                sent += bad.send(chunk)
        except BlockingIOError:
            pass
        return blocked()
    if not r.until(fill, timeout=5):
        raise ScenarioError(f"the server did not stop writing to a client that never reads "
                            f"({sent} bytes sent)")
    r.say(f"[bad client {bad.getsockname()[1]}] sent {sent} bytes and read none; the server "
          f"can no longer write to it")
    return bad


def _good_client(r, address, text):
    sock = r.connect(address)
    sock.sendall(text)
    return sock


@scenario("X25", "one-bad-client", "One bad client ends the guide's iterative server (exit(1)), "
          "only a child of its fork server, none of ours",
          f"{GUIDE}, 10th and 12th tasks, answer 9",
          """\
The guide's servers: "if((nw=write(newfd,ptr,n))<=0)/*error*/exit(1);" and
"if(n==-1)/*error*/exit(1);" -- the iterative server (10th task) ends on any client's error.
The fork server (12th task) does the same in its child: "Create a child process for each new
connection." Answer 9: "If you call write on a lost connection, write would return -1, errno
will be set to EPIPE, but the system would raise a SIGPIPE signal and, by default, that would
kill your process." ... "Note: Do not forget to protect the child process against the SIGPIPE
signal."
""", limit=30.0)
def one_bad_client(r):
    _guide_iterative(r)
    _guide_fork(r)
    for module, args in (("servers.echo_iterative", ("-v",)), ("servers.echo_fork", ("-v",)),
                         ("servers.echo_select", ("--trace",))):
        _ours_with_a_bad_client(r, module, args)


def _exits(server):
    """The guide's server's ``CALL: -1, errno E`` lines (its exit(1)s so far), without the rest."""
    return [line.split(" (")[0] for line in server.output() if ": -1, errno " in line]


def _say_sigpipe(r, server):
    ignored = _ignores(server.pid, signal.SIGPIPE)
    r.say(f"SIGPIPE in {server.label}: "
          f"{'ignored, unlike' if ignored else 'the default action (it kills), as'} in a C "
          f"program (SigIgn in /proc/{server.pid}/status)")


def _guide_iterative(r):
    label = "the guide's iterative server"
    r.heading(label)
    server = r.server(TEXTS, "iterative", "0", label=label, loopback=False)
    _say_sigpipe(r, server)
    bad = _bad_client(r, server, lambda: _blocked_writing(server))
    good = _good_client(r, server.address, b"hello\n")
    r.say("[client 2] connected (in the accept queue) and sent b'hello\\n'")
    _ps(r, [server], "its write to the bad client sleeps: the client's window is closed")
    r.netstat(server.port, "the bad client served, client 2 queued")
    r.say("[bad client] SO_LINGER {on, 0}; close(): RST")
    reset(bad)
    try:
        status = server.wait(timeout=3)
    except ScenarioError:
        status = None               # still running: the check below says so
    data, how = _rest(good)
    r.say(f"[client 2] read {data!r}, then {how}")
    try:
        r.connect(server.address, timeout=2).close()
        refused = None
    except ConnectionRefusedError as exc:
        refused = exc
    r.say(f"[client 3] connect(): {refused or 'connected'}")
    rows = r.netstat(server.port, f"{label} has exited")
    r.expect(status == 1 and server.has(r"^write: -1, errno ECONNRESET .*: exit\(1\)$"),
             f"{label}: the reset makes its sleeping write return -1 with ECONNRESET, and it "
             f"takes the exit(1) there (exit status {status}): one client ended the server")
    r.expect(how == "reset" and not data and refused is not None
             and not [x for x in rows if x.state == "LISTEN"],
             f"client 2, queued, is reset without its echo, and client 3 is refused: nothing "
             f"listens on port {server.port} any more")
    r.say("Linux differs from answer 9 here: the write returned ECONNRESET, not EPIPE, and no")
    r.say("SIGPIPE came. The reset arrived while the connection was ESTABLISHED, and Linux")
    r.say("reports that error once; EPIPE and SIGPIPE are for the writes after it, or to a")
    r.say("client that closed first (CS:APP's second write). Either way the server ends.")
    good.close()


def _guide_fork(r):
    label = "the guide's fork server"
    r.heading(label)
    server = r.server(TEXTS, "fork", "0", label=label, loopback=False)
    _say_sigpipe(r, server)
    good = _good_client(r, server.address, b"hello\n")
    echo = recv_until(good, _line)
    r.say(f"[client 1] sent b'hello\\n', read {echo!r}")
    if not r.until(lambda: len(observe.children_of(server.pid)) == 1):
        raise ScenarioError(f"{label} did not fork a child for client 1")
    good_child = observe.children_of(server.pid)[0]
    bad = _bad_client(r, server, lambda: _blocked_writing(server))
    if not r.until(lambda: len(observe.children_of(server.pid)) == 2):
        raise ScenarioError(f"{label} has not two children, one per client")
    r.remember_children(server)
    bad_child = next(p for p in observe.children_of(server.pid) if p != good_child)
    names = {good_child: "client 1's child", bad_child: "the bad client's child"}
    _ps(r, [server], "a child per client: the bad client's sleeps in write", names)
    r.say("[bad client] SO_LINGER {on, 0}; close(): RST")
    reset(bad)
    gone = r.until(lambda: bad_child not in observe.children_of(server.pid), timeout=3)
    r.until(lambda: _exits(server), timeout=2)
    rows = _ps(r, [server], "the bad client's child has exited", names)
    good.sendall(b"still there?\n")
    again = recv_until(good, _line)
    r.say(f"[client 1] sent b'still there?\\n', read {again!r}")
    third = _good_client(r, server.address, b"new\n")
    echo3 = recv_until(third, _line)
    r.say(f"[client 3] sent b'new\\n', read {echo3!r}")
    r.netstat(server.port, "after the bad client")
    r.expect(gone and _exits(server)[:1] == ["write: -1, errno ECONNRESET"] and server.alive()
             and not any(p.zombie for p in rows),
             f"{label}: the bad client's child takes the exit(1) of its write (ECONNRESET) and "
             f"is gone, reaped by the kernel (SIGCHLD ignored: no zombie); the parent lives")
    r.expect(again == b"still there?\n" and echo3 == b"new\n",
             f"{label}: client 1, in its own child, is still echoed, and a new client is served")

    # The parent's own exit(1)s follow accept, fork and close. A reset before
    # accept is the one a client can cause (UNP 5.11): does accept fail?
    r.heading(f"{label}: a client reset before the parent accepts it")
    with r.held(server):
        r.say("[client 4] connects, and resets (SO_LINGER 0) while the parent is stopped")
        reset(r.connect(server.address, timeout=2))
    r.until(lambda: len(_exits(server)) >= 2, timeout=3)
    r.remember_children(server)
    rows = _ps(r, [server], "after the reset connection was accepted")
    last = _good_client(r, server.address, b"and now?\n")
    echo5 = recv_until(last, _line)
    r.say(f"[client 5] sent b'and now?\\n', read {echo5!r}")
    r.expect(server.alive() and echo5 == b"and now?\n"
             and _exits(server)[1:] == ["read: -1, errno ECONNRESET"],
             f"{label}: Linux's accept returns the reset connection, so the parent's exit(1) "
             f"after accept is not taken: the child's read fails (ECONNRESET), the child takes "
             f"its exit(1), and the parent serves the next client")
    r.say("What does end the parent is a failing accept (other than EINTR: no more")
    r.say("descriptors, no memory), fork or close: the host running out of something, which")
    r.say("one bad client does not do -- each child holds its own connection, and the parent")
    r.say("closes its copy at once. One bad client ends only its own child.")
    for sock in (good, third, last):
        sock.close()


def _ours_with_a_bad_client(r, module, args):
    label = module.rsplit(".", 1)[-1]
    r.heading(label)
    server = r.server(module, *args, label=label)
    if label == "echo_select":
        def blocked():
            return server.has(r"BUSY --high_water--> PAUSED")
    else:
        def blocked():
            return _blocked_writing(server)
    bad = _bad_client(r, server, blocked)
    bad_port = bad.getsockname()[1]
    good = _good_client(r, server.address, b"hello\n")
    r.say("[client 2] connected and sent b'hello\\n'")
    r.remember_children(server)
    _ps(r, [server], f"{label} with the bad client and client 2")
    r.say("[bad client] SO_LINGER {on, 0}; close(): RST")
    reset(bad)
    r.until(lambda: server.has(rf":{bad_port} closed "), timeout=3)
    logged = next((line for line in server.output() if f":{bad_port} closed " in line), "")
    echo = recv_until(good, _line)
    r.say(f"[client 2] read {echo!r}")
    good.close()
    third = _good_client(r, server.address, b"next\n")
    echo3 = recv_until(third, _line)
    r.say(f"[client 3] sent b'next\\n', read {echo3!r}")
    third.close()
    error = logged.partition(" closed (")[2].split(" ")[0]
    r.expect(error in ("ECONNRESET", "EPIPE") and server.alive() and echo == b"hello\n"
             and echo3 == b"next\n",
             f"{label}: logs the error as the end of that one connection ('closed ({error} "
             f"...)') and goes on: client 2 is echoed, then client 3")
