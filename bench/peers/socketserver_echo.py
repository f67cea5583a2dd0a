"""socketserver's ForkingTCPServer and ThreadingTCPServer as echo servers: the stdlib's classic designs.

    python -m bench.peers.socketserver_echo fork|thread [--backlog N] [--max-children N] [port]

Binds 127.0.0.1 only.  The first line on stdout is ``listening on 127.0.0.1:PORT``.

With no options these are socketserver's defaults, which the benchmark shows
as they are: ``request_queue_size = 5`` (a burst of more than a few connects
overflows the accept queue, and the kernel drops the SYNs: those clients
retry after 1 s, 3 s, ...), and for the fork server ``max_children = 40`` (the
41st client waits until one of the first 40 leaves; the server blocks in
``waitpid`` meanwhile).  ``--backlog 1024 --max-children 0`` is the same code
with a realistic backlog and no child limit, like selectlab's own servers.

SIGINT/SIGTERM close the listener, end the fork server's children with
SIGTERM and reap them, and exit 0 without waiting for threads, so stopping the
benchmark never hangs on a client that is still connected.
"""

import argparse
import os
import signal
import socketserver
import sys

RECV_SIZE = 65536


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        while True:
            try:
                data = sock.recv(RECV_SIZE)
                if not data:
                    return
                sock.sendall(data)
            except (ConnectionResetError, BrokenPipeError):
                return


class _Stop(BaseException):
    """Raised by the SIGTERM handler to leave ``serve_forever``."""


def _stop(signum, frame):
    raise _Stop


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers.socketserver_echo",
        description="socketserver's ForkingTCPServer or ThreadingTCPServer as an echo server "
                    "on 127.0.0.1, a benchmark peer. Without options: socketserver's defaults.")
    parser.add_argument("kind", choices=("fork", "thread"))
    parser.add_argument("port", nargs="?", type=int, default=0,
                        help="TCP port (default 0: a free one)")
    parser.add_argument("--backlog", type=int, default=None, metavar="N",
                        help="listen() backlog (default: socketserver's request_queue_size, 5)")
    parser.add_argument("--max-children", type=int, default=None, metavar="N",
                        help="fork only: children at once, 0 for no limit "
                             "(default: socketserver's max_children, 40)")
    args = parser.parse_intermixed_args(argv)
    base = socketserver.ForkingTCPServer if args.kind == "fork" else socketserver.ThreadingTCPServer
    attrs = {"allow_reuse_address": True}
    if args.backlog is not None:
        attrs["request_queue_size"] = args.backlog
    if args.max_children is not None and args.kind == "fork":
        attrs["max_children"] = args.max_children or sys.maxsize
    server_class = type(base.__name__, (base,), attrs)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        server = server_class(("127.0.0.1", args.port), Echo)
    except OSError as exc:
        print(f"socketserver_echo: cannot listen on 127.0.0.1:{args.port}: {exc.strerror}",
              file=sys.stderr)
        return 1
    host, port = server.server_address[:2]
    print(f"listening on {host}:{port}", flush=True)
    try:
        server.serve_forever()
    except _Stop:
        pass
    server.socket.close()
    for pid in list(getattr(server, "active_children", None) or ()):
        try:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    sys.stdout.flush()
    os._exit(0)  # do not join handler threads still blocked on a connected client


if __name__ == "__main__":
    sys.exit(main())
