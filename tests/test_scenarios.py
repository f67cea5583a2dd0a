"""`python -m bench.scenarios`: every scenario runs as its text predicts, and the runner
reports contradictions, bounds each scenario in time and cleans up what it started."""

import fcntl
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import termios

import pytest

from conftest import ROOT, run_main, wait_until
from bench.scenarios import netns, observe
from bench.scenarios.harness import REGISTRY, Scenario, ScenarioError, recv_to_eof

IDS = list(REGISTRY)


def _descriptors_allow(n):
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return hard == resource.RLIM_INFINITY or hard >= n


def scenarios_cli(*args, timeout=90):
    return subprocess.run([sys.executable, "-m", "bench.scenarios", *args], cwd=ROOT,
                          capture_output=True, timeout=timeout)


@pytest.mark.parametrize("ident", IDS)
def test_each_scenario_runs_as_its_text_predicts(ident):
    """`run ID` starts what the scenario needs, quotes its source, shows the TCP states and the
    process table, and every observation agrees with the text (exit 0)."""
    if ident == "select-1024" and not _descriptors_allow(1200):
        pytest.skip("select-1024 needs a hard limit of at least 1200 open files")
    if ident == "x8" and (reason := netns.unavailable()):
        pytest.skip(f"X8 needs a network namespace of its own: {reason}")
    proc = scenarios_cli("run", ident)
    out = proc.stdout.decode()
    assert proc.returncode == 0, out[-6000:] + proc.stderr.decode()
    sc = REGISTRY[ident]
    assert f"Prediction ({sc.source}):" in out
    prediction = out.split("Transcript:")[0]
    assert re.search(r'  > .*"[^"]{20,}', prediction), "the prediction quotes its text"
    assert "Verdict: as the text predicts" in out
    assert "[ok]" in out and "CONTRADICTED" not in out
    assert "-- ps  (" in out, "the process table of the server's family"
    assert "-- netstat -a | grep" in out or ident == "x11", "the TCP states (UDP has none)"


def test_the_required_scenarios_are_all_there():
    """Every experiment README's table lists has its scenario, by the texts' id."""
    assert set(IDS) >= {"x1", "x3", "x5", "x4", "x6", "x7", "x9", "x16", "e13", "e3", "x11",
                        "select-1024", "x19"}


def test_list_names_every_scenario():
    """`list` prints one line per scenario with its id, name and source."""
    proc = scenarios_cli("list")
    lines = proc.stdout.decode().splitlines()
    assert proc.returncode == 0 and len(lines) == len(REGISTRY)
    for sc, line in zip(REGISTRY.values(), lines):
        assert line.startswith(sc.ident) and sc.name in line and sc.source in line


@pytest.mark.parametrize("args", [["run", "no-such"], ["run"], ["run", "X1", "--all"], ["go"]])
def test_usage_errors_are_one_line(args):
    """An unknown scenario, or neither ids nor --all, is one line on stderr and exit 2."""
    proc = scenarios_cli(*args)
    assert proc.returncode == 2
    assert proc.stderr.decode().count("\n") == 1, proc.stderr
    assert proc.stderr.decode().startswith("python -m bench.scenarios: error: ")


@pytest.fixture
def fake(monkeypatch):
    """Register a throw-away scenario under the id "fake"."""
    def register(func, limit=20.0):
        sc = Scenario("fake", "fake", "a fake scenario", "nowhere", '"nothing"', func, limit)
        monkeypatch.setitem(REGISTRY, "fake", sc)
        return sc
    return register


def test_a_contradicted_observation_fails_the_run(fake):
    """One expectation that does not hold makes the verdict a contradiction and exit status 1."""
    def func(r):
        r.expect(True, "this held")
        r.expect(False, "this did not")
    fake(func)
    status, out = run_main(["run", "fake"])
    assert status == 1
    assert "[CONTRADICTED] this did not" in out and "Verdict: CONTRADICTS" in out


@pytest.mark.parametrize("wait", ["until", "wait_for", "wait"])
def test_a_wait_past_the_limit_stops_the_scenario_and_fails_it(fake, wait):
    """A wait of the harness that would outlast the scenario's limit ends at the limit, and the
    scenario is counted as unfinished, saying what it was waiting for; an ``except Exception``
    in the scenario does not take the limit for a failed wait."""
    def func(r):
        r.expect(True, "started")
        try:
            if wait == "until":
                r.until(lambda: False, timeout=600)
            else:
                # The guide's UDP client: one line, then it blocks in recvfrom for ever.
                client = r.client("bench.scenarios.texts", "udpcli", "127.0.0.1", "9",
                                  label="udpcli")
                if wait == "wait_for":
                    client.wait_for("^never printed$", timeout=600)
                else:
                    client.wait(timeout=600)
        except Exception:
            r.expect(False, "the limit was caught as an error")
    fake(func, limit=1.0)
    status, out = run_main(["run", "fake"])
    assert status == 1
    doing = {"until": "polling in until()", "wait_for": "waiting for udpcli to print",
             "wait": "waiting for udpcli to exit"}[wait]
    assert f"did not finish within its limit of 1 s ({doing}" in out, out
    assert "caught as an error" not in out


def test_a_scenario_that_returns_past_its_limit_fails(fake):
    """Code of the scenario's own (here a blocking read with its own timeout, as the scenarios'
    socket reads have) is not interrupted, but a scenario that returns past its limit is
    counted as unfinished all the same."""
    def func(r):
        r.expect(True, "started")
        mine, other = socket.socketpair()
        with mine, other:
            mine.settimeout(0.5)
            with pytest.raises(TimeoutError):
                mine.recv(1)        # nothing ever comes
    fake(func, limit=0.2)
    status, out = run_main(["run", "fake"])
    assert status == 1
    assert "did not finish within its limit of 0.2 s (it ran 0." in out, out


def test_the_limit_takes_no_signal(fake):
    """The limit is kept by the harness's waits, not by a signal: while a scenario runs,
    SIGALRM's handler is the one it was before (a hang guard such as pytest-timeout's)."""
    seen = []

    def func(r):
        seen.append(signal.getsignal(signal.SIGALRM))
        r.expect(True, "ran")
    fake(func)
    before = signal.getsignal(signal.SIGALRM)
    assert run_main(["run", "fake"])[0] == 0
    assert seen == [before]


def test_everything_a_scenario_started_is_ended_even_when_it_fails(fake):
    """A scenario that fails midway still leaves no server, no server child and no client."""
    started = {}

    def func(r):
        server = r.server("servers.echo_fork")
        client = r.client("clients.echo", "127.0.0.1", server.port)
        client.send("hello\n")
        client.wait_for("^hello$")
        r.until(lambda: observe.children_of(server.pid))
        r.remember_children(server)
        started["pids"] = [server.pid, client.pid, *observe.children_of(server.pid)]
        raise ScenarioError("failing on purpose")
    fake(func)
    status, out = run_main(["run", "fake"])
    assert status == 1 and "failing on purpose" in out
    assert len(started["pids"]) == 3
    for pid in started["pids"]:
        p = observe.process(pid)
        assert p is None, f"pid {pid} still there: {p.args if p else ''}"


def test_a_scenario_failing_midway_leaves_its_own_sockets_closed(fake):
    """The sockets a scenario made itself (``r.connect``, ``r.keep``) are closed when it fails
    midway, before it could close them: none is left open in the process that ran it."""
    made = []

    def func(r):
        server = r.server("servers.echo_select")
        made.append(r.connect(server.address))
        made.append(r.keep(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)))
        made[0].sendall(b"hello\n")
        raise ScenarioError("failing on purpose")
    fake(func)
    status, out = run_main(["run", "fake"])
    assert status == 1 and "failing on purpose" in out
    assert len(made) == 2
    assert [sock.fileno() for sock in made] == [-1, -1], "a socket of the scenario's left open"


def test_recv_to_eof_keeps_the_bytes_that_came_before_a_reset():
    """A peer that sends, then resets (SO_LINGER 0): recv_to_eof returns what it sent, and
    says the connection ended in a reset, not an EOF."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname(), timeout=3) as client:
            peer, _ = listener.accept()
            peer.sendall(b"busy\n")
            wait_until(lambda: _unread(client) == 5, "the 5 bytes to arrive")
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.close()
            assert recv_to_eof(client) == (b"busy\n", "reset")


def _unread(sock):
    return struct.unpack("i", fcntl.ioctl(sock, termios.FIONREAD, b"\0\0\0\0"))[0]


def test_proc_net_tcp_is_read_right():
    """The netstat reader finds a listening socket and both ends of a connection by port."""
    import socket
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        port = lsock.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            s, _ = lsock.accept()
            with s:
                rows = observe.tcp_sockets(port)
                states = sorted((r.state, r.local[1] == port) for r in rows)
                assert states == [("ESTABLISHED", False), ("ESTABLISHED", True),
                                  ("LISTEN", True)]
                assert all(r.local[0] == "127.0.0.1" for r in rows)


def test_a_server_that_never_starts_is_ended_when_the_limit_strikes(fake, monkeypatch):
    """A server that never prints its 'listening on' line is still ended by the cleanup when
    the scenario's time limit interrupts the wait for it."""
    from bench.scenarios import harness
    seen = []
    cleanup = harness.Run.cleanup

    def recording_cleanup(self):
        seen.extend(p.pid for p in self.procs)
        cleanup(self)
    monkeypatch.setattr(harness.Run, "cleanup", recording_cleanup)

    def func(r):
        # The guide's UDP client never prints 'listening on': a server that never starts.
        r.server("bench.scenarios.texts", "udpcli", "127.0.0.1", "9", loopback=False)
    fake(func, limit=1.0)
    status, out = run_main(["run", "fake"])
    assert status == 1 and "did not finish within its limit of 1 s" in out
    seconds = float(re.search(r"Verdict: could not be completed \((\d+\.\d) s\)", out)[1])
    assert seconds < harness.START_TIMEOUT, "the limit, not the start timeout, ended the wait"
    assert len(seen) == 1 and observe.process(seen[0]) is None


def test_the_transcript_keeps_the_order_things_happened_in(fake):
    """A line a process printed before the event that made the scenario say something comes
    before the scenario's line in the transcript, even when the process printed a lot just before
    (its pipe is read by another thread, which may lag), and every line carries a time on the
    scenario's one clock, increasing down the transcript."""
    from bench.scenarios.harness import Proc

    def func(r):
        with socket.create_server(("127.0.0.1", 0)) as lsock:
            port = lsock.getsockname()[1]
            code = ("import socket\n"
                    "for n in range(3000): print('filler', n)\n"
                    "print('the cause', flush=True)\n"
                    f"socket.create_connection(('127.0.0.1', {port})).sendall(b'x')\n")
            Proc(r, "child", [sys.executable, "-c", code], subprocess.DEVNULL)
            lsock.settimeout(10)
            conn, _ = lsock.accept()
            with conn:
                conn.settimeout(10)
                r.expect(conn.recv(1) == b"x", "the child connected after printing")
                r.say("the effect")
    fake(func)
    status, out = run_main(["run", "fake"])
    assert status == 0, out
    transcript = out.split("Transcript:")[1].split("Checks:")[0]
    lines = transcript.strip("\n").splitlines()
    cause = next(i for i, line in enumerate(lines) if line.endswith("[child] the cause"))
    effect = next(i for i, line in enumerate(lines) if line.endswith("  the effect"))
    assert cause < effect
    stamps = [float(m[1]) for m in (re.match(r"  +(\d+\.\d{3})  ", line) for line in lines) if m]
    assert len(stamps) >= 3002 and stamps == sorted(stamps)


def test_a_scenario_with_several_ids_is_found_by_any():
    """`run E8` finds the scenario that shows X17 E7 E8 E9, as `run X17` does, and by its name."""
    from bench.scenarios import harness
    sc = Scenario("X99 E98 E97", "several", "several ids", "nowhere", '"nothing"',
                  lambda r: None, 1.0)
    REGISTRY["x99"] = sc
    try:
        assert harness.find("e98") is sc and harness.find("X99") is sc
        # E9 is a prefix of E98 and E97, not one of them (it is parent-killed's own id).
        assert harness.find("several") is sc and harness.find("E9") is not sc
    finally:
        del REGISTRY["x99"]
