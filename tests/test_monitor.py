"""--monitor: the live page, /state.json, /events, /metrics and control (servers.monitor, wire.http).

Servers are started on 127.0.0.1 port 0 with ``--monitor 0``; the monitor's
port is read from the ``monitor on http://...`` line that follows the
``listening on`` line.
"""

import json
import re
import shutil
import socket
import subprocess
import time

import pytest
from hypothesis import given, settings, strategies as st

from servers.monitor import MonitorClient, is_loopback
from tests.conftest import DEADLINE, recv_exactly
from wire.http import MAX_HEAD, HttpError, RequestReader

MONITOR_LINE = re.compile(r"monitor on http://127\.0\.0\.1:(\d+)/")


# --- the HTTP reader, sans IO ------------------------------------------------------


def read(data):
    return RequestReader().feed(data)


def test_a_request_is_read_whole_and_only_when_whole():
    """The reader returns nothing until the head (and a POST's body) is all there, then
    the method, path, query, headers and body exactly."""
    reader = RequestReader()
    assert reader.feed(b"POST /capacity?x=1 HTTP/1.1\r\nHost: a\r\nContent-Le") is None
    assert reader.feed(b"ngth: 14\r\nContent-Type: application/json\r\n\r\n{\"capa") is None
    request = reader.feed(b"city\":2}")
    assert (request.method, request.path, request.query) == ("POST", "/capacity", {"x": "1"})
    assert request.headers["content-type"] == "application/json"
    assert request.body == b'{"capacity":2}'


@pytest.mark.parametrize("data, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),                               # no Host
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    (b"BREW / HTTP/1.1\r\nHost: a\r\n\r\n", 501),
    (b"GET http://x/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),            # not a path
    (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),                   # space before the colon
    (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),         # obsolete folding
    (b"POST /close HTTP/1.1\r\nHost: a\r\n\r\n", 411),
    (b"POST /close HTTP/1.1\r\nHost: a\r\nContent-Length: 99999\r\n\r\n", 413),
    (b"POST /close HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"y" * MAX_HEAD + b"\r\n\r\n", 431),
    ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \u00b2\r\n\r\n".encode("latin-1"), 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
])
def test_bad_requests_get_the_status_that_says_why(data, status):
    """Each kind of malformed or oversized request is refused with its own 4xx/5xx status,
    so a client (or a person with curl) can tell what to fix."""
    with pytest.raises(HttpError) as caught:
        read(data)
    assert caught.value.status == status


def test_targets_that_trip_url_parsers_are_still_just_paths():
    """A target such as //[x (an unclosed IPv6 host to urllib) is read as a path, so it
    gets a 404 from the monitor rather than an exception."""
    request = read(b"GET //[x?a=1 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (request.path, request.query) == ("//[x", {"a": "1"})


def test_an_endless_head_is_refused_once_it_passes_the_limit():
    """A client that sends header bytes forever is refused (431) as soon as it passes
    MAX_HEAD, not buffered without end."""
    reader = RequestReader()
    assert reader.feed(b"GET / HTTP/1.1\r\n") is None
    with pytest.raises(HttpError) as caught:
        for _ in range(MAX_HEAD):
            reader.feed(b"X-Padding: yyyyyyyy\r\n")
    assert caught.value.status == 431


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(1, 50))
def test_any_bytes_give_a_request_an_http_error_or_a_wait(data, step):
    """Whatever arrives, in whatever pieces, the reader answers with a request, a clear
    HttpError or 'not yet': never another exception that would cost the connection
    without a reply."""
    reader = RequestReader()
    try:
        for i in range(0, len(data), step):
            reader.feed(data[i:i + step])
    except HttpError as exc:
        assert 400 <= exc.status < 600


class _Conn:
    def __init__(self, host):
        self.address = (host, 5000)


def test_control_is_for_loopback_clients_and_json_bodies_only():
    """POST /capacity from beyond the host is refused (403), and so is a body that is not
    application/json (415), which no other site's page can make a browser send unasked."""
    client = MonitorClient(monitor=None)
    request = RequestReader().feed(b"POST /capacity HTTP/1.1\r\nHost: a\r\nContent-Type: "
                                   b"application/json\r\nContent-Length: 14\r\n\r\n"
                                   b'{"capacity":2}')
    assert client._control_body(_Conn("127.0.0.1"), request) == {"capacity": 2}
    assert client._control_body(_Conn("::1"), request) == {"capacity": 2}
    with pytest.raises(HttpError) as caught:
        client._control_body(_Conn("192.0.2.7"), request)
    assert caught.value.status == 403
    form = RequestReader().feed(b"POST /capacity HTTP/1.1\r\nHost: a\r\nContent-Type: "
                                b"application/x-www-form-urlencoded\r\nContent-Length: 10\r\n"
                                b"\r\ncapacity=2")
    with pytest.raises(HttpError) as caught:
        client._control_body(_Conn("127.0.0.1"), form)
    assert caught.value.status == 415
    assert is_loopback(("127.0.0.9", 1)) and not is_loopback(("10.1.2.3", 1))


# --- a real server with its monitor ------------------------------------------------------


def monitored(start_server, module="servers.busy_select", *args):
    server = start_server(module, "--monitor", "0", *args)
    found = server.child.stdout.wait(
        lambda: MONITOR_LINE.search(server.child.stdout.text()), DEADLINE)
    assert found, f"no monitor line; stdout: {server.child.stdout.text()!r}"
    server.monitor = ("127.0.0.1", int(found.group(1)))
    return server


def http(address, request):
    """Send ``request`` (bytes) and read the whole answer, to the server's close."""
    with socket.create_connection(address, timeout=DEADLINE) as sock:
        sock.sendall(request)
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    return int(head.split()[1]), head.decode("latin-1"), body


def get(address, path):
    status, _head, body = http(address, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return status, body


def post(address, path, body):
    data = json.dumps(body).encode()
    return http(address, b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(data), data))


def state(server):
    status, body = get(server.monitor, "/state.json")
    assert status == 200
    return json.loads(body)


def test_the_monitor_line_follows_the_listening_line(start_server):
    """stdout's first line is still 'listening on' (scripts rely on it); the monitor's
    address is the next line."""
    server = monitored(start_server)
    lines = server.child.stdout.text().splitlines()
    assert lines[0].startswith("listening on ") and MONITOR_LINE.match(lines[1])


def test_state_json_shows_the_listener_busy_and_the_client_holding_the_slot(start_server):
    """With busy_select's one slot taken, /state.json says the listener is BUSY at
    capacity 1, counts one IDLE connection, lists it with its peer address, and counts the
    next client's rejection."""
    server = monitored(start_server)
    with socket.create_connection(server.address, timeout=DEADLINE) as holder:
        holder.sendall(b"x")
        assert recv_exactly(holder, 1) == b"x"
        with socket.create_connection(server.address, timeout=DEADLINE) as late:
            assert late.recv(16) == b"busy\n"
        now = state(server)
        assert now["listener"] == {"state": "BUSY", "capacity": 1, "active": 1}
        assert now["connections"]["by_state"]["IDLE"] == 1
        row, = now["connections"]["rows"]
        assert row["peer"] == f"127.0.0.1:{holder.getsockname()[1]}"
        assert row["state"] == "IDLE" and row["bytes_in"] == row["bytes_out"] == 1
        assert now["counters"]["rejected_busy"] == 1
        assert {m["name"] for m in now["machines"]} == {"listener", "connection"}


def test_a_client_that_never_reads_shows_busy_with_its_output_buffered(start_server):
    """An echo client that sends without reading: the monitor shows its connection BUSY
    or PAUSED (output pending) with the bytes buffered for it, and counts it there."""
    server = monitored(start_server, "servers.echo_select")
    with socket.create_connection(server.address, timeout=DEADLINE) as stuck:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.setblocking(False)
        end = time.monotonic() + DEADLINE
        row = None
        while time.monotonic() < end:
            try:
                while True:
                    stuck.send(b"x" * 65536)
            except BlockingIOError:
                pass        # until the kernel's buffers, then the server's, are full
            now = state(server)
            row = next(r for r in now["connections"]["rows"]
                       if r["peer"].endswith(f":{stuck.getsockname()[1]}"))
            if row["state"] != "IDLE":
                break
        assert row["state"] in ("BUSY", "PAUSED") and row["buffered"] > 0
        assert now["connections"]["by_state"][row["state"]] == 1


def read_event(sock, buffer):
    """The next 'update' event's data from an event stream, as a dict."""
    while b"\n\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, "the event stream ended"
        buffer += chunk
    event, _, rest = bytes(buffer).partition(b"\n\n")
    buffer[:] = rest
    if event.startswith(b":"):
        return read_event(sock, buffer)
    name, data = event.split(b"\n", 1)
    assert name == b"event: update"
    return json.loads(data.removeprefix(b"data: "))


def test_events_deliver_each_transition_as_it_happens(start_server):
    """/events is a text/event-stream: the state at once, then, when a client connects, an
    update whose transitions include the listener going BUSY and that client's
    connection, with no polling by the page."""
    server = monitored(start_server)
    with socket.create_connection(server.monitor, timeout=DEADLINE) as events:
        events.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        buffer = bytearray()
        while b"\r\n\r\n" not in buffer:
            buffer += events.recv(65536)
        head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
        assert b"Content-Type: text/event-stream" in head
        buffer[:] = rest
        first = read_event(events, buffer)
        assert first["listener"]["state"] == "IDLE"
        with socket.create_connection(server.address, timeout=DEADLINE):
            seen = []
            while not any(t["machine"] == "listener" and t["new"] == "BUSY" for t in seen):
                seen += read_event(events, buffer)["recent"]
        assert any(t["machine"] == "listener" and t["event"] == "full" for t in seen)


def test_metrics_parse_with_prometheus_own_parser(start_server):
    """/metrics is Prometheus's text format: its own parser reads it, counters end in
    _total, and the values agree with the server (one client accepted, listener BUSY)."""
    parser = pytest.importorskip("prometheus_client.parser")
    server = monitored(start_server)
    with socket.create_connection(server.address, timeout=DEADLINE) as holder:
        holder.sendall(b"x")
        assert recv_exactly(holder, 1) == b"x"
        status, body = get(server.monitor, "/metrics")
    assert status == 200
    families = {f.name: f for f in parser.text_string_to_metric_families(body.decode())}
    assert families["selectlab_accepted"].type == "counter"
    assert families["selectlab_accepted"].samples[0].name == "selectlab_accepted_total"
    assert families["selectlab_accepted"].samples[0].value == 1
    busy = {s.labels["state"]: s.value for s in families["selectlab_listener_state"].samples}
    assert busy["BUSY"] == 1 and busy["IDLE"] == 0
    assert families["selectlab_capacity"].samples[0].value == 1


@pytest.mark.parametrize("request_bytes, status", [
    (b"NONSENSE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"y" * (MAX_HEAD + 10) + b"\r\n\r\n", 431),
    (b"GET /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 404),
    (b"POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n", 405),
])
def test_bad_requests_get_a_4xx_and_a_close_and_cost_nothing_else(
        start_server, request_bytes, status):
    """A malformed, oversized, unknown or wrong-method request gets its status and a close,
    and the server goes on serving its own clients."""
    server = monitored(start_server, "servers.echo_select")
    got, head, _body = http(server.monitor, request_bytes)
    assert got == status and "Connection: close" in head
    with socket.create_connection(server.address, timeout=DEADLINE) as client:
        client.sendall(b"still here")
        assert recv_exactly(client, 10) == b"still here"
    assert state(server)["counters"]["monitor_bad_requests"] >= 1


def test_a_monitor_client_that_never_reads_is_cut_off_and_echoes_go_on(start_server):
    """An /events client that stops reading while transitions pour in is cut off once its
    buffer passes the high-water mark (counted in monitor_cut_off); meanwhile every echo
    client gets its exact bytes back."""
    server = monitored(start_server, "servers.echo_select", "-q")
    # 200 clients held open make every update some 30 KB: the deaf client's buffers fill fast.
    held = [socket.create_connection(server.address, timeout=DEADLINE) for _ in range(200)]
    deaf = socket.create_connection(server.monitor, timeout=DEADLINE)
    deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    deaf.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    try:
        # Updates go out at most 4 times a second: some seconds of transitions fill it.
        for n in range(20000):
            with socket.create_connection(server.address, timeout=DEADLINE) as client:
                client.sendall(b"%d\n" % n)
                assert recv_exactly(client, len(b"%d\n" % n)) == b"%d\n" % n
            if n % 200 == 199 and state(server)["counters"]["monitor_cut_off"]:
                break
        assert state(server)["counters"]["monitor_cut_off"] == 1
        try:        # what the kernel still held for it, then the end
            while deaf.recv(65536):
                pass
        except ConnectionResetError:
            pass
        for sock in held:
            sock.sendall(b"ok")
            assert recv_exactly(sock, 2) == b"ok"
    finally:
        deaf.close()
        for sock in held:
            sock.close()


def test_the_capacity_changes_live_and_a_connection_closes_from_the_monitor(start_server):
    """The teacher's controls: raising busy_select's capacity to 2 turns the BUSY listener
    IDLE and lets a second client be echoed instead of reading 'busy'; closing connection 1
    from the monitor ends that client's connection."""
    server = monitored(start_server)
    with socket.create_connection(server.address, timeout=DEADLINE) as first:
        first.sendall(b"1")
        assert recv_exactly(first, 1) == b"1"
        assert state(server)["listener"]["state"] == "BUSY"
        status, _head, body = post(server.monitor, "/capacity", {"capacity": 2})
        assert status == 200 and json.loads(body) == {"ok": True, "capacity": 2}
        assert state(server)["listener"] == {"state": "IDLE", "capacity": 2, "active": 1}
        with socket.create_connection(server.address, timeout=DEADLINE) as second:
            second.sendall(b"2")
            assert recv_exactly(second, 1) == b"2"
        ident = state(server)["connections"]["rows"][0]["id"]
        status, _head, _body = post(server.monitor, "/close", {"id": ident})
        assert status == 200
        assert first.recv(16) == b""        # the server's FIN
    assert post(server.monitor, "/close", {"id": 999})[0] == 404
    assert post(server.monitor, "/capacity", {"capacity": 0})[0] == 400


# --- a real browser ------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (.ci/run installs Debian's chromium)")
@pytest.mark.timeout(90)
def test_chromium_renders_the_listener_busy_and_the_clients_row(start_server, tmp_path):
    """Headless Chromium loads the page while a client holds busy_select's only slot: the
    rendered page says the listener is BUSY, lights BUSY in its diagram, and lists the
    client's connection with its port, all from /state.json and /events."""
    server = monitored(start_server)
    with socket.create_connection(server.address, timeout=DEADLINE) as holder:
        holder.sendall(b"x")
        assert recv_exactly(holder, 1) == b"x"
        port = holder.getsockname()[1]
        url = f"http://127.0.0.1:{server.monitor[1]}/?once"
        done = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000",
             "--timeout=20000", "--dump-dom", url],
            capture_output=True, text=True, timeout=80)
    dom = done.stdout
    assert 'id="lstate" class="BUSY">BUSY<' in dom, dom[-3000:]
    assert re.search(r'<g class="state lit" id="listener-BUSY">', dom), dom[-3000:]
    assert f"127.0.0.1:{port}" in dom
    assert "one update (?once)" in dom


def test_a_page_reached_through_another_name_is_refused(start_server):
    """DNS rebinding: a page elsewhere can point its own name at 127.0.0.1, but the browser
    still sends that name as Host, and the monitor answers 421 to it (reading or
    controlling); IP addresses and localhost are served. A POST whose Origin is not the
    monitor's own is refused too."""
    server = monitored(start_server)
    evil = b"Host: rebind.example:%d\r\n" % server.monitor[1]
    status, _head, _body = http(server.monitor, b"GET /state.json HTTP/1.1\r\n" + evil + b"\r\n")
    assert status == 421
    data = b'{"capacity": 5}'
    status, _head, _body = http(server.monitor, b"POST /capacity HTTP/1.1\r\n" + evil +
                                b"Content-Type: application/json\r\nContent-Length: %d\r\n"
                                b"\r\n%s" % (len(data), data))
    assert status == 421
    for host in (b"localhost:1", b"[::1]:1", b"127.0.0.1"):
        assert http(server.monitor, b"GET /metrics HTTP/1.1\r\nHost: " + host +
                    b"\r\n\r\n")[0] == 200
    status, _head, _body = http(server.monitor, b"POST /capacity HTTP/1.1\r\nHost: 127.0.0.1"
                                b"\r\nOrigin: http://elsewhere.example\r\nContent-Type: "
                                b"application/json\r\nContent-Length: %d\r\n\r\n%s"
                                % (len(data), data))
    assert status == 403
    assert state(server)["listener"]["capacity"] == 1


def test_event_clients_that_reset_at_once_are_not_kept(start_server):
    """/events clients that reset the connection right after asking leave no trace: the
    monitor's count of watchers comes back to 0, so dead ones are not written to for ever."""
    import struct

    server = monitored(start_server)
    for _ in range(10):     # below the monitor's 16 clients: state() below is never a 503
        sock = socket.create_connection(server.monitor, timeout=DEADLINE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.close()        # a reset, not a FIN
    end = time.monotonic() + DEADLINE
    while state(server)["counters"]["monitor_watchers"] and time.monotonic() < end:
        with socket.create_connection(server.address, timeout=DEADLINE):
            pass            # a transition: a push, which finds the dead ones
    assert state(server)["counters"]["monitor_watchers"] == 0


def test_a_405_says_what_is_allowed_and_head_of_events_ends(start_server):
    """A wrong method gets 405 with the Allow header RFC 9110 asks for; HEAD /events gets
    the stream's head and a close, not an endless body."""
    server = monitored(start_server)
    status, head, _body = http(server.monitor, b"POST /metrics HTTP/1.1\r\nHost: 127.0.0.1"
                                                b"\r\nContent-Length: 0\r\n\r\n")
    assert status == 405 and "Allow: GET, HEAD" in head
    status, head, body = http(server.monitor, b"HEAD /events HTTP/1.1\r\nHost: 127.0.0.1"
                                              b"\r\n\r\n")
    assert status == 200 and "text/event-stream" in head and body == b""


def test_a_request_head_that_never_ends_gets_408_within_the_header_timeout(start_server):
    """A client that opens the monitor and sends half a request (a slow-loris) is answered
    408 and closed once HEADER_TIMEOUT has passed since it connected, however it trickles."""
    from servers.monitor import HEADER_TIMEOUT

    server = monitored(start_server, "servers.echo_select")
    with socket.create_connection(server.monitor, timeout=HEADER_TIMEOUT + DEADLINE) as slow:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        got = b""
        while chunk := slow.recv(4096):
            got += chunk
    assert got.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert state(server)["counters"]["monitor_bad_requests"] == 1
