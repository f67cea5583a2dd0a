"""``python -m bench``: selectlab's reactor against the fork, thread and iterative servers and the best peers.

Every server runs as a subprocess on 127.0.0.1 (port 0, read back from its
``listening on`` line), on one CPU; a C epoll load generator, compiled on first
use, runs on the other.  Every echoed byte is checked.  The results go to a
folder (default ``bench-results/``): ``results.json`` (every run, the machine),
``results.md`` (tables with ratios to echo_fork and asyncio, also printed on
stdout) and, with matplotlib installed, ``pingpong.png`` and ``memory.png``.

``--multicore`` pins nothing instead: servers (``echo_select --workers N``
among them) and the load generator share every CPU the driver may use.  Its
runs go to ``multicore.json`` and ``multicore.png`` in the same folder, so
they never overwrite the default mode's; ``results.md`` reports whichever of
the two files the folder holds.
"""

import datetime
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path

from bench import build, catalog, multicore, procinfo, report, runner
from cli import Fatal, Parser, positive_float, positive_int, run

QUICK = {"reps": 1, "seconds": 0.5, "warmup": 0.2, "prime": 0.2, "quiet_wait": 0.0}
FULL = {"reps": 3, "seconds": 2.0, "warmup": 0.5, "prime": 1.0, "quiet_wait": 10.0}


def build_parser():
    parser = Parser(
        prog="python -m bench",
        description="Benchmark selectlab's reactor (servers.echo_select) against the fork, "
                    "thread and iterative servers and peers (asyncio, uvloop if installed, "
                    "socketserver, a C epoll server), side by side on loopback. A full run "
                    "takes about 20 minutes on 2 cores; --quick about 30 seconds.",
        epilog="Servers: " + ", ".join(s.name for s in catalog.SERVERS) + "; with "
               "--multicore: " + ", ".join(catalog.MULTICORE_SERVERS) + ". Workloads: "
               + ", ".join(w.id for w in catalog.WORKLOADS) + "; with --multicore: "
               + ", ".join(catalog.MULTICORE_WORKLOADS) + ". Plots need matplotlib: "
               "pip install -e '.[bench]'.")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: fewer servers and workloads, 1 short repetition "
                             "(under a minute); its numbers are not for comparing")
    parser.add_argument("--multicore", action="store_true",
                        help="pin nothing: every server (echo_select --workers 1, 2 and auto "
                             "among them) and the load generator may run on every CPU this "
                             "process may use, and share them; reports echoes/s, server CPU "
                             "per request and the load generator's share of the CPU, into "
                             "multicore.json and multicore.png (about 6 minutes on 2 cores)")
    parser.add_argument("--servers", metavar="A,B", help="only these servers")
    parser.add_argument("--workloads", metavar="A,B", help="only these workloads")
    parser.add_argument("--reps", type=positive_int, metavar="N",
                        help=f"repetitions of each measurement (default {FULL['reps']}; "
                             "the median is reported)")
    parser.add_argument("--seconds", type=positive_float, metavar="S",
                        help=f"length of each measured window (default {FULL['seconds']})")
    parser.add_argument("--warmup", type=positive_float, metavar="S",
                        help=f"uncounted seconds before each window (default {FULL['warmup']})")
    parser.add_argument("--loadgen", choices=("c", "python"), default="c",
                        help="the C load generator (default; compiled on first use) or the "
                             "Python one, whose results are a lower bound")
    parser.add_argument("--out", metavar="DIR", default="bench-results",
                        help="folder for results.json (multicore.json with --multicore), "
                             "results.md and the plots (default bench-results)")
    parser.add_argument("--list", action="store_true", help="list servers and workloads and exit")
    parser.add_argument("--render", metavar="JSON",
                        help="run nothing: write the tables and plots again from a results.json "
                             "or multicore.json into --out")
    return parser


def _pick(text, known, what):
    if not text:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise Fatal(f"unknown {what}: {', '.join(unknown)}; choose from {', '.join(known)}",
                    status=2)
    return names


class Progress:
    """One line on stderr: rewritten in place on a terminal, one line per step otherwise."""

    def __init__(self, total):
        self.total, self.done, self.tty = total, 0, sys.stderr.isatty()
        self.started = time.monotonic()

    def say(self, text):
        elapsed = time.monotonic() - self.started
        line = f"bench: [{self.done}/{self.total}] {elapsed:4.0f} s  {text}"
        if self.tty:
            sys.stderr.write("\r\x1b[K" + line[:150])
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def end(self):
        if self.tty:
            sys.stderr.write("\n")


def _loadgen(kind):
    """The load generator's argv, and whether its results are only a lower bound."""
    if kind == "c":
        try:
            return [str(build.build("loadgen"))], False
        except build.BuildUnavailable as exc:
            print(f"bench: {exc}; using the Python load generator, whose results are a "
                  f"lower bound", file=sys.stderr)
    return [sys.executable, "-m", "bench.pyload"], True


def _stop_on_sigterm():
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.list:
        for s in catalog.SERVERS:
            print(f"server   {s.name:21} {s.label}")
        for s in catalog.WORKER_SERVERS:
            print(f"server   {s.name:21} {s.label} (--multicore only)")
        for w in catalog.WORKLOADS:
            print(f"workload {w.id:21} {w.title}")
        return 0
    if args.render:
        return _render(Path(args.render), Path(args.out))
    settings = dict(QUICK if args.quick else FULL)
    for key in ("reps", "seconds", "warmup"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if args.multicore:
        known_servers = catalog.MULTICORE_SERVER
        servers = _pick(args.servers, list(known_servers), "server") or catalog.MULTICORE_SERVERS
        # Memory is a per-connection cost: where the cores are changes nothing in it.
        workloads = _pick(args.workloads, catalog.PINGPONG, "workload (with --multicore)") or (
            catalog.QUICK_MULTICORE_WORKLOADS if args.quick else catalog.MULTICORE_WORKLOADS)
    else:
        known_servers = catalog.SERVER
        servers = _pick(args.servers, list(known_servers), "server") or (
            catalog.QUICK_SERVERS if args.quick else list(catalog.SERVER))
        workloads = _pick(args.workloads, list(catalog.WORKLOAD), "workload") or (
            catalog.QUICK_WORKLOADS if args.quick else [w.id for w in catalog.WORKLOADS])
    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Fatal(f"cannot create {out_dir}: {exc.strerror}; choose another --out")

    loadgen, lower_bound = _loadgen(args.loadgen)
    c_echo, skipped = None, {}
    try:
        c_echo = str(build.build("c_echo"))
    except build.BuildUnavailable:
        pass
    plan = []
    for name in servers:
        server = known_servers[name]
        why = catalog.missing(server, c_echo is not None)
        if why:
            skipped[name] = why
            continue
        wanted = [w for w in workloads if w in server.workloads]
        if len(wanted) < len(workloads) and server.skipped:
            skipped[name] = server.skipped
        plan += [(server, catalog.WORKLOAD[w]) for w in wanted]
    if not plan:
        raise Fatal("nothing to run: no chosen server runs any chosen workload (see --list)")

    where = runner.placement(os.sched_getaffinity(0), args.multicore)
    if where.client is not None:
        os.sched_setaffinity(0, where.client)   # this driver sits with the load generator
    meta = {
        "mode": "multicore" if args.multicore else "single-core",
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench", *map(shlex.quote, sys.argv[1:] if argv is None
                                                     else argv)]),
        "machine": procinfo.machine(),
        # One CPU each in the default mode (server_cpu, client_cpu: what the report names).
        "server_cpu": min(where.server) if where.separate else None,
        "client_cpu": min(where.client) if where.separate else None,
        "server_cpus": sorted(where.server or ()), "client_cpus": sorted(where.client or ()),
        "loadgen": "Python (bench/pyload.py), a lower bound" if lower_bound
                   else "C epoll (bench/loadgen.c)",
        "lower_bound": lower_bound, "quick": args.quick, "skipped": skipped, **settings,
    }
    log_path = out_dir / "servers.log"
    log_path.write_bytes(b"")
    _stop_on_sigterm()
    progress = Progress(len(plan) * settings["reps"])
    runs, failed = [], meta.setdefault("failed", {})
    try:
        for workload in dict.fromkeys(w for _, w in plan):
            servers_here = [s for s, w in plan if w is workload]
            if workload.mode == "memory":
                for server in servers_here:
                    try:
                        runs += _measure(server, workload, settings, loadgen, c_echo, log_path,
                                         where, progress)
                    except runner.BenchError as exc:
                        _failed(failed, server, workload, exc)
            else:
                runs += _measure_interleaved(servers_here, workload, settings, loadgen, c_echo,
                                             log_path, where, progress, failed)
    except KeyboardInterrupt:
        progress.end()
        print("bench: interrupted; every server it started is stopped. Results so far are "
              f"in {out_dir}", file=sys.stderr)
        _write(out_dir, meta, runs)
        return 130
    progress.end()
    summary = _write(out_dir, meta, runs)
    print(_markdown(summary, meta))
    turned = [s for s in summary if s.get("busy")]
    if turned:
        print("bench: clients turned away with busy, the server at its capacity (counted "
              "apart, not as broken echoes): " + ", ".join(
                  f"{s['busy']} by {s['server']} in {s['workload']}" for s in turned),
              file=sys.stderr)
    bad = [s for s in summary if s["errors"]]
    if bad:
        print("bench: broken echoes from " + ", ".join(s["server"] for s in bad), file=sys.stderr)
    if failed:
        print(f"bench: {len(failed)} measurement(s) could not run; see {log_path}",
              file=sys.stderr)
    return 1 if bad or failed else 0


def _failed(failed, server, workload, exc):
    """One server that will not start or answer does not cost the others' results."""
    failed[f"{server.name} · {workload.id}"] = str(exc)
    print(f"bench: {server.name} · {workload.id}: {exc}", file=sys.stderr)


def _measure_interleaved(servers, workload, settings, loadgen, c_echo, log_path, where,
                         progress, failed):
    """Every repetition of a rate workload, taking the servers in turn: rep 1 of each, rep 2...

    Two shared virtual cores drift by 10-30% over minutes; measured one
    server after the other, that drift lands between two servers and reads
    as a difference between them.  In turns, each server's median is taken
    over the same stretches of time.  Each server process is started and
    primed once, and idles (using no CPU) while the others run.
    """
    procs = {}
    runs = []
    try:
        for server in servers:
            argv = [c_echo if a == "{c_echo}" else a for a in server.argv]
            try:
                procs[server] = proc = runner.ServerProcess(argv, log_path, where.server).start()
                if settings["prime"]:
                    progress.say(f"{server.name} · {workload.id}: priming")
                    runner.run_load(proc, workload, loadgen, settings["prime"], 0.1, where)
            except runner.BenchError as exc:
                _failed(failed, server, workload, exc)
                progress.done += settings["reps"]
                if server in procs:
                    procs.pop(server).stop()
        for rep in range(settings["reps"]):
            for server, proc in list(procs.items()):
                label = f"{server.name} · {workload.id}"
                if settings["quiet_wait"] and where.cpus:
                    runner.wait_quiet(where.cpus, report.NOISE_PCT, settings["quiet_wait"])
                progress.say(f"{label}: repetition {rep + 1}/{settings['reps']}")
                try:
                    result = runner.run_load(proc, workload, loadgen, settings["seconds"],
                                             settings["warmup"], where)
                except runner.BenchError as exc:
                    _failed(failed, server, workload, exc)
                    progress.done += settings["reps"] - rep
                    procs.pop(server).stop()
                    continue
                result.update(server=server.name, workload=workload.id, rep=rep + 1)
                runs.append(result)
                progress.done += 1
                progress.say(f"{label}: {_said(result)}")
    finally:
        for proc in procs.values():
            proc.stop()
    return runs


def _measure(server, workload, settings, loadgen, c_echo, log_path, where, progress):
    """All repetitions of a memory workload on one server, on a fresh server process each time.

    Memory is read against each fresh server's own baseline.
    """
    argv = [c_echo if a == "{c_echo}" else a for a in server.argv]
    label = f"{server.name} · {workload.id}"
    runs = []
    for rep in range(settings["reps"]):
        proc = runner.ServerProcess(argv, log_path, where.server).start()
        try:
            before = proc.memory()[0]
            if settings["quiet_wait"] and where.cpus:
                runner.wait_quiet(where.cpus, report.NOISE_PCT, settings["quiet_wait"])
            progress.say(f"{label}: repetition {rep + 1}/{settings['reps']}")
            result = runner.run_load(proc, workload, loadgen, settings["seconds"],
                                     settings["warmup"], where)
        finally:
            proc.stop()
        result.update(server=server.name, workload=workload.id, rep=rep + 1)
        result["pss_before_kib"], result["anon_pss_before_kib"] = before
        runs.append(result)
        progress.done += 1
        progress.say(f"{label}: {_said(result)}")
    return runs


def _said(result):
    """A few words on one run, for the progress line."""
    if "anon_pss_kib" in result:
        per = report.kib_per_idle_conn(result)
        return f"{per:.2f} KiB per idle connection" if per is not None else "no idle connection"
    us = result.get("server_us_per_req")
    return f"{result['per_s']:,.0f}/s" + (f", {us:.2f} µs server CPU each" if us else "")


def _render(source, out_dir):
    try:
        data = json.loads(source.read_text())
        meta, runs = data["meta"], data["runs"]
    except (OSError, ValueError, KeyError) as exc:
        raise Fatal(f"cannot read results from {source}: {exc}; give a results.json "
                    "or multicore.json written by python -m bench")
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = _write(out_dir, meta, runs)
    print(_markdown(summary, meta))
    return 0


def _markdown(summary, meta):
    """One run's report, as printed on stdout."""
    if multicore.is_multicore(meta):
        return multicore.markdown(summary, meta, level=1)
    return report.markdown(summary, meta)


def _write(out_dir, meta, runs):
    """Write one run's JSON and plots into ``out_dir``, then results.md for the whole folder.

    The default mode's runs go to results.json, the multi-core mode's to
    multicore.json: neither mode overwrites the other's results.
    """
    summary = report.summarise(runs)
    mode = multicore.is_multicore(meta)
    with open(out_dir / (multicore.RESULTS if mode else "results.json"), "w") as f:
        json.dump({"meta": meta, "summary": summary, "runs": runs}, f, indent=1)
    text = folder_markdown(out_dir)
    (out_dir / "results.md").write_text(text + "\n")
    if runs:
        try:
            paths = (multicore.plot if mode else report.plot)(summary, meta, out_dir)
            if paths:
                print("bench: plots in " + ", ".join(map(str, paths)), file=sys.stderr)
            else:
                print("bench: no plots: this run measured no 1 KiB ping-pong and no memory "
                      "workload", file=sys.stderr)
        except ImportError:
            print("bench: no plots: matplotlib is not installed; pip install -e '.[bench]' "
                  "to get them", file=sys.stderr)
    written = multicore.RESULTS if mode else "results.json"
    print(f"bench: results in {out_dir / written} and {out_dir / 'results.md'}",
          file=sys.stderr)
    return summary


def folder_markdown(out_dir):
    """results.md for ``out_dir``: the default mode's report from its results.json, then the
    multi-core section from its multicore.json, for whichever of the two is there."""
    parts = {}
    for name in ("results.json", multicore.RESULTS):
        try:
            data = json.loads((out_dir / name).read_text())
            parts[name] = (report.summarise(data["runs"]), data["meta"])
        except (OSError, ValueError, KeyError):
            continue
    lines = []
    if "results.json" in parts:
        lines.append(report.markdown(*parts["results.json"]))
        if multicore.RESULTS in parts:
            lines[0] = lines[0].rstrip("\n")
            # The pointer goes under the machine line, where a reader starts.
            head, sep, rest = lines[0].partition("\n\nLoad generator:")
            lines[0] = (head + f"\n\nA run with no server pinned, every server on every core, "
                        f"is the last section: [{multicore.TITLE}](#{_anchor(multicore.TITLE)})."
                        + sep + rest)
    else:
        lines.append("# selectlab benchmark")
    if multicore.RESULTS in parts:
        lines.append(multicore.markdown(*parts[multicore.RESULTS], level=2))
    return "\n\n".join(lines)


def _anchor(title):
    """The id GitHub gives a Markdown heading."""
    kept = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


if __name__ == "__main__":
    run(main)
