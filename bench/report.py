"""Turn the benchmark's runs into medians, ratios, Markdown tables and (with matplotlib) plots."""

import statistics

from bench.catalog import SERVER, WORKLOADS

NOISE_PCT = 10.0   # a repetition is "noisy" when other work took this much of a core


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
    return per if per is not None and per >= 0.05 else None


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
        notes.append(f"{s['noisy']} noisy rep(s)")
    if s.get("idle_ok") is not None and s["idle_ok"] < workload.idle:
        notes.append(f"only {s['idle_ok']} of {workload.idle} idle connections held")
    per = s.get("kib_per_idle_conn")
    if per is not None and per < 0.05:
        notes.append("below what PSS can show: its clients live in kernel socket buffers")
    return "; ".join(notes)


def headline(summary):
    """The comparisons the report opens with, as (what, value) pairs; ``None`` where not measured."""
    def get(server, workload, key):
        s = _find(summary, server, workload)
        return s.get(key) if s else None

    sel = "echo_select"
    return [
        ("1 KiB ping-pong at 100 connections, requests/s: echo_select ÷ asyncio",
         _x(_ratio(get(sel, "pingpong-1k-100", "per_s"), get("asyncio", "pingpong-1k-100", "per_s")))),
        ("… server CPU per request, µs: echo_select / uvloop / asyncio / C",
         " / ".join(_fmt(get(n, "pingpong-1k-100", "server_us_per_req"), "{:.2f}")
                    for n in (sel, "uvloop", "asyncio", "c_epoll"))),
        ("… requests/s: echo_select ÷ echo_fork",
         _x(_ratio(get(sel, "pingpong-1k-100", "per_s"), get("echo_fork", "pingpong-1k-100", "per_s")))),
        ("connection churn, connections/s: echo_select ÷ asyncio",
         _x(_ratio(get(sel, "churn-10", "per_s"), get("asyncio", "churn-10", "per_s")))),
        ("connection churn, connections/s: echo_select ÷ echo_fork",
         _x(_ratio(get(sel, "churn-10", "per_s"), get("echo_fork", "churn-10", "per_s")))),
        ("memory per idle connection (1,000 held), KiB: echo_select / echo_fork",
         " / ".join(_fmt(get(n, "idle-1000", "kib_per_idle_conn"), "{:,.2f}")
                    for n in (sel, "echo_fork"))),
        ("… echo_fork ÷ echo_select",
         _x(_ratio(get("echo_fork", "idle-1000", "kib_per_idle_conn"),
                   get(sel, "idle-1000", "kib_per_idle_conn")))),
        ("p99 latency of 100 active connections beside 10,000 idle ones, µs: echo_select",
         _fmt(get(sel, "idle-10000", "p99_us"), "{:,.0f}")),
        ("server CPU per short connection (churn), µs: echo_select -q / default logging / -v "
         "/ uvloop / C",
         " / ".join(_fmt(get(n, "churn-10", "server_us_per_req"), "{:.2f}")
                    for n in (sel, "echo_select_log", "echo_select_v", "uvloop", "c_epoll"))),
        ("… default logging ÷ -q",
         _x(_ratio(get("echo_select_log", "churn-10", "server_us_per_req"),
                   get(sel, "churn-10", "server_us_per_req")))),
        ("… -v (a line as each client opens and closes) ÷ -q",
         _x(_ratio(get("echo_select_v", "churn-10", "server_us_per_req"),
                   get(sel, "churn-10", "server_us_per_req")))),
        ("… -q ÷ uvloop",
         _x(_ratio(get(sel, "churn-10", "server_us_per_req"),
                   get("uvloop", "churn-10", "server_us_per_req")))),
        ("server CPU per 1 KiB request at 100 connections, µs: echo_select -q / default "
         "logging / -v",
         " / ".join(_fmt(get(n, "pingpong-1k-100", "server_us_per_req"), "{:.2f}")
                    for n in (sel, "echo_select_log", "echo_select_v"))),
    ]


def overview(summary):
    """One table, a row per server: requests/s for every rate workload, CPU and memory per client."""
    rate = [w for w in WORKLOADS if w.mode != "memory"]
    names = _ordered({s["server"] for s in summary})
    head = ["server", *(_short(w) for w in rate), "µs CPU/req, 1 KiB ×100",
            "KiB per idle conn (1,000)"]
    out = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for name in names:
        cells = [name]
        for w in rate:
            s = _find(summary, name, w.id)
            cells.append(_fmt(s and s["per_s"]))
        s = _find(summary, name, "pingpong-1k-100")
        cells.append(_fmt(s and s["server_us_per_req"], "{:.2f}"))
        s = _find(summary, name, "idle-1000")
        cells.append(_fmt(s and s.get("kib_per_idle_conn"), "{:,.2f}"))
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "Requests/s (connections/s for churn); – where a server does not run a workload "
            "(see the notes at the end)."]
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
        f"on CPU {meta['client_cpu']}. Each cell is the median of {meta['reps']} runs of "
        f"{meta['seconds']} s after a {meta['warmup']} s warm-up (± is half the range, in % "
        "of the median). Server CPU counts the server and all its children, from /proc.",
        "",
    ]
    if meta.get("lower_bound"):
        lines += ["**Measured with the Python load generator: every rate here is a lower bound "
                  "(install a C compiler for real numbers).**", ""]
    lines += ["## Overview", "", *overview(summary), ""]
    lines += ["## Headline", "", "| comparison | measured |", "| --- | --- |"]
    lines += [f"| {what} | {value} |" for what, value in headline(summary)]
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


def _rate_table(rows, summary, workload):
    unit = "connections/s" if workload.mode == "churn" else "requests/s"
    per = "connection" if workload.mode == "churn" else "request"
    fork = _find(summary, "echo_fork", workload.id)
    aio = _find(summary, "asyncio", workload.id)
    out = [f"| server | {unit} | ± | server CPU µs/{per} | server CPU | load-gen CPU "
           f"| p50 µs | p99 µs | ÷ echo_fork | ÷ asyncio | notes |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for s in rows:
        spread = (100.0 * (s["per_s_max"] - s["per_s_min"]) / 2 / s["per_s"]) if s["per_s"] else None
        out.append("| " + " | ".join([
            s["server"], _fmt(s["per_s"]), _fmt(spread, "{:.0f}%"),
            _fmt(s["server_us_per_req"], "{:.2f}"), _fmt(s["server_cpu_pct"], "{:.0f}%"),
            _fmt(s["client_cpu_pct"], "{:.0f}%"), _fmt(s["p50_us"]), _fmt(s["p99_us"]),
            _x(_ratio(s["per_s"], fork and fork["per_s"])),
            _x(_ratio(s["per_s"], aio and aio["per_s"])), _notes(s, workload)]) + " |")
    return out


def _memory_table(rows, summary, workload):
    fork = _find(summary, "echo_fork", "idle-1000")
    out = ["| server | processes | PSS before | PSS held | KiB per idle connection (anonymous PSS) "
           "| echo_fork (1,000) ÷ this | p99 µs, 100 active | notes |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for s in rows:
        out.append("| " + " | ".join([
            s["server"], _fmt(s.get("processes")),
            _fmt(s.get("pss_before_kib") and s["pss_before_kib"] / 1024, "{:,.1f} MiB"),
            _fmt(s.get("pss_kib") and s["pss_kib"] / 1024, "{:,.1f} MiB"),
            _fmt(s.get("kib_per_idle_conn"), "{:,.2f}"),
            _x(_ratio(fork and fork.get("kib_per_idle_conn"), _resolved(s))),
            _fmt(s["p99_us"]) if workload.conns else "–", _notes(s, workload)]) + " |")
    return out


def _style(name, names):
    """selectlab's reactor thick and black, the C floor dashed grey, the others apart."""
    if name == "echo_select":
        return {"color": "black", "linewidth": 2.8, "marker": "o"}
    if name == "c_epoll":
        return {"color": "grey", "linewidth": 1.5, "linestyle": "--", "marker": "s"}
    import matplotlib
    # The logging variants have no curve (see plot): they take no colour from the others.
    others = [n for n in names if n not in ("echo_select", "c_epoll")
              and not n.startswith("echo_select_")]
    i = others.index(name) if name in others else 0
    return {"color": matplotlib.colormaps["tab10"](i % 10), "linewidth": 1.2,
            "marker": "ov^<>sDpXh"[i % 10]}


def plot(summary, meta, out_dir):
    """Write the PNG plots; return their paths, or raise ImportError without matplotlib."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    machine = meta["machine"]
    subtitle = (f"{machine['cpu_model']}, {machine['cores']} cores, Python {machine['python']}; "
                f"median of {meta['reps']}")
    series = [w for w in WORKLOADS if w.mode == "pingpong" and w.size == 1024]
    names = _ordered({s["server"] for s in summary})
    paths = []
    fig, (ax_rate, ax_cpu) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name in names:
        points = [(w.conns, _find(summary, name, w.id)) for w in series]
        points = [(c, s) for c, s in points if s and s["per_s"]]
        if len(points) < 2:
            continue        # one point is no curve: the logging variants are in the tables
        style = _style(name, names)
        ax_rate.plot([c for c, _ in points], [s["per_s"] for _, s in points], label=name, **style)
        ax_cpu.plot([c for c, _ in points], [s["server_us_per_req"] for _, s in points],
                    label=name, **style)
    for ax, title in ((ax_rate, "requests/s (higher is better)"),
                      (ax_cpu, "server CPU µs per request (lower is better)")):
        ax.set_xscale("log")
        ax.set_xlabel("connections (1 KiB ping-pong)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    ax_cpu.set_yscale("log")
    ax_rate.legend(fontsize=8)
    fig.suptitle(f"Echo servers on loopback — {subtitle}", fontsize=10)
    fig.tight_layout()
    path = out_dir / "pingpong.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)

    memory = [w for w in WORKLOADS if w.mode == "memory"]
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for name in names:
        points = [(w.idle, _find(summary, name, w.id)) for w in memory]
        points = [(n, s) for n, s in points if s and _resolved(s) is not None]
        if points:
            ax.plot([n for n, _ in points], [s["kib_per_idle_conn"] for _, s in points],
                    label=name, **_style(name, names))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("idle connections held")
    ax.set_ylabel("server anonymous PSS per idle connection, KiB")
    ax.set_title(f"Memory per idle connection (lower is better)\n{subtitle}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "memory.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)
    return paths
