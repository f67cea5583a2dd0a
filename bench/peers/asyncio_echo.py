"""The natural stdlib alternative: an echo server as an asyncio Protocol (or uvloop's).

    python -m bench.peers.asyncio_echo [--uvloop] [port]

Binds 127.0.0.1 only (it is a benchmark peer, not a server to expose), with
backlog 1024 like every server in the comparison.  The first line on stdout is
``listening on 127.0.0.1:PORT``.  SIGINT/SIGTERM close the server and exit 0.

The Protocol is the fastest way to write this in asyncio (streams add a
coroutine per connection and a buffer copy): ``data_received`` hands the bytes
straight to ``transport.write``, which sends at once and buffers only what
the kernel refuses.  That is the same plan as selectlab's connection.
"""

import argparse
import asyncio
import signal
import sys


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        return False  # close once everything written has been sent


async def serve(port):
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))
    server = await loop.create_server(Echo, "127.0.0.1", port, backlog=1024)
    host, real_port = server.sockets[0].getsockname()[:2]
    print(f"listening on {host}:{real_port}", flush=True)
    async with server:
        await stop


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers.asyncio_echo",
        description="asyncio Protocol echo server on 127.0.0.1, a benchmark peer.")
    parser.add_argument("port", nargs="?", type=int, default=0,
                        help="TCP port (default 0: a free one)")
    parser.add_argument("--uvloop", action="store_true",
                        help="run on uvloop instead of asyncio's own loop (pip install uvloop)")
    args = parser.parse_args(argv)
    if args.uvloop:
        try:
            import uvloop
        except ImportError:
            parser.exit(2, "asyncio_echo: uvloop is not installed; pip install uvloop\n")
        uvloop.run(serve(args.port))
    else:
        asyncio.run(serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
