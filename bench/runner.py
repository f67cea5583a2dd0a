"""Start a server, drive it with the load generator, and measure both from /proc.

The method (see docs/benchmark.md for why):

* the server, and every process or thread it makes, runs on one CPU and the
  load generator on the other (``sched_setaffinity`` before exec), so neither
  steals the other's core; in the multi-core mode both may run on every CPU
  this process may use, and share them (:func:`placement`);
* each server process first gets an unrecorded priming run, which takes it
  past one-off start-up costs (glibc's malloc thresholds, lazy imports);
* each measurement is one load generator run: a warm-up that is not counted,
  then a window during which the load generator counts requests and latencies
  and its own CPU time, and this module samples the server's CPU time (its own
  and its children's) and both cores' busy time at the window's edges, while
  the load generator waits for it there;
* memory is the PSS of the server and all its processes, read with the idle
  connections held open, minus the same reading before they were opened.

Only processes this module started are stopped, by their pid; a server's
children that outlive it (they should not) are ended by pid after checking
they are still the same processes.
"""

import ipaddress
import json
import os
import subprocess
import sys
import threading
import time
from typing import NamedTuple

from bench import procinfo, process
from bench.process import ROOT

START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0

# The only addresses a server is measured on.
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


class BenchError(Exception):
    """Something that stops the benchmark; the message says what and what to do."""


def _on_loopback(where):
    """Whether a ``listening on`` address is TCP on 127.0.0.0/8."""
    try:
        return not where.udp and ipaddress.IPv4Address(where.host) in LOOPBACK
    except ValueError:      # a host name, or IPv6
        return False


class Placement(NamedTuple):
    """The CPUs the server may run on, and those of the load generator and this driver.

    None: not set (fewer than two CPUs: everything runs where it is started).
    """
    server: frozenset = None
    client: frozenset = None

    @property
    def cpus(self):
        """Every CPU the measurement uses (empty if none was set)."""
        return frozenset().union(*(c for c in self if c is not None))

    @property
    def separate(self):
        """Whether the server and the load generator each have cores of their own."""
        return self.server is not None and self.client is not None \
            and not self.server & self.client


def placement(usable, multicore=False):
    """Where the server and the load generator run, from the CPUs this process may use.

    By default the server gets the first CPU and the load generator the
    second, so neither steals the other's core.  ``multicore``: the server,
    every process and thread it makes, and the load generator may all run on
    every CPU in ``usable`` (on two cores, then, they compete for them).
    """
    usable = sorted(usable)
    if multicore:
        return Placement(frozenset(usable), frozenset(usable))
    if len(usable) < 2:
        return Placement()
    return Placement(frozenset(usable[:1]), frozenset(usable[1:2]))


class ServerProcess:
    """One server under test: started, read back its port, stopped by pid.

    ``cpus``: the CPUs it (and all it starts) may run on; None leaves it
    with this process's.
    """

    def __init__(self, argv, log_path, cpus):
        self.argv, self.log_path = list(argv), log_path
        self.cpus = None if cpus is None else frozenset(cpus)
        self.child = None
        self.port = None
        self._stopped = False

    def start(self):
        # Its log goes straight to the file; whatever it prints after its
        # first line is appended there too, so a full pipe never stops it.
        with open(self.log_path, "ab") as log:
            self.child = process.Child(self.argv, stderr=log, copy_stdout=self.log_path,
                                       env=process.python_env())
        if self.cpus is not None:
            # Set at once, before it has made a thread or a child: they
            # inherit it.  (Not in a preexec_fn: this driver runs threads.)
            os.sched_setaffinity(self.child.pid, self.cpus)
        line = self.child.first_line(START_TIMEOUT)
        where = process.parse_listening(line)
        if where is None or not _on_loopback(where):
            self.stop()
            raise BenchError(f"{self.argv[0]} did not print 'listening on 127.0.0.1:PORT' "
                             f"(got {line!r}); see {self.log_path}")
        self.port = where.port
        return self

    def cpu_seconds(self):
        return procinfo.tree_cpu_seconds(self.child.pid)

    def family(self):
        """(processes, the CPUs every one of their threads may run on) now."""
        return (len(process.descendants(self.child.pid)),
                procinfo.tree_affinity(self.child.pid))

    def memory(self):
        """((PSS KiB, anonymous PSS KiB), processes) of the server's family."""
        return procinfo.tree_pss_kib(self.child.pid)

    def stop(self):
        """SIGTERM, wait, SIGKILL if it must; then end any descendant it left behind.

        Once only: after the server is reaped its pid may belong to someone else.
        """
        if self.child is None or self._stopped:
            return None if self.child is None else self.child.popen.returncode
        self._stopped = True
        self.child.terminate()
        if self.child.wait(STOP_TIMEOUT) is None:
            print(f"bench: {self.argv[0]} (pid {self.child.pid}) ignored SIGTERM for "
                  f"{STOP_TIMEOUT:.0f} s; killing it", file=sys.stderr)
        self.child.kill()
        self.child.close()
        return self.child.popen.returncode


def loadgen_argv(loadgen, workload, port, seconds, warmup):
    """The load generator's command line for one run of ``workload``."""
    mode = "churn" if workload.mode == "churn" else "pingpong"
    argv = [*loadgen, mode, "-p", str(port), "-c", str(workload.conns), "-s", str(workload.size),
            "-d", str(seconds), "-w", str(warmup), "-M"]
    if workload.idle:
        argv += ["-i", str(workload.idle)]
    return argv


def _say(gen, line):
    """Tell a waiting load generator to go on."""
    try:
        gen.stdin.write(line)
        gen.stdin.flush()
    except BrokenPipeError:
        pass    # it stopped waiting; its result says what it managed


def run_load(server, workload, loadgen, seconds, warmup, where):
    """Run the load generator once against ``server``; return its result with our readings.

    ``where`` is the run's :class:`Placement`.  Added to the load generator's
    own JSON: ``server_cpu_s`` and per request, the server's CPU in percent of
    one core, the load generator's CPU in percent of one core; the shares of
    the CPUs used (:func:`procinfo.cpu_split`: server, load generator, busy,
    idle); with separate cores, each core's busy percent; ``other_pct`` (busy
    time that neither process accounts for: another job on the machine); at
    the window's end the server's processes and the CPUs all its threads may
    run on (``server_processes``, ``affinity``); and for memory runs the
    server's PSS when the idle connections were all open.
    """
    argv = loadgen_argv(loadgen, workload, server.port, seconds, warmup)
    # It inherits this driver's CPUs (see bench.__main__).
    gen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT)
    # The load generator's own bounds: 10 s to connect and get every first
    # echo, the warm-up and window, and for idle connections 10 s + 20 ms each.
    bound = 10 + warmup + seconds + 30 + (workload.idle / 50 if workload.idle else 0)
    deadline = time.monotonic() + bound
    readings, said = {}, []
    timer = threading.Timer(bound, gen.kill)   # the run is bounded even if a pipe stalls
    timer.start()
    try:
        for raw in gen.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            if line == "MARK idle_ready":
                readings["pss"], readings["processes"] = server.memory()
                _say(gen, b"go\n")
            elif line.startswith("MARK "):
                readings[line[5:]] = (server.cpu_seconds(), procinfo.core_ticks(),
                                      time.monotonic())
                if line == "MARK end":
                    # After the edge's own readings, so that it cannot delay them, and
                    # before the load generator closes its connections.
                    readings["family"] = server.family()
                # The load generator stops at each edge until we have read (see loadgen.c).
                _say(gen, b"go\n")
            else:
                said.append(line)
        out = gen.stdout.read()
        gen.wait(max(1.0, deadline - time.monotonic()))
    finally:
        timer.cancel()
        if gen.poll() is None:
            gen.kill()
            gen.wait()
    lines = [line for line in out.decode(errors="replace").splitlines() if line.startswith("{")]
    if not lines:
        raise BenchError(f"the load generator printed no result (exit {gen.returncode}): "
                         + " | ".join(said[-5:]))
    result = json.loads(lines[-1])
    result["loadgen_messages"] = said[:10]
    if "pss" in readings:
        result["pss_kib"], result["anon_pss_kib"] = readings["pss"]
        result["processes"] = readings["processes"]
    if "warm_end" in readings and "end" in readings and workload.conns:
        (cpu0, ticks0, t0), (cpu1, ticks1, t1) = readings["warm_end"], readings["end"]
        window = max(t1 - t0, 1e-9)
        served = result["requests"]
        result["server_cpu_s"] = cpu1 - cpu0
        result["server_us_per_req"] = (cpu1 - cpu0) * 1e6 / served if served else None
        result["server_cpu_pct"] = 100.0 * (cpu1 - cpu0) / window
        result["client_cpu_pct"] = 100.0 * result["client_cpu_s"] / window
        if where.cpus:
            # Over the load generator's own window, the one its CPU time and its
            # requests are counted in; our readings come a little after its edges.
            result.update(procinfo.cpu_split(cpu1 - cpu0, result["client_cpu_s"],
                                             result["seconds"], ticks0, ticks1, where.cpus))
        if where.separate:
            # One core each: other work shows on either core on its own.
            (server_core,), (client_core,) = where.server, where.client
            result["server_core_busy_pct"] = procinfo.busy_percent(ticks0, ticks1, server_core)
            result["client_core_busy_pct"] = procinfo.busy_percent(ticks0, ticks1, client_core)
            result["other_pct"] = max(
                result["server_core_busy_pct"] - result["server_cpu_pct"],
                result["client_core_busy_pct"] - result["client_cpu_pct"])
    if "family" in readings:
        result["server_processes"], result["affinity"] = readings["family"]
    return result


def wait_quiet(cpus, limit_pct, max_wait):
    """Wait (at most ``max_wait`` s) until ``cpus`` are nearly idle: nobody else is running there."""
    deadline = time.monotonic() + max_wait
    while True:
        before = procinfo.core_ticks()
        time.sleep(0.25)
        after = procinfo.core_ticks()
        if all(procinfo.busy_percent(before, after, c) <= limit_pct for c in cpus):
            return True
        if time.monotonic() >= deadline:
            return False
