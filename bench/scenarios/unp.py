"""UNP ch. 5's boundary conditions: the fork server's life and deaths."""

import os
import signal

from bench.scenarios import observe
from bench.scenarios.harness import ScenarioError, reset, scenario

SOURCE = "Stevens, UNIX Network Programming, ch. 5"


def _states(rows, server_port):
    """(server-side states, client-side states, listening?) of a netstat snapshot."""
    server = [r.state for r in rows if r.local[1] == server_port and r.state != "LISTEN"]
    client = [r.state for r in rows if r.remote[1] == server_port]
    listening = any(r.state == "LISTEN" and r.local[1] == server_port for r in rows)
    return server, client, listening


def _proc_stat(pid):
    """Process ``pid``'s STAT (S, T, Z...), or None if it has gone."""
    p = observe.process(pid)
    return p.stat if p else None


def _children(server):
    return [observe.process(pid) for pid in observe.children_of(server.pid)]


def _live_children(server):
    return [p for p in map(observe.process, observe.children_of(server.pid))
            if p is not None and not p.zombie]


@scenario("X1", "normal-start-and-end", "Normal startup and termination: LISTEN, ESTABLISHED, "
          "TIME_WAIT", f"{SOURCE}, 5.6 Normal Startup and 5.7 Normal Termination", """\
"netstat -a ... tcp 0 0 *:9877 *:* LISTEN" (before the client starts)
"netstat now shows two additional lines of output, corresponding to the TCP connection":
  two ESTABLISHED lines, the server child's (local port 9877) and the client's.
"All three processes are asleep (blocked): client, server parent, and server child."
After ^D: "The client's side of the connection (since the local port is 42758) enters the
TIME_WAIT state" and "The listening server is still waiting for another client connection."
""")
def normal_start_and_end(r):
    server = r.server("servers.echo_fork")
    port = server.port
    rows = r.netstat(port, "server started, no client yet")
    _, _, listening = _states(rows, port)
    r.expect(listening, f"before any client: one socket LISTENs on port {port}")

    client = r.client("clients.echo", "--plain", "127.0.0.1", port, label="tcpcli")
    client.send("hello, world\n")
    client.wait_for(r"^hello, world$")
    client.flush()
    r.until(lambda: len(observe.children_of(server.pid)) == 1)
    r.remember_children(server)
    rows = r.netstat(port, "client connected")
    server_side, client_side, _ = _states(rows, port)
    # The connection's two ends, to tell them from sockets an earlier server
    # on the same port number left behind.
    ours = {(x.local, x.remote) for x in rows if x.state == "ESTABLISHED"}
    r.expect(server_side == ["ESTABLISHED"] and client_side == ["ESTABLISHED"],
             "connected: two ESTABLISHED lines, the server child's (local port "
             f"{port}) and the client's (foreign port {port})")
    # Asleep, once each has finished with the echo (one may still be running briefly).
    r.until(lambda: all(p.stat == "S" for p in observe.family([server.pid, client.pid])))
    procs = r.ps([server, client], "connected")
    child = [p for p in procs if p.ppid == server.pid]
    r.expect(len(child) == 1 and all(p.stat == "S" for p in procs),
             "three processes, all asleep (S): the client, the server parent, and one server "
             "child whose PPID is the parent")

    client.close_stdin()
    status = client.wait()
    client.flush()
    r.expect(status == 0, f"the client ends normally at ^D (exit status {status})")
    server.wait_for(r"child \d+ terminated")
    rows = r.until(lambda: [x for x in r.tcp_sockets(port) if x.state == "TIME_WAIT"]
                   and r.tcp_sockets(port))
    rows = r.netstat(port, "after ^D")
    server_side, client_side, listening = _states(
        [x for x in rows if x.state == "LISTEN" or (x.local, x.remote) in ours], port)
    r.expect_timewait(client_side == ["TIME_WAIT"] and not server_side,
                      "the client's side, which closed first, is in TIME_WAIT; the server "
                      "child's socket is gone")
    r.expect(listening, "the listening socket is still there, waiting for the next client")
    server.flush()
    r.expect(server.has(r"child \d+ terminated \(exit 0\)"),
             "the parent reaped its child (SIGCHLD handled with waitpid): no zombie")


def _our_rows(rows, ours, port):
    """The rows of the connections in ``ours`` (and the listener), as ``_states`` reads them."""
    return _states([x for x in rows if x.state == "LISTEN" or (x.local, x.remote) in ours], port)


@scenario("X2", "normal-termination", "Normal termination, step by step: CLOSE_WAIT and "
          "FIN_WAIT_2, then TIME_WAIT and the zombie", f"{SOURCE}, 5.7 Normal Termination", """\
Step 3: "This sends a FIN to the server, to which the server TCP responds with an ACK. ...
At this point, the server socket is in the CLOSE_WAIT state and the client socket is in the
FIN_WAIT_2 state"
Step 4: "When the server TCP receives the FIN, the server child is blocked in a call to read
..., and read then returns 0."
Steps 5-6: "The server child terminates by calling exit." "The closing of the connected socket
by the child causes the final two segments of the TCP connection termination to take place: a
FIN from the server to the client, and an ACK from the client."
"The client's side of the connection (since the local port is 42758) enters the TIME_WAIT state"
Step 7: "we do not catch the signal in our code, and the default action of the signal is to be
ignored. Thus, the child enters the zombie state."
""")
def normal_termination(r):
    # tcpserv01's child pauses once read has returned 0, before its exit: the
    # half-closed connection stays for netstat to see until SIGUSR1.
    server = r.server("bench.scenarios.texts_unp", "tcpserv01", "--pause-at-eof", "0",
                      label="tcpserv01", loopback=False)
    port = server.port
    client = r.client("clients.echo", "--plain", "127.0.0.1", port, label="tcpcli01")
    for line in ("hello, world", "good bye"):
        client.send(line + "\n")
        client.wait_for(f"^{line}$")
    r.until(lambda: observe.children_of(server.pid))
    r.remember_children(server)
    child = observe.children_of(server.pid)[0]
    rows = r.netstat(port, "two lines echoed")
    ours = {(x.local, x.remote) for x in rows if x.state == "ESTABLISHED"}
    r.until(lambda: _proc_stat(child) == "S" and _proc_stat(client.pid) == "S")
    r.ps([server, client], "the child waits in read for the next line, the client in fgets")

    r.heading("steps 1-2: ^D; fgets returns NULL, str_cli returns, main calls exit")
    client.close_stdin()
    status = client.wait()
    client.flush()
    r.expect(status == 0, f"steps 1-2: at ^D the client returns from str_cli and exits "
                          f"(exit status {status})")

    r.heading("steps 3-4: the client's FIN; the child's read returns 0")
    server.wait_for(rf"child {child}: read returned 0")
    r.until(lambda: _our_rows(r.tcp_sockets(port), ours, port)[:2]
            == (["CLOSE_WAIT"], ["FIN_WAIT2"]))
    rows = r.netstat(port, "the child has read 0 and not yet exited")
    server_side, client_side, _ = _our_rows(rows, ours, port)
    r.expect(server_side == ["CLOSE_WAIT"] and client_side == ["FIN_WAIT2"],
             f"step 3: the client's FIN is ACKed: the server's socket is in CLOSE_WAIT "
             f"({server_side}), the client's in FIN_WAIT_2 ({client_side}), though the client "
             f"process is gone (its socket lives on in the kernel)")
    procs = r.ps([server], "the child has read 0 and waits at the pause point")
    r.expect(any(p.pid == child and not p.zombie for p in procs),
             f"step 4: the child {child} saw read return 0 (it says so) and is still alive: "
             f"the connection stays half closed for as long as the server does not close it")

    r.heading("steps 5-6: the child calls exit; its socket is closed: FIN from the server")
    r.say(f"$ kill -USR1 {child}    # the child goes on from its pause point to exit(0)")
    os.kill(child, signal.SIGUSR1)
    r.until(lambda: _proc_stat(child) == "Z")
    r.until(lambda: _our_rows(r.tcp_sockets(port), ours, port)[:2] == ([], ["TIME_WAIT"]))
    rows = r.netstat(port, "the child has exited")
    server_side, client_side, listening = _our_rows(rows, ours, port)
    r.expect_timewait(client_side == ["TIME_WAIT"] and not server_side,
                      f"step 6: the server's FIN and the client's ACK end the connection: the "
                      f"client's side, which closed first, is in TIME_WAIT ({client_side}); the "
                      f"server child's socket is gone")
    r.expect(listening, "the listening server is still waiting for another client connection")

    r.heading("step 7: SIGCHLD, not caught: the zombie")
    procs = r.ps([server], "tcpserv01 has no SIGCHLD handler")
    zombie = [p for p in procs if p.pid == child and p.zombie]
    r.expect(zombie, f"step 7: the child {child} is a zombie (STAT Z, <defunct>): tcpserv01 "
                     f"does not catch SIGCHLD")

    r.heading("selectlab's echo_fork (SIGCHLD handled with waitpid)")
    server = r.server("servers.echo_fork", "-v")
    client = r.client("clients.echo", "--plain", "127.0.0.1", server.port, label="tcpcli01")
    client.send("good bye\n")
    client.wait_for("^good bye$")
    r.until(lambda: observe.children_of(server.pid))
    r.remember_children(server)
    child = observe.children_of(server.pid)[0]
    rows = r.netstat(server.port, "one line echoed")
    ours = {(x.local, x.remote) for x in rows if x.state == "ESTABLISHED"}
    client.close_stdin()
    client.wait()
    client.flush()
    server.wait_for(rf"child {child} terminated")
    r.until(lambda: _our_rows(r.tcp_sockets(server.port), ours, server.port)[:2]
            == ([], ["TIME_WAIT"]))
    rows = r.netstat(server.port, "after ^D")
    _, client_side, _ = _our_rows(rows, ours, server.port)
    procs = r.ps([server], "after ^D")
    r.expect(server.has(rf"\[{child}\] .* closed \(peer eof\)")
             and server.has(rf"child {child} terminated \(exit 0\)")
             and not [p for p in procs if p.zombie],
             f"echo_fork: the child's read returns 0 ('closed (peer eof)'), it exits, and the "
             f"parent's SIGCHLD handler reaps it ('child {child} terminated'): no zombie")
    r.expect_timewait(client_side == ["TIME_WAIT"],
                      "echo_fork: the client's side ends in TIME_WAIT as before")
    r.say("Without the pause point, the child's read returns 0 and it closes at once: CLOSE_WAIT")
    r.say("and FIN_WAIT_2 last a few microseconds here. echo_fork --reap none ends its children")
    r.say("as tcpserv01 does, as zombies (scenario X3).")


@scenario("X3", "zombies", "Zombies: the fork server that never waits for its children "
          "(--reap none)", f"{SOURCE}, 5.7 Normal Termination and 5.9 Handling SIGCHLD", """\
"we do not catch the signal in our code, and the default action of the signal is to be
ignored. Thus, the child enters the zombie state."
"19315 17870 pts/6    Z    [tcpserv01 <defu do_exit" -- "The STAT of the child is now Z".
"Zombies take up space in the kernel and eventually we can run out of processes."
""")
def zombies(r):
    server = r.server("servers.echo_fork", "--reap", "none", label="tcpserv01")
    for n in range(3):
        client = r.client("clients.echo", "127.0.0.1", server.port, label=f"client {n + 1}")
        client.send(f"client {n + 1}\n")
        client.wait_for(f"^client {n + 1}$")
        client.close_stdin()
        r.expect(client.wait() == 0, f"client {n + 1} is echoed and ends normally")
        client.flush()
    done = r.until(lambda: sum(p.zombie for p in _children(server) if p) == 3)
    r.netstat(server.port, "three clients gone: their sides wait in TIME_WAIT")
    r.remember_children(server)
    rows = r.ps([server], "after three clients have come and gone")
    zombies = [p for p in rows if p.ppid == server.pid and p.zombie]
    r.expect(done and len(zombies) == 3,
             f"three clients served and gone leave three zombies (STAT Z, <defunct>), one per "
             f"finished child; found {len(zombies)}")
    r.expect(server.alive(), "the server goes on accepting: zombies cost it nothing yet")
    server.signal(signal.SIGTERM)
    server.wait()
    server.flush()
    left = [p for p in (observe.process(z.pid) for z in zombies) if p is not None and p.zombie]
    r.say(f"zombies left once the server has exited: {len(left)}")
    reaped = [z.pid for z in zombies if server.has(rf"child {z.pid} terminated")]
    r.expect(not left and len(reaped) == len(zombies),
             "the server reaps its zombies as it exits (it logs 'child N terminated' for each), "
             "so none is left for init to inherit")


@scenario("X5", "lost-sigchld", "Lost SIGCHLDs: wait() in the handler when 5 connections "
          "close together (tcpcli04)", f"{SOURCE}, 5.10 wait and waitpid Functions", """\
"Only one printf is output, when we expect all five children to have terminated. If we execute
ps, we see that the other four children still exist as zombies."
"all five signals are generated before the signal handler is executed, and the signal handler
is executed only one time because Unix signals are normally not queued. ... This problem is
nondeterministic."
"The correct solution is to call waitpid instead of wait."
""", limit=40.0)
def lost_sigchld(r):
    rounds = 5
    results = {}
    for reap, label in (("wait", "tcpserv03"), ("waitpid", "tcpserv04")):
        r.heading(f"--reap {reap} ({label})")
        server = r.server("servers.echo_fork", "--reap", reap, label=label)
        counts = []
        for n in range(rounds):
            before = set(observe.children_of(server.pid))
            client = r.client("clients.echo", "--connections", "5", "127.0.0.1", server.port,
                              label="tcpcli04")
            client.send("hello\n")
            client.wait_for("^hello$")
            r.until(lambda: len(set(observe.children_of(server.pid)) - before) >= 5)
            r.remember_children(server)
            client.close_stdin()
            client.wait()
            client.flush()
            # Settled when none of this round's children is still running.
            r.until(lambda: not [p for p in _live_children(server) if p.pid not in before],
                    timeout=5)
            # A fixed pause, for the last SIGCHLD to be handled: there is no event to
            # wait for.  With --reap wait the children the handler will never reap
            # are zombies just like one whose SIGCHLD is still on its way, and no
            # "child N terminated" line comes for them: waiting for a line per child
            # would wait for ever, and counting zombies at once would count too many.
            r.until(lambda: False, timeout=0.2)
            zombies = [p for p in _children(server) if p and p.zombie and p.pid not in before]
            server.flush()
            counts.append(len(zombies))
            r.say(f"round {n + 1}: 5 children ended together; zombies left: {len(zombies)}")
            if reap == "wait" and zombies:
                break       # shown once: no need for more rounds
        r.ps([server], f"--reap {reap}, after the last round")
        r.netstat_summary(server.port, f"--reap {reap}, after the last round")
        results[reap] = counts
    r.expect(any(results["wait"]),
             f"with wait(), some of the 5 children stay zombies (zombies per round: "
             f"{results['wait']}; the text: nondeterministic, so up to {rounds} rounds)")
    r.expect(not any(results["waitpid"]),
             f"with waitpid(-1, WNOHANG) in a loop, none does (per round: "
             f"{results['waitpid']})")


@scenario("X4", "eintr-accept", "accept() interrupted by SIGCHLD (EINTR), and the fix",
          f"{SOURCE}, 5.9 Handling SIGCHLD Signals and Handling Interrupted System Calls", """\
"solaris % tcpserv02 & ... ^D ... child 16942 terminated ... accept error: Interrupted
system call   # main function aborts"
"Since the signal was caught by the parent while the parent was blocked in a slow system call
(accept), the kernel causes the accept to return an error of EINTR".
The fix (tcpserv03): "if (errno == EINTR) continue; /* back to for () */".
""")
def eintr_accept(r):
    outcomes = {}
    for program, args, label in (
            ("bench.scenarios.texts", ("tcpserv02", "0"), "tcpserv02"),
            ("bench.scenarios.texts", ("tcpserv02", "--restart", "0"), "tcpserv03"),
            ("servers.echo_fork", (), "echo_fork")):
        r.heading(label)
        server = r.server(program, *args, label=label, loopback=program.startswith("servers"))
        client = r.client("clients.echo", "--plain", "127.0.0.1", server.port, label="tcpcli01")
        client.send("hi there\n")
        client.wait_for("^hi there$")
        if label == "tcpserv02":
            r.until(lambda: observe.children_of(server.pid))
            r.remember_children(server)
            r.ps([server, client], "connected: the parent blocks in accept, the child in read")
        client.close_stdin()
        client.wait()
        client.flush()
        server.wait_for(r"child \d+ terminated")
        aborted = False
        try:
            server.wait(timeout=0.5)
            aborted = True
        except ScenarioError:
            pass
        served_again = False
        if aborted:
            rows = r.netstat(server.port, f"{label} has exited")
            r.expect(not [x for x in rows if x.state == "LISTEN"],
                     f"{label} is gone: nothing listens on port {server.port} any more")
        if not aborted:
            second = r.client("clients.echo", "--plain", "127.0.0.1", server.port,
                              label="second client")
            second.send("again\n")
            served_again = bool(second.wait_for("^again$"))
            second.close_stdin()
            second.wait()
            second.flush()
        server.flush()
        outcomes[label] = (aborted, server.has("accept error: Interrupted system call"),
                           served_again)
    r.expect(outcomes["tcpserv02"][:2] == (True, True),
             "tcpserv02 prints 'accept error: Interrupted system call' after the first child "
             "ends, and exits")
    r.expect(outcomes["tcpserv03"] == (False, False, True),
             "tcpserv03, which goes back to accept on EINTR, serves the next client")
    r.expect(outcomes["echo_fork"] == (False, False, True),
             "selectlab's fork server (PEP 475 restarts the call; its loop waits in epoll) "
             "serves the next client")


def _asleep_in_a_call(pid):
    """The process's WCHAN while it sleeps (STAT S), or None while it runs or has gone."""
    p = observe.process(pid)
    return p.wchan if p is not None and p.stat == "S" and p.wchan != "-" else None


def _polling(wchan):
    """Whether a WCHAN is where poll(2) and select(2) sleep (poll_schedule_timeout)."""
    return wchan is not None and "poll" in wchan


_FULL_QUEUE = """\
A SYN that finds the accept queue full is dropped, whatever that setting (with 1, the kernel
resets only a handshake whose last ACK finds the queue full), and the client's TCP sends it
again each time its retransmission timer runs out, 1 s at first."""

_CONNECT_AGAIN = """\
Linux: a second connect() on a blocking socket whose handshake is under way sleeps until it
completes; only a non-blocking one gets EALREADY at once (net/ipv4/af_inet.c,
__inet_stream_connect). CPython's socket.connect, when
connect() fails with EINTR and the handler returns (socketmodule.c, internal_connect): "the
connection is running asynchronously. If the socket is blocking or has a timeout, wait until
the connection completes, fails or timed out using select(), and then get the connection
status using getsockopt(SO_ERROR)." -- the text's advice, built in."""


@scenario("X21", "eintr-connect", "connect() interrupted by a signal: EINTR, then select for "
          "the connection", f"{SOURCE}, 5.9 Handling Interrupted System Calls", """\
"However, there is one function that we cannot restart: connect. If this function returns
EINTR, we cannot call it again, as doing so will return an immediate error. When connect is
interrupted by a caught signal and is not automatically restarted, we must call select to wait
for the connection to complete."
""")
def eintr_connect(r):
    r.say(f"net.ipv4.tcp_abort_on_overflow = {observe.sysctl('net.ipv4.tcp_abort_on_overflow')}")
    r.say(_FULL_QUEUE)
    # A connect blocks while the server cannot accept: stopped, its queue full.
    server = r.server("servers.echo_select", "--backlog", "1", "-v", label="echo_select")
    port = server.port
    queued = []
    try:
        with r.held(server):
            queued = [r.connect(server.address, timeout=2) for _ in range(2)]
            r.say("[two clients] connect() returned: the kernel completed their handshakes and "
                  "queued them; listen(1) holds two")
            overflows = observe.netstat_counter("ListenOverflows")
            clients = {}
            for args, label in ((("--on-eintr", "again"), "connect again"),
                                (("--on-eintr", "select"), "select (the fix)"),
                                (("--handler", "return"), "handler returns")):
                client = r.client("bench.scenarios.texts_unp", "connect_intr", *args, "127.0.0.1",
                                  port, label=label)
                client.wait_for("^connect to ")
                # Asleep after that line: in connect, its SYN sent (the netstat below shows it).
                r.until(lambda: _asleep_in_a_call(client.pid))
                clients[label] = client
            ours = r.client("clients.echo", "127.0.0.1", port, label="clients.echo")
            r.until(lambda: _polling(_asleep_in_a_call(ours.pid)))
            rows = r.netstat(port, "the server stopped, its accept queue full")
            listen_q = [x.recv_q for x in rows if x.state == "LISTEN"]
            syn_sent = [x for x in rows if x.state == "SYN_SENT"]
            dropped = observe.netstat_counter("ListenOverflows") - overflows
            r.expect(listen_q == [2] and len(syn_sent) == 4 and dropped > 0,
                     f"the connects block: the accept queue is full (LISTEN Recv-Q {listen_q}), "
                     f"the kernel drops the SYNs (ListenOverflows rose by {dropped}), and "
                     f"{len(syn_sent)} clients wait in SYN_SENT")
            procs = r.ps([server, *clients.values(), ours], "each client asleep in connect")
            wchan = {p.pid: p.wchan for p in procs}
            r.expect(_polling(wchan.get(ours.pid)),
                     f"selectlab's clients.echo connects with a timeout, so CPython makes it a "
                     f"non-blocking connect and waits in poll from the start (WCHAN "
                     f"{wchan.get(ours.pid)}): a signal can interrupt only the poll, which PEP 475 "
                     f"restarts")

            r.heading("SIGALRM, caught, interrupts the three connects")
            for client in clients.values():
                client.signal(signal.SIGALRM)
            clients["connect again"].wait_for("^connect error: ")
            clients["select (the fix)"].wait_for("^select: waiting")
            clients["handler returns"].wait_for("^SIGALRM caught")
            r.until(lambda: all(_asleep_in_a_call(c.pid) for c in clients.values()))
            procs = r.ps([server, *clients.values()], "after SIGALRM: the server still stopped")
            wchan = {p.pid: p.wchan for p in procs}
            for label in ("connect again", "select (the fix)"):
                r.expect(clients[label].has(r"^connect error: Interrupted system call \(EINTR\); "
                                            r"the socket, local port \d+, is in SYN_SENT"),
                         f"{label}: connect returns -1 with errno EINTR, and its socket is still "
                         f"in SYN_SENT: the handshake goes on in the kernel")
            again = clients["connect again"]
            r.expect(not again.has("^connect again:") and wchan.get(again.pid)
                     and not _polling(wchan.get(again.pid)),
                     f"Linux differs: connect called again on the blocking socket returns no "
                     f"immediate error; it sleeps in connect again (WCHAN {wchan.get(again.pid)}), "
                     f"waiting for the same handshake")
            fix = clients["select (the fix)"]
            r.expect(fix.has(r"^connect again \(O_NONBLOCK\): -1, errno EALREADY \(Operation "
                             r"already in progress\), at once"),
                     "the immediate error is the one a non-blocking connect gets at once: "
                     "EALREADY, 'Operation already in progress'; then select waits")
            cpython = clients["handler returns"]
            r.expect(_polling(wchan.get(cpython.pid))
                     and not cpython.has("^connect (error|returned)"),
                     f"CPython, when the handler returns: connect does not fail; CPython waits for "
                     f"the connection itself, in poll (WCHAN {wchan.get(cpython.pid)}), as the "
                     f"text advises (socketmodule.c, internal_connect)")

            r.say(_CONNECT_AGAIN)

            r.heading("the server goes on: the queue drains, the next SYNs get in")
        ours.send("still there?\n")
        for client in clients.values():
            client.wait_for("^echo: hello$", timeout=10)
        ours.wait_for(r"^still there\?$", timeout=10)
        ours.close_stdin()
        statuses = {label: c.wait() for label, c in [*clients.items(), ("clients.echo", ours)]}
        r.flush_all()
        r.netstat_summary(port, "every client connected and echoed")
        r.expect(again.has(r"^connect again: returned 0"),
                 "connect again: it returns 0 once the handshake completes (on Linux, calling "
                 "connect again on a blocking socket waits for the connection)")
        r.expect(fix.has(r"^select: writable; getsockopt\(SO_ERROR\) = 0 \(connected\)"),
                 "the fix: select returns the socket writable and getsockopt(SO_ERROR) gives 0: "
                 "connected")
        r.expect(cpython.has(r"^connect returned 0"),
                 "CPython's connect returns 0 once the connection is complete")
        r.expect(set(statuses.values()) == {0},
                 f"every client is then echoed and ends normally (exit statuses {statuses})")
    finally:
        for sock in queued:
            sock.close()


@scenario("X6", "rst-before-accept", "Connection abort before accept returns",
          f"{SOURCE}, 5.11 Connection Abort before accept Returns", """\
"the server receives an RST for an ESTABLISHED connection before accept is called."
"There is another condition similar to the interrupted system call that can cause accept to
return a nonfatal error, in which case we should just call accept again."
"An easy way to simulate this scenario is to start the server ... and then go to sleep for a
short period of time before calling accept. While the server process is asleep, start the
client ... As soon as connect returns, set the SO_LINGER socket option to generate the RST".
""")
def rst_before_accept(r):
    for module, label in (("servers.echo_select", "echo_select"),
                          ("servers.echo_fork", "echo_fork")):
        r.heading(label)
        extra = ("--trace",) if module == "servers.echo_select" else ("-v",)
        server = r.server(module, *extra, label=label)
        # Our servers never sleep before accept; stopping one does the same.
        with r.held(server):
            r.ps([server], "stopped (STAT T): it cannot call accept")
            sock = r.connect(server.address, timeout=2)
            aborted_port = sock.getsockname()[1]
            r.say(f"[client] connect() returned: {aborted_port} -> {server.port}")
            r.netstat(server.port, "connected, not yet accepted: the server is stopped")
            reset(sock)
            r.say("[client] SO_LINGER {on, 0}; close(): RST")
            rows = r.netstat(server.port, "after the RST, before accept")
            r.expect([(x.state, x.recv_q) for x in rows] == [("LISTEN", 1)],
                     f"{label}: the RST ends the connection before accept (no ESTABLISHED line is "
                     f"left; the LISTEN line's Recv-Q counts it, still queued)")
        second = r.client("clients.echo", "--plain", "127.0.0.1", server.port,
                          label="next client")
        second.send("still here?\n")
        second.wait_for("^still here\\?$")
        second.close_stdin()
        r.expect(second.wait() == 0 and server.alive(),
                 f"{label}: the server is not hurt, and serves the next client")
        second.flush()
        server.flush()
        r.expect(server.has(rf":{aborted_port} .*(ECONNRESET|ECONNABORTED)")
                 or server.has("pending connection lost"),
                 f"{label}: the aborted connection ends as an error of that connection alone "
                 f"(its log line names port {aborted_port})")
    r.say("Linux hands the reset connection to accept() (POSIX's ECONNABORTED is not")
    r.say("returned); the first read on it fails with ECONNRESET, which ends that connection")
    r.say("only. The lines about the first connection above show what each server saw.")


@scenario("X7", "server-child-killed", "The server child killed while the client waits on "
          "stdin", f"{SOURCE}, 5.12 Termination of Server Process", """\
"Nothing happens at the client. The client TCP receives the FIN from the server TCP and
responds with an ACK, but the problem is that the client process is blocked in the call to
fgets waiting for a line from the terminal."
"tcp 0 0 localhost:9877 localhost:43604 FIN_WAIT2 / tcp 1 0 localhost:43604 localhost:9877
CLOSE_WAIT"
"another line ... str_cli : server terminated prematurely"
"it should block on input from either source. Indeed, this is one purpose of the select and
poll functions" -- the multiplexing client reports it at once.
""")
def server_child_killed(r):
    server = r.server("servers.echo_fork")
    for plain in (True, False):
        label = "tcpcli01 (--plain)" if plain else "clients.echo (select)"
        r.heading(label)
        before = set(observe.children_of(server.pid))
        client = r.client("clients.echo", *(["--plain"] if plain else []), "127.0.0.1",
                          server.port, label=label)
        client.send("hello\n")
        client.wait_for("^hello$")
        client.flush()
        r.until(lambda: set(observe.children_of(server.pid)) - before)
        r.remember_children(server)
        child = sorted(set(observe.children_of(server.pid)) - before)[0]
        r.say(f"$ kill {child}    # the server child")
        os.kill(child, signal.SIGTERM)
        server.wait_for(rf"child {child} terminated")
        if plain:
            # The FIN is sent, then ACKed: wait (briefly) for FIN_WAIT1 to pass.
            r.until(lambda: {"FIN_WAIT2", "CLOSE_WAIT"} <= {
                x.state for x in r.tcp_sockets(server.port)})
            rows = r.netstat(server.port, "the child killed; the client waits on stdin")
            r.expect(any(x.state == "FIN_WAIT2" and x.local[1] == server.port for x in rows)
                     and any(x.state == "CLOSE_WAIT" and x.remote[1] == server.port
                             for x in rows),
                     "the server's side is in FIN_WAIT2, the client's in CLOSE_WAIT")
            # A fixed pause is the point here: the text says nothing happens to the
            # client (asleep reading stdin) until it writes, so there is no event to
            # wait for, only a while in which none comes.
            r.until(lambda: False, timeout=0.5)
            r.ps([client], "the client half a second later")
            r.expect(client.alive() and client.output()[-1] == "hello",
                     "half a second later the client has noticed nothing: it is asleep "
                     "reading its input")
            client.send("another line\n")
            client.wait_for("terminated prematurely|reset", timeout=3)
            status = client.wait()
            client.flush()
            r.expect(status == 1 and client.has("server terminated prematurely|Connection "
                                                "reset by peer"),
                     "after 'another line' it reports 'server terminated prematurely' (or, if "
                     "the RST came first, 'Connection reset by peer') and exits")
        else:
            client.wait_for("terminated prematurely", timeout=3)
            status = client.wait()
            client.flush()
            r.expect(status == 1,
                     "the multiplexing client reports 'server terminated prematurely' at once, "
                     "with no more input typed, and exits")
        server.flush()
