"""What the benchmark reads from /proc: a process tree's CPU time and memory, the cores, the machine.

The server's cost is its own and its children's (a fork server's work is done
in children), so every figure here is summed over the process and all its
descendants.

CPU time comes from two places, because ``utime``/``stime`` in
``/proc/PID/stat`` are sampled at the clock tick, and on this kernel each of a
thousand fork children echoing 1 KiB at a time showed a third of the time the
scheduler gave it (a process with many threads showed all of it).  So each
process counts the larger of its ``/proc/PID/stat`` time and the scheduler's
own count summed over its live threads (the first field of
``/proc/PID/task/TID/schedstat``, in ns); the first holds the threads that
have ended, the second the short bursts.  A child reaped during a window has
its time, ticks only, in its parent's ``cutime``/``cstime``: with children
forked and reaped all the time (a fork server under connection churn) the
figure may be low.
"""

import os
import platform
import sys

from bench import process


def _scheduled_seconds(pid):
    """The scheduler's count of CPU time summed over ``pid``'s live threads, or None."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    ns = 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue        # it ended meanwhile: its time is in its process's stat now
    return ns / 1e9


def tree_cpu_seconds(root):
    """CPU seconds of ``root`` and its descendants, with the children they have reaped."""
    total = 0.0
    for s in process.descendants(root):
        scheduled = _scheduled_seconds(s.pid) or 0.0
        total += max(s.cpu_seconds, scheduled) + (s.cutime + s.cstime) / process.CLK_TCK
    return total


def tree_pss_kib(root):
    """((PSS, anonymous PSS) in KiB summed over ``root`` and its descendants, processes).

    PSS (proportional set size) charges each shared page to the processes
    sharing it in equal parts, so the pages a fork server's children share with
    their parent are counted once, as they should be.  The anonymous part
    (``Pss_Anon`` + ``Pss_Shmem``: heap, stacks, copied-on-write pages) is
    where a server's per-client memory goes; the file-backed rest (the Python
    binary, libraries) is shared with every other process that maps the same
    files, so it shifts when, say, a Python load generator starts.
    """
    total = anon = count = 0
    for s in process.descendants(root):
        try:
            with open(f"/proc/{s.pid}/smaps_rollup") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line and
                              line.startswith(("Pss:", "Pss_Anon:", "Pss_Shmem:")))
        except OSError:
            continue
        if "Pss" in fields:
            total += int(fields["Pss"].split()[0])
            anon += sum(int(fields[k].split()[0]) for k in ("Pss_Anon", "Pss_Shmem")
                        if k in fields)
            count += 1
    return (total, anon), count


def core_ticks():
    """{cpu number: (busy ticks, all ticks)} from /proc/stat; busy is all but idle and iowait."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3:4].isdigit():
                name, *values = line.split()
                v = [int(x) for x in values[:8]]
                total = sum(v)
                out[int(name[3:])] = (total - v[3] - v[4], total)
    return out


def busy_percent(before, after, cpu):
    """How busy core ``cpu`` was between two :func:`core_ticks` readings, in percent."""
    busy = after[cpu][0] - before[cpu][0]
    total = after[cpu][1] - before[cpu][1]
    return 100.0 * busy / total if total else 0.0


def cpu_split(server_cpu_s, client_cpu_s, window_s, before, after, cpus):
    """How the CPUs ``cpus`` were spent during a window of ``window_s`` seconds.

    ``before`` and ``after`` are :func:`core_ticks` readings at the window's
    edges; ``server_cpu_s`` and ``client_cpu_s`` the CPU seconds the server
    (with its descendants) and the load generator used in it.  Returns, in
    percent of everything the cores could have done in the window (``window_s``
    times their number):

    * ``server_share_pct``, ``client_share_pct``: the server's and the load
      generator's shares;
    * ``busy_pct``: how busy the cores were, all work counted;
    * ``idle_pct``: what nobody used;

    and ``other_pct``: busy time that neither the server nor the load
    generator accounts for (the driver, another job on the machine), in
    percent of *one* core, the unit :data:`bench.report.NOISE_PCT` is in.
    """
    cpus = sorted(cpus)
    capacity_s = window_s * len(cpus)
    # The readings may come a little after the window's edges; the cores are
    # idle after its end (the load generator waits), so busy time is counted
    # in seconds, against the window's length, not against the ticks' span.
    busy_s = sum(after[c][0] - before[c][0] for c in cpus) / process.CLK_TCK
    busy_pct = min(100.0, 100.0 * busy_s / capacity_s)
    return {
        "cpus": cpus,
        "server_share_pct": 100.0 * server_cpu_s / capacity_s,
        "client_share_pct": 100.0 * client_cpu_s / capacity_s,
        "busy_pct": busy_pct,
        "idle_pct": 100.0 - busy_pct,
        "other_pct": max(0.0, 100.0 * (busy_s - server_cpu_s - client_cpu_s) / window_s),
    }


def tree_affinity(root):
    """The CPUs that every process and thread of ``root``'s family may run on, sorted.

    One thread pinned to fewer CPUs than the rest narrows it; a task that
    ends while it is read is left out.
    """
    common = None
    for s in process.descendants(root):
        try:
            tasks = os.listdir(f"/proc/{s.pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                mask = os.sched_getaffinity(int(tid))
            except OSError:
                continue
            common = set(mask) if common is None else common & mask
    return sorted(common or ())


def machine():
    """What a reader needs to judge the numbers: CPU, cores, memory, kernel, Python."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "usable_cores": sorted(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
    }
