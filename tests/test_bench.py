"""The benchmark runs, checks every byte, stays on loopback, and says when its numbers are a lower bound.

No test here looks at a speed: ``--quick`` is a smoke run, and what it asserts is
that results were produced, from the servers asked for, with no broken echo.
"""

import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from bench import build, runner
from tests.conftest import DEADLINE, ROOT


def _bench(*args, timeout=170):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def loadgen():
    try:
        return str(build.build("loadgen"))
    except build.BuildUnavailable as exc:
        pytest.skip(str(exc))


def _generator(which, request, *python_options):
    """The argv of the C load generator (built if need be) or of the Python one."""
    if which == "c":
        return [request.getfixturevalue("loadgen")]
    return [sys.executable, "-m", "bench.pyload", *python_options]


@pytest.mark.timeout(180)
def test_quick_run_produces_every_result_with_every_byte_checked(tmp_path):
    """`python -m bench --quick` (what CI runs) measures every planned pair and finds no broken echo.

    It also shows that memory is read over the whole process family: the fork
    server holding 1,000 idle clients is 1,001 processes; and that every
    process and thread of each server was held to the server's one CPU.
    """
    done = _bench("--quick", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    pairs = {(r["server"], r["workload"]) for r in results["runs"]}
    for server in ("echo_select", "echo_fork", "echo_thread", "asyncio", "ss_thread", "c_epoll"):
        for workload in ("pingpong-1k-10", "pingpong-100k-10", "churn-10"):
            assert (server, workload) in pairs
    for run in results["runs"]:
        assert run["errors"] == 0, run
        if run["workload"] == "idle-1000":
            assert run["idle_ok"] == 1000, run
            assert run["pss_kib"] > 0
        else:
            assert run["requests"] > 0, run
            assert run["bytes_checked"] >= run["requests"] * run["size"], run
            assert run["server_cpu_s"] is not None
    fork = [r for r in results["runs"] if r["server"] == "echo_fork" and r["workload"] == "idle-1000"]
    assert fork and fork[0]["processes"] >= 1001
    ours = [r for r in results["runs"] if r["server"].startswith("echo_")]
    assert all(r["failures"] == r["stalled"] == r["idle_lost"] == 0 for r in ours), ours
    machine = results["meta"]["machine"]
    assert machine["python"] and machine["kernel"] and machine["cores"]
    server_cpu = results["meta"]["server_cpu"]
    if server_cpu is not None:      # two CPUs or more: every server family on its one CPU
        assert all(r["affinity"] == [server_cpu] for r in results["runs"] if "affinity" in r)
        assert any("affinity" in r for r in results["runs"])
    table = (tmp_path / "results.md").read_text()
    assert "## 1 KiB ping-pong, 10 connections" in table and "÷ echo_fork" in table
    assert done.stdout.strip() == table.strip()
    assert "bench: [" in done.stderr     # the progress line


def test_python_load_generator_is_labelled_a_lower_bound(tmp_path):
    """Without the C load generator, the results still come, marked as a lower bound."""
    done = _bench("--quick", "--loadgen", "python", "--servers", "echo_select",
                  "--workloads", "pingpong-1k-10,churn-10", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["meta"]["lower_bound"] is True
    assert "lower bound" in (tmp_path / "results.md").read_text()
    assert {r["workload"] for r in results["runs"]} == {"pingpong-1k-10", "churn-10"}
    assert all(r["errors"] == 0 and r["requests"] > 0 for r in results["runs"])


def test_bad_choices_get_one_line():
    """An unknown server name is one line on stderr, exit status 2, no traceback."""
    done = _bench("--servers", "echo_select,nginx")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "unknown server: nginx" in done.stderr
    assert "echo_select" in _bench("--help").stdout


@pytest.mark.parametrize("host", ["10.0.0.1", "192.168.1.1", "localhost.example"])
@pytest.mark.parametrize("which", ["c", "python"])
def test_load_generators_refuse_anything_but_loopback(which, host, request):
    """Both load generators refuse, before sending anything, an address outside 127.0.0.0/8."""
    argv = _generator(which, request)
    done = subprocess.run([*argv, "pingpong", "-p", "9", "-H", host], cwd=ROOT,
                          capture_output=True, text=True, timeout=DEADLINE)
    assert done.returncode == 2
    assert "only loopback addresses" in done.stderr


def test_driver_refuses_a_server_that_listens_off_loopback(tmp_path):
    """A server whose first line names an address outside loopback is not measured."""
    argv = [sys.executable, "-c", "print('listening on 10.1.2.3:80', flush=True)"]
    with pytest.raises(runner.BenchError, match="did not print 'listening on 127.0.0.1:PORT'"):
        runner.ServerProcess(argv, tmp_path / "log", None).start()


class _Corrupter:
    """An echo server that changes one byte it sends back (the 1000th), or leaves one out."""

    def __init__(self, drop=None):
        self.drop = drop        # the index of the byte to leave out
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        conn, _ = self.listener.accept()
        with conn:
            sent = 0
            while data := conn.recv(65536):
                data = bytearray(data)
                at = (999 if self.drop is None else self.drop) - sent
                sent += len(data)
                if 0 <= at < len(data):
                    if self.drop is not None:
                        del data[at]
                    else:
                        data[at] ^= 0xFF
                conn.sendall(data)


@pytest.mark.parametrize("which", ["c", "python"])
def test_load_generators_catch_a_wrong_byte(which, request):
    """One changed byte in the echo is counted as an error and fails the run (exit 1)."""
    argv = _generator(which, request, "--procs", "1")
    server = _Corrupter()
    done = subprocess.run([*argv, "pingpong", "-p", str(server.port), "-c", "1", "-s", "4096",
                           "-d", "0.3", "-w", "0"], cwd=ROOT, capture_output=True, text=True,
                          timeout=DEADLINE)
    result = json.loads(done.stdout)
    assert done.returncode == 1
    assert result["errors"] == 1
    assert "echoed bytes differ" in done.stderr
    server.listener.close()


@pytest.mark.parametrize("which", ["c", "python"])
def test_load_generators_report_a_lost_byte_as_a_stalled_connection(which, request):
    """A last byte the server never sends back leaves the connection waiting: it is reported stalled."""
    argv = _generator(which, request, "--procs", "1")
    server = _Corrupter(drop=4095)    # the first message's last byte
    # -T 1: the wait for every connection's first echo gives up after 1 s.
    done = subprocess.run([*argv, "pingpong", "-p", str(server.port), "-c", "1", "-s", "4096",
                           "-d", "1.5", "-w", "0", "-T", "1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=DEADLINE)
    result = json.loads(done.stdout)
    assert result["stalled"] == 1 and result["requests"] == 0
    server.listener.close()


class _AtCapacity:
    """An echo server for its first ``capacity`` clients; to the others it says ``reply``
    (by default ``busy\\n``, as servers/service.py does), half-closes, drains and closes."""

    def __init__(self, capacity, reply=b"busy\n"):
        self.capacity, self.reply, self.accepted = capacity, reply, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return      # closed at the end of the test
            self.accepted += 1
            serve = self._echo if self.accepted <= self.capacity else self._turn_away
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    def _echo(self, conn):
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except ConnectionResetError:
                pass        # the load generator closing while an echo was on its way

    def _turn_away(self, conn):
        with conn:
            conn.sendall(self.reply)
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(1.0)
            try:
                while conn.recv(4096):
                    pass
            except OSError:
                pass


@pytest.mark.parametrize("which", ["c", "python"])
def test_load_generators_count_clients_turned_away_with_busy_apart_from_broken_echoes(which,
                                                                                      request):
    """A server at its capacity that answers `busy` and closes has not broken an echo: both
    load generators count those clients as turned away (``busy``), not as errors, and exit 0.
    This is what a server with 992 places meets when bench opens 1,000 idle connections
    under a 1,024-descriptor limit."""
    argv = _generator(which, request, "--procs", "1")
    server = _AtCapacity(3)
    done = subprocess.run([*argv, "pingpong", "-p", str(server.port), "-c", "0", "-i", "5",
                           "-d", "0.2", "-w", "0"], cwd=ROOT, capture_output=True, text=True,
                          timeout=DEADLINE)
    result = json.loads(done.stdout)
    assert done.returncode == 0, done.stderr
    assert (result["idle_ok"], result["busy"], result["errors"]) == (3, 2, 0), result
    assert result["failures"] == 0, result
    assert "turned away, not as a broken echo" in done.stderr
    server.listener.close()


@pytest.mark.parametrize("which", ["c", "python"])
def test_a_reply_that_only_looks_like_busy_is_still_a_broken_echo(which, request):
    """Only `busy` itself is a client turned away: a server that answers something else in
    place of the echo (here ``busz``) has broken it, and the run fails (exit 1)."""
    argv = _generator(which, request, "--procs", "1")
    server = _AtCapacity(1, reply=b"busz\n")
    done = subprocess.run([*argv, "pingpong", "-p", str(server.port), "-c", "2", "-s", "64",
                           "-d", "0.3", "-w", "0", "-T", "2"], cwd=ROOT, capture_output=True,
                          text=True, timeout=DEADLINE)
    result = json.loads(done.stdout)
    assert done.returncode == 1
    assert result["errors"] == 1 and result["busy"] == 0, result
    assert result["requests"] > 0       # the one it served echoed correctly
    server.listener.close()


@pytest.mark.parametrize("mode", ["pingpong", "churn"])
def test_python_load_generator_checks_every_byte(mode, start_server):
    """The Python load generator drives echo_select in both modes; every byte comes back checked."""
    server = start_server("servers.echo_select")
    done = subprocess.run([sys.executable, "-m", "bench.pyload", mode, "-p", str(server.port),
                           "-c", "4", "-s", "3000", "-d", "0.3", "-w", "0.1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=DEADLINE)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["requests"] > 0 and result["errors"] == 0 and result["failures"] == 0
    assert result["bytes_checked"] >= result["requests"] * 3000


def test_programs_are_compiled_once_into_the_cache(tmp_path, monkeypatch):
    """The C programs are built into the cache folder (not the checkout) once, then reused."""
    if build.compiler() is None:
        pytest.skip("no C compiler")
    monkeypatch.setenv("SELECTLAB_CACHE", str(tmp_path))
    first = build.build("c_echo")
    assert first.parent == tmp_path and os.access(first, os.X_OK)
    stamp = first.stat().st_mtime_ns
    assert build.build("c_echo") == first and first.stat().st_mtime_ns == stamp
    monkeypatch.setattr(build, "compiler", lambda: None)
    monkeypatch.setenv("SELECTLAB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(build.BuildUnavailable, match="no C compiler"):
        build.build("c_echo")
