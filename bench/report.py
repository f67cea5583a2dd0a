"""Turn the benchmark's runs into medians, ratios, Markdown tables and (with matplotlib) plots.

The report shows what the run measured and nothing else: a column, comparison
or plot that no figure of this run goes in is left out, and the text says so
once.  One run is "1 run", with no spread.  Each server has one look in every
plot (``catalog.PLOT_STYLE``).
"""

import math
import statistics

from bench.catalog import KIB, PLOT_STYLE, SERVER, WORKLOAD, WORKLOADS

NOISE_PCT = 10.0   # a repetition is "noisy" when other work took this much of a core
# PSS cannot show less growth per idle connection than this: a C server's is 0 within noise.
PSS_FLOOR_KIB = 0.05


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(runs):
    """One summary per (server, workload) from the runs of every repetition."""
    groups = {}
    for run in runs:
        groups.setdefault((run["server"], run["workload"]), []).append(run)
    out = []
    for (server, workload), reps in groups.items():
        rates = [r["per_s"] for r in reps]
        s = {
            "server": server, "workload": workload, "reps": len(reps),
            "per_s": _median(rates), "per_s_min": min(rates), "per_s_max": max(rates),
            "errors": sum(r["errors"] for r in reps),
            "failures": sum(r["failures"] for r in reps),
            # Clients the server answered busy, at its capacity: not broken echoes.
            "busy": max(r.get("busy", 0) for r in reps),
            "bytes_checked": sum(r["bytes_checked"] for r in reps),
            "established": min(r["established"] for r in reps),
            "served": min(r["served"] for r in reps),
            "stalled": max(r.get("stalled", 0) for r in reps),
            "ready_s": _median([r.get("ready_s") for r in reps]),
            # Older results lack the flag: the wait runs out at loadgen's default -T, 10 s.
            "ready_timeout": any(r.get("ready_timeout", (r.get("ready_s") or 0) >= 10.0)
                                 for r in reps),
            "idle_lost": sum(r.get("idle_lost", 0) for r in reps),
            "noisy": sum(1 for r in reps if (r.get("other_pct") or 0) > NOISE_PCT),
        }
        for key in ("server_us_per_req", "server_cpu_pct", "client_cpu_pct",
                    "client_core_busy_pct", "p50_us", "p99_us"):
            s[key] = _median([r.get(key) for r in reps])
        # The CPU split of all the cores (older results lack it).
        for key in ("server_share_pct", "client_share_pct", "busy_pct", "idle_pct"):
            if any(key in r for r in reps):
                s[key] = _median([r.get(key) for r in reps])
        if any("server_processes" in r for r in reps):
            s["server_processes"] = max(r.get("server_processes", 0) for r in reps)
            # The CPUs every thread of the server could use in every repetition.
            masks = [set(r["affinity"]) for r in reps if r.get("affinity")]
            s["affinity"] = sorted(set.intersection(*masks)) if masks else []
        if any("anon_pss_kib" in r for r in reps):
            for key in ("pss_before_kib", "pss_kib", "processes"):
                s[key] = _median([r.get(key) for r in reps])
            s["idle_ok"] = min(r["idle_ok"] for r in reps)
            s["kib_per_idle_conn"] = _median([kib_per_idle_conn(r) for r in reps])
        out.append(s)
    return out


def kib_per_idle_conn(run):
    """What each idle connection added to the server's anonymous PSS, in KiB (None if none held).

    Anonymous memory (heap, stacks, copied pages) is where a server keeps its
    clients; the file-backed part of PSS moves whenever another process maps
    the same libraries, so it is left out of the difference.  The kernel's own
    socket buffers are in no process's PSS.
    """
    if not run.get("idle_ok") or "anon_pss_kib" not in run:
        return None
    return (run["anon_pss_kib"] - run["anon_pss_before_kib"]) / run["idle_ok"]


def _find(summary, server, workload):
    for s in summary:
        if s["server"] == server and s["workload"] == workload:
            return s
    return None


def _ratio(a, b):
    """a ÷ b, or None when either was not measured or b is not above zero."""
    if a is None or b is None or b <= 0:
        return None
    return a / b


def _resolved(s):
    """KiB per idle connection if PSS can show it (a C server's is within noise of 0)."""
    per = s.get("kib_per_idle_conn")
    return per if per is not None and per >= PSS_FLOOR_KIB else None


def _fmt(value, spec="{:,.0f}", none="–"):
    return none if value is None else spec.format(value)


def _x(value):
    return "–" if value is None else (f"{value:.2f}×" if value < 10 else f"{value:,.0f}×")


def _notes(s, workload):
    notes = []
    if workload.mode != "churn" and workload.conns and s["served"] < workload.conns:
        notes.append(f"only {s['served']} of {workload.conns} connections served")
    if s.get("ready_timeout"):
        notes.append(f"not every connection had its first echo within {s['ready_s']:.0f} s")
    elif (s.get("ready_s") or 0) >= 1.0:
        notes.append(f"{s['ready_s']:.1f} s before every connection had its first echo")
    if s["failures"]:
        notes.append(f"{s['failures']} connections failed")
    if s["stalled"]:
        notes.append(f"{s['stalled']} connections stalled (no echo for over 1 s)")
    if s["idle_lost"]:
        notes.append(f"{s['idle_lost']} idle connections closed or written to by the server")
    if s["errors"]:
        notes.append(f"**{s['errors']} broken echoes**")
    if s["noisy"]:
        notes.append("noisy: other work took over 10% of a core" if s["reps"] == 1
                     else f"{s['noisy']} of {s['reps']} runs noisy")
    if s.get("idle_ok") is not None and s["idle_ok"] < workload.idle:
        notes.append(f"only {s['idle_ok']} of {workload.idle} idle connections held")
    if s.get("busy"):
        notes.append(f"{s['busy']} turned away with `busy`: the server was at its capacity "
                     "(not broken echoes)")
    per = s.get("kib_per_idle_conn")
    if per is not None and per < PSS_FLOOR_KIB:
        notes.append("below what PSS can show: its clients live in kernel socket buffers")
    return "; ".join(notes)


def _reference(summary):
    """The 1 KiB ping-pong the overview's CPU column and the headline compare servers on.

    100 connections if this run measured it, else the measured count nearest
    to it (a ``--quick`` run has only 10).
    """
    measured = {s["workload"] for s in summary}
    pingpong = [w for w in WORKLOADS if w.mode == "pingpong" and w.size == KIB
                and w.id in measured]
    if not pingpong:
        return WORKLOAD["pingpong-1k-100"]
    return min(pingpong, key=lambda w: abs(math.log10(w.conns / 100)))


def headline(summary):
    """The comparisons the report opens with: ``(rows, left_out)``.

    ``rows`` are (what, value) pairs for the comparisons this run measured;
    ``left_out`` counts the others.  A ratio needs both its servers; a list
    of servers shows those measured and needs two of them (or its only one).
    A row that begins with … goes on from the row above; when that row is
    left out, it is said in full.  The ping-pong rows are at 100 connections,
    or the count nearest it that was measured (:func:`_reference`).
    """
    def get(server, workload, key):
        s = _find(summary, server, workload)
        return s.get(key) if s else None

    def ratio(what, a, b, workload, key):
        value = _ratio(get(a, workload, key), get(b, workload, key))
        return None if value is None else (what, _x(value))

    def listing(unit, named, workload, key, spec="{:.2f}"):
        got = [(label, get(server, workload, key)) for label, server in named]
        got = [(label, value) for label, value in got if value is not None]
        if len(got) < min(2, len(named)):
            return None
        return (f"{unit}: " + " / ".join(label for label, _ in got),
                " / ".join(spec.format(value) for _, value in got))

    sel, ref = "echo_select", _reference(summary)
    at = f"1 KiB ping-pong at {ref.conns:,} connections"
    churn = "server CPU per short connection (churn)"
    memory = "memory per idle connection (1,000 held)"
    us = "server_us_per_req"
    rows = [    # (context, goes on from the row above, (what, value) or None)
        (at, False, ratio("requests/s: echo_select ÷ asyncio", sel, "asyncio", ref.id, "per_s")),
        (at, True, listing("server CPU per request, µs", [(sel, sel), ("uvloop", "uvloop"),
                           ("asyncio", "asyncio"), ("C", "c_epoll")], ref.id, us)),
        (at, True, ratio("requests/s: echo_select ÷ echo_fork", sel, "echo_fork", ref.id,
                         "per_s")),
        ("connection churn", False, ratio("connections/s: echo_select ÷ asyncio", sel,
                                          "asyncio", "churn-10", "per_s")),
        ("connection churn", False, ratio("connections/s: echo_select ÷ echo_fork", sel,
                                          "echo_fork", "churn-10", "per_s")),
        (memory, False, listing("KiB", [(sel, sel), ("echo_fork", "echo_fork")], "idle-1000",
                                "kib_per_idle_conn", "{:,.2f}")),
        (memory, True, ratio("echo_fork ÷ echo_select", "echo_fork", sel, "idle-1000",
                             "kib_per_idle_conn")),
        ("p99 latency of 100 active connections beside 10,000 idle ones", False,
         listing("µs", [(sel, sel)], "idle-10000", "p99_us", "{:,.0f}")),
        (churn, False, listing("µs", [("echo_select -q", sel), ("default logging",
                                      "echo_select_log"), ("-v", "echo_select_v"),
                                     ("uvloop", "uvloop"), ("C", "c_epoll")], "churn-10", us)),
        (churn, True, ratio("default logging ÷ -q", "echo_select_log", sel, "churn-10", us)),
        (churn, True, ratio("-v (a line as each client opens and closes) ÷ -q",
                            "echo_select_v", sel, "churn-10", us)),
        (churn, True, ratio("-q ÷ uvloop", sel, "uvloop", "churn-10", us)),
        (f"server CPU per 1 KiB request at {ref.conns:,} connections", False,
         listing("µs", [("echo_select -q", sel), ("default logging", "echo_select_log"),
                        ("-v", "echo_select_v")], ref.id, us)),
    ]
    out, above = [], None
    for context, goes_on, row in rows:
        if row is None:
            continue
        what, value = row
        out.append((f"… {what}" if goes_on and above == context else f"{context}, {what}",
                    value))
        above = context
    return out, len(rows) - len(out)


def _table(head, rows, always=("server", "notes")):
    """A Markdown table without the columns in which no row has a figure; and their headings.

    ``head`` is the headings, ``rows`` the cells ("–" where there is no
    figure).  The columns named in ``always`` stay, left-aligned; the others
    hold numbers, right-aligned.
    """
    keep = [i for i, heading in enumerate(head)
            if heading in always or any(row[i] != "–" for row in rows)]
    align = ["---" if head[i] in always else "---:" for i in keep]
    out = ["| " + " | ".join(head[i] for i in keep) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(row[i] for i in keep) + " |" for row in rows]
    return out, [head[i] for i in range(len(head)) if i not in keep]


def overview(summary):
    """One table, a row per server: requests/s for every rate workload, CPU and memory per client.

    A column no server has a figure in (a workload this run did not measure)
    is left out, and the line under the table names it.  The CPU column is at
    1 KiB ×100, or the nearest count measured (:func:`_reference`).
    """
    ref = _reference(summary)
    columns = [(_short(w), w.id, "per_s", "{:,.0f}") for w in WORKLOADS if w.mode != "memory"]
    columns += [(f"µs CPU/req, {_short(ref)}", ref.id, "server_us_per_req", "{:.2f}"),
                ("KiB per idle conn (1,000)", "idle-1000", "kib_per_idle_conn", "{:,.2f}")]
    rows = []
    for name in _ordered({s["server"] for s in summary}):
        cells = [name]
        for _, workload, key, spec in columns:
            s = _find(summary, name, workload)
            cells.append(_fmt(s and s.get(key), spec))
        rows.append(cells)
    out, left = _table(["server", *(heading for heading, *_ in columns)], rows)
    out += ["", "Requests/s (connections/s for churn); – where a server does not run a workload "
            "(see the notes at the end)."]
    if left:
        out[-1] += f" Not measured in this run, so not shown: {'; '.join(left)}."
    return out


def _ordered(names):
    """Server names in the catalog's order; any it no longer knows at the end."""
    order = list(SERVER)
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))


def _short(workload):
    if workload.mode == "churn":
        return f"churn ×{workload.conns}"
    size = f"{workload.size // 1024} KiB"
    return f"{size} ×{workload.conns:,}"


def markdown(summary, meta):
    """The whole report as Markdown: machine, method, headline, one table per workload."""
    m = meta["machine"]
    lines = [
        "# selectlab benchmark",
        "",
        f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"Linux {m['kernel']}, {m['python_implementation']} {m['python']}. "
        f"Run {meta['started']} with `{meta['command']}`.",
        "",
        f"Load generator: {meta['loadgen']}. Server on CPU {meta['server_cpu']}, load generator "
        f"on CPU {meta['client_cpu']}. {_each_cell(meta)} Server CPU counts the server and all "
        f"its children, from /proc.{_quick_said(meta)}",
        "",
    ]
    if meta.get("lower_bound"):
        lines += ["**Measured with the Python load generator: every rate here is a lower bound "
                  "(install a C compiler for real numbers).**", ""]
    lines += ["## Overview", "", *overview(summary), ""]
    rows, left_out = headline(summary)
    lines += ["## Headline", ""]
    if rows:
        lines += ["| comparison | measured |", "| --- | --- |"]
        lines += [f"| {what} | {value} |" for what, value in rows]
        if left_out:
            lines += ["", f"{left_out} other comparisons need servers or workloads this run did "
                      "not measure."]
    else:
        lines.append("No comparison: each needs servers or workloads this run did not measure.")
    lines.append("")
    for workload in WORKLOADS:
        rows = [s for s in summary if s["workload"] == workload.id]
        if not rows:
            continue
        rows.sort(key=lambda s: -(s["per_s"] or 0) if workload.mode != "memory"
                  else (s.get("kib_per_idle_conn") or 0))
        lines += [f"## {workload.title}", ""]
        if workload.mode == "memory":
            lines += _memory_table(rows, summary, workload)
        else:
            lines += _rate_table(rows, summary, workload)
        lines.append("")
    if meta.get("failed"):
        lines += ["## Could not run", ""]
        lines += [f"- {what}: {why}" for what, why in meta["failed"].items()]
        lines.append("")
    if meta.get("skipped"):
        lines += ["## Not run", ""]
        lines += [f"- {name}: {why}" for name, why in meta["skipped"].items()]
        lines.append("")
    return "\n".join(lines)


def _each_cell(meta):
    """What one cell of the tables is: one run, or the median of several and their spread."""
    if meta["reps"] == 1:
        return (f"Each cell is 1 run of {meta['seconds']} s after a {meta['warmup']} s warm-up, "
                "so there is no spread to show.")
    return (f"Each cell is the median of {meta['reps']} runs of {meta['seconds']} s after a "
            f"{meta['warmup']} s warm-up (± is half the range, in % of the median).")


def _quick_said(meta):
    """The sentence a ``--quick`` run's report adds (with a space before it), else nothing."""
    return (" A `--quick` smoke run: it shows that every part works; its numbers are not for "
            "comparing." if meta.get("quick") else "")


def _rate_table(rows, summary, workload):
    """One rate workload's table.  Without a column no row has a figure in: ± with one run
    each (a spread needs two), a ratio to a server that did not run."""
    unit = "connections/s" if workload.mode == "churn" else "requests/s"
    per = "connection" if workload.mode == "churn" else "request"
    fork = _find(summary, "echo_fork", workload.id)
    aio = _find(summary, "asyncio", workload.id)
    head = ["server", unit, "±", f"server CPU µs/{per}", "server CPU", "load-gen CPU", "p50 µs",
            "p99 µs", "÷ echo_fork", "÷ asyncio", "notes"]
    cells = []
    for s in rows:
        half = (100.0 * (s["per_s_max"] - s["per_s_min"]) / 2 / s["per_s"]) \
            if s["per_s"] and s["reps"] > 1 else None
        cells.append([
            s["server"], _fmt(s["per_s"]), _fmt(half, "{:.0f}%"),
            _fmt(s["server_us_per_req"], "{:.2f}"), _fmt(s["server_cpu_pct"], "{:.0f}%"),
            _fmt(s["client_cpu_pct"], "{:.0f}%"), _fmt(s["p50_us"]), _fmt(s["p99_us"]),
            _x(_ratio(s["per_s"], fork and fork["per_s"])),
            _x(_ratio(s["per_s"], aio and aio["per_s"])), _notes(s, workload)])
    return _table(head, cells)[0]


def _memory_table(rows, summary, workload):
    """One memory workload's table: latency only where connections ping-pong beside the idle
    ones, the ratio only if echo_fork ran."""
    fork = _find(summary, "echo_fork", "idle-1000")
    head = ["server", "processes", "PSS before", "PSS held",
            "KiB per idle connection (anonymous PSS)", "echo_fork (1,000) ÷ this",
            "p99 µs, 100 active", "notes"]
    cells = []
    for s in rows:
        cells.append([
            s["server"], _fmt(s.get("processes")),
            _fmt(s.get("pss_before_kib") and s["pss_before_kib"] / 1024, "{:,.1f} MiB"),
            _fmt(s.get("pss_kib") and s["pss_kib"] / 1024, "{:,.1f} MiB"),
            _fmt(s.get("kib_per_idle_conn"), "{:,.2f}"),
            _x(_ratio(fork and fork.get("kib_per_idle_conn"), _resolved(s))),
            _fmt(s["p99_us"]) if workload.conns else "–", _notes(s, workload)])
    return _table(head, cells)[0]


def _style(name):
    """A server's look in every plot: its colour and marker from catalog.PLOT_STYLE, the
    reactor's line thick, the C floor's dashed."""
    # A name an older results.json has and the catalog no longer: grey, apart.
    colour, marker = PLOT_STYLE.get(name, ("#c7c7c7", "."))
    style = {"color": colour, "marker": marker, "linewidth": 1.2}
    if name == "echo_select":
        style["linewidth"] = 2.8
    elif name == "c_epoll":
        style.update(linewidth=1.5, linestyle="--")
    return style


def _runs_said(meta):
    return "1 run each" if meta["reps"] == 1 else f"median of {meta['reps']} runs"


def _numbers(axis, spec, minor=False):
    """Tick labels as plain numbers (``{:,g}``: 8, 10, 20), not as powers of ten.

    ``minor``: label the minor ticks too, for a log axis spanning about a decade,
    which may have one major tick or none.
    """
    from matplotlib.ticker import FuncFormatter
    axis.set_major_formatter(FuncFormatter(lambda v, _: spec.format(v)))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: spec.format(v) if minor else ""))


def _legend_beside(ax, handles_of):
    """The legend to the right of ``ax``, outside it, so that it covers no point."""
    ax.legend(*handles_of.get_legend_handles_labels(), loc="center left",
              bbox_to_anchor=(1.02, 0.5), fontsize=8)


def _connections_axis(ax, counts, label):
    """A log axis of connection counts, ticked at the counts measured (one count: one tick)."""
    from matplotlib.ticker import NullLocator
    counts = sorted(counts)
    ax.set_xscale("log")
    ax.set_xlim(counts[0] / 2, counts[-1] * 2)
    ax.set_xticks(counts, labels=[f"{c:,}" for c in counts])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(label)
    ax.grid(True, alpha=0.3)


def _pyplot():
    """matplotlib's pyplot, drawing to files only (no display).  ImportError: no matplotlib."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    """Write ``fig``, laid out, to ``path`` and return the path.  With no figure (nothing to draw),
    remove an older plot of that name instead, so that none disagrees with the results,
    and return None."""
    if fig is None:
        path.unlink(missing_ok=True)
        return None
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def plot(summary, meta, out_dir):
    """Write the plots this run has figures for; return their paths.  ImportError: no matplotlib.

    ``pingpong.png``: requests/s and server CPU per request against connections,
    for every server with a 1 KiB ping-pong figure (a line where it has two or
    more; a run of one count, such as ``--quick``, is one point each).
    ``memory.png``: KiB per idle connection, for every server with a memory
    figure; one below what PSS can show is drawn on that floor and says so.
    A plot with nothing in it is not written, and an older one of that name is
    removed from ``out_dir`` (:func:`_save`).
    """
    machine = meta["machine"]
    subtitle = (f"{machine['cpu_model']}, {machine['cores']} cores, Python {machine['python']}; "
                f"{_runs_said(meta)}")
    names = _ordered({s["server"] for s in summary})
    paths = [_save(_pingpong_figure(summary, names, subtitle), out_dir / "pingpong.png"),
             _save(_memory_figure(summary, names, subtitle), out_dir / "memory.png")]
    return [path for path in paths if path]


def _pingpong_figure(summary, names, subtitle):
    """Requests/s and server CPU per request against connections; None with no figure."""
    series = [w for w in WORKLOADS if w.mode == "pingpong" and w.size == KIB]
    curves = {}
    for name in names:
        points = [(w.conns, s) for w in series if (s := _find(summary, name, w.id)) and s["per_s"]]
        if points:
            curves[name] = points
    if not curves:
        return None
    fig, (ax_rate, ax_cpu) = _pyplot().subplots(1, 2, figsize=(12, 4.8))
    for name, points in curves.items():
        style = _style(name)
        ax_rate.plot([c for c, _ in points], [s["per_s"] for _, s in points], label=name,
                     **style)
        cpu = [(c, s["server_us_per_req"]) for c, s in points if s.get("server_us_per_req")]
        if cpu:
            ax_cpu.plot([c for c, _ in cpu], [us for _, us in cpu], label=name, **style)
    cpu = [us for line in ax_cpu.lines for us in line.get_ydata()]
    if cpu and max(cpu) > 3 * min(cpu):
        # A wide range (1 connection against 1,000) on a log scale; a narrow one, as in
        # a --quick run, stays linear, where a log axis would have no tick inside it.
        ax_cpu.set_yscale("log")
    else:
        ax_cpu.set_ylim(bottom=0)
    ax_rate.set_ylim(bottom=0)  # linear axes from 0: one server alone is not zoomed into
    counts = {c for points in curves.values() for c, _ in points}
    for ax, title in ((ax_rate, "requests/s (higher is better)"),
                      (ax_cpu, "server CPU µs per request (lower is better)")):
        _connections_axis(ax, counts, "connections (1 KiB ping-pong)")
        ax.set_title(title)
    _numbers(ax_rate.yaxis, "{:,.0f}")
    _numbers(ax_cpu.yaxis, "{:,g}", minor=True)
    _legend_beside(ax_cpu, ax_rate)
    fig.suptitle(f"Echo servers on loopback — {subtitle}", fontsize=10)
    fig.tight_layout()
    return fig


def _memory_figure(summary, names, subtitle):
    """KiB per idle connection against connections held; None with no figure."""
    memory = [w for w in WORKLOADS if w.mode == "memory"]
    drawn = {}
    for name in names:
        points = [(w.idle, s["kib_per_idle_conn"]) for w in memory
                  if (s := _find(summary, name, w.id)) and s.get("kib_per_idle_conn") is not None]
        if points:
            drawn[name] = points
    if not drawn:
        return None
    fig, ax = _pyplot().subplots(figsize=(8.5, 4.8))
    for name, points in drawn.items():
        below = any(kib < PSS_FLOOR_KIB for _, kib in points)
        label = name + (f" (below what PSS can show; drawn at {PSS_FLOOR_KIB})" if below
                        else "")
        ax.plot([n for n, _ in points], [max(kib, PSS_FLOOR_KIB) for _, kib in points],
                label=label, **_style(name))
    _connections_axis(ax, {n for points in drawn.values() for n, _ in points},
                      "idle connections held")
    ax.set_yscale("log")
    _numbers(ax.yaxis, "{:,g}")
    ax.set_ylabel("server anonymous PSS per idle connection, KiB")
    ax.set_title(f"Memory per idle connection (lower is better)\n{subtitle}", fontsize=10)
    _legend_beside(ax, ax)
    fig.tight_layout()
    return fig
