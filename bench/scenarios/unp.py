"""UNP ch. 5's boundary conditions: the fork server's life and deaths."""

import os
import signal
import socket
import struct

from bench.scenarios import observe
from bench.scenarios.harness import ScenarioError, scenario

SOURCE = "Stevens, UNIX Network Programming, ch. 5"


def _states(rows, server_port):
    """(server-side states, client-side states, listening?) of a netstat snapshot."""
    server = [r.state for r in rows if r.local[1] == server_port and r.state != "LISTEN"]
    client = [r.state for r in rows if r.remote[1] == server_port]
    listening = any(r.state == "LISTEN" and r.local[1] == server_port for r in rows)
    return server, client, listening


def _state(pid):
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
            r.until(lambda: False, timeout=0.2)     # let the last SIGCHLD be handled
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
        server.signal(signal.SIGSTOP)
        r.until(lambda: _state(server.pid) == "T", timeout=2)
        r.ps([server], "stopped (STAT T): it cannot call accept")
        sock = socket.create_connection(server.address, timeout=2)
        aborted_port = sock.getsockname()[1]
        r.say(f"[client] connect() returned: {aborted_port} -> {server.port}")
        r.netstat(server.port, "connected, not yet accepted: the server is stopped")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        r.say("[client] SO_LINGER {on, 0}; close(): RST")
        rows = r.netstat(server.port, "after the RST, before accept")
        r.expect([(x.state, x.recv_q) for x in rows] == [("LISTEN", 1)],
                 f"{label}: the RST ends the connection before accept (no ESTABLISHED line is "
                 f"left; the LISTEN line's Recv-Q counts it, still queued)")
        server.signal(signal.SIGCONT)
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
