"""The chat room (servers.chat) over loopback: lines to the others, in order, and a member who
does not read cut off without slowing anyone (tier 4)."""

import socket
import subprocess
import sys
import threading

from conftest import DEADLINE, ROOT, recv_exactly, reset
from servers.chat import UNSUPPORTED, WELCOME


class Member:
    """A chat client: a socket and the lines it has read."""

    def __init__(self, address, rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(DEADLINE)
        self.sock.connect(address)
        self._buf = b""

    def say(self, text):
        self.sock.sendall(text)

    def line(self):
        while b"\n" not in self._buf:
            data = self.sock.recv(1 << 16)
            assert data, f"EOF; unread {self._buf!r}"
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return line + b"\n"

    def close(self):
        self.sock.close()


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def test_each_line_reaches_every_other_member_in_order_with_the_senders_name(start_server):
    """smallchat's room: the welcome, then every line a member says reaches each of the
    others as 'NAME> line', in order, and never comes back to the one who said it."""
    server = start_server("servers.chat")
    alice, bob, carol = (Member(server.address) for _ in range(3))
    try:
        for m in (alice, bob, carol):
            assert m.line() == WELCOME
        alice.say(b"/nick alice\n")
        bob.say(b"/nick bob\n")
        said = [b"line %d\n" % i for i in range(50)]
        # Sent in two pieces, the first ending mid-line: the room speaks in lines, not reads.
        stream = b"".join(said)
        alice.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        alice.say(stream[:7])
        alice.say(stream[7:])
        for listener in (bob, carol):
            assert [listener.line() for _ in said] == [b"alice> " + line for line in said]
        bob.say(b"done\n")
        # alice's own lines would have come before bob's: she never got them.
        assert alice.line() == b"bob> done\n"
        assert carol.line() == b"bob> done\n"
        carol.say(b"and me\n")
        assert alice.line() == bob.line() == b"user:3> and me\n"
    finally:
        for m in (alice, bob, carol):
            m.close()


def test_commands_as_smallchat_answers_them(start_server):
    """An unknown command, or /nick with nothing, is 'Unsupported command'; a name with a
    space is refused with a reason; the old name stays."""
    server = start_server("servers.chat")
    one, two = Member(server.address), Member(server.address)
    try:
        assert one.line() == two.line() == WELCOME
        one.say(b"/who\n/nick\n/nick two words\nhi\n")
        assert one.line() == UNSUPPORTED
        assert one.line() == UNSUPPORTED
        assert one.line().startswith(b"error: a nick is 1 to 32 bytes")
        assert two.line() == b"user:1> hi\n"
    finally:
        one.close()
        two.close()


# Sends 1,000 lines (1 MB) for each byte it reads on stdin: the test gives it a few blocks of
# credit and one more each time the reading member has read a block, so that the member who
# reads never falls 8 MiB behind on a busy machine (the room waits for nobody), while the one
# who never reads gets every line said until it is cut off.
SENDER = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
filler = b"x" * 990
for k in range(int(sys.argv[2]) // 1000):
    if not sys.stdin.buffer.read(1):
        break
    s.sendall(b"".join(b"%09d %s\\n" % (k * 1000 + i, filler) for i in range(1000)))
s.shutdown(socket.SHUT_WR)
while s.recv(65536):    # the welcome: closing with it unread would be a reset, and a reset
    pass                # throws away what the server has not read yet
"""


def test_a_member_who_never_reads_is_cut_off_and_the_others_get_every_line(start_server):
    """One member sends 100 MB of lines; one never reads; one reads. The one who never reads
    is cut off at the output limit, the server's peak memory grows by less than 48 MiB, and
    the one who reads gets all 100,000 lines, in order."""
    lines = 100_000         # of 1,000 bytes each, with their newline
    server = start_server("servers.chat")
    pid = server.proc.pid
    reader = Member(server.address)
    never = Member(server.address, rcvbuf=4096)
    assert reader.line() == WELCOME
    baseline = status_kib(pid, "VmRSS")
    errors = []
    got = []

    def read_all():
        """Read as a client that keeps up does: big reads, one split per read."""
        try:
            expect = 0
            rest = b""
            while expect < lines:
                data = reader.sock.recv(4 << 20)
                if not data:
                    errors.append(f"EOF after {expect} lines")
                    return
                *complete, rest = (rest + data).split(b"\n")
                for line in complete:
                    number = int(line.split(b"> ", 1)[1][:9])
                    if number != expect:
                        errors.append(f"line {number} where {expect} was due")
                        return
                    expect += 1
                    if expect % 1000 == 0:
                        credit()
            got.append(expect)
        except Exception as exc:        # reported by the assertion below
            errors.append(repr(exc))

    sender = subprocess.Popen([sys.executable, "-c", SENDER, str(server.port), str(lines)],
                              cwd=ROOT, stdin=subprocess.PIPE)

    def credit():
        try:
            sender.stdin.write(b"+")
            sender.stdin.flush()
        except BrokenPipeError:
            pass                        # it has sent everything and gone

    thread = threading.Thread(target=read_all)
    thread.start()
    for _ in range(4):
        credit()
    try:
        thread.join(60)
        assert not thread.is_alive(), "the reader did not get every line within 60 s"
        assert not errors and got == [lines], (errors, server.log()[-3000:])
        counters = server.stats()
        assert counters["output_limit_disconnections"] == 1
        assert counters["chat_lines"] == lines
        growth_mib = (status_kib(pid, "VmHWM") - baseline) / 1024
        assert growth_mib < 48, f"peak RSS grew {growth_mib:.1f} MiB"
        never.sock.settimeout(DEADLINE)
        try:
            while never.sock.recv(1 << 20):
                pass                    # what was in the kernel's buffers, then the end
        except ConnectionResetError:
            pass                        # or a reset: the server dropped it with data unread
    finally:
        sender.stdin.close()
        sender.wait(DEADLINE)
        reader.close()
        never.close()


def test_members_gone_before_their_welcome_leave_the_room(start_server):
    """Clients that reset the moment they connect: each one's welcome finds it gone, and the
    room lets it go (none is left a member of the room for ever)."""
    server = start_server("servers.chat", "-v")
    for _ in range(50):
        reset(socket.create_connection(server.address, timeout=DEADLINE))
    server.wait_for_log(lambda log: log.count(" closed (") >= 50, "50 clients closed")
    counters = server.stats()
    assert counters["closed"] == 50
    assert counters["chat_members"] == 0 and counters["active"] == 0


def test_a_member_held_above_the_high_water_mark_is_cut_off_after_the_slow_timeout(
        start_server):
    """Redis's soft limit: a member whose output stays above the high-water mark for
    --slow-timeout seconds is cut off ('not reading') though far below the output limit, and
    counted; the member who said the lines is not hurt."""
    server = start_server("servers.chat", "-v", "--slow-timeout", "0.5", "--max-output", "64M")
    never = Member(server.address, rcvbuf=4096)
    talker = Member(server.address)
    try:
        assert talker.line() == WELCOME
        # 10 MB: more than the kernel's buffers take on the way to the member who never
        # reads, far less than its output limit.
        talker.say((b"y" * 1000 + b"\n") * 10_000)
        server.wait_for_log("closed (not reading)")
        counters = server.stats()
        assert counters["chat_slow_disconnections"] == 1
        assert counters["output_limit_disconnections"] == 0
        talker.say(b"/nick still-here\n")
        talker.say(b"/x\n")
        assert recv_exactly(talker.sock, len(UNSUPPORTED)) == UNSUPPORTED
    finally:
        never.close()
        talker.close()


def test_workers_are_refused_with_why_since_they_would_split_the_room():
    """--workers would give each worker a room of its own, its members deaf to the others':
    the chat server refuses it with one line saying so, instead of starting split."""
    done = subprocess.run([sys.executable, "-m", "servers.chat", "--workers", "2", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert "--workers" in done.stderr and "room" in done.stderr
