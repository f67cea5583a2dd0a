"""The multi-core mode's report: a section of results.md and multicore.png, from its runs.

``python -m bench --multicore`` pins nothing: every server, every process and
thread it makes, the load generator and the driver may run on every CPU the
driver may use (``os.sched_getaffinity``).  Its runs are those of the default
mode (``bench.runner.run_load``) with the CPU split added: the server's and the
load generator's shares of all the cores during the window, and what stayed
idle.  This module only turns them into Markdown and a plot; it runs nothing.

Its tables and plot read as the default mode's do (``bench.report``): a
column no server has a figure in is left out, one run is "1 run" with no ±
column, and each server has its colour from ``catalog.PLOT_STYLE``.

What it leaves out: comparisons with the pinned run.  Those are two runs at
different times; the section says which figure carries over, and the reader
can put the two tables side by side.
"""

from bench import catalog, report

#: The JSON file the mode writes into --out, beside the default mode's results.json.
RESULTS = "multicore.json"
PLOT = "multicore.png"
TITLE = "Multi-core: no server pinned"


def is_multicore(meta):
    """Whether a results file's ``meta`` is from the multi-core mode (older files have no mode)."""
    return meta.get("mode") == "multicore"


def ordered(names):
    """Server names in the mode's order; others it runs (--servers) after them."""
    order = [*catalog.MULTICORE_SERVERS, *catalog.SERVER]
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))


def _cpus_text(cpus):
    return ", ".join(map(str, cpus)) if cpus else "unknown"


def _cores(s, meta):
    """The server's CPU in cores (1.00 = one core busy all the window)."""
    share, cpus = s.get("server_share_pct"), meta.get("server_cpus")
    return None if share is None or not cpus else share / 100.0 * len(cpus)


def _split(s):
    """Server / load generator / idle shares of all the cores, as one cell."""
    parts = (s.get("server_share_pct"), s.get("client_share_pct"), s.get("idle_pct"))
    if any(p is None for p in parts):
        return "–"
    return " / ".join(f"{p:.0f}%" for p in parts)


def limits(meta):
    """The paragraph on what this machine's cores can and cannot show about a bigger machine."""
    cpus = meta.get("server_cpus") or meta["machine"].get("usable_cores") or []
    n = len(cpus) or meta["machine"].get("cores") or 0
    one_core = 100.0 / n if n else None
    share = f"{one_core:.0f}%" if one_core else "one core's worth"
    return (
        f"**What {n} cores can and cannot show about 16.** The load generator is one thread, and "
        f"here it runs on the same {n} cores as the server, so no server ever has the machine to "
        f"itself. Where its share is near {share} (a whole core), the load generator was the "
        "limit, and the echoes/s are what the pair managed, not what the server could do. "
        f"With `--workers {n}` the workers cannot get a core each: they share the {n} cores "
        "with the load generator, and what one more worker gains the load generator loses. "
        "So this run cannot tell how far `--workers` scales on 16 cores; that needs a machine "
        "whose load generator has cores of its own, or a second machine as the client. What "
        "carries over is the **server CPU per request**, the CPU seconds the server and all "
        "its processes spend on each echo (or each short connection): a design pays it on "
        "every core, however many there are, so a cost added here (a master beside its "
        "workers, a child forked per connection, threads taking turns at the GIL) is added on "
        "a big machine too, and cores ÷ CPU per request is the estimate to start from. Take "
        "the ratios between servers, not the absolute µs: sharing cores with the load "
        "generator costs every server context switches and cold caches (compare the pinned "
        "run's figures for the same workloads), and many workers on many cores contend in "
        "ways two cannot show."
    )


def markdown(summary, meta, level=2):
    """The mode's report, its title at heading ``level`` (2 as a section of results.md)."""
    h = "#" * level
    m = meta["machine"]
    cpus = meta.get("server_cpus") or []
    lines = [
        f"{h} {TITLE}",
        "",
        f"Machine: {m['cpu_model']}, {m['cores']} cores (CPUs {_cpus_text(cpus)} usable), "
        f"{m['memory_gib']} GiB, Linux {m['kernel']}, {m['python_implementation']} "
        f"{m['python']}. Run {meta['started']} with `{meta['command']}`.",
        "",
        f"Nothing is pinned: each server, every process and thread it makes, the load "
        f"generator{'' if meta.get('lower_bound') else ' (one C thread)'} and the driver may "
        f"run on CPUs {_cpus_text(cpus)}, and share them. Load generator: {meta['loadgen']}. "
        f"{report._each_cell(meta)}{report._quick_said(meta)} Server CPU counts the server and all its descendant processes, from "
        "/proc; *server cores* is that CPU time over the window (1.00: one core busy "
        "throughout). *CPU split* is how all the cores' time in the window was spent: the "
        "server's share, the load generator's share, and what stayed idle (the rest is the "
        "driver, the kernel's work nobody is charged for, and any other job: a run where that "
        "came to more than a tenth of a core is *noisy*). *Processes* are the server's at the "
        "end of the window.",
        "",
    ]
    if meta.get("lower_bound"):
        lines += ["**Measured with the Python load generator: every rate here is a lower bound "
                  "(install a C compiler for real numbers).**", ""]
    lines += [limits(meta), ""]
    workloads = [w for w in catalog.WORKLOADS if any(s["workload"] == w.id for s in summary)]
    if workloads:
        lines += [f"{h}# Overview", "", *overview(summary, workloads), ""]
    for workload in workloads:
        rows = [s for s in summary if s["workload"] == workload.id]
        rows.sort(key=lambda s: -(s["per_s"] or 0))
        lines += [f"{h}# {workload.title}", "", *rate_table(rows, workload, meta), ""]
    if meta.get("failed"):
        lines += [f"{h}# Could not run", ""]
        lines += [f"- {what}: {why}" for what, why in meta["failed"].items()]
        lines.append("")
    if meta.get("skipped"):
        lines += [f"{h}# Not run", ""]
        lines += [f"- {name}: {why}" for name, why in meta["skipped"].items()]
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def overview(summary, workloads):
    """One row per server: for each workload, echoes/s, server CPU per request, load-gen share.

    ``workloads`` are those the run measured; a column no server has a figure
    in (a CPU figure /proc could not give) is left out, as in the default mode.
    """
    head = ["server"]
    for w in workloads:
        head += [f"{report._short(w)} {'conns' if w.mode == 'churn' else 'echoes'}/s",
                 "µs CPU/req", "load-gen share"]
    rows = []
    for name in ordered({s["server"] for s in summary}):
        cells = [name]
        for w in workloads:
            s = report._find(summary, name, w.id)
            cells += [report._fmt(s and s["per_s"]),
                      report._fmt(s and s.get("server_us_per_req"), "{:.2f}"),
                      report._fmt(s and s.get("client_share_pct"), "{:.0f}%")]
        rows.append(cells)
    out = report._table(head, rows)[0]
    out += ["", "Echoes/s (connections/s, one echo each, for churn); µs of server CPU per echo "
            "(per connection for churn); the load generator's share of all the cores. – where a "
            "server did not run a workload."]
    return out


def rate_table(rows, workload, meta):
    """One workload's table.  Without a column no row has a figure in: ± with one run each
    (``--quick``: a spread needs two runs), a split the run could not measure."""
    unit = "connections/s" if workload.mode == "churn" else "echoes/s"
    per = "connection" if workload.mode == "churn" else "echo"
    head = ["server", "processes", unit, "±", f"server CPU µs/{per}", "server cores",
            "CPU split: server / load gen / idle", "p50 µs", "p99 µs", "notes"]
    cells = []
    for s in rows:
        half = (100.0 * (s["per_s_max"] - s["per_s_min"]) / 2 / s["per_s"]) \
            if s["per_s"] and s["reps"] > 1 else None
        cells.append([
            s["server"], report._fmt(s.get("server_processes")), report._fmt(s["per_s"]),
            report._fmt(half, "{:.0f}%"), report._fmt(s.get("server_us_per_req"), "{:.2f}"),
            report._fmt(_cores(s, meta), "{:.2f}"), _split(s), report._fmt(s.get("p50_us")),
            report._fmt(s.get("p99_us")), report._notes(s, workload)])
    return report._table(head, cells)[0]


def _bar_style(name):
    """A server's bars: its colour in every plot (``catalog.PLOT_STYLE``, through
    ``report._style``), the C floor's hatched as its line is dashed elsewhere."""
    style = {"color": report._style(name)["color"], "edgecolor": "black"}
    if name == "c_epoll":
        style["hatch"] = "//"
    return style


_SPLIT = (("server_share_pct", "#4477aa", "white", "server"),
          ("client_share_pct", "#ee7733", "white", "load generator"),
          ("other_share_pct", "#777777", "white", "other: driver, kernel, other jobs"),
          ("idle_pct", "#dddddd", "black", "idle"))


def _shares(s):
    """{key: percent of all the cores} for the CPU split bar; other is what the rest leaves."""
    shares = {key: s.get(key) for key, *_ in _SPLIT if key != "other_share_pct"}
    if any(v is None for v in shares.values()):
        return {}
    shares["other_share_pct"] = max(0.0, 100.0 - sum(shares.values()))
    return shares


def plot(summary, meta, out_dir):
    """Write multicore.png; return ``[its path]``.  ImportError: no matplotlib.

    One column per workload; rows: throughput, server CPU per request, and how
    the cores' time was split between server, load generator, the rest and idle.
    Each server's bars are in its colour from ``catalog.PLOT_STYLE``.  With no
    run to draw, nothing is written and an older multicore.png is removed
    (``report._save``).
    """
    return [path for path in [report._save(_figure(summary, meta), out_dir / PLOT)] if path]


def _figure(summary, meta):
    """The plot's figure; None with nothing to draw."""
    from matplotlib.ticker import FuncFormatter

    m = meta["machine"]
    cpus = meta.get("server_cpus") or []
    workloads = [w for w in catalog.WORKLOADS if any(s["workload"] == w.id for s in summary)]
    if not workloads:
        return None
    names = ordered({s["server"] for s in summary})
    fig, axes = report._pyplot().subplots(3, len(workloads), figsize=(5.4 * len(workloads), 11.5),
                             squeeze=False)
    ys = range(len(names))
    thousands = FuncFormatter(lambda x, _: f"{x / 1000:,.0f}k" if x else "0")
    for col, w in enumerate(workloads):
        rows = [report._find(summary, n, w.id) for n in names]
        per = "connection" if w.mode == "churn" else "echo"
        rate, cost, split = axes[0][col], axes[1][col], axes[2][col]
        costs = [s["server_us_per_req"] for s in rows if s and s.get("server_us_per_req")]
        # One server far above the rest (a fork per connection) would flatten them all.
        log_cost = bool(costs) and max(costs) / min(costs) > 20
        for y, name, s in zip(ys, names, rows):
            if not s:
                continue
            style = _bar_style(name)
            rate.barh(y, s["per_s"] or 0, **style)
            rate.annotate(f" {s['per_s']:,.0f}", (s["per_s"] or 0, y), va="center", fontsize=8)
            us = s.get("server_us_per_req")
            if us:
                cost.barh(y, us, **style)
                cost.annotate(f" {us:,.1f}", (us, y), va="center", fontsize=8)
            left, shares = 0.0, _shares(s)
            for key, colour, ink, label in _SPLIT:
                if key not in shares:
                    continue
                value = shares[key]
                split.barh(y, value, left=left, color=colour, edgecolor="white", label=label)
                if value >= 9:
                    split.annotate(f"{value:.0f}%", (left + value / 2, y), ha="center",
                                   va="center", fontsize=7.5, color=ink)
                left += value
        unit = "connections/s" if w.mode == "churn" else "echoes/s"
        rate.set_title(f"{report._short(w)}: {unit} (higher is better)", fontsize=10)
        rate.xaxis.set_major_formatter(thousands)
        cost.set_title(f"server CPU µs per {per} (lower is better)"
                       + (", log scale" if log_cost else ""), fontsize=10)
        if log_cost:
            cost.set_xscale("log")
            cost.set_xlim(min(costs) / 2, max(costs) * 6)
        else:
            cost.margins(x=0.22)
        rate.margins(x=0.25)        # room for the figures at the bars' ends
        split.set_title(f"all {len(cpus) or m['cores']} cores' time in the window, %",
                        fontsize=10)
        split.set_xlim(0, 100)
        for ax in (rate, cost, split):
            ax.set_yticks(list(ys))
            ax.set_yticklabels(names if col == 0 else [], fontsize=9)
            ax.invert_yaxis()
            ax.grid(True, axis="x", alpha=0.3)
    handles, labels = axes[2][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    fig.legend(unique.values(), unique.keys(), loc="lower center", ncol=len(unique), fontsize=9,
               frameon=False)
    fig.suptitle(f"Echo servers on loopback, nothing pinned: each server and the load generator "
                 f"share CPUs {_cpus_text(cpus)}\n{m['cpu_model']}, {m['cores']} cores, Python "
                 f"{m['python']}; {report._runs_said(meta)}", fontsize=11)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig
