"""Behind a real HAProxy: two instances with --proxy-protocol, HAProxy's send-proxy-v2 in front
(tier 5). Skipped where HAProxy is not installed; .ci/run installs Debian's package."""

import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import DEADLINE, needs_descriptors, recv_all, recv_exactly

HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")


CONFIG = """\
global
    maxconn 1000
    stats socket fd@{admin} level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    retries 3
    option redispatch
frontend front
    bind fd@{fd}
    default_backend instances
backend instances
    balance roundrobin
{servers}
"""

pytestmark = [
    pytest.mark.skipif(not HAPROXY, reason="HAProxy is not installed (apt-get install haproxy)"),
    # HAProxy refuses to start unless it may open two descriptors per connection of its
    # maxconn, and some of its own ("Cannot raise FD limit to 2017, limit is 1024").
    needs_descriptors(2 * int(re.search(r"maxconn (\d+)", CONFIG)[1]) + 50,
                      "HAProxy with the maxconn of docs/deploy.md"),
]


@pytest.fixture
def haproxy(tmp_path):
    """Start HAProxy in front of ``instances`` (servers started with --proxy-protocol).

    The frontend's listening socket is made here, on port 0, and handed to HAProxy
    (``bind fd@N``), so the port is known and nothing races for it; so is the runtime API's
    Unix socket (``stats socket fd@N``), which then takes commands before HAProxy is up.
    """
    started = []

    def start(instances):
        listener = socket.create_server(("127.0.0.1", 0))
        control = socket.socket(socket.AF_UNIX)
        control.bind(str(start.admin))
        control.listen()
        fds = (listener.fileno(), control.fileno())
        lines = [f"    server s{i} 127.0.0.1:{s.port} send-proxy-v2 check inter 200ms"
                 for i, s in enumerate(instances)]
        config = tmp_path / "haproxy.cfg"
        config.write_text(CONFIG.format(fd=listener.fileno(), servers="\n".join(lines),
                                        admin=control.fileno()))
        check = subprocess.run([HAPROXY, "-c", "-f", str(config)], capture_output=True,
                               pass_fds=fds, timeout=DEADLINE)
        assert check.returncode == 0, check.stdout + check.stderr
        log = open(tmp_path / "haproxy.log", "wb")
        proc = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, pass_fds=fds)
        started.append((proc, (listener, control), log))
        return listener.getsockname()

    start.admin = tmp_path / "admin.sock"

    yield start
    for proc, sockets, log in started:
        proc.terminate()
        try:
            proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for sock in sockets:
            sock.close()
        log.close()


def test_echoes_through_haproxy_reach_both_instances_exactly(start_server, haproxy):
    """Through HAProxy with send-proxy-v2, every echo comes back byte for byte (the header is
    never echoed), and round robin gives both instances clients."""
    instances = [start_server("servers.echo_select", "--proxy-protocol", "-q") for _ in range(2)]
    front = haproxy(instances)
    for i in range(20):
        payload = f"message {i} ".encode() * (i + 1)
        with socket.create_connection(front, timeout=DEADLINE) as c:
            c.sendall(payload)
            assert recv_exactly(c, len(payload)) == payload
            c.shutdown(socket.SHUT_WR)
            assert recv_all(c) == b""
    # Health checks connect too, but only clients are sent bytes.
    assert all(s.stats()["bytes_out"] > 0 for s in instances)


def test_the_hello_server_behind_haproxy_says_goodbye_to_the_real_client(start_server, haproxy):
    """A client bound to 127.0.0.9 is named 127.0.0.9 by the worksheet's server, although the
    connection the server accepted came from HAProxy."""
    instances = [start_server("servers.hello", "--model", "select", "--goodbye",
                              "--proxy-protocol") for _ in range(2)]
    front = haproxy(instances)
    for _ in range(2):      # one on each instance
        with socket.create_connection(front, timeout=DEADLINE,
                                      source_address=("127.0.0.9", 0)) as c:
            c.sendall(b"quit\n")
            assert recv_all(c) == b"Goodbye, 127.0.0.9\n"


def admin(path, command):
    """One command on HAProxy's runtime API (its stats socket); its answer."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(DEADLINE)
        s.connect(str(path))
        s.sendall(command.encode() + b"\n")
        return recv_all(s).decode()


def sessions(path, server):
    """How many connections HAProxy has open to ``server`` of the backend (``show stat``'s scur)."""
    for line in admin(path, "show stat").splitlines():
        fields = line.split(",")
        if fields[:2] == ["instances", server]:
            return int(fields[4])
    raise AssertionError(f"no {server} in HAProxy's stats")


def test_a_rolling_restart_behind_haproxy_loses_no_connection(start_server, haproxy):
    """Each instance in turn is taken out of rotation, left to finish its clients, stopped
    with SIGTERM (exit 0), replaced by a new one and put back, while a client loop keeps
    connecting through HAProxy: not one of its connections fails."""
    instances = [start_server("servers.echo_select", "--proxy-protocol", "-q")
                 for _ in range(2)]
    front = haproxy(instances)
    stop = threading.Event()
    done, failures = [], []
    progress = threading.Condition()

    def clients():
        end = time.monotonic() + 60         # bounded in time and count
        while not stop.is_set() and time.monotonic() < end and len(done) < 100_000:
            payload = f"client {len(done)}\n".encode()
            try:
                with socket.create_connection(front, timeout=DEADLINE) as c:
                    c.sendall(payload)
                    assert recv_exactly(c, len(payload)) == payload
                done.append(1)
            except (OSError, AssertionError) as exc:
                failures.append(repr(exc))
            with progress:
                progress.notify_all()

    loop = threading.Thread(target=clients)
    loop.start()
    try:
        for i, old in enumerate(list(instances)):
            admin(haproxy.admin, f"set server instances/s{i} state maint")
            # Its last clients finish first: SIGTERM closes at once a connection with
            # nothing pending, and an echo client between two messages is one. The loop
            # is one client at a time: once the one in flight and the next have ended, no
            # client of it is left on this instance.
            mark = len(done) + len(failures)
            with progress:
                assert progress.wait_for(lambda: len(done) + len(failures) >= mark + 2,
                                         DEADLINE)
            assert sessions(haproxy.admin, f"s{i}") == 0
            old.signal(signal.SIGTERM)
            assert old.wait() == 0
            new = start_server("servers.echo_select", "--proxy-protocol", "-q")
            answer = admin(haproxy.admin, f"set server instances/s{i} addr 127.0.0.1 port "
                                          f"{new.port}")
            assert "changed" in answer, answer
            admin(haproxy.admin, f"set server instances/s{i} state ready")
            # The new instance takes clients again before the next one goes.
            for _ in range(200):
                if new.stats()["bytes_out"]:
                    break
            assert new.stats()["bytes_out"], "no client reached the new instance"
    finally:
        stop.set()
        loop.join(DEADLINE)
    assert not failures, failures[:5]
    assert len(done) > 10, len(done)
