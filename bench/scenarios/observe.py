"""What a scenario looks at, read from /proc: the book's ``netstat -a`` and ``ps``.

* :func:`tcp_sockets`: every TCP socket with a given port at either end, from
  ``/proc/net/tcp`` and ``/proc/net/tcp6`` (what ``netstat -a | grep 9877``
  shows in UNP 5.6), with its state, Recv-Q and Send-Q.
* :func:`family`: a process family (a server and its children, the
  clients), with PPID, STAT (``Z`` for a zombie, shown ``<defunct>`` as ``ps``
  does) and WCHAN, the kernel function a sleeping process waits in (UNP
  5.6's ``ps -o pid,ppid,tty,stat,args,wchan``).
"""

import ipaddress
import os
import socket
import sys

from bench.process import children, descendants, stat

# /proc/net/tcp's "st" column (include/net/tcp_states.h).
TCP_STATES = {
    0x01: "ESTABLISHED", 0x02: "SYN_SENT", 0x03: "SYN_RECV", 0x04: "FIN_WAIT1",
    0x05: "FIN_WAIT2", 0x06: "TIME_WAIT", 0x07: "CLOSE", 0x08: "CLOSE_WAIT",
    0x09: "LAST_ACK", 0x0A: "LISTEN", 0x0B: "CLOSING", 0x0C: "NEW_SYN_RECV",
}


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
    from the ``tm->when`` column, which the kernel gives in USER_HZ ticks.
    """

    __slots__ = ("local", "remote", "state", "recv_q", "send_q", "inode", "timer")

    def __init__(self, local, remote, state, recv_q, send_q, inode, timer=0.0):
        self.local, self.remote, self.state = local, remote, state
        self.recv_q, self.send_q, self.inode = recv_q, send_q, inode
        self.timer = timer

    def __repr__(self):
        return f"<{format_endpoint(self.local)} {format_endpoint(self.remote)} {self.state}>"


_USER_HZ = os.sysconf("SC_CLK_TCK")


def _read_table(path, family, port):
    """The rows of ``path`` with ``port`` at either end.

    A busy host has tens of thousands of rows (a benchmark's TIME_WAITs):
    only those whose text holds the port, in hex, are parsed.
    """
    try:
        with open(path) as f:
            lines = f.read().splitlines()[1:]
    except FileNotFoundError:       # no IPv6 on this kernel
        return []
    hex_port = f":{port:04X} "
    rows = []
    for line in lines:
        if hex_port not in line:
            continue
        fields = line.split()
        tx, rx = fields[4].split(":")
        rows.append(TcpSocket(_address(fields[1], family), _address(fields[2], family),
                              TCP_STATES.get(int(fields[3], 16), fields[3]),
                              int(rx, 16), int(tx, 16), int(fields[9]),
                              int(fields[5].split(":")[1], 16) / _USER_HZ))
    return rows


def tcp_sockets(port):
    """Every TCP socket of this host with ``port`` as its local or remote port."""
    rows = (_read_table("/proc/net/tcp", socket.AF_INET, port)
            + _read_table("/proc/net/tcp6", socket.AF_INET6, port))
    return [r for r in rows if port in (r.local[1], r.remote[1])]


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


def timewait_overflows():
    """How many times this host's TIME_WAIT table was full (``TCPTimeWaitOverflow``).

    Past ``net.ipv4.tcp_max_tw_buckets`` TIME_WAIT sockets (a benchmark's
    connection churn gets there within its 60 s), the kernel closes a
    connection without one: a TIME_WAIT the text predicts cannot be seen.
    """
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        fields = dict(zip(names.split(), values.split()))
        if "TCPTimeWaitOverflow" in fields:
            return int(fields["TCPTimeWaitOverflow"])
    return 0


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
