"""X8, the server host's crash in a network namespace: what it computes and reads, and that the
namespace and its veth pair are gone after every run, whether it ends, fails or is interrupted."""

import ipaddress
import re
import signal
import socket
import subprocess
import sys

import pytest

import cli
from conftest import run_main
from bench import process
from bench.scenarios import netns, observe
from bench.scenarios.harness import ScenarioError


@pytest.fixture(scope="module")
def namespaces_allowed():
    """Skip, saying why, where this machine cannot make a namespace and a veth pair."""
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)


def server_pids(out):
    """The pids the namespace's servers logged as they started."""
    return [int(pid) for pid in re.findall(r"INFO pid (\d+) serving", out)]


def assert_nothing_left(pid, out):
    """Neither the namespace nor the pair of the run by ``pid`` is left, nor its servers."""
    ns = netns.Namespace(pid)
    assert ns.name not in netns.namespaces()
    assert ns.host_if not in netns.interfaces()
    for server in server_pids(out):
        p = observe.process(server)
        assert p is None, f"server pid {server} still there: {p.args}"


# --- what it computes and reads ----------------------------------------------------

@pytest.mark.parametrize("retries2, seconds", [(15, 924.6), (9, 204.6), (10, 324.6), (3, 3.0),
                                               (8, 102.2)])
def test_the_default_timeout_is_computed_as_the_kernel_does(retries2, seconds):
    """The scenario's "gives up after about N s" is Linux's tcp_model_timeout: the timeout
    doubles from 200 ms to 120 s, then stays; tcp_retries2 = 15 (the default) is 924.6 s."""
    assert netns.default_timeout(retries2) == pytest.approx(seconds)


def _hex(address, port):
    """An endpoint as /proc/net/tcp prints it on this host."""
    raw = int.from_bytes(socket.inet_aton(address), sys.byteorder)
    return f"{raw:08X}:{port:04X}"


def test_a_proc_net_tcp_line_is_read_with_its_timer():
    """A /proc/net/tcp line gives its addresses, state, queues and timer as `netstat -ao` shows
    them: Send-Q, then on (seconds left/retransmissions/probes)."""
    hz = process.CLK_TCK
    line = (f"   0: {_hex('169.254.1.1', 50000)} {_hex('169.254.1.2', 40000)} 01 "
            f"00000015:00000000 01:{hz // 5:08X} 00000003     0        0 12345 1 "
            f"0000000000000000 20 4 30 10 -1")
    keepalive = line.replace(" 01:", " 02:").replace(" 00000003 ", " 00000000 ").replace(
        "     0        0 12345", "     0        2 12345")
    text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt\n"
    rows = observe.parse_tcp_table(text + line + "\n" + keepalive + "\n", 40000)
    assert [(x.local, x.remote, x.state, x.send_q, x.recv_q) for x in rows] == [
        (("169.254.1.1", 50000), ("169.254.1.2", 40000), "ESTABLISHED", 21, 0)] * 2
    assert [observe.format_timer(x) for x in rows] == ["on (0.20/3/0)", "keepalive (0.20/0/2)"]
    assert observe.parse_tcp_table(text + line + "\n", 40001) == []


def test_the_real_table_shows_a_connection_and_its_unread_bytes():
    """Read from this host's own /proc/net/tcp, a connection's client end is found by the
    server's address, ESTABLISHED, and the bytes the server has not read are its Recv-Q."""
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        port = lsock.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            conn, _ = lsock.accept()
            with conn:
                here = client.getsockname()
                client.sendall(b"unread\n")
                conn.settimeout(5)
                assert conn.recv(7, socket.MSG_PEEK | socket.MSG_WAITALL) == b"unread\n"
                # Only this connection's ends: the host may hold TIME_WAITs of older
                # connections with the same port number.
                rows = [x for x in netns.host_rows("127.0.0.1", port) if x.local == here]
                with open("/proc/net/tcp") as f:
                    server_side = [x for x in observe.parse_tcp_table(f.read(), port)
                                   if x.remote == here]
    assert [x.state for x in rows] == ["ESTABLISHED"]
    assert [(x.local, x.state, x.recv_q) for x in server_side] == [
        (("127.0.0.1", port), "ESTABLISHED", 7)]


def test_the_pair_gets_a_subnet_no_route_of_the_host_uses():
    """The /30 overlaps no route of the host (the pid's first choice taken, the next is used);
    with all of 169.254.0.0/16 routed it comes from 198.18.0.0/15 (RFC 2544, never a real
    network's); with everything routed, no run."""
    first = netns.free_subnet(1234, [])
    second = netns.free_subnet(1234, [first])
    assert first.prefixlen == second.prefixlen == 30 and first != second
    assert not second.overlaps(first)
    assert ipaddress.ip_network("169.254.0.0/16").supernet_of(first)
    fallback = netns.free_subnet(1234, [ipaddress.ip_network("169.254.0.0/16")])
    assert ipaddress.ip_network("198.18.0.0/15").supernet_of(fallback)
    with pytest.raises(ScenarioError, match="overlaps a route"):
        netns.free_subnet(1234, [ipaddress.ip_network("0.0.0.0/1"),
                                 ipaddress.ip_network("128.0.0.0/1")])


def test_where_it_cannot_run_it_says_why_and_is_not_completed(monkeypatch):
    """Without root (here: pretended), the scenario makes nothing, says why, and ends "could not
    be completed" with exit status 1; unavailable() gives the same reason."""
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    status, out = run_main(["run", "X8"])
    assert status == 1
    assert "[FAILED] this machine cannot run it: making a network namespace and a veth pair " \
           "needs root (CAP_NET_ADMIN), and this runs as uid 1000" in out
    assert "Verdict: could not be completed" in out
    assert "ip netns add" not in out
    assert "needs root" in netns.unavailable()


def test_without_ip_it_says_so(monkeypatch):
    """Without the ip command the reason names it (iproute2)."""
    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns.shutil, "which", lambda tool: None if tool == "ip" else "/bin/x")
    assert netns.unavailable() == "the ip command (iproute2) is not installed"


# --- cleanup, always ---------------------------------------------------------------

def test_a_normal_run_leaves_no_namespace(namespaces_allowed):
    """After a run that went as predicted, neither its namespace nor its veth pair is left,
    nor any server it started in the namespace."""
    status, out = run_main(["run", "X8"])
    assert status == 0, out[-4000:]
    assert f"$ ip netns del {netns.Namespace(netns.os.getpid()).name}" in out
    assert len(server_pids(out)) == 2
    assert_nothing_left(netns.os.getpid(), out)


@pytest.mark.parametrize("failure", [ScenarioError, RuntimeError])
def test_a_run_that_fails_midway_leaves_no_namespace(namespaces_allowed, monkeypatch, failure):
    """A run that fails once the namespace is up and its server serves (a failed observation,
    or a bug in the scenario) still removes the namespace and the pair, and ends the server."""
    seen = {}

    def failing(r, ns, clients, port):
        seen["made"] = ns.name in netns.namespaces() and ns.host_if in netns.interfaces()
        raise failure("failing on purpose")
    monkeypatch.setattr(netns, "_crash", failing)
    status, out = run_main(["run", "X8"])
    assert status == 1 and "failing on purpose" in out
    assert seen["made"], "the namespace and the pair were there while it ran"
    assert "Verdict: could not be completed" in out
    assert len(server_pids(out)) == 1
    assert_nothing_left(netns.os.getpid(), out)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 128 + signal.SIGTERM),
                                            (signal.SIGINT, cli.EXIT_INTERRUPTED)])
def test_an_interrupted_run_leaves_no_namespace(namespaces_allowed, signum, status):
    """`python -m bench.scenarios run X8` sent SIGTERM (or SIGINT, Ctrl-C) while the server host
    is down removes its namespace and pair before it exits, and ends its server."""
    child = process.Child([sys.executable, "-m", "bench.scenarios", "run", "X8"],
                          stderr=subprocess.STDOUT, env=process.python_env())
    try:
        out = child.stdout
        assert out.wait(lambda: "blocks in read" in out.text(), 20), out.text()
        child.popen.send_signal(signum)
        assert child.wait(20) == status, out.text()
    finally:
        child.terminate()
        child.wait(5)
        child.kill()
        child.close()
    text = out.text()
    assert f"$ ip netns del {netns.Namespace(child.pid).name}" in text, text
    assert "Checks:" not in text, "it was stopped mid-run"
    assert_nothing_left(child.pid, text)


def _dead_pid():
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def test_leftovers_of_a_run_that_could_not_clean_up_are_swept(namespaces_allowed):
    """A namespace and pair left by a run whose process has gone (SIGKILL), and the process
    still inside it, are removed by the next run; those of a live pid are left alone."""
    dead, live = netns.Namespace(_dead_pid()), netns.Namespace(1)
    assert not netns.os.path.exists(f"/proc/{dead.pid}")
    inside = None
    try:
        for ns in (dead, live):
            subprocess.run(["ip", "netns", "add", ns.name], check=True, timeout=5)
        subprocess.run(["ip", "link", "add", dead.host_if, "type", "veth", "peer", "name",
                        dead.ns_if, "netns", dead.name], check=True, timeout=5)
        inside = subprocess.Popen(dead.exec_argv(["sleep", "60"]))
        removed = netns.sweep_leftovers()
        assert dead.name in removed
        assert inside.wait(timeout=5) == -signal.SIGKILL
        assert dead.name not in netns.namespaces() and dead.host_if not in netns.interfaces()
        assert live.name in netns.namespaces(), "a live pid's namespace is not a leftover"
    finally:
        if inside is not None and inside.poll() is None:
            inside.kill()
            inside.wait()
        for ns in (dead, live):
            ns.remove()
