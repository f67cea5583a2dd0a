"""``python -m bench --multicore``: nothing pinned, the CPU split measured, its report rendered.

The pure parts are tested from numbers made up here: where the mode puts the
server and the load generator, the arithmetic of the CPU split, the report
from a results dict, and ``--render`` beside the default mode's results.  One
short run on loopback checks that the mode's servers, their children and
threads included, really may run on every CPU.  No test looks at a speed.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from bench import catalog, multicore, process, procinfo, report, runner
from tests.conftest import ROOT
from tests.test_bench import _tables

TWO_CORES = len(os.sched_getaffinity(0)) >= 2


def _bench(*args, timeout=170):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


# --- where things run --------------------------------------------------------------

def test_multicore_gives_the_server_and_the_load_generator_every_usable_cpu():
    """--multicore lets the server and the load generator use every CPU the driver may use;
    the default mode gives each one CPU of its own, and with one CPU pins nothing."""
    where = runner.placement({3, 0, 1, 2}, multicore=True)
    assert where.server == where.client == {0, 1, 2, 3}
    assert not where.separate and where.cpus == {0, 1, 2, 3}

    pinned = runner.placement({5, 7}, multicore=False)
    assert (pinned.server, pinned.client) == ({5}, {7})
    assert pinned.separate and pinned.cpus == {5, 7}

    alone = runner.placement({0}, multicore=False)
    assert alone.server is None and alone.client is None and not alone.cpus


# --- the CPU split -----------------------------------------------------------------

def _ticks(*busy_seconds, span=0.0):
    """A /proc/stat reading: each core's busy seconds, in ticks, and ``span`` more idle."""
    tick = process.CLK_TCK
    return {cpu: (round(busy * tick), round((busy + span) * tick))
            for cpu, busy in enumerate(busy_seconds)}


def test_cpu_split_is_in_percent_of_all_the_cores():
    """The load generator's share is its CPU time over everything the cores could do in its
    window: on 2 cores, one whole core is 50%; idle is what the cores' busy time leaves."""
    before = _ticks(10.0, 20.0)
    # A 2 s window: core 0 busy 1.8 s of it, core 1 1.5 s.
    after = _ticks(11.8, 21.5, span=0.2)
    split = procinfo.cpu_split(server_cpu_s=1.5, client_cpu_s=1.0, window_s=2.0,
                               before=before, after=after, cpus={1, 0})
    assert split["cpus"] == [0, 1]
    assert split["server_share_pct"] == pytest.approx(37.5)
    assert split["client_share_pct"] == pytest.approx(25.0)
    assert split["busy_pct"] == pytest.approx(82.5)
    assert split["idle_pct"] == pytest.approx(17.5)
    # Busy 3.3 core-seconds, of which 2.5 are the pair's: 0.8 s over 2 s is 40% of one core.
    assert split["other_pct"] == pytest.approx(40.0)


def test_cpu_split_is_not_diluted_by_a_late_reading():
    """The driver reads the cores a little after the window ends, while the load generator
    waits: that idle tail does not count as idle time in the window."""
    before = _ticks(0.0, 0.0)
    on_time = procinfo.cpu_split(1.0, 0.9, 2.0, before, _ticks(1.0, 1.0, span=1.0), [0, 1])
    late = procinfo.cpu_split(1.0, 0.9, 2.0, before, _ticks(1.0, 1.0, span=1.3), [0, 1])
    assert on_time == late
    assert late["busy_pct"] == pytest.approx(50.0) and late["idle_pct"] == pytest.approx(50.0)


def test_cpu_split_never_reports_negative_other_work():
    """Tick counts are coarse: when the pair's own CPU time exceeds what the ticks show busy,
    the unaccounted work is 0, not negative (it would read as negative noise)."""
    split = procinfo.cpu_split(1.2, 0.9, 2.0, _ticks(0.0, 0.0), _ticks(1.0, 1.0), [0, 1])
    assert split["busy_pct"] == pytest.approx(50.0)
    assert split["other_pct"] == 0.0


def test_one_core_of_a_single_thread_load_generator_is_one_over_the_cores():
    """The report's limit paragraph names the share at which a one-thread load generator is the
    limit: 50% on 2 cores, 25% on 4, and says plainly what the machine cannot show about 16."""
    meta = _meta()
    text = multicore.limits(meta)
    assert "near 50% (a whole core)" in text and "about 16" in text
    assert "cannot get a core each" in text and "**server CPU per request**" in text
    meta["server_cpus"] = [0, 1, 2, 3]
    assert "near 25% (a whole core)" in multicore.limits(meta)


# --- the server's CPU time ------------------------------------------------------------

def _burn(seconds):
    """Use ``seconds`` of CPU in bursts of 0.2 ms, giving the CPU up between them."""
    start = time.process_time()
    while time.process_time() - start < seconds:
        burst = time.process_time()
        while time.process_time() - burst < 0.0002:
            pass
        time.sleep(0.0001)
    return time.process_time()      # the kernel's own count of this process's CPU time


def test_children_running_in_short_bursts_are_counted_at_the_time_they_ran():
    """A server's CPU per request counts every child at the CPU time the scheduler gave it,
    even when each runs in bursts shorter than a clock tick (a fork server's children each
    echoing 1 KiB), which the tick-sampled times in /proc/PID/stat can miss."""
    done_r, done_w = os.pipe()
    hold_r, hold_w = os.pipe()
    root = os.fork()
    if root == 0:               # the "server": 20 children that burn, report, then wait
        try:
            os.close(done_r)
            os.close(hold_w)
            for _ in range(20):
                if os.fork() == 0:
                    os.write(done_w, f"{_burn(0.03)}\n".encode())
                    os.read(hold_r, 1)
                    os._exit(0)
            while True:
                try:
                    os.wait()
                except ChildProcessError:
                    break
        finally:
            os._exit(0)
    os.close(done_w)
    os.close(hold_r)
    try:
        with os.fdopen(done_r) as reports:
            used = sum(float(reports.readline()) for _ in range(20))
        counted = procinfo.tree_cpu_seconds(root)
    finally:
        os.close(hold_w)        # the children read EOF and exit
        os.waitpid(root, 0)
    # The parent's own few ms on top; nothing counted twice.
    assert used * 0.95 <= counted <= used * 1.1 + 0.05


# --- the report from a results dict --------------------------------------------------

def _meta(**extra):
    return {
        "mode": "multicore", "started": "2026-12-01T10:00:00+00:00",
        "command": "python -m bench --multicore",
        "machine": {"cpu_model": "Test CPU 9000", "cores": 2, "usable_cores": [0, 1],
                    "memory_gib": 4.0, "kernel": "6.1.0", "python": "3.11.7",
                    "python_implementation": "CPython"},
        "server_cpu": None, "client_cpu": None, "server_cpus": [0, 1], "client_cpus": [0, 1],
        "loadgen": "C epoll (bench/loadgen.c)", "lower_bound": False, "quick": False,
        "reps": 3, "seconds": 2.0, "warmup": 0.5, "failed": {},
        "skipped": {"echo_select_wauto": "servers.echo_select has no --workers option (yet)"},
        **extra,
    }


def _run(server, workload, per_s, us, shares, rep=1, processes=1):
    """One run as run_load records it, with made-up figures."""
    server_share, client_share, idle = shares
    return {
        "server": server, "workload": workload, "rep": rep, "mode": "pingpong", "size": 1024,
        "per_s": per_s, "requests": int(per_s * 2), "errors": 0, "failures": 0,
        "bytes_checked": int(per_s * 2) * 2048, "established": 100, "served": 100,
        "stalled": 0, "ready_s": 0.01, "ready_timeout": 0, "idle_lost": 0, "other_pct": 2.0,
        "server_us_per_req": us, "server_cpu_pct": server_share * 2,
        "client_cpu_pct": client_share * 2, "server_share_pct": server_share,
        "client_share_pct": client_share, "busy_pct": 100 - idle, "idle_pct": idle,
        "p50_us": 700.0, "p99_us": 1400.0, "server_processes": processes, "affinity": [0, 1],
    }


def _runs():
    runs = []
    for rep, wobble in enumerate((0.98, 1.0, 1.02), 1):
        runs += [
            _run("echo_select", "pingpong-1k-100", 120000 * wobble, 8.25, (49, 45, 4), rep),
            _run("echo_select_w2", "pingpong-1k-100", 110000 * wobble, 9.5, (60, 35, 3), rep, 3),
            _run("echo_fork", "churn-10", 700 * wobble, 2600.0, (95, 3, 1), rep, 11),
        ]
    return runs


def test_report_has_the_machine_the_limits_and_every_figure_beside_each_other():
    """The multi-core section names the machine (CPU model, cores, Python), says what the cores
    cannot show, and gives for every server echoes/s, server CPU per request and the load
    generator's share side by side, medians of the repetitions."""
    text = multicore.markdown(report.summarise(_runs()), _meta())
    assert text.startswith(f"## {multicore.TITLE}\n")
    assert "Machine: Test CPU 9000, 2 cores (CPUs 0, 1 usable)" in text
    assert "CPython 3.11.7" in text and "`python -m bench --multicore`" in text
    assert multicore.limits(_meta()) in text
    lines = text.splitlines()
    # The overview: one row per server, in the mode's order, – where it did not run.
    assert "| echo_select | 120,000 | 8.25 | 45% | – | – | – |" in lines
    assert "| echo_select_w2 | 110,000 | 9.50 | 35% | – | – | – |" in lines
    assert "| echo_fork | – | – | – | 700 | 2600.00 | 3% |" in lines
    assert lines.index("| echo_select | 120,000 | 8.25 | 45% | – | – | – |") < \
        lines.index("| echo_select_w2 | 110,000 | 9.50 | 35% | – | – | – |")
    # The workload's own table: processes, spread, cores, the split, latency.
    assert ("| echo_select_w2 | 3 | 110,000 | 2% | 9.50 | 1.20 | 60% / 35% / 3% | 700 | 1,400 |  |"
            in lines)
    assert "### 1 KiB ping-pong, 100 connections" in lines
    assert "| server | processes | connections/s |" in text      # churn counts connections
    # Why a server is missing is said, not left to guess.
    assert "- echo_select_wauto: servers.echo_select has no --workers option (yet)" in lines


def test_report_says_when_the_python_load_generator_made_the_numbers():
    """A multi-core run measured with the Python load generator says its rates are a lower bound."""
    text = multicore.markdown(report.summarise(_runs()), _meta(lower_bound=True))
    assert "every rate here is a lower bound" in text


def test_a_quick_multicore_report_says_one_run_and_shows_no_spread():
    """`--multicore --quick` measures each cell once: its report says "1 run" and that it is a
    smoke run, not "median of 1 runs", and has no ± column of 0 % spreads; three runs give
    the median and a ± column."""
    one = [r for r in _runs() if r["rep"] == 1]
    text = multicore.markdown(report.summarise(one), _meta(reps=1, quick=True))
    assert "Each cell is 1 run of 2.0 s" in text and "no spread to show" in text
    assert "A `--quick` smoke run" in text and "median" not in text
    assert _tables(text) and all("±" not in head for head, _ in _tables(text))
    three = multicore.markdown(report.summarise(_runs()), _meta())
    assert "Each cell is the median of 3 runs" in three and "smoke run" not in three
    assert all("±" in head for head, _ in _tables(three)[1:])     # every workload's table


def test_a_column_no_server_has_a_figure_in_is_left_out():
    """A multicore.json from before the CPU split was recorded reads without columns of –
    (the load generator's share, the split, the cores): each table keeps the columns some
    server has a figure in."""
    old = [{k: v for k, v in r.items() if not k.endswith("_share_pct") and k != "idle_pct"}
           for r in _runs()]
    text = multicore.markdown(report.summarise(old), _meta())
    tables = _tables(text)
    assert len(tables) == 3     # the overview and one table per workload
    for head, rows in tables:
        empty = [h for i, h in enumerate(head) if all(row[i] == "–" for row in rows)]
        assert empty == [], (head, empty)
    assert not any("load-gen share" in head or "server cores" in head for head, _ in tables)
    overview = tables[0][0]
    assert overview == ["server", "1 KiB ×100 echoes/s", "µs CPU/req", "churn ×10 conns/s",
                        "µs CPU/req"]


@pytest.fixture
def bars():
    """What multicore's figure draws: {column title: {server: bar colour}} from its
    throughput row, the C floor's hatch, and the figure's title."""
    pytest.importorskip("matplotlib")
    from matplotlib.colors import to_hex

    def drawn(summary, meta):
        fig = multicore._figure(summary, meta)
        names = multicore.ordered({s["server"] for s in summary})
        seen, hatches = {}, {}
        for ax in fig.axes[:len(fig.axes) // 3]:      # the first row: echoes/s
            colours = {}
            for bar in ax.patches:
                name = names[round(bar.get_y() + bar.get_height() / 2)]
                colours[name] = to_hex(bar.get_facecolor())
                hatches[name] = bar.get_hatch()
            seen[ax.get_title()] = colours
        title = fig._suptitle.get_text()
        report._pyplot().close(fig)
        return seen, hatches, title
    return drawn


def test_each_server_has_its_catalog_colour_whatever_ran_beside_it(bars):
    """In multicore.png each server's bars are its colour from catalog.PLOT_STYLE, the one it
    has in pingpong.png, not one picked by its place among the servers that ran: asyncio
    keeps its colour with or without echo_fork beside it.  The C floor is hatched, and a
    --quick run's title says "1 run each"."""
    from matplotlib.colors import to_hex
    servers = ["echo_select", "echo_select_w2", "echo_fork", "asyncio", "c_epoll"]
    runs = [_run(name, "pingpong-1k-100", 100000 - 1000 * i, 8.0 + i, (50, 40, 5))
            for i, name in enumerate(servers)]
    seen, hatches, title = bars(report.summarise(runs), _meta(reps=1, quick=True))
    (colours,) = seen.values()
    assert colours == {name: to_hex(catalog.PLOT_STYLE[name][0]) for name in servers}
    assert hatches["c_epoll"] == "//" and not hatches["asyncio"]
    assert "1 run each" in title and "median" not in title
    alone, _, title = bars(report.summarise([r for r in runs if r["server"] != "echo_fork"]),
                           _meta())
    assert next(iter(alone.values()))["asyncio"] == colours["asyncio"]
    assert "median of 3 runs" in title


def test_a_plot_of_nothing_is_not_written_and_an_older_one_is_removed(tmp_path):
    """With no run to draw, multicore.plot writes no multicore.png and removes one left from
    an earlier run, so that no plot in the folder disagrees with its results."""
    pytest.importorskip("matplotlib")
    assert multicore.plot(report.summarise(_runs()), _meta(), tmp_path) == [
        tmp_path / multicore.PLOT]
    assert (tmp_path / multicore.PLOT).stat().st_size > 0
    assert multicore.plot([], _meta(), tmp_path) == []
    assert not (tmp_path / multicore.PLOT).exists()


def _single_core_results():
    """A default-mode results.json as older runs wrote it: no "mode" in meta."""
    meta = {k: v for k, v in _meta().items() if k != "mode"}
    meta.update(server_cpu=0, client_cpu=1, skipped={})
    runs = [_run("echo_select", "pingpong-1k-10", 140000, 6.9, (50, 45, 3))]
    return {"meta": meta, "summary": report.summarise(runs), "runs": runs}


def test_render_writes_the_multicore_section_without_touching_the_single_core_results(tmp_path):
    """--render of a multicore.json into a folder that holds results.json leaves that file as it
    was, and results.md then reports both runs: the pinned one first, the multi-core section
    last, with a pointer to it under the machine line."""
    single = tmp_path / "results.json"
    single.write_text(json.dumps(_single_core_results()))
    before = single.read_bytes()
    source = tmp_path / "in.json"
    source.write_text(json.dumps({"meta": _meta(), "runs": _runs()}))
    done = _bench("--render", str(source), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert single.read_bytes() == before
    written = json.loads((tmp_path / multicore.RESULTS).read_text())
    assert written["runs"] == _runs() and written["meta"]["mode"] == "multicore"
    md = (tmp_path / "results.md").read_text()
    assert md.index("## 1 KiB ping-pong, 10 connections") < md.index(f"## {multicore.TITLE}")
    assert f"is the last section: [{multicore.TITLE}](#multi-core-no-server-pinned)" in md
    # Stdout is the rendered run's own report.
    assert done.stdout.startswith(f"# {multicore.TITLE}\n")
    if "no plots" not in done.stderr:
        assert (tmp_path / multicore.PLOT).stat().st_size > 0

    # Rendering the default mode's file again keeps the multi-core section too.
    done = _bench("--render", str(single), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert f"## {multicore.TITLE}" in (tmp_path / "results.md").read_text()


def test_render_of_multicore_results_alone(tmp_path):
    """Into an empty folder, --render of multicore results writes multicore.json and a
    results.md with only the multi-core section, and no results.json."""
    source = tmp_path / "in.json"
    source.write_text(json.dumps({"meta": _meta(), "runs": _runs()}))
    out = tmp_path / "out"
    done = _bench("--render", str(source), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert not (out / "results.json").exists()
    md = (out / "results.md").read_text()
    assert md.startswith(f"# selectlab benchmark\n\n## {multicore.TITLE}\n")


# --- the workers rows ----------------------------------------------------------------

def test_a_workers_row_runs_once_echo_select_offers_the_option_and_says_why_not_before():
    """The --workers rows need servers.echo_select to list --workers in its --help; a program
    that lacks an option gets a reason in the report instead of a failed run."""
    assert catalog.offers("servers.echo_select", "--backlog")
    assert not catalog.offers("bench.peers.asyncio_echo", "--workers")
    lacking = catalog.Server("x", "x", (sys.executable, "-m", "bench.peers.asyncio_echo", "0"),
                             needs="--workers")
    assert catalog.missing(lacking, True) == (
        "bench.peers.asyncio_echo has no --workers option (yet): its --help does not list it")
    for server in catalog.WORKER_SERVERS:
        assert server.needs in ("--workers", "--no-reuseport")
        assert server.name in catalog.MULTICORE_SERVERS
        assert server.name not in catalog.SERVER      # never in the pinned run
        i = server.argv.index("--workers")
        assert server.argv[i + 1] in ("1", "2", "auto")


def test_help_names_the_mode_and_its_servers():
    """`python -m bench --help` documents --multicore and the servers it compares."""
    out = _bench("--help").stdout
    assert "--multicore" in out
    for name in ("echo_select_w1", "echo_select_w2", "echo_select_w2_shared",
                 "echo_select_wauto"):
        assert name in out


def test_multicore_refuses_a_memory_workload():
    """Memory per connection does not depend on the cores; --multicore says so in one line."""
    done = _bench("--multicore", "--workloads", "idle-1000")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "unknown workload (with --multicore): idle-1000" in done.stderr


# --- one short run on loopback ---------------------------------------------------------

@pytest.mark.skipif(not TWO_CORES, reason="needs two CPUs to tell pinned from not")
@pytest.mark.timeout(120)
def test_multicore_servers_their_children_and_threads_may_run_on_every_cpu(tmp_path):
    """In a --multicore run every process and thread of each server (a fork server's children,
    a thread server's threads, a master's workers) may run on every CPU this process may use, and the CPU split
    and the server's processes are recorded for each run; the single-core results are not
    written."""
    servers = ["echo_select", "echo_fork", "echo_thread"]
    workers = catalog.offers("servers.echo_select", "--workers")
    if workers:
        servers.append("echo_select_w2")
    done = _bench("--multicore", "--quick", "--servers", ",".join(servers),
                  "--workloads", "pingpong-1k-100", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (tmp_path / "results.json").exists()
    results = json.loads((tmp_path / multicore.RESULTS).read_text())
    assert results["meta"]["mode"] == "multicore"
    everything = sorted(os.sched_getaffinity(0))
    assert results["meta"]["server_cpus"] == results["meta"]["client_cpus"] == everything
    runs = {r["server"]: r for r in results["runs"]}
    assert set(runs) == set(servers)
    for run in runs.values():
        assert run["affinity"] == everything, run["server"]
        assert run["errors"] == 0 and run["requests"] > 0
        assert run["cpus"] == everything
        shares = run["server_share_pct"] + run["client_share_pct"] + run["idle_pct"]
        assert 0 < run["client_share_pct"] and shares <= 100 + 5     # ticks are coarse
    assert runs["echo_fork"]["server_processes"] > 1      # its children were read too
    if workers:
        assert runs["echo_select_w2"]["server_processes"] == 3    # a master and two workers
    assert f"## {multicore.TITLE}" in (tmp_path / "results.md").read_text()
