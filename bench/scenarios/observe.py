"""What a scenario looks at, read from /proc: the book's ``netstat -a`` and ``ps``.

* :func:`tcp_sockets`: every TCP socket with a given port at either end, from
  ``/proc/net/tcp`` and ``/proc/net/tcp6`` (what ``netstat -a | grep 9877``
  shows in UNP 5.6), with its state, Recv-Q and Send-Q, and its timer (what
  ``netstat -o`` shows); :func:`parse_tcp_table` reads such a table's text
  from elsewhere (another network namespace's).
* :func:`udp_sockets`: the same for UDP, from ``/proc/net/udp`` and ``udp6``.
* :func:`netstat_counter` and :func:`sysctl`: the kernel's counters
  (``netstat -s``) and settings (``sysctl``).
* :func:`family`: a process family (a server and its children, the
  clients), with PPID, STAT (``Z`` for a zombie, shown ``<defunct>`` as ``ps``
  does) and WCHAN, the kernel function a sleeping process waits in (UNP
  5.6's ``ps -o pid,ppid,tty,stat,args,wchan``); :func:`syscall`, the
  system call it sleeps in, from /proc/PID/syscall (WCHAN says
  ``wait_woken`` for a read and a write alike).
"""

import ipaddress
import os
import platform
import socket
import sys

from bench.process import children, descendants, stat

# /proc/net/tcp's "st" column (include/net/tcp_states.h).
TCP_STATES = {
    0x01: "ESTABLISHED", 0x02: "SYN_SENT", 0x03: "SYN_RECV", 0x04: "FIN_WAIT1",
    0x05: "FIN_WAIT2", 0x06: "TIME_WAIT", 0x07: "CLOSE", 0x08: "CLOSE_WAIT",
    0x09: "LAST_ACK", 0x0A: "LISTEN", 0x0B: "CLOSING", 0x0C: "NEW_SYN_RECV",
}

# /proc/net/tcp's "tr" column, as netstat -o names it.
TCP_TIMERS = {0: "off", 1: "on", 2: "keepalive", 3: "timewait", 4: "probe"}


def _address(text, family):
    """``0100007F:2691`` (little-endian words, hex port) to ``("127.0.0.1", 9873)``."""
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    # The kernel prints each 32-bit word in host byte order.
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    words = raw
    address = ipaddress.ip_address(words)
    if family == socket.AF_INET6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address), int(port, 16)


class TcpSocket:
    """One line of /proc/net/tcp or tcp6.

    ``timer`` is the seconds left on its timer (for TIME_WAIT, until it goes),
    from the ``tm->when`` column, which the kernel gives in USER_HZ ticks;
    ``timer_name`` says which timer it is, as ``netstat -o`` names it (off,
    on -- the retransmission timer --, keepalive, timewait or probe);
    ``retransmits``: retransmissions of the oldest unacknowledged segment so
    far; ``probes``: keepalive (or zero-window) probes unanswered.
    """

    __slots__ = ("local", "remote", "state", "recv_q", "send_q", "inode", "timer",
                 "timer_name", "retransmits", "probes")

    def __init__(self, local, remote, state, recv_q, send_q, inode, timer=0.0,
                 timer_name="off", retransmits=0, probes=0):
        self.local, self.remote, self.state = local, remote, state
        self.recv_q, self.send_q, self.inode = recv_q, send_q, inode
        self.timer, self.timer_name = timer, timer_name
        self.retransmits, self.probes = retransmits, probes

    def __repr__(self):
        return f"<{format_endpoint(self.local)} {format_endpoint(self.remote)} {self.state}>"


_USER_HZ = os.sysconf("SC_CLK_TCK")


def _read_lines(path):
    """The lines of a /proc/net table after its heading ([] where this kernel has none)."""
    try:
        with open(path) as f:
            return f.read().splitlines()[1:]
    except FileNotFoundError:       # no IPv6 on this kernel
        return []


def parse_tcp_table(text, port=None, family=socket.AF_INET):
    """The rows of a /proc/net/tcp (or tcp6) text; with ``port``, those with it at either end."""
    return _tcp_rows(text.splitlines()[1:], family, port)


def _tcp_rows(lines, family, port):
    """The rows of a table's ``lines`` with ``port`` at either end (all when None).

    A busy host has tens of thousands of rows (a benchmark's TIME_WAITs):
    only those whose text holds the port, in hex, are parsed.
    """
    hex_port = f":{port:04X} " if port is not None else ""
    rows = []
    for line in lines:
        if hex_port not in line:
            continue
        fields = line.split()
        tx, rx = fields[4].split(":")
        timer, when = fields[5].split(":")
        row = TcpSocket(_address(fields[1], family), _address(fields[2], family),
                        TCP_STATES.get(int(fields[3], 16), fields[3]),
                        int(rx, 16), int(tx, 16), int(fields[9]), int(when, 16) / _USER_HZ,
                        TCP_TIMERS.get(int(timer, 16), f"unkn-{int(timer, 16)}"),
                        int(fields[6], 16), int(fields[8]))
        if port is None or port in (row.local[1], row.remote[1]):
            rows.append(row)
    return rows


def tcp_sockets(port):
    """Every TCP socket of this host with ``port`` as its local or remote port."""
    return (_tcp_rows(_read_lines("/proc/net/tcp"), socket.AF_INET, port)
            + _tcp_rows(_read_lines("/proc/net/tcp6"), socket.AF_INET6, port))


def format_timer(row):
    """The Timer column of ``netstat -o``: ``on (0.20/3/0)`` (seconds left/retransmits/probes)."""
    if row.timer_name == "off":
        return f"off (0.00/{row.retransmits}/{row.probes})"
    return f"{row.timer_name} ({row.timer:.2f}/{row.retransmits}/{row.probes})"


class UdpSocket:
    """One line of /proc/net/udp or udp6: addresses, whether connected, queues, inode, drops.

    ``recv_q``/``send_q`` are what netstat shows for UDP: the memory the
    queued datagrams take (``sk_rmem_alloc``), not their bytes.
    """

    __slots__ = ("local", "remote", "connected", "recv_q", "send_q", "inode", "drops")

    def __init__(self, local, remote, connected, recv_q, send_q, inode, drops):
        self.local, self.remote, self.connected = local, remote, connected
        self.recv_q, self.send_q, self.inode, self.drops = recv_q, send_q, inode, drops


def _udp_rows(lines, family):
    rows = []
    for line in lines:
        fields = line.split()
        tx, rx = fields[4].split(":")
        # st 01 (TCP_ESTABLISHED) once connect()ed, 07 (TCP_CLOSE) otherwise.
        rows.append(UdpSocket(_address(fields[1], family), _address(fields[2], family),
                              int(fields[3], 16) == 1, int(rx, 16), int(tx, 16),
                              int(fields[9]), int(fields[12])))
    return rows


def udp_sockets(ports=None):
    """Every UDP socket of this host with one of ``ports`` at either end (None: all of them)."""
    rows = (_udp_rows(_read_lines("/proc/net/udp"), socket.AF_INET)
            + _udp_rows(_read_lines("/proc/net/udp6"), socket.AF_INET6))
    if ports is None:
        return rows
    return [r for r in rows if r.local[1] in ports or r.remote[1] in ports]


def socket_inodes(pid):
    """The inodes of the sockets process ``pid`` holds (from /proc/PID/fd)."""
    inodes = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except (FileNotFoundError, ProcessLookupError):
        return inodes
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def format_endpoint(endpoint):
    host, port = endpoint
    host = "*" if host in ("0.0.0.0", "::") else host
    return f"{host}:{'*' if port == 0 else port}"


def format_netstat(rows, server_port=None):
    """``netstat -a`` lines: listeners last, as in UNP; the server's side before the client's."""
    def order(r):
        return (r.state == "LISTEN", r.local[1] != server_port, r.local[1], r.remote[1])
    lines = [f"{'Proto':<6}{'Recv-Q':>9}{'Send-Q':>9}  {'Local Address':<22}"
             f"{'Foreign Address':<22}State"]
    for r in sorted(rows, key=order):
        lines.append(f"{'tcp':<6}{r.recv_q:>9}{r.send_q:>9}  {format_endpoint(r.local):<22}"
                     f"{format_endpoint(r.remote):<22}{r.state}")
    return lines


def format_udp_netstat(rows):
    """``netstat -a -u`` lines: a connected socket's State is ESTABLISHED, as netstat shows it."""
    lines = [f"{'Proto':<6}{'Recv-Q':>9}{'Send-Q':>9}  {'Local Address':<22}"
             f"{'Foreign Address':<22}State"]
    for r in sorted(rows, key=lambda r: r.local[1]):
        lines.append(f"{'udp':<6}{r.recv_q:>9}{r.send_q:>9}  {format_endpoint(r.local):<22}"
                     f"{format_endpoint(r.remote):<22}{'ESTABLISHED' if r.connected else ''}")
    return lines


# --- the kernel's counters and settings ----------------------------------------

def netstat_counter(name, group="TcpExt", path="/proc/net/netstat"):
    """One of this host's counters, as ``netstat -s`` reads it: ``group``'s ``name``, 0 if none.

    /proc/net/netstat (TcpExt's) and /proc/net/snmp (Tcp's, Udp's) hold a
    line of names and a line of values for each group.
    """
    with open(path) as f:
        lines = [line.split() for line in f]
    for names, values in zip(lines[::2], lines[1::2]):
        if names and names[0] == f"{group}:" and name in names:
            return int(values[names.index(name)])
    return 0


def sysctl(name, default=None):
    """A kernel setting (``net.ipv4.tcp_syn_retries``) from /proc/sys: an int if it is one, else
    its text; ``default`` where this kernel has no such setting."""
    try:
        with open(f"/proc/sys/{name.replace('.', '/')}") as f:
            text = f.read().strip()
    except FileNotFoundError:
        return default
    try:
        return int(text)
    except ValueError:
        return text


def timewait_overflows():
    """How many times this host's TIME_WAIT table was full (``TCPTimeWaitOverflow``).

    Past ``net.ipv4.tcp_max_tw_buckets`` TIME_WAIT sockets (a benchmark's
    connection churn gets there within its 60 s), the kernel closes a
    connection without one: a TIME_WAIT the text predicts cannot be seen.
    """
    return netstat_counter("TCPTimeWaitOverflow")


# --- processes -------------------------------------------------------------

class Process:
    """One process from /proc: pid, ppid, state letter, wchan, command line."""

    __slots__ = ("pid", "ppid", "stat", "wchan", "args")

    def __init__(self, pid, ppid, stat, wchan, args):
        self.pid, self.ppid, self.stat, self.wchan, self.args = pid, ppid, stat, wchan, args

    @property
    def zombie(self):
        return self.stat == "Z"


def process(pid):
    """The :class:`Process` ``pid`` is now, or None if there is none."""
    return _described(stat(pid))


def _described(s):
    """The :class:`Process` of a :class:`bench.process.Stat`, with its wchan and command line."""
    if s is None:
        return None
    try:
        with open(f"/proc/{s.pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    try:
        with open(f"/proc/{s.pid}/wchan") as f:
            wchan = f.read().strip()
    except OSError:
        wchan = ""
    if s.zombie:
        args = f"[{s.name}] <defunct>"
    else:
        args = " ".join(_short(a) for a in cmdline.decode(errors="replace").split("\0") if a)
    if wchan in ("", "0"):
        wchan = "-"
    return Process(s.pid, s.ppid, s.state, wchan, args)


def _short(arg):
    """``/usr/bin/python3.11`` as ``python``: a ps line about the program, not the install."""
    base = os.path.basename(arg)
    return "python" if base.startswith("python") else arg


# The system calls a scenario's process waits in, by number (asm/unistd.h): x86-64's
# own table, and the generic one of arm64 and riscv64; elsewhere, the number.
_GENERIC = {22: "epoll_pwait", 63: "read", 64: "write", 72: "pselect6", 73: "ppoll",
            202: "accept", 206: "sendto", 207: "recvfrom", 242: "accept4", 260: "wait4",
            441: "epoll_pwait2"}
_SYSCALLS = {
    "x86_64": {0: "read", 1: "write", 7: "poll", 23: "select", 43: "accept", 44: "sendto",
               45: "recvfrom", 61: "wait4", 232: "epoll_wait", 270: "pselect6", 271: "ppoll",
               281: "epoll_pwait", 288: "accept4", 441: "epoll_pwait2"},
    "aarch64": _GENERIC, "riscv64": _GENERIC,
}


def syscall(pid):
    """The system call ``pid`` is blocked in (``read``, ``write``...), or None if it is running."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            field = f.read().split()[0]
    except (OSError, IndexError):
        return None
    if not field.isdigit():         # "running"
        return None
    table = _SYSCALLS.get(platform.machine(), {})
    return table.get(int(field), f"syscall {field}")


def children_of(pid):
    """The pids whose parent is ``pid`` (zombies included), from /proc."""
    return [s.pid for s in children(pid)]


def family(pids):
    """Each of ``pids`` that still exists and all its descendants, parents first."""
    return [p for p in map(_described, descendants(*pids)) if p is not None]


def format_ps(rows, names=None):
    """``ps -o pid,ppid,stat,wchan,args`` lines, each with its role (``names``: pid -> role)."""
    names = names or {}
    lines = [f"{'PID':>7} {'PPID':>7} STAT {'WCHAN':<22} COMMAND"]
    for p in rows:
        role = f"   <- {names[p.pid]}" if p.pid in names else ""
        args = p.args if len(p.args) <= 60 else p.args[:57] + "..."
        lines.append(f"{p.pid:>7} {p.ppid:>7} {p.stat:<4} {p.wchan[:22]:<22} {args}{role}")
    return lines
