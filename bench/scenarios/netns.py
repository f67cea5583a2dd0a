"""UNP ch. 5's host crash and lost connectivity, in a network namespace of the scenario's own.

On loopback no segment is ever lost, so a host that crashes cannot be shown
there.  This scenario makes a second host: a network namespace
(``ip netns add selectlab-x8-PID``) joined to this one by a veth pair with a
/30 of link-local addresses no route of this host uses, and runs the server
in it.  Every segment goes between the pair's two ends and nowhere else: the
namespace has no other interface and no default route.

* the crash: the namespace's end of the pair goes down under four
  established connections; writes are queued and retransmitted (Send-Q and
  the retransmission timer of /proc/net/tcp, as ``netstat -ao`` shows them)
  until a timeout, the default one computed from ``tcp_retries2``, shorter
  ones set with TCP_USER_TIMEOUT and keepalive;
* the reboot: the server is killed and the namespace's sockets destroyed
  (``ss -K``), as a reboot forgets them; the link comes back, and the
  client's next segment is answered with a reset.

Cleanup, always: the namespace and the pair are removed when the scenario
ends, fails or is interrupted, and a run that could not clean up (SIGKILL)
is cleaned up by the next one (:func:`sweep_leftovers`).  Where the machine
does not allow any of it (not root, no ``ip``), :func:`unavailable` says why
and the scenario cannot be completed.

What it leaves out: the client host's crash (the same, seen from the other
end), and any firewall: the link going down is the whole of the "network".
"""

import errno
import ipaddress
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

from bench import process
from bench.scenarios import observe
from bench.scenarios.harness import START_TIMEOUT, Proc, ScenarioError, recv_until, scenario

SOURCE = "Stevens, UNIX Network Programming, ch. 5"
GUIDE = "Sanguino, A Quick Guide to Networking Software"

# Names of what a run makes, with its pid: a leftover is known by a pid that has gone.
NETNS_PREFIX = "selectlab-x8-"
NETNS_NAME = re.compile(rf"^{NETNS_PREFIX}(\d+)$")
HOST_IF_PREFIX = "slx8h"          # this host's end of the pair; 15 characters at most
NS_IF_PREFIX = "slx8n"            # the namespace's end
HOST_IF_NAME = re.compile(rf"^{HOST_IF_PREFIX}(\d+)$")

# Where the pair's /30 comes from: link-local addresses (RFC 3927, less its
# first and last /24, which it reserves), never routed off a link; if this
# host routes all of those, the benchmarking range 198.18.0.0/15 (RFC 2544),
# which no real network uses.  Never one that overlaps a route of this host.
# Not a private 10.x range: a corporate LAN or a VPN reached through the
# default route may use it, and "default" names no network to avoid.
ADDRESS_POOLS = ("169.254.1.0/24", "169.254.254.0/24", "198.18.0.0/15")
AVOIDED = (ipaddress.ip_network("169.254.169.252/30"),)   # clouds' metadata address

# How long one `ip` or `ss` command may take.
COMMAND_TIMEOUT = 5.0

# The short timeouts the scenario sets (TCP_USER_TIMEOUT in ms, keepalive in s).
USER_TIMEOUT_MS = 2000
KEEPIDLE, KEEPINTVL, KEEPCNT = 1, 1, 2

# The kernel's bounds on a retransmission timeout (include/net/tcp.h:
# TCP_RTO_MIN; TCP_RTO_MAX, which tcp_rto_max_ms may change from Linux 6.15).
RTO_MIN = 0.2
RTO_MAX = 120.0


# --- the machine ---------------------------------------------------------------

def _command(argv, timeout=COMMAND_TIMEOUT):
    """Run ``argv`` (an ``ip`` or ``ss`` command); its CompletedProcess, or ScenarioError."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ScenarioError(f"`{' '.join(argv)}` did not finish within {timeout:g} s") from None


def _checked(argv, timeout=COMMAND_TIMEOUT):
    done = _command(argv, timeout)
    if done.returncode != 0:
        raise ScenarioError(f"`{' '.join(argv)}` failed: {done.stderr.strip() or done.returncode}")
    return done


def _missing():
    """Why this machine cannot even try (no Linux, not root, no ip or ss), or None."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux's, and this is {sys.platform}"
    if os.geteuid() != 0:
        return ("making a network namespace and a veth pair needs root (CAP_NET_ADMIN), "
                f"and this runs as uid {os.geteuid()}")
    for tool in ("ip", "ss"):
        if shutil.which(tool) is None:
            return f"the {tool} command (iproute2) is not installed"
    return None


def unavailable():
    """Why the scenario cannot run here, or None: it tries to make (and remove) its namespace.

    For a test that should skip, with the reason, where the scenario would
    end with "could not be completed".
    """
    reason = _missing()
    if reason:
        return reason
    sweep_leftovers()
    ns = Namespace(os.getpid())
    try:
        ns.create()
    except ScenarioError as exc:
        return f"cannot make a network namespace joined by a veth pair here: {exc}"
    finally:
        ns.remove()
    return None


def namespaces():
    """The names `ip netns list` shows."""
    done = _command(["ip", "netns", "list"])
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def interfaces():
    """The names of this host's network interfaces."""
    return os.listdir("/sys/class/net")


def _gone(pid):
    return not os.path.exists(f"/proc/{pid}")


def sweep_leftovers():
    """Remove the namespaces and pairs of runs whose process has gone (killed before it could
    clean up); returns their names.  A namespace or pair of a live pid is left alone."""
    removed = []
    for name in namespaces():
        match = NETNS_NAME.match(name)
        if match and _gone(int(match[1])):
            Namespace(int(match[1])).remove()
            removed.append(name)
    for name in interfaces():
        match = HOST_IF_NAME.match(name)
        if match and _gone(int(match[1])):
            Namespace(int(match[1])).remove()
            removed.append(name)
    return removed


def _routed_networks():
    """Every IPv4 network or address this host's routing tables (all of them) name."""
    done = _command(["ip", "-4", "route", "show", "table", "all"])
    return [ipaddress.ip_network(text, strict=False)
            for text in re.findall(r"\b\d+\.\d+\.\d+\.\d+(?:/\d+)?\b", done.stdout)]


def free_subnet(pid, routed):
    """A /30 for the pair that overlaps none of ``routed``: the first free one in
    :data:`ADDRESS_POOLS`, from a place that depends on ``pid`` (two runs at once differ)."""
    for pool in map(ipaddress.ip_network, ADDRESS_POOLS):
        subnets = list(pool.subnets(new_prefix=30))
        for i in range(len(subnets)):
            subnet = subnets[(pid + i) % len(subnets)]
            if not any(subnet.overlaps(n) for n in (*routed, *AVOIDED)):
                return subnet
    raise ScenarioError(f"every /30 of {', '.join(ADDRESS_POOLS)} overlaps a route of this host")


class Namespace:
    """The server's host: a network namespace of this run's own and the veth pair to it.

    Named after ``pid``, the process that made it, so that a leftover is
    known by its dead pid.  :meth:`remove` may be called any number of times,
    on whatever is left.
    """

    def __init__(self, pid):
        self.name = f"{NETNS_PREFIX}{pid}"
        self.host_if, self.ns_if = f"{HOST_IF_PREFIX}{pid}", f"{NS_IF_PREFIX}{pid}"
        self.pid = pid
        self.host_address = self.address = None
        self.servers = []        # the Procs started in it

    def create(self, run=None):
        """Make the namespace and the pair, addressed and up; ``run`` shows the commands."""
        subnet = free_subnet(self.pid, _routed_networks())
        first, second = list(subnet.hosts())
        self.host_address, self.address = str(first), str(second)
        ns = ["ip", "-n", self.name]
        for argv in (["ip", "netns", "add", self.name],
                     ["ip", "link", "add", self.host_if, "type", "veth", "peer", "name",
                      self.ns_if, "netns", self.name],
                     ["ip", "addr", "add", f"{first}/30", "dev", self.host_if],
                     [*ns, "addr", "add", f"{second}/30", "dev", self.ns_if],
                     [*ns, "link", "set", "lo", "up"],
                     [*ns, "link", "set", self.ns_if, "up"],
                     ["ip", "link", "set", self.host_if, "up"]):
            self._run(run, argv)

    def _run(self, run, argv):
        if run is not None:
            run.command(argv)
            run.check_time(f"running {' '.join(argv)}")
        return _checked(argv, COMMAND_TIMEOUT if run is None
                        else max(0.1, min(COMMAND_TIMEOUT, run.within(COMMAND_TIMEOUT))))

    def exec_argv(self, argv):
        """``argv`` run inside the namespace (``ip netns exec`` execs it: the pid stays)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def link(self, run, up):
        """The namespace's end of the pair up or down (the host's network card, as it were)."""
        self._run(run, ["ip", "-n", self.name, "link", "set", self.ns_if,
                        "up" if up else "down"])

    def destroy_sockets(self, run):
        """Destroy every TCP socket in the namespace (``ss -K``), as a reboot forgets them."""
        self._run(run, self.exec_argv(["ss", "-K", "-t", "-a"]))

    def neighbour(self):
        """This host's ARP entry for the namespace's address, as ``ip neigh`` shows it."""
        done = _checked(["ip", "neigh", "show", self.address, "dev", self.host_if])
        return done.stdout.strip() or f"{self.address} (no entry)"

    def tcp_table(self, port=None):
        """The namespace's /proc/net/tcp (``cat`` run in it), parsed; with ``port``, the rows with
        it at either end."""
        argv = self.exec_argv(["cat", "/proc/net/tcp"])
        return observe.parse_tcp_table(_checked(argv).stdout, port)

    def remove(self, run=None):
        """End what runs in it, delete the pair and the namespace: whatever of them is left."""
        for server in self.servers:
            server.child.kill()          # SIGKILL and reap, by pid (the harness's cleanup: no-op)
        if self.name in namespaces():
            # Anything else in it is this scenario's too (a run killed before its cleanup).
            for pid in _command(["ip", "netns", "pids", self.name]).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.host_if in interfaces():
            self._cleanup_step(run, ["ip", "link", "del", self.host_if])
        if self.name in namespaces():
            self._cleanup_step(run, ["ip", "netns", "del", self.name])

    def _cleanup_step(self, run, argv):
        if run is not None:
            run.command(argv)
        done = _command(argv)
        if done.returncode != 0 and run is not None:
            run.say(f"({' '.join(argv)}: {done.stderr.strip()})")


class NamespaceServer(Proc):
    """A selectlab server started inside the namespace, its port read back from its
    ``listening on`` line, and ended by the harness's cleanup by its pid as any other
    (:class:`harness.Server` insists on loopback, which the namespace does not have)."""

    def __init__(self, run, ns, label, module, *args):
        argv = ns.exec_argv(run.python(module, *args))
        run.command(argv)
        super().__init__(run, label, argv, subprocess.DEVNULL)
        ns.servers.append(self)
        line = self.wait_for(process.LISTENING.pattern, START_TIMEOUT,
                             what="'listening on HOST:PORT'").group(0)
        where = process.parse_listening(line)
        if where.host != ns.address:
            raise ScenarioError(f"{label} listens on {where.host}, not on {ns.address}")
        self.port = where.port
        self.address = (ns.address, self.port)


# --- /proc/net/tcp, with its timers ----------------------------------------------

def host_rows(ns_address, port):
    """This host's TCP sockets connected to ``(ns_address, port)``."""
    return [row for row in observe.tcp_sockets(port) if row.remote == (ns_address, port)]


def format_table(rows, names=None):
    """``netstat -ao`` lines for ``rows``, each with its role (``names``: local address -> role)."""
    names = names or {}
    lines = [f"{'Proto':<6}{'Recv-Q':>7}{'Send-Q':>7}  {'Local Address':<21}"
             f"{'Foreign Address':<21}{'State':<12} Timer"]
    for row in sorted(rows, key=lambda r: (r.state == "LISTEN", r.local[1], r.remote[1])):
        role = f"   <- {names[row.local]}" if row.local in names else ""
        lines.append(f"{'tcp':<6}{row.recv_q:>7}{row.send_q:>7}  "
                     f"{observe.format_endpoint(row.local):<21}"
                     f"{observe.format_endpoint(row.remote):<21}{row.state:<12} "
                     f"{observe.format_timer(row)}{role}")
    return lines


def default_timeout(retries2, rto_min=RTO_MIN, rto_max=RTO_MAX):
    """Seconds of retransmissions before the kernel gives up on an established connection.

    As Linux computes it (net/ipv4/tcp_timer.c, ``tcp_model_timeout``): the
    timeout doubles from ``rto_min`` up to ``rto_max``, then stays there, for
    ``retries2`` retransmissions and a last wait.  15 (the default) gives
    924.6 s, about 15 minutes.
    """
    threshold = int(rto_max / rto_min).bit_length() - 1      # ilog2
    if retries2 <= threshold:
        return ((2 << retries2) - 1) * rto_min
    return ((2 << threshold) - 1) * rto_min + (retries2 - threshold) * rto_max


# --- the scenario ------------------------------------------------------------------

def _tcp_info(sock):
    """``(retransmits, probes)`` of one of our sockets, from TCP_INFO (its first bytes:
    state, ca_state, retransmits, probes): polled instead of /proc/net/tcp, which lists
    every socket of the host and takes a tenth of a second to read on a busy one."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    _state, _ca_state, retransmits, probes = struct.unpack_from("4B", info)
    return retransmits, probes


class BlockedRead(threading.Thread):
    """A client blocked in read, in a thread of its own while the scenario looks on.

    ``result``: ``(errno or None, data, when it returned)`` once the read has
    returned, bounded by ``timeout``; ``errno`` and ``data`` both None: nothing
    came in time (our own bound, told from the kernel's ETIMEDOUT by its
    missing errno: Python raises TimeoutError for both).
    """

    def __init__(self, sock, timeout):
        super().__init__(daemon=True, name="blocked read")
        self.sock, self.timeout, self.result = sock, timeout, None
        self.start()

    def run(self):
        self.result = (*_recv(self.sock, self.timeout), time.monotonic())


def _recv(sock, timeout):
    """One read: ``(None, data)``, ``(errno, None)``, or ``(None, None)`` after ``timeout``."""
    sock.settimeout(timeout)
    try:
        return None, sock.recv(4096)
    except OSError as exc:
        return exc.errno, None


def _read(r, sock, timeout):
    """A read in the scenario's own thread: ``(errno or None, data, seconds)``."""
    start = time.monotonic()
    code, data = _recv(sock, max(0.1, r.within(timeout)))
    r.check_time("reading from a connection")
    return code, data, time.monotonic() - start


def _errno_text(code):
    return f"-1, errno {errno.errorcode[code]} ({os.strerror(code)})"


def _outcome(code, data):
    if code is not None:
        return f"read returned {_errno_text(code)}"
    if data is None:
        return "read had returned nothing when we stopped waiting"
    return f"read returned {data!r}" if data else "read returned 0 (EOF)"


DEFAULTS, USER_TIMEOUT, KEEPALIVE, IDLE = ("client 1 (defaults)", "client 2 (user timeout)",
                                           "client 3 (keepalive)", "client 4 (idle)")
_TCP = socket.IPPROTO_TCP
OPTIONS = {
    DEFAULTS: (),
    USER_TIMEOUT: ((_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS, "TCP_USER_TIMEOUT"),),
    KEEPALIVE: ((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1, "SO_KEEPALIVE"),
                (_TCP, socket.TCP_KEEPIDLE, KEEPIDLE, "TCP_KEEPIDLE"),
                (_TCP, socket.TCP_KEEPINTVL, KEEPINTVL, "TCP_KEEPINTVL"),
                (_TCP, socket.TCP_KEEPCNT, KEEPCNT, "TCP_KEEPCNT")),
    IDLE: (),
}


class Clients:
    """This host's connections to the server host, by role, and what they show."""

    def __init__(self, ns):
        self.ns = ns
        self.socks = {}           # role -> socket
        self.readers = []

    def connect(self, r, role, address):
        sock = r.connect(address)
        self.socks[role] = sock
        for level, option, value, _ in OPTIONS[role]:
            sock.setsockopt(level, option, value)
        sock.sendall(b"hello\n")
        echo = recv_until(sock, lambda d: d.endswith(b"\n"))
        shown = ", ".join(f"{name} {value}" for _, _, value, name in OPTIONS[role])
        r.say(f"[{role}] connected from port {sock.getsockname()[1]}"
              f"{' with ' + shown if shown else ''}; sent b'hello\\n', read {echo!r}")
        return echo

    def write(self, r, role, data):
        self.socks[role].sendall(data)
        r.say(f"[{role}] write({data!r}) returned {len(data)} at once: the kernel queued it")

    def block(self, r, role, timeout):
        reader = BlockedRead(self.socks[role], timeout)
        self.readers.append(reader)
        r.say(f"[{role}] blocks in read")
        return reader

    def names(self):
        return {s.getsockname(): role for role, s in self.socks.items() if s.fileno() >= 0}

    def row(self, rows, role):
        here = self.socks[role].getsockname()
        return next((x for x in rows if x.local == here), None)

    def snapshot(self, r, port, title):
        """This host's side, as ``netstat -ao`` shows it (with the timers); the rows."""
        rows = host_rows(self.ns.address, port)
        r.table(f"netstat -ao | grep {port}  ({title})", format_table(rows, self.names()))
        return rows

    def close(self):
        """Wake the blocked readers, then close every socket."""
        for sock in self.socks.values():
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass            # already closed by its kernel (ETIMEDOUT, reset)
        for reader in self.readers:
            reader.join(1.0)
        for sock in self.socks.values():
            sock.close()


def _ns_snapshot(r, ns, port, title):
    """The server host's side, read in the namespace; the rows."""
    rows = ns.tcp_table(port)
    r.table(f"ip netns exec {ns.name} netstat -ao | grep {port}  ({title})", format_table(rows))
    return rows


@scenario("X8", "host-crash", "The server host crashes, and comes back: a network namespace as "
          "the other host", f"{SOURCE}, 5.1 Introduction and 5.6 Normal Startup; {GUIDE}, "
          "question and answer 9", """\
"What happens to the client if the server host crashes?" ... "What happens when something goes
wrong: the client host crashes, the client process crashes, network connectivity is lost"
"If the transport layer can not deliver your messages to the destination, the connection will be
lost. In some circumstances, this may take a few minutes due to timeouts. If your process is
blocked in a read when the connection is lost, then read would return -1 and errno would be set
to the appropriate error."
Beyond the texts: a host that crashed and rebooted has forgotten the connection, and answers the
client's next segment with a reset (ECONNRESET).
""", limit=25.0)
def host_crash(r):
    reason = _missing()
    if reason:
        raise ScenarioError(f"this machine cannot run it: {reason}")
    for name in sweep_leftovers():
        r.say(f"removed {name}, left by an earlier run whose process has gone")
    ns = Namespace(os.getpid())
    clients = Clients(ns)
    try:
        r.heading(f"the server host: network namespace {ns.name}, joined by a veth pair")
        ns.create(r)
        r.say(f"this host is {ns.host_address} ({ns.host_if}), the server host {ns.address} "
              f"({ns.ns_if}); nothing else is routed through the pair")
        server = NamespaceServer(r, ns, "echo_select", "servers.echo_select", "0",
                                 "-b", ns.address, "-v")
        _connect(r, ns, clients, server)
        _crash(r, ns, clients, server.port)
        _reboot(r, ns, clients, server)
    finally:
        clients.close()
        r.heading("cleanup: the namespace and the pair go, whatever happened")
        ns.remove(r)


def _connect(r, ns, clients, server):
    echoes = [clients.connect(r, role, server.address) for role in OPTIONS]
    server.wait_for(r"#4 .* open", timeout=2, what="'#4 ... open'")
    r.ps([server], "the server in its namespace, four clients connected")
    r.netstat(server.port, "this host's side: the four clients")
    theirs = _ns_snapshot(r, ns, server.port, "the server host's side")
    ours = host_rows(ns.address, server.port)
    r.expect(echoes == [b"hello\n"] * 4
             and [x.state for x in theirs].count("ESTABLISHED") == 4
             and [x.state for x in ours].count("ESTABLISHED") == 4,
             "four connections from this host to the server host, each echoed once: "
             "ESTABLISHED at both ends")


def _crash(r, ns, clients, port):
    socks = clients.socks
    r.heading("the server host drops off the network (its end of the pair goes down)")
    ns.link(r, up=False)
    down = time.monotonic()
    r.say("to this host a crashed host and a cut cable look the same: nothing comes back")
    clients.write(r, DEFAULTS, b"line 1\n")
    clients.write(r, USER_TIMEOUT, b"line 1\n")
    wrote = time.monotonic()
    timed_out = clients.block(r, USER_TIMEOUT, USER_TIMEOUT_MS / 1000 + 6)
    probed = clients.block(r, KEEPALIVE, KEEPIDLE + KEEPCNT * KEEPINTVL + 6)

    r.until(lambda: _tcp_info(socks[DEFAULTS])[0] >= 2 and _tcp_info(socks[KEEPALIVE])[1] >= 1,
            timeout=5)
    first = clients.snapshot(r, port, "unanswered: retransmissions, a keepalive probe")
    unseen = _ns_snapshot(r, ns, port, "what the server host has of it")
    clients.write(r, DEFAULTS, b"line 2\n")
    seen = _tcp_info(socks[DEFAULTS])[0]
    r.until(lambda: _tcp_info(socks[DEFAULTS])[0] > seen, timeout=5)
    second = clients.snapshot(r, port, "client 1 retransmits again")
    client1 = [clients.row(rows, DEFAULTS) for rows in (first, second)]
    growth = [x.send_q if x else None for x in client1]
    tries = [x.retransmits if x else None for x in client1]
    r.expect(growth == [7, 14] and None not in tries and 1 <= tries[0] < tries[1]
             and all(x.timer_name == "on" for x in client1),
             f"the writes are taken but never acknowledged: client 1's Send-Q grows "
             f"{' -> '.join(map(str, growth))} bytes, its retransmission timer is on and its "
             f"retransmissions count up ({' -> '.join(map(str, tries))})")
    r.expect(unseen and all(x.recv_q == 0 for x in unseen),
             "the server host got none of it (Recv-Q 0 on each of its sockets)")

    r.until(lambda: timed_out.result, timeout=USER_TIMEOUT_MS / 1000 + 7)
    code, data, end = timed_out.result or (None, None, time.monotonic())
    r.say(f"[{USER_TIMEOUT}] {_outcome(code, data)}, {end - wrote:.1f} s after its write")
    r.expect(code == errno.ETIMEDOUT,
             f"client 2, blocked in read, with TCP_USER_TIMEOUT {USER_TIMEOUT_MS} ms: the read "
             f"returns {_errno_text(errno.ETIMEDOUT)} {end - wrote:.1f} s after the unanswered "
             f"write; seconds, not minutes")
    r.until(lambda: probed.result, timeout=KEEPIDLE + KEEPCNT * KEEPINTVL + 7)
    code, data, end = probed.result or (None, None, time.monotonic())
    r.say(f"[{KEEPALIVE}] {_outcome(code, data)}, {end - down:.1f} s after the link went down")
    keepalive = clients.row(first, KEEPALIVE)
    r.expect(code == errno.ETIMEDOUT and keepalive is not None
             and keepalive.timer_name == "keepalive",
             f"client 3, blocked in read on an idle connection, with keepalive ({KEEPIDLE} s "
             f"idle, {KEEPCNT} probes {KEEPINTVL} s apart): its probes go unanswered (timer "
             f"{observe.format_timer(keepalive) if keepalive else '?'}) and the read returns "
             f"{_errno_text(errno.ETIMEDOUT)} {end - down:.1f} s after the link went down, "
             f"with nothing ever sent")

    clients.write(r, DEFAULTS, b"line 3\n")
    third = clients.snapshot(r, port, "clients 2 and 3 have given up; 1 and 4 have not")
    lasting, idle = clients.row(third, DEFAULTS), clients.row(third, IDLE)
    retries2 = observe.sysctl("net.ipv4.tcp_retries2", 15)
    rto_max = observe.sysctl("net.ipv4.tcp_rto_max_ms", int(RTO_MAX * 1000)) / 1000
    computed = default_timeout(retries2, RTO_MIN, rto_max)
    r.say(f"net.ipv4.tcp_retries2 = {retries2}: without TCP_USER_TIMEOUT the kernel "
          f"retransmits {retries2} times, the timeout doubling from {RTO_MIN:g} s up to "
          f"{rto_max:g} s, and gives up after about {computed:.1f} s ({computed / 60:.1f} min): "
          f"computed as the kernel's tcp_model_timeout does, not waited for")
    r.expect(lasting is not None and lasting.state == "ESTABLISHED" and lasting.timer_name == "on"
             and lasting.send_q == 21,
             f"client 1, with the defaults, is still retransmitting "
             f"{time.monotonic() - down:.1f} s on (ESTABLISHED, Send-Q "
             f"{lasting.send_q if lasting else '?'}, {lasting.retransmits if lasting else '?'} "
             f"retransmissions, no error); its read would wait the guide's few minutes, "
             f"{computed / 60:.1f} here (computed)")
    r.expect(idle is not None and idle.state == "ESTABLISHED" and idle.timer_name == "off"
             and not {USER_TIMEOUT, KEEPALIVE} & {clients.names().get(x.local) for x in third},
             "client 4, idle without keepalive, notices nothing (ESTABLISHED, no timer); "
             "clients 2 and 3 are gone from the table: their kernel closed them")


def _reboot(r, ns, clients, server):
    socks, port = clients.socks, server.port
    r.heading("the server host crashes for good and reboots: its process and its sockets go")
    server.signal(signal.SIGKILL)
    server.wait()
    _ns_snapshot(r, ns, port, "the dead server's sockets: FINs that cannot leave")
    ns.destroy_sockets(r)
    forgotten = _ns_snapshot(r, ns, port, "rebooted: no memory of any connection")
    if forgotten:
        raise ScenarioError("ss -K destroyed no socket (this kernel lacks "
                            "CONFIG_INET_DIAG_DESTROY), so a reboot cannot be shown")
    again = NamespaceServer(r, ns, "echo_select (after the reboot)", "servers.echo_select",
                            port, "-b", ns.address, "-v")
    neighbour = ns.neighbour()
    r.say(f"$ ip neigh show dev {ns.host_if}\n{neighbour}")
    r.say("(this host's ARP entry for the server host, unresolved since its link went down: "
          "client 1's retransmissions have been going nowhere)")
    ns.link(r, up=True)
    up = time.monotonic()
    r.ps([again], "the server host is back, and its server")
    retransmitted = clients.block(r, DEFAULTS, 12)

    r.heading("client 4 writes to the rebooted host")
    clients.write(r, IDLE, b"after the reboot\n")
    code, data, seconds = _read(r, socks[IDLE], 5)
    r.say(f"[{IDLE}] {_outcome(code, data)} {seconds:.2f} s later")
    r.expect(code == errno.ECONNRESET,
             f"the rebooted host answers a segment of a connection it does not know with a "
             f"reset: client 4's read returns {_errno_text(errno.ECONNRESET)}")
    r.until(lambda: retransmitted.result, timeout=12)
    code, data, end = retransmitted.result or (None, None, time.monotonic())
    r.say(f"[{DEFAULTS}] {_outcome(code, data)}, {end - up:.2f} s after the link came back")
    r.expect(code == errno.ECONNRESET,
             f"client 1's retransmitted bytes get a reset too: its read returns "
             f"{_errno_text(errno.ECONNRESET)}")
    with r.connect(again.address) as fresh:
        fresh.sendall(b"new client\n")
        echo = recv_until(fresh, lambda d: d.endswith(b"\n"))
        r.say(f"[client 5] connected anew: sent b'new client\\n', read {echo!r}")
    r.expect(echo == b"new client\n",
             "a new connection to the rebooted host is served: only the old ones are lost")
    left = clients.snapshot(r, port, "the end: none of the four connections is left")
    r.expect(not [x for x in left if x.local in clients.names()],
             "none of the four connections is left on this host")
