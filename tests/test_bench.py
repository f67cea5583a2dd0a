"""The benchmark runs, checks every byte, stays on loopback, and says when its numbers are a lower bound.

No test here looks at a speed: ``--quick`` is a smoke run, and what it asserts is
that results were produced, from the servers asked for, with no broken echo.
The report's tests are pure: a results structure in, Markdown and plots out.
"""

import json
import os
import re
import resource
import socket
import subprocess
import sys
import threading
import warnings

import pytest

from bench import build, catalog, report, runner
from servers.limits import RESERVED_FDS
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
    process and thread of each server was held to the server's one CPU.  Under
    a descriptor limit too low for 1,000 clients (``ulimit -n 1024``), the
    clients a server turns away with busy are counted and reported apart, and
    the run still passes.  No library warning reaches stderr.
    """
    done = _bench("--quick", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Warning" not in done.stderr, done.stderr[-2000:]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    low_limit = hard != resource.RLIM_INFINITY and hard < 1000 + RESERVED_FDS
    results = json.loads((tmp_path / "results.json").read_text())
    pairs = {(r["server"], r["workload"]) for r in results["runs"]}
    for server in ("echo_select", "echo_fork", "echo_thread", "asyncio", "ss_thread", "c_epoll"):
        for workload in ("pingpong-1k-10", "pingpong-100k-10", "churn-10"):
            assert (server, workload) in pairs
    for run in results["runs"]:
        assert run["errors"] == 0, run
        if run["workload"] == "idle-1000":
            # Each of the 1,000 is held, or turned away because the limit leaves fewer places.
            assert run["idle_ok"] + run["busy"] == 1000, run
            assert run["busy"] == 0 or low_limit, run
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
    if any(r["busy"] for r in results["runs"]):
        assert "turned away with `busy`" in table and "turned away with busy" in done.stderr
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


# --- the report, from a results structure -------------------------------------------

def _meta(reps=1):
    return {"machine": {"cpu_model": "Test CPU", "cores": 2, "memory_gib": 4.0, "kernel": "6.1",
                        "python_implementation": "CPython", "python": "3.11.7"},
            "started": "2026-01-01T00:00:00+00:00", "command": "python -m bench --quick",
            "loadgen": "C epoll (bench/loadgen.c)", "lower_bound": False, "server_cpu": 0,
            "client_cpu": 1, "reps": reps, "seconds": 0.5, "warmup": 0.2, "quick": reps == 1,
            "skipped": {}, "failed": {}}


def _rate(server, workload, per_s, rep=1, **extra):
    return {"server": server, "workload": workload, "rep": rep, "per_s": per_s,
            "requests": int(per_s / 2), "errors": 0, "failures": 0, "busy": 0,
            "bytes_checked": 1024 * int(per_s / 2), "established": 10, "served": 10,
            "stalled": 0, "idle_lost": 0, "ready_s": 0.01, "ready_timeout": 0,
            "server_us_per_req": 1e6 / per_s, "server_cpu_pct": 90.0, "client_cpu_pct": 80.0,
            "p50_us": 90.0, "p99_us": 300.0, "other_pct": 1.0, **extra}


def _memory(server, kib_per_conn, rep=1, idle_ok=1000, **extra):
    return {"server": server, "workload": "idle-1000", "rep": rep, "per_s": 0.0, "requests": 0,
            "errors": 0, "failures": 0, "busy": 0, "bytes_checked": idle_ok, "established": 0,
            "served": 0, "stalled": 0, "idle_lost": 0, "idle_ok": idle_ok, "ready_s": 0.0,
            "p50_us": 0.0, "p99_us": 0.0, "processes": 1, "pss_before_kib": 12000.0,
            "anon_pss_before_kib": 1000.0, "pss_kib": 12000.0 + kib_per_conn * idle_ok,
            "anon_pss_kib": 1000.0 + kib_per_conn * idle_ok, **extra}


def _runs(servers=catalog.QUICK_SERVERS, workloads=catalog.QUICK_WORKLOADS, reps=1):
    """What a run of these servers on these workloads could have measured (C's memory: 0)."""
    runs = []
    for rep in range(1, reps + 1):
        for i, name in enumerate(servers):
            for workload in workloads:
                if workload not in catalog.SERVER[name].workloads:
                    continue
                if catalog.WORKLOAD[workload].mode == "memory":
                    runs.append(_memory(name, 0.0 if name == "c_epoll" else 0.5 * (i + 1), rep))
                else:
                    runs.append(_rate(name, workload, 10000.0 * (i + 1) + 500 * rep, rep))
    return runs


def _tables(text):
    """Every Markdown table in ``text``: (headings, rows of cells)."""
    tables, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif block:
            tables.append((block[0], block[2:]))
            block = []
    return tables


def _empty_columns(text):
    """The (table's first heading, column) pairs in which every row is – (notes may be blank)."""
    return [(head[0], heading) for head, rows in _tables(text) if rows
            for i, heading in enumerate(head) if all(row[i] == "–" for row in rows)]


@pytest.mark.parametrize("servers", [catalog.QUICK_SERVERS, ["echo_select"],
                                     ["asyncio", "c_epoll"]])
def test_report_shows_only_what_the_run_measured_and_says_once_what_it_left_out(servers):
    """A --quick run, or a subset of servers, reads without empty columns or headline rows of –:
    what the run did not measure is left out, and the line under the overview names the
    overview's missing columns once.  Its CPU column is at the 1 KiB count that was measured."""
    text = report.markdown(report.summarise(_runs(servers)), _meta())
    assert _empty_columns(text) == []
    headline = text[text.index("## Headline"):text.index("## 1 KiB ping-pong, 10")]
    assert "–" not in headline
    assert text.count("Not measured in this run, so not shown: 1 KiB ×1; 1 KiB ×100; "
                      "1 KiB ×1,000.") == 1
    assert "µs CPU/req, 1 KiB ×10 |" in text
    if len(servers) == 1:
        assert "No comparison: each needs servers or workloads this run did not measure." in text


def test_quick_report_headline_compares_what_quick_measures():
    """The headline of a --quick run gives its comparisons (at 10 connections, its only 1 KiB
    count) and lists only the servers that ran; a row that goes on from one left out is said
    in full."""
    rows, left_out = report.headline(report.summarise(_runs()))
    what = [w for w, _ in rows]
    assert what[0] == "1 KiB ping-pong at 10 connections, requests/s: echo_select ÷ asyncio"
    assert "… server CPU per request, µs: echo_select / asyncio / C" in what
    assert "server CPU per short connection (churn), µs: echo_select -q / C" in what
    assert left_out == 13 - len(rows) > 0
    only_ratio = report.summarise(_runs(["echo_select", "echo_fork"], ["idle-1000"]))
    assert [w for w, _ in report.headline(only_ratio)[0]] == [
        "memory per idle connection (1,000 held), KiB: echo_select / echo_fork",
        "… echo_fork ÷ echo_select"]
    # Without asyncio and C, the rows "… echo_select ÷ echo_fork" goes on from are left out.
    forked = report.summarise(_runs(["echo_select", "echo_fork"], ["pingpong-1k-10"]))
    assert [w for w, _ in report.headline(forked)[0]] == [
        "1 KiB ping-pong at 10 connections, requests/s: echo_select ÷ echo_fork"]


def test_one_run_is_said_as_one_run_with_no_spread():
    """With one run per cell the report says "1 run", not "median of 1 runs", and shows no ±
    column of 0 % spreads; with three it gives the median and the spread."""
    one = report.markdown(report.summarise(_runs()), _meta(reps=1))
    assert "Each cell is 1 run of 0.5 s" in one and "no spread to show" in one
    assert "median" not in one
    assert all("±" not in head for head, _ in _tables(one))
    three = report.markdown(report.summarise(_runs(reps=3)), _meta(reps=3))
    assert "Each cell is the median of 3 runs of 0.5 s" in three
    head, rows = next(t for t in _tables(three) if "±" in t[0])
    spreads = [row[head.index("±")] for row in rows]
    assert all(re.fullmatch(r"\d+%", s) for s in spreads) and set(spreads) != {"0%"}


def test_clients_turned_away_with_busy_are_reported_apart_from_broken_echoes():
    """A server that answers busy at its capacity (992 places under a 1,024-descriptor limit)
    has not broken an echo: the report says how many it turned away, counts memory over the
    clients it held, and a broken echo is still reported as one."""
    runs = [_memory("echo_select", 0.5, idle_ok=992, busy=8),
            _rate("echo_fork", "pingpong-1k-10", 50000.0, errors=1)]
    summary = report.summarise(runs)
    held = report._find(summary, "echo_select", "idle-1000")
    assert (held["busy"], held["errors"], held["kib_per_idle_conn"]) == (8, 0, 0.5)
    text = report.markdown(summary, _meta())
    line = next(line for line in text.splitlines() if line.startswith("| echo_select |")
                and "MiB" in line)
    assert "8 turned away with `busy`: the server was at its capacity (not broken echoes)" in line
    assert "only 992 of 1000 idle connections held" in line and "broken echoes**" not in line
    assert "**1 broken echoes**" in text


def test_every_server_has_one_fixed_colour_and_marker_in_one_table():
    """Every server the catalog knows, of either mode, has its own colour and marker in
    catalog.PLOT_STYLE, and the plots take them from there, whatever else ran."""
    names = [s.name for s in catalog.SERVERS + catalog.WORKER_SERVERS]
    assert sorted(catalog.PLOT_STYLE) == sorted(names)
    colours = [colour for colour, _ in catalog.PLOT_STYLE.values()]
    markers = [marker for _, marker in catalog.PLOT_STYLE.values()]
    assert len(set(colours)) == len(colours) and len(set(markers)) == len(markers)
    for name in names:
        assert report._style(name)["color"] == catalog.PLOT_STYLE[name][0]


@pytest.fixture
def drawn(monkeypatch):
    """What report.plot draws, by file name: each line's label and colour, the legend's
    labels, and the titles."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    seen = {}
    save = Figure.savefig

    def savefig(fig, path, **kwargs):
        lines = {line.get_label(): line.get_color() for ax in fig.axes for line in ax.lines}
        legend = [text.get_text() for ax in fig.axes if ax.get_legend()
                  for text in ax.get_legend().get_texts()]
        titles = " ".join([fig._suptitle.get_text() if fig._suptitle else ""]
                          + [ax.get_title() for ax in fig.axes])
        seen[path.name] = {"lines": lines, "legend": legend, "titles": titles}
        save(fig, path, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return seen


def test_plots_draw_every_server_that_ran_in_its_own_colour(tmp_path, drawn):
    """A --quick run's plots have a legend and every server that ran: each server with a 1 KiB
    ping-pong figure in pingpong.png (one count is a point each, not an empty plot), each
    with a memory figure in memory.png, the C server too (below what PSS can show, so drawn
    at that floor); each in its catalog colour, the same beside other servers; "1 run each"."""
    paths = report.plot(report.summarise(_runs()), _meta(), tmp_path)
    assert [p.name for p in paths] == ["pingpong.png", "memory.png"]
    pingpong, memory = drawn["pingpong.png"], drawn["memory.png"]
    assert sorted(pingpong["legend"]) == sorted(catalog.QUICK_SERVERS)
    assert sorted(label.split()[0] for label in memory["legend"]) == sorted(
        n for n in catalog.QUICK_SERVERS if "idle-1000" in catalog.SERVER[n].workloads)
    assert any(label.startswith("c_epoll (below what PSS can show") for label in memory["lines"])
    for plot in (pingpong, memory):
        for label, colour in plot["lines"].items():
            assert colour == catalog.PLOT_STYLE[label.split()[0]][0]
        assert "1 run each" in plot["titles"] and "median" not in plot["titles"]
    report.plot(report.summarise(_runs(["asyncio", "c_epoll"])), _meta(), tmp_path)
    assert drawn["pingpong.png"]["lines"]["asyncio"] == pingpong["lines"]["asyncio"]


def test_a_subset_run_writes_no_empty_plot_and_no_warning(tmp_path, drawn):
    """`--servers echo_select` plots its one server without a library warning; a run with
    nothing a plot shows (churn alone) writes none, and leaves no older plot behind that
    would disagree with its results."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = report.plot(report.summarise(_runs(["echo_select"])), _meta(), tmp_path)
        assert [p.name for p in paths] == ["pingpong.png", "memory.png"]
        assert drawn["pingpong.png"]["legend"] == ["echo_select"]
        assert report.plot(report.summarise(_runs(["echo_select"], ["churn-10"])), _meta(),
                           tmp_path) == []
    assert not (tmp_path / "pingpong.png").exists() and not (tmp_path / "memory.png").exists()
