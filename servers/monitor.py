"""The monitor: a live page of the state machines, served by the loop it watches (``--monitor``).

Comer's "Monitor and Control" (chapter 12.9) as operators know it from
HAProxy's stats page, nginx's ``stub_status`` and Redis's ``INFO``, on the
same reactor as the server, as one more protocol (a small HTTP/1.1
responder, ``wire.http``):

=================  ===========================================================
``/``              the page: the listener's and the connections' machines,
                   drawn from their tables (``reactor.states``, the source of
                   ``docs/architecture.md`` too), the listener's state lit, the
                   connections counted in each state; a row per connection;
                   the counters; the last transitions.  It updates itself
                   from ``/events``, and needs nothing from the network.
``/state.json``    the same, as data.
``/events``        ``text/event-stream``: an ``update`` (the same data) at most
                   every ``PUSH_INTERVAL`` seconds while something changes.
``/metrics``       the counters in Prometheus's text format (``selectlab_``).
``POST /capacity`` ``{"capacity": N}``: serve at most N clients from now on.
``POST /close``    ``{"id": N}``: close connection N gracefully.
=================  ===========================================================

The monitor can never slow the server it shows: at most ``MONITOR_CLIENTS``
clients at once (the next gets 503), a request's head must arrive within
``HEADER_TIMEOUT`` seconds and fit in ``wire.http.MAX_HEAD`` bytes (else
408, 431 and a close), and a client of ``/events`` that stops reading is cut
off as soon as its buffer passes the high-water mark, as the chat room does
with its slow members.  Transitions are collected as they happen (a deque
of the last ``RECENT``, kept raw) and sent in batches, so a server handling
thousands of connections a second costs the monitor a few messages a second.
Measured (callgrind, churned echo connections): a monitor nobody looks at
adds 11% to a connection's instructions (72,100 against 65,000); an open
page adds one update at most every ``PUSH_INTERVAL``, 1.1 ms for 200
connections listed (some 0.5% of a core at the most, however busy the
server).

Control comes from loopback clients only, and only as a JSON body
(``Content-Type: application/json``): a web page elsewhere cannot make a
browser send one without asking first (CORS), and the monitor answers no
such question; a POST whose ``Origin`` is not the monitor's own is refused.
A page elsewhere could still point its own host name at 127.0.0.1 (DNS
rebinding) and be "same-origin": so every request whose ``Host`` is a name
other than ``localhost`` or the ``--monitor`` host gets 421
(:meth:`Monitor.check_host`).  There is no authentication: the monitor
listens on 127.0.0.1 unless told otherwise, and warns when it is.
"""

import collections
import heapq
import html
import ipaddress
import json
import logging
import os
import socket
import time

from reactor.protocols import Protocol
from reactor.server import LINGER_TIMEOUT, StreamServer
from reactor.states import CONNECTION, HIGH_WATER, LISTENER, ConnState
from servers.limits import RESERVED_FDS, fd_limit
from servers.monitor_page import PAGE
from wire.http import HttpError, RequestReader, error_response, response, stream_head

log = logging.getLogger("selectlab")

MONITOR_CLIENTS = 16
HEADER_TIMEOUT = 5.0
PUSH_INTERVAL = 0.25        # seconds between two updates on /events, at the most
HEARTBEAT = 1.0             # how often the counters are looked at while someone watches
KEEPALIVE = 15.0            # an event-stream comment when nothing changed for this long
RECENT = 50                 # transitions kept for the page
MAX_ROWS = 200              # connections listed (all are counted)
CACHE_SECONDS = 0.1         # how long one look at the connections serves every request
MAX_OUTPUT = 1 << 20
# The kernel's send buffer for an /events client: with the high-water mark, what
# a client that stops reading can hold of the server's memory before it is cut off.
EVENTS_SNDBUF = 32 * 1024

# Counters that go up and down: Prometheus gauges; every other is a counter (_total).
GAUGES = {"active", "chat_members", "monitor_watchers"}

_JSON = "application/json"


def machine_data(machine):
    """A :class:`~reactor.states.Machine` as data: its states, initial state and transitions."""
    return {
        "name": machine.name,
        "states": [state.name for state in machine.states],
        "initial": machine.initial.name,
        "transitions": [[old.name, event.name.lower(), new.name,
                         action.name.lower() if action is not None else None]
                        for (old, event), (new, action) in machine.table.items()],
    }


def is_loopback(address):
    try:
        return ipaddress.ip_address(address[0].split("%")[0]).is_loopback
    except (TypeError, ValueError, IndexError):
        return False


class Monitor:
    """Watch ``server`` (a :class:`~reactor.server.StreamServer`) and serve what it sees over HTTP.

    ``counters`` returns the counters to show (``Service.snapshot``);
    ``name`` is the server's, for the page's title.  :meth:`start` serves
    on listening sockets; :meth:`counters` are the monitor's own.
    """

    def __init__(self, reactor, server, counters, name="selectlab", host_names=()):
        self.reactor = reactor
        self.host_names = {"localhost", *(n.lower() for n in host_names)}
        self._cached = (None, None, None, None)   # (loop time, turn, transitions, state)
        self.server = server
        self.name = name
        self._counters = counters
        self.recent = collections.deque(maxlen=RECENT)
        self.transitions = 0
        self.subscribers = set()
        self.requests = 0
        self.bad_requests = 0
        self.cut_off = 0
        self.http = None
        self._push_timer = None
        self._heartbeat = None
        self._sent_counters = None
        self._last_sent = 0.0
        self._machines = [machine_data(LISTENER), machine_data(CONNECTION)]
        server.observe(self._listener_changed, self._connection_changed)

    def start(self, socks):
        """Serve the monitor on ``socks`` (bound, listening) from the same loop."""
        self.http = StreamServer(
            self.reactor, socks, lambda: MonitorClient(self), capacity=MONITOR_CLIENTS,
            reject_message=response(503, b"too many monitor clients; try again later\n"),
            max_output=MAX_OUTPUT)

    def stop(self):
        if self.http is not None:
            self.http.listener.shutdown()
            for conn in list(self.http.connections):
                conn.abort("server stopping")
        for timer in (self._push_timer, self._heartbeat):
            if timer is not None:
                timer.cancel()
        self._push_timer = self._heartbeat = None

    def check_host(self, request):
        """Refuse a request whose Host is a name we were not given (DNS rebinding).

        A page elsewhere can make a browser's name for it point at 127.0.0.1
        and then read and POST as if it were this page: the browser still
        sends that name as Host.  IP addresses, ``localhost`` and the
        ``--monitor`` host are accepted; a request with no Host (HTTP/1.0) too.
        """
        host = request.headers.get("host")
        if host is None:
            return
        if host.startswith("["):
            name = host[1:host.find("]")]           # [::1]:8080
        elif host.rpartition(":")[2].isdigit():
            name = host.rpartition(":")[0]          # 127.0.0.1:8080, localhost:8080
        else:
            name = host
        try:
            ipaddress.ip_address(name)
            return
        except ValueError:
            pass
        if name.lower() not in self.host_names:
            raise HttpError(421, f"this monitor does not answer for {name!r}; use its address "
                                 f"(or --monitor {name}:PORT to serve that name)")

    def counters(self):
        """The monitor's own counters, reported with the server's."""
        return {"monitor_requests": self.requests, "monitor_bad_requests": self.bad_requests,
                "monitor_cut_off": self.cut_off, "monitor_watchers": len(self.subscribers)}

    # --- what it sees -----------------------------------------------------

    def _listener_changed(self, listener, old, event, new):
        self._note(None, old, event, new)

    def _connection_changed(self, conn, old, event, new):
        self._note(conn, old, event, new)

    def _note(self, conn, old, event, new):
        # Kept raw (the connection itself, the loop's clock) and made readable only when
        # someone asks: a monitor nobody looks at costs a tuple per transition.
        self.transitions += 1
        self.recent.append((self.transitions, self.reactor.now, conn, old, event, new))
        if self.subscribers and self._push_timer is None:
            delay = max(0.0, self._last_sent + PUSH_INTERVAL - self.reactor.time())
            self._push_timer = self.reactor.call_later(delay, self._push)

    def _recent(self):
        offset = time.time() - self.reactor.time()      # loop clock -> wall clock
        return [{"n": n, "time": round(when + offset, 3),
                 "machine": "listener" if conn is None else "connection",
                 "id": None if conn is None else conn.ident,
                 "peer": None if conn is None else conn.peer,
                 "old": old.name, "event": event.name.lower(), "new": new.name}
                for n, when, conn, old, event, new in self.recent]

    def state(self, with_machines=True):
        """Everything the page shows, as a dict (``/state.json``).

        It walks every connection, so it is made once per turn of the loop at
        most, and reused for ``CACHE_SECONDS`` while no transition happens:
        however many ask, 10,000 idle clients are walked 10 times a second.
        """
        reactor = self.reactor
        when, turn, transitions, state = self._cached
        fresh = turn == reactor.cycles or (transitions == self.transitions and
                                            reactor.now - when < CACHE_SECONDS)
        if state is None or not fresh:
            state = self._state()
            self._cached = (reactor.now, reactor.cycles, self.transitions, state)
        if with_machines:
            state = dict(state, machines=self._machines)
        return state

    def _state(self):
        server, listener, now = self.server, self.server.listener, self.reactor.time()
        by_state = {state.name: 0 for state in ConnState}
        for conn in server.connections:
            by_state[conn.state.name] += 1
        first = heapq.nsmallest(MAX_ROWS, server.connections, key=lambda c: c.ident)
        rows = [{"id": c.ident, "peer": c.peer, "state": c.state.name, "bytes_in": c.bytes_in,
                 "bytes_out": c.bytes_out, "buffered": c.buffered,
                 "age": round(now - c.opened_at, 1)} for c in first]
        return {
            "server": self.name, "pid": os.getpid(), "time": round(time.time(), 3),
            "listener": {"state": listener.state.name, "capacity": listener.capacity,
                         "active": listener.active},
            "connections": {"count": len(server.connections), "by_state": by_state,
                            "rows": rows, "high_water": HIGH_WATER},
            "counters": self._counters(),
            "transitions": self.transitions,
            "recent": self._recent(),
        }

    def metrics(self):
        """The Prometheus text exposition (version 0.0.4) of the counters and the states."""
        out = []

        def metric(name, kind, help_text, samples):
            out.append(f"# HELP selectlab_{name} {help_text}")
            out.append(f"# TYPE selectlab_{name} {kind}")
            for labels, value in samples:
                out.append(f"selectlab_{name}{labels} {value}")

        for name, value in self._counters().items():
            if name in GAUGES:
                metric(name, "gauge", f"{name.replace('_', ' ')} now", [("", value)])
            else:
                metric(f"{name}_total", "counter", f"{name.replace('_', ' ')} since the start",
                       [("", value)])
        listener = self.server.listener
        metric("listener_state", "gauge", "1 for the listener's current state, else 0",
               [(f'{{state="{s}"}}', int(listener.state.name == s))
                for s in self._machines[0]["states"]])
        if listener.capacity is not None:
            metric("capacity", "gauge", "the most clients served at once", [("", listener.capacity)])
        counts = self.state(with_machines=False)["connections"]["by_state"]
        metric("connections", "gauge", "connections in each state now",
               [(f'{{state="{s}"}}', n) for s, n in counts.items()])
        return ("\n".join(out) + "\n").encode()

    # --- /events ----------------------------------------------------------

    def subscribe(self, conn):
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, EVENTS_SNDBUF)
        self.subscribers.add(conn)
        self._send(conn, self.state())
        if self._heartbeat is None:
            self._heartbeat = self.reactor.call_later(HEARTBEAT, self._beat)

    def unsubscribe(self, conn):
        self.subscribers.discard(conn)

    def _beat(self):
        self._heartbeat = None
        if not self.subscribers:
            return
        self._heartbeat = self.reactor.call_later(HEARTBEAT, self._beat)
        if _changed(self._counters(), self._sent_counters):
            self._push()
        elif self.reactor.time() - self._last_sent >= KEEPALIVE:
            self._last_sent = self.reactor.time()
            for conn in list(self.subscribers):
                conn.write(b": nothing new\n\n")

    def _push(self):
        self._push_timer = None
        if not self.subscribers:
            return
        update = self.state(with_machines=False)
        message = self._message(update)
        for conn in list(self.subscribers):
            if conn.is_closing():
                self.subscribers.discard(conn)
            else:
                conn.write(message)

    def _send(self, conn, state):
        conn.write(self._message(state))

    def _message(self, state):
        self._sent_counters = state["counters"]
        self._last_sent = self.reactor.time()
        return b"event: update\ndata: " + json.dumps(state).encode() + b"\n\n"

    # --- control ----------------------------------------------------------

    def set_capacity(self, capacity):
        self._cached = (None, None, None, None)
        log.warning("monitor: capacity set to %d (was %s)", capacity,
                    self.server.listener.capacity)
        self.server.listener.set_capacity(capacity)

    def close_connection(self, ident):
        self._cached = (None, None, None, None)
        for conn in self.server.connections:
            if conn.ident == ident:
                log.info("monitor: closing %s", conn)
                conn.close(timeout=LINGER_TIMEOUT, reason="closed from the monitor")
                return True
        return False


def _changed(counters, sent):
    """Whether anything but the loop's own turns (which the monitor makes too) has changed."""
    if sent is None:
        return True
    return any(value != sent.get(name) for name, value in counters.items()
               if name != "eventloop_cycles")


class MonitorClient(Protocol):
    """One HTTP client of the monitor: one request, one reply (or the endless ``/events``)."""

    def __init__(self, monitor):
        self.monitor = monitor
        self.reader = RequestReader()
        self.streaming = False
        self._timer = None

    def connection_made(self, conn):
        self._timer = conn.reactor.call_later(HEADER_TIMEOUT, self._too_slow, conn)

    def data_received(self, conn, data):
        if self.streaming or self.reader is None:
            return      # nothing more is read from a client being answered
        try:
            request = self.reader.feed(data)
        except HttpError as exc:
            self._fail(conn, exc)
            return
        if request is None:
            return
        self.reader = None
        self._cancel_timer()
        self.monitor.requests += 1
        try:
            self._route(conn, request)
        except HttpError as exc:
            self._fail(conn, exc)

    def _route(self, conn, request):
        monitor, path, method = self.monitor, request.path, request.method
        monitor.check_host(request)
        gets = {"/": lambda: (PAGE.replace("{{TITLE}}", html.escape(monitor.name)).encode(),
                              "text/html; charset=utf-8"),
                "/state.json": lambda: (json.dumps(monitor.state()).encode(), _JSON),
                "/metrics": lambda: (monitor.metrics(), "text/plain; version=0.0.4"),
                "/events": None}
        posts = {"/capacity": self._set_capacity, "/close": self._close}
        if path in gets and method in ("GET", "HEAD"):
            if path == "/events":
                if method == "HEAD":
                    self._reply(conn, stream_head())
                    return
                conn.write(stream_head())
                self.streaming = True
                if not conn.is_closing():   # the write may have found it gone
                    monitor.subscribe(conn)
                return
            body, content_type = gets[path]()
            self._reply(conn, response(200, body, content_type, head_only=method == "HEAD"))
        elif path in posts and method == "POST":
            status, answer = posts[path](conn, request)
            self._reply(conn, response(status, json.dumps(answer).encode() + b"\n", _JSON))
        elif path in gets or path in posts:
            allowed = "GET, HEAD" if path in gets else "POST"
            raise HttpError(405, f"{path} takes {allowed}", (f"Allow: {allowed}",))
        else:
            raise HttpError(404, f"nothing at {path}; try /, /state.json, /events or /metrics")

    def _control_body(self, conn, request):
        if not is_loopback(conn.address):
            raise HttpError(403, "control is for loopback clients only")
        if request.headers.get("content-type", "").split(";")[0].strip() != _JSON:
            raise HttpError(415, "send the body as application/json")
        origin = request.headers.get("origin")
        if origin is not None and origin != "http://" + request.headers.get("host", ""):
            raise HttpError(403, "control is for the monitor's own page (Origin differs)")
        try:
            body = json.loads(request.body)
        except (ValueError, RecursionError):
            raise HttpError(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise HttpError(400, "the body must be a JSON object")
        return body

    def _set_capacity(self, conn, request):
        value = self._control_body(conn, request).get("capacity")
        most = fd_limit() - RESERVED_FDS
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
            raise HttpError(400, f"capacity must be a whole number from 1 to {most} (the "
                                 f"open-file limit less the server's own descriptors)")
        self.monitor.set_capacity(value)
        return 200, {"ok": True, "capacity": value}

    def _close(self, conn, request):
        ident = self._control_body(conn, request).get("id")
        if not isinstance(ident, int) or isinstance(ident, bool):
            raise HttpError(400, "id must be a connection's number")
        if not self.monitor.close_connection(ident):
            raise HttpError(404, f"no connection #{ident}")
        return 200, {"ok": True, "closed": ident}

    def _reply(self, conn, data):
        conn.write(data)
        conn.close(timeout=LINGER_TIMEOUT, reason="answered")

    def _fail(self, conn, error):
        self.monitor.bad_requests += 1
        self.reader = None
        self._cancel_timer()
        log.info("monitor: %s: %d %s", conn, error.status, error.message)
        self._reply(conn, error_response(error))

    def _too_slow(self, conn):
        self._timer = None
        self._fail(conn, HttpError(408, f"no whole request within {HEADER_TIMEOUT:g} s"))

    def _cancel_timer(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def pause_writing(self, conn):
        if self.streaming:
            self.monitor.cut_off += 1
            log.info("monitor: %s does not read its events: cut off", conn)
            conn.abort("monitor client not reading")

    def connection_lost(self, conn, reason):
        self._cancel_timer()
        self.monitor.unsubscribe(conn)
