"""``--workers N``: a master and N reactor workers on one port (servers.workers).

Every server here is started on 127.0.0.1, port 0, and killed by pid at
teardown with its workers (``Child.kill`` ends the family it has seen).
"""

import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from bench.process import children
from servers.workers import (
    MAX_RESTART_DELAY, WORKER, Master, WorkerAction, WorkerEvent, WorkerState, restart_delay,
)
from tests.conftest import DEADLINE, ROOT, wait_exited

W, WE, WA = WorkerState, WorkerEvent, WorkerAction

WORKER_STATS = re.compile(r"worker (\d+) \(pid (\d+)\): stats: (.*)$", re.M)
TOTAL_STATS = re.compile(r" stats: total of (\d+) worker\(s\): (.*)$", re.M)


def counters(text):
    return {k: int(v) for k, v in (f.split("=") for f in text.split())}


def ask_counters(server):
    """SIGUSR1 to the master; the per-worker counters and the total it logs in answer."""
    mark = len(server.log())
    server.signal(signal.SIGUSR1)
    server.wait_for_log(lambda log: TOTAL_STATS.search(log, mark),
                        "a total stats line after SIGUSR1")
    answer = server.log()[mark:]
    per_worker = {int(n): counters(text) for n, _pid, text in WORKER_STATS.findall(answer)}
    return per_worker, counters(TOTAL_STATS.search(answer).group(2))


def workers_of(server, count):
    """The pids of the master's ``count`` workers, once all are there."""
    found = server.child.stderr.wait(
        lambda: len(pids := [s.pid for s in children(server.proc.pid) if not s.zombie])
        == count and pids, DEADLINE)
    assert found, f"not {count} workers; log:\n{server.log()[-2000:]}"
    server.child.remember_family()
    return found


def echo(address, data=b"ping\n"):
    with socket.create_connection(address, timeout=DEADLINE) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    return got


def listening_sockets(port):
    """The inodes of the sockets listening on 127.0.0.1:``port`` (/proc/net/tcp, state 0A)."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.split(":")[1], 16) == port:
                inodes.add(inode)
    return inodes


# --- the tables -------------------------------------------------------------------


def test_a_worker_that_dies_after_starting_is_replaced_and_one_that_never_started_fails():
    """The master's rule: a worker that dies while serving is replaced; one that dies before
    it ever said it was ready is a start failure (the master exits, or backs off); a stop
    reaches every worker that runs, each time the master is told to stop."""
    assert WORKER.apply(W.DOWN, WE.FORKED) == (W.STARTING, None)
    assert WORKER.apply(W.STARTING, WE.READY) == (W.SERVING, None)
    assert WORKER.apply(W.SERVING, WE.EXITED) == (W.DOWN, WA.RESTART)
    assert WORKER.apply(W.STARTING, WE.EXITED) == (W.DOWN, WA.START_FAILED)
    assert WORKER.apply(W.SERVING, WE.STOP) == (W.STOPPING, WA.TERMINATE)
    assert WORKER.apply(W.STOPPING, WE.STOP) == (W.STOPPING, WA.TERMINATE)
    assert WORKER.apply(W.STOPPING, WE.EXITED) == (W.DOWN, None)
    assert WORKER.apply(W.DOWN, WE.STOP) == (W.DOWN, None)


def test_restarts_are_immediate_once_and_back_off_when_a_worker_keeps_dying():
    """A worker killed once (kill -9, the OOM killer) is replaced at once; one that dies at
    start again and again is replaced after 0.5, 1, 2... seconds, never more than the cap,
    so a broken worker cannot make the master fork in a tight loop."""
    assert restart_delay(0) == restart_delay(1) == 0.0
    delays = [restart_delay(n) for n in range(2, 12)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert delays == sorted(delays) and max(delays) == MAX_RESTART_DELAY


# --- a real master and its workers --------------------------------------------------


@pytest.mark.timeout(60)
def test_two_workers_share_200_clients_and_sigusr1_totals_their_counters(start_server):
    """With --workers 2, 200 concurrent clients each get their exact echo, both workers hold
    some of them, and SIGUSR1 to the master logs each worker's counters and their total."""
    server = start_server("servers.echo_select", "--workers", "2")
    workers_of(server, 2)
    assert server.log().count("listening on") == 0     # announced on stdout, once
    clients = []
    try:
        for n in range(200):
            sock = socket.create_connection(server.address, timeout=DEADLINE)
            clients.append(sock)
            sock.sendall(b"%d\n" % n)
        for n, sock in enumerate(clients):
            expected = b"%d\n" % n
            got = b""
            while len(got) < len(expected):
                got += sock.recv(64)
            assert got == expected
        per_worker, total = ask_counters(server)
        assert sorted(per_worker) == [1, 2]
        assert all(c["active"] > 0 for c in per_worker.values()), per_worker
        assert total["active"] == 200 == sum(c["active"] for c in per_worker.values())
        assert total["bytes_in"] == sum(len(b"%d\n" % n) for n in range(200))
    finally:
        for sock in clients:
            sock.close()


@pytest.mark.timeout(60)
def test_a_killed_worker_is_replaced_and_service_goes_on(start_server):
    """kill -9 of a worker: the master logs its pid and how it ended, starts a new worker
    on the same socket at once, and every client is served meanwhile and after."""
    server = start_server("servers.echo_select", "--workers", "2")
    first, second = workers_of(server, 2)
    os.kill(first, signal.SIGKILL)
    server.wait_for_log(f"worker 1 (pid {first}) ended (killed by SIGKILL): starting a new one")
    server.wait_for_log(lambda log: re.search(r"worker 1 \(pid (\d+)\) is serving", log),
                        "the new worker serving")
    now = workers_of(server, 2)
    assert second in now and first not in now
    # Enough clients that both sockets' hashes are hit (P(miss) = 2**-40).
    for n in range(40):
        assert echo(server.address, b"after %d\n" % n) == b"after %d\n" % n
    per_worker, _total = ask_counters(server)
    assert per_worker[1]["accepted"] > 0 and per_worker[2]["accepted"] > 0


@pytest.mark.timeout(60)
def test_sigterm_drains_every_worker_and_the_master_exits_0_leaving_none(start_server):
    """SIGTERM to the master: each worker drains and logs its stopped line, the master
    exits 0 once they are all gone, and no worker process is left behind."""
    server = start_server("servers.echo_select", "--workers", "2")
    pids = workers_of(server, 2)
    assert echo(server.address) == b"ping\n"
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    wait_exited(pids)
    log = server.log()
    for number, pid in enumerate(pids, 1):
        assert f"worker {number} (pid {pid}): stopped:" in log
    assert "stopped: 2 worker(s), 0 restart(s)" in log


@pytest.mark.timeout(60)
def test_ctrl_c_reaching_every_process_is_one_graceful_stop(start_server):
    """Ctrl-C in a terminal sends SIGINT to the master and the workers alike: the workers
    leave it to the master, so it is one graceful stop (exit 0), not a second signal."""
    server = start_server("servers.echo_select", "--workers", "2")
    pids = workers_of(server, 2)
    for pid in pids:
        os.kill(pid, signal.SIGINT)
    server.signal(signal.SIGINT)
    assert server.wait() == 0
    wait_exited(pids)
    assert "stopping now" not in server.log()


@pytest.mark.timeout(60)
def test_a_second_signal_stops_the_workers_at_once_with_exit_status_1(start_server):
    """While a worker waits out its grace period for a client that never ends its side, a
    second SIGTERM to the master drops that client at once: the master exits 1, and no
    worker is left."""
    server = start_server("servers.echo_select", "--workers", "2", "--grace", "600")
    pids = workers_of(server, 2)
    stalled = socket.create_connection(server.address, timeout=DEADLINE)
    try:
        stalled.sendall(b"x")
        # A worker has it (it never sends its EOF: the drain waits the whole grace).
        for _ in range(100):
            if ask_counters(server)[1]["active"] == 1:
                break
        server.signal(signal.SIGTERM)
        server.wait_for_log("shutting down: 1 client(s)")
        server.signal(signal.SIGTERM)
        assert server.wait() == 1
        wait_exited(pids)
        assert "SIGTERM again: stopping" in server.log()
    finally:
        stalled.close()


@pytest.mark.timeout(60)
def test_the_masters_death_takes_its_workers_with_it(start_server):
    """kill -9 of the master: every worker sees its control socket close and stops, so no
    worker goes on serving with nobody to supervise or stop it."""
    server = start_server("servers.echo_select", "--workers", "2")
    pids = workers_of(server, 2)
    os.kill(server.proc.pid, signal.SIGKILL)
    wait_exited(pids)
    server.wait_for_log("the master has gone: stopping now")


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "reuseport"])
def test_a_port_in_use_is_one_line_and_exit_1_with_no_restart_loop(reuse_port):
    """A port another program holds (with or without SO_REUSEPORT) is refused as it is
    without workers: one line saying what to do, exit 1, no worker started, no traceback."""
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "servers.echo_select", "--workers", "2", "-b", "127.0.0.1",
             str(port)], cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE)
    finally:
        holder.close()
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "address already in use" in lines[0] and "Traceback" not in done.stderr


@pytest.mark.parametrize("reuse_port, sockets", [(True, 2), (False, 1)],
                         ids=["reuseport", "shared"])
def test_reuseport_gives_each_worker_a_socket_and_no_reuseport_shares_one(
        start_server, reuse_port, sockets):
    """--reuseport (the default): two listening sockets on the port, one per worker, the
    kernel spreading clients; --no-reuseport: one socket both accept from.  Either way
    clients are served."""
    flag = "--reuseport" if reuse_port else "--no-reuseport"
    server = start_server("servers.echo_select", "--workers", "2", flag)
    workers_of(server, 2)
    assert len(listening_sockets(server.port)) == sockets
    for n in range(10):
        assert echo(server.address, b"%d" % n) == b"%d" % n


@pytest.mark.timeout(60)
def test_udp_is_served_by_every_worker_on_the_same_port(start_server):
    """--udp with --workers 2: datagrams to the port come back byte for byte, from sockets
    bound with SO_REUSEPORT too, and the total counts every one."""
    server = start_server("servers.echo_select", "--workers", "2", "--udp")
    workers_of(server, 2)
    assert server.child.stdout.wait(
        lambda: f"listening on 127.0.0.1:{server.port} (UDP)" in server.child.stdout.text(),
        DEADLINE)
    for n in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(DEADLINE)
            sock.sendto(b"dgram %d" % n, server.address)
            assert sock.recvfrom(65536)[0] == b"dgram %d" % n
    per_worker, total = ask_counters(server)
    assert total["udp_datagrams_in"] == 20
    assert sum(c["udp_datagrams_in"] for c in per_worker.values()) == 20


def test_the_workers_log_lines_name_the_worker(start_server):
    """Each worker's lines say which worker and pid wrote them, so an operator reading one
    log of several processes can tell them apart."""
    server = start_server("servers.echo_select", "--workers", "2", "-v")
    pids = workers_of(server, 2)
    assert echo(server.address) == b"ping\n"
    server.wait_for_log(lambda log: re.search(r"worker \d \(pid \d+\): .*open", log),
                        "a worker's client line")
    found = re.search(r"worker (\d) \(pid (\d+)\): .*open", server.log())
    assert int(found.group(2)) == pids[int(found.group(1)) - 1]


# --- the master, in this process, with workers that cannot start ---------------------


@pytest.mark.timeout(30)
def test_a_worker_that_cannot_start_makes_the_master_exit_with_its_error():
    """A worker that fails before the first 'listening on' line (here: its start raises
    cli.Fatal) makes the master stop the others and fail with that worker's one-line
    error; nothing is restarted."""
    import cli

    calls = os.pipe()

    def start(number, channel):
        os.write(calls[1], b"%d" % number)
        if number == 2:
            raise cli.Fatal("cannot do it; do something else")
        channel.ready()
        import select
        # The first worker waits for its SIGTERM (its default action ends it).
        select.select([], [], [])
        return 0

    master = Master([([], []), ([], [])], start, grace=1.0)
    try:
        with pytest.raises(cli.Fatal, match=r"^worker 2 could not start: cannot do it; "
                                            r"do something else$"):
            master.run()
        assert master.restarts == 0
        os.close(calls[1])
        started = b""
        while chunk := os.read(calls[0], 64):
            started += chunk
        assert sorted(started) == sorted(b"12")     # one start each, no retry
        assert all(slot.state is W.DOWN and slot.pid is None for slot in master.slots)
    finally:
        os.close(calls[0])


@pytest.mark.timeout(60)
def test_the_udp_echo_server_runs_with_workers_too(start_server):
    """servers.udp_echo --workers 2: one 'listening on ... (UDP)' line, two workers, each
    datagram echoed byte for byte, and SIGTERM stops them all with exit status 0."""
    server = start_server("servers.udp_echo", "--workers", "2")
    assert server.udp
    pids = workers_of(server, 2)
    for n in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(DEADLINE)
            sock.sendto(b"udp %d" % n, server.address)
            assert sock.recvfrom(65536)[0] == b"udp %d" % n
    _per_worker, total = ask_counters(server)
    assert total["udp_datagrams_out"] == 20
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    wait_exited(pids)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("module, args, send, expect", [
    ("servers.busy_select", (), b"x", b"x"),
    ("servers.daytime", (), b"", b"\r\n"),
    ("servers.hello", ("--model", "select"), b"hello\n", b"Hello, World!"),
], ids=["busy_select", "daytime", "hello"])
def test_every_reactor_server_takes_workers(start_server, module, args, send, expect):
    """--workers is not echo_select's alone: the busy, daytime and Hello (select model)
    servers run under a master with two workers and answer as they do alone."""
    server = start_server(module, *args, "--workers", "2")
    workers_of(server, 2)
    assert expect in echo(server.address, send)
    server.signal(signal.SIGTERM)
    assert server.wait() == 0


@pytest.mark.timeout(60)
def test_with_workers_each_worker_has_a_monitor_and_the_master_lists_them(start_server):
    """--monitor with --workers 2: after the listening line, the master prints one monitor
    address per worker, and each page shows that worker's own pid and clients."""
    import json

    server = start_server("servers.echo_select", "--workers", "2", "--monitor", "0")
    pids = workers_of(server, 2)
    found = server.child.stdout.wait(lambda: len(re.findall(
        r"monitor on http://127\.0\.0\.1:(\d+)/ \(worker (\d)\)", server.child.stdout.text()))
        == 2, DEADLINE)
    assert found, server.child.stdout.text()
    lines = server.child.stdout.text().splitlines()
    assert lines[0].startswith("listening on ")
    for port, number in re.findall(r"monitor on http://127\.0\.0\.1:(\d+)/ \(worker (\d)\)",
                                   server.child.stdout.text()):
        with socket.create_connection(("127.0.0.1", int(port)), timeout=DEADLINE) as sock:
            sock.sendall(b"GET /state.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            got = b""
            while chunk := sock.recv(65536):
                got += chunk
        state = json.loads(got.partition(b"\r\n\r\n")[2])
        assert state["pid"] == pids[int(number) - 1]


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5"])
def test_a_bad_worker_count_is_one_line_naming_both_forms(value):
    """`--workers 0` (or any value that is neither a whole number from 1 nor `auto`) is a one-line
    usage error that names both accepted forms, exit status 2, and nothing starts."""
    proc = subprocess.run([sys.executable, "-m", "servers.echo_select", "0", "-b", "127.0.0.1",
                           "--workers", value], cwd=ROOT, capture_output=True, timeout=30)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and proc.stdout == b""
    assert err.count("\n") == 1 and "from 1 up, or auto" in err, err
