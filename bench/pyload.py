"""The load generator in Python, for machines with no C compiler: results are a lower bound.

    python -m bench.pyload pingpong|churn -p PORT [options]

Same command line, same stderr marks and same one-line JSON as ``loadgen.c``
(read that file's comment for what each mode does), so the driver treats both
alike.  The connections are split over ``--procs`` processes, each with its own
``selectors`` loop.  A Python client spends several times the CPU of the C one
per request, so it, not the server, is usually the limit: the benchmark labels
every result measured with it "lower bound".  One more difference: its
warm-up starts at once, not after every connection's first echo.

Like ``loadgen.c``, it counts a connection whose first reply is ``busy\n`` and
then the close (a server at its capacity turning the client away) as
``busy``, not as a broken echo: an echo's first byte is 0.
"""

import argparse
import errno
import json
import os
import resource
import select
import selectors
import socket
import sys
import time

HIST_LIMIT_US = 1_000_000
SRC_FIRST, SRC_COUNT = 2, 250   # source addresses 127.0.0.2 .. 127.0.0.251, as loadgen.c
IDLE_WAIT = 120.0
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
BUSY = b"busy\n"     # what a server at its capacity answers before it closes (servers/service.py)


def _pattern(size):
    return bytes(j & 255 for j in range(size + 256))


class Counters:
    def __init__(self):
        self.requests = self.errors = self.failures = self.busy = self.bytes_checked = 0
        self.established = 0
        self.hist = {}        # whole microseconds -> count
        self.over = 0
        self.served = set()


class Conn:
    __slots__ = ("sock", "k", "size", "sent", "recvd", "t_start", "t_connect", "ident",
                 "connecting", "busy")


class Worker:
    """One process's share of the connections, on its own selector."""

    def __init__(self, args, index, nconns, nidle):
        self.args, self.nconns, self.nidle = args, nconns, nidle
        self.sel = selectors.DefaultSelector()
        self.pattern = _pattern(args.size)
        self.c = Counters()
        self.src = index * 7919   # each process starts at another source address
        self.warm_end = self.t_end = 0.0

    def open(self, ident, now):
        conn = Conn()
        conn.ident, conn.k, conn.t_connect, conn.connecting = ident, 0, now, True
        conn.busy = None        # the bytes of BUSY read in place of the first echo
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((f"127.0.0.{SRC_FIRST + self.src % SRC_COUNT}", 0))
        self.src += 1
        conn.sock = sock
        err = sock.connect_ex((self.args.host, self.args.port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.c.failures += 1
            return None
        self.sel.register(sock, selectors.EVENT_WRITE, conn)
        return conn

    def fail(self, conn, data_error, why):
        if data_error:
            self.c.errors += 1
        else:
            self.c.failures += 1
        if self.c.errors + self.c.failures <= 10:
            print(f"pyload: connection failed: {why}", file=sys.stderr)
        self.sel.unregister(conn.sock)
        conn.sock.close()

    def turn_away(self, conn):
        """The server answered busy and closed: a client turned away, not a broken echo."""
        self.c.busy += 1
        if self.c.busy == 1:
            print("pyload: the server answered busy (at its capacity) and closed; counted as "
                  "turned away, not as a broken echo", file=sys.stderr)
        self.sel.unregister(conn.sock)
        conn.sock.close()

    def start(self, conn, size, now):
        conn.size, conn.sent, conn.recvd, conn.t_start = size, 0, 0, now
        self.send(conn)

    def send(self, conn):
        message = memoryview(self.pattern)[conn.k & 255:(conn.k & 255) + conn.size]
        try:
            while conn.sent < conn.size:
                conn.sent += conn.sock.send(message[conn.sent:])
        except BlockingIOError:
            self.sel.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
            return
        except OSError as exc:
            self.fail(conn, False, exc.strerror or str(exc))
            return
        self.sel.modify(conn.sock, selectors.EVENT_READ, conn)

    def recv(self, conn):
        """Read what there is of the current message: True when it is complete.

        False: not yet; None: the connection is gone (failed, or turned away).
        """
        if conn.busy is not None:
            return self.read_busy(conn)
        expected = self.pattern[(conn.k & 255):(conn.k & 255) + conn.size]
        while True:
            try:
                data = conn.sock.recv(conn.size - conn.recvd)
            except BlockingIOError:
                return False
            except OSError as exc:
                self.fail(conn, False, exc.strerror or str(exc))
                return None
            if not data:
                self.fail(conn, False, "server closed the connection early")
                return None
            if conn.k == 0 and conn.recvd == 0 and BUSY.startswith(data):
                conn.busy = data        # before its first echo, turned away instead
                return self.read_busy(conn)
            if conn.recvd + len(data) > conn.sent:
                self.fail(conn, True, "more bytes came back than were sent")
                return None
            if data != expected[conn.recvd:conn.recvd + len(data)]:
                self.fail(conn, True, "echoed bytes differ from those sent")
                return None
            conn.recvd += len(data)
            self.c.bytes_checked += len(data)
            if conn.recvd == conn.size:
                return True

    def read_busy(self, conn):
        """The rest of a ``busy\n`` reply, then the server's close (None once it came)."""
        while True:
            try:
                data = conn.sock.recv(len(BUSY) + 1)
            except BlockingIOError:
                return False
            except OSError as exc:      # reset: after the whole reply, the close came
                if conn.busy == BUSY:
                    self.turn_away(conn)
                else:
                    self.fail(conn, False, exc.strerror or str(exc))
                return None
            if data and BUSY.startswith(conn.busy + data):
                conn.busy += data
                continue
            if data:
                self.fail(conn, True, "a reply that is neither the echo nor busy")
            elif conn.busy == BUSY:
                self.turn_away(conn)
            else:
                self.fail(conn, False, "server closed the connection early")
            return None

    def connected(self, conn):
        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.fail(conn, False, os.strerror(err))
            return False
        conn.connecting = False
        return True

    def count(self, conn, now, since):
        if self.warm_end <= now <= self.t_end:
            self.c.requests += 1
            self.c.served.add(conn.ident)
            us = int((now - since) * 1e6)
            if us < HIST_LIMIT_US:
                self.c.hist[us] = self.c.hist.get(us, 0) + 1
            else:
                self.c.over += 1

    def open_idle(self):
        """Open this share of idle connections, each confirmed by a 1-byte echo."""
        deadline = time.monotonic() + self.args.connect_timeout + self.nidle / 100
        pending = {}
        for i in range(self.nidle):
            conn = self.open(-1 - i, time.monotonic())
            if conn:
                pending[conn.sock] = conn
        ready, held = 0, []
        while pending and time.monotonic() < deadline:
            for key, _ in self.sel.select(0.1):
                conn = key.data
                if conn.connecting:
                    if self.connected(conn):
                        self.start(conn, 1, time.monotonic())
                    else:
                        pending.pop(conn.sock)
                    continue
                done = self.recv(conn)
                if done:
                    self.sel.unregister(conn.sock)
                    held.append(pending.pop(conn.sock).sock)
                    ready += 1
                elif done is None:
                    pending.pop(conn.sock)
            for sock in [s for s, c in pending.items() if s.fileno() == -1]:
                pending.pop(sock)       # failed while sending its byte: already counted
        for conn in pending.values():
            self.fail(conn, False, "idle connection not confirmed in time")
        self.held = held
        return ready

    def run(self, t0):
        args = self.args
        self.warm_end, self.t_end = t0 + args.warmup, t0 + args.warmup + args.seconds
        for i in range(self.nconns):
            self.open(i, t0)
        cpu = [0.0, 0.0]
        churn = args.mode == "churn"
        next_check = t0 + 0.1
        while True:
            now = time.monotonic()
            if not cpu[0] and now >= self.warm_end:
                cpu[0] = _cpu()
            if now >= self.t_end or not self.nconns:
                break
            events = self.sel.select(min(self.t_end - now, 0.1))
            now = time.monotonic()
            for key, mask in events:
                conn = key.data
                if conn.connecting:
                    if self.connected(conn):
                        self.c.established += 1
                        self.start(conn, args.size, conn.t_connect if churn else now)
                    elif churn:
                        self.open(conn.ident, now)
                    continue
                if mask & selectors.EVENT_READ:
                    done = self.recv(conn)
                    if done:
                        if churn:
                            self.count(conn, now, conn.t_connect)
                            self.sel.unregister(conn.sock)
                            conn.sock.close()
                            self.open(conn.ident, now)
                            continue
                        self.count(conn, now, conn.t_start)
                        conn.k += 1
                        self.start(conn, args.size, now)
                        continue
                    if done is None:
                        if churn:
                            self.open(conn.ident, now)
                        continue
                if mask & selectors.EVENT_WRITE and conn.sent < conn.size:
                    self.send(conn)
            if now < next_check:
                continue
            next_check = now + 0.1
            for key in list(self.sel.get_map().values()):
                conn = key.data
                if conn.connecting and now - conn.t_connect > args.connect_timeout:
                    self.fail(conn, False, "connect timed out")
            if churn:
                # A slot whose connection failed (at once, or above) gets another try.
                live = {key.data.ident for key in self.sel.get_map().values()}
                for ident in set(range(self.nconns)) - live:
                    self.open(ident, now)
        cpu[1] = _cpu()
        stalled = 0
        for key in list(self.sel.get_map().values()):
            conn = key.data
            if not churn and not conn.connecting and conn.busy is None \
                    and conn.sent > conn.recvd \
                    and self.t_end - conn.t_start > 1.0:
                stalled += 1
            key.fileobj.close()
        idle_lost = 0
        if getattr(self, "held", None):
            poller = select.poll()
            for sock in self.held:
                poller.register(sock, select.POLLIN | select.POLLRDHUP)
            idle_lost = len(poller.poll(0))
        c = self.c
        return {"requests": c.requests, "errors": c.errors, "failures": c.failures, "busy": c.busy,
                "bytes_checked": c.bytes_checked, "established": c.established,
                "served": len(c.served) if not churn else 0, "hist": c.hist, "over": c.over,
                "stalled": stalled, "idle_lost": idle_lost,
                "cpu": cpu[1] - (cpu[0] or cpu[1])}


def _cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _percentile(hist, total, q):
    if not total:
        return 0.0
    target, acc = min(int(q * total), total - 1), 0
    for us in sorted(hist):
        acc += hist[us]
        if acc > target:
            return us + 0.5
    return float(HIST_LIMIT_US)


def _split(n, parts, i):
    return n // parts + (1 if i < n % parts else 0)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.pyload",
        description="Python stand-in for bench/loadgen.c (same options and output); "
                    "its results are a lower bound.")
    parser.add_argument("mode", choices=("pingpong", "churn"))
    parser.add_argument("-p", dest="port", type=int, required=True)
    parser.add_argument("-H", dest="host", default="127.0.0.1")
    parser.add_argument("-c", dest="conns", type=int, default=1)
    parser.add_argument("-i", dest="idle", type=int, default=0)
    parser.add_argument("-s", dest="size", type=int, default=1024)
    parser.add_argument("-d", dest="seconds", type=float, default=5.0)
    parser.add_argument("-w", dest="warmup", type=float, default=1.0)
    parser.add_argument("-T", dest="connect_timeout", type=float, default=10.0)
    parser.add_argument("-M", dest="marks", action="store_true")
    parser.add_argument("--procs", type=int, default=2, help="processes (default 2)")
    args = parser.parse_args(argv)
    try:
        loopback = socket.inet_aton(args.host)[0] == 127
    except OSError:
        loopback = False
    if not loopback:
        print(f"pyload: refusing {args.host}: only loopback addresses (127.0.0.0/8) "
              f"are allowed", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    procs = max(1, min(args.procs, max(args.conns, 1)))

    def mark(what):
        if args.marks:
            print(f"MARK {what}", file=sys.stderr, flush=True)

    children = []
    for i in range(procs):
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                os.close(ready_r)
                os.close(go_w)
                worker = Worker(args, i, _split(args.conns, procs, i), _split(args.idle, procs, i))
                ok = worker.open_idle() if worker.nidle else 0
                os.write(ready_w, json.dumps({"idle_ok": ok}).encode() + b"\n")
                t0 = float(os.read(go_r, 64).decode() or 0)
                result = worker.run(t0) if t0 else {}
                with os.fdopen(ready_w, "w") as out:
                    json.dump(result, out)
            except BaseException:
                import traceback
                traceback.print_exc()   # the parent sees no result and says so
                status = 1
            finally:
                os._exit(status)
        os.close(ready_w)
        os.close(go_r)
        children.append((pid, os.fdopen(ready_r), go_w))

    idle_ok = sum(json.loads(f.readline() or "{}").get("idle_ok", 0) for _, f, _ in children)
    if args.idle:
        mark("idle_ready")
        if select.select([sys.stdin], [], [], IDLE_WAIT)[0]:
            sys.stdin.readline()
    t0 = time.monotonic() + 0.01
    for _, _, go in children:
        os.write(go, repr(t0).encode())
        os.close(go)
    warm_end, t_end = t0 + args.warmup, t0 + args.warmup + args.seconds
    if args.conns:
        time.sleep(max(0.0, warm_end - time.monotonic()))
        mark("warm_end")
        time.sleep(max(0.0, t_end - time.monotonic()))
    else:
        mark("warm_end")
    mark("end")
    total = {"requests": 0, "errors": 0, "failures": 0, "busy": 0, "bytes_checked": 0,
             "established": 0,
             "served": 0, "over": 0, "cpu": 0.0, "stalled": 0, "idle_lost": 0}
    hist = {}
    crashed = 0
    for pid, f, _ in children:
        try:
            part = json.loads(f.read() or "{}")
        except ValueError:
            part = {}
        f.close()
        _, status = os.waitpid(pid, 0)
        if status:
            crashed += 1
            part = {}
        for key in total:
            total[key] += part.get(key, 0)
        for us, n in part.get("hist", {}).items():
            hist[int(us)] = hist.get(int(us), 0) + n
    n = total["requests"]
    print(json.dumps({
        "mode": args.mode, "conns": args.conns, "idle": args.idle, "idle_ok": idle_ok,
        "size": args.size, "seconds": args.seconds, "requests": n,
        "per_s": n / args.seconds, "errors": total["errors"], "failures": total["failures"],
        "busy": total["busy"],
        "bytes_checked": total["bytes_checked"], "established": total["established"],
        "served": total["served"], "p50_us": _percentile(hist, n, 0.50),
        "p99_us": _percentile(hist, n, 0.99), "lat_overflow": total["over"],
        "stalled": total["stalled"], "idle_lost": total["idle_lost"],
        "client_cpu_s": round(total["cpu"], 4)}), flush=True)
    if crashed:
        print(f"pyload: {crashed} of {procs} worker processes failed (see above); "
              f"the result is incomplete", file=sys.stderr)
    return 1 if total["errors"] or crashed else 0


if __name__ == "__main__":
    sys.exit(main())
