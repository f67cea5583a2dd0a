"""The quick guide's TCP client and server, translated line for line, for the I/O scenarios.

Sanguino's *A Quick Guide to Networking Software* asks, after its 7th task,
whether ``write`` and ``read`` may have to be called more than once, and
what ``read`` does when the peer closes (answers 8 and 9).  The two programs
here are the guide's own, rendered as written, and are used only by
``bench.scenarios`` (``guide_io``):

``tcpcli HOST PORT``
    The 6th and 7th tasks' client: ``socket``, ``connect``, then the
    ``nleft``/``nwritten`` loop that writes ``Hello!\\n`` (7 bytes) and the
    ``nleft``/``nread`` loop that reads 7 bytes back, leaving it early when
    ``read`` returns 0 ("closed by peer"), then ``printf("echo: %s\\n")``,
    ``close(fd)``, ``exit(0)``.  The guide's comment ``/**closed by peer``
    lacks its ``*/``, which would comment out the rest of the loop; it is
    read here as meant.
``tcpserver [--rcvbuf BYTES] PORT``
    The 10th task's TCP echo server: ``bind`` with no ``SO_REUSEADDR``
    (the guide's code sets none), ``listen(fd,5)``, then for each client
    ``read(newfd,buffer,128)`` and a ``write`` loop that sends it all back,
    until ``read`` returns 0; ``close(newfd)``; back to ``accept``.
    ``--rcvbuf`` (not the guide's: the experiment's) sets ``SO_RCVBUF`` on
    the listening socket before ``listen``, so that a connection's receive
    window is small from its start.

What the guide's programs do not print and these do, so that a scenario
can see which path they took: the client a line for each ``write`` and
``read`` call and its return value (the line ``read(...): waiting`` comes
just before the call that may block), the server a line when it closes a
connection (bytes echoed, in how many reads and writes), and both, before
each ``exit(1)``, the call that failed and its errno (``bind: -1, errno
EADDRINUSE (Address already in use): exit(1)``).  ``PORT`` replaces the
guide's "58001" (0 picks a free one); the server listens on 127.0.0.1 only
and prints ``listening on 127.0.0.1:PORT`` as selectlab's servers do.

Python differs from C in three places, each made to behave as the C does:
``read`` and ``write`` are ``os.read`` and ``os.write`` on the descriptor,
the same system calls; an ``OSError`` is C's ``-1`` with ``errno``; and
SIGPIPE gets back its default action, which CPython sets aside at start-up
(the guide: "Do not forget to protect your application against the SIGPIPE
signal" -- its 10th task's code does not).
"""

import argparse
import errno
import os
import signal
import socket
import sys

BUFSIZE = 128           # the guide's char buffer[128]
GUIDE_BACKLOG = 5       # the guide's listen(fd,5)
MESSAGE = b"Hello!\n"   # the 7th task's strcpy(buffer,"Hello!\n"); nbytes=7


def _exit(status, call=None, exc=None):
    """C's ``exit``: the failed call and its errno (this module's addition), then end."""
    if call is not None:
        print(f"{call}: -1, errno {errno.errorcode.get(exc.errno, exc.errno)} "
              f"({exc.strerror}): exit({status})", flush=True)
    sys.stdout.flush()
    os._exit(status)


# --- the 6th and 7th tasks: the TCP client -----------------------------------

def tcpcli(host, port):
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:                          # if(fd==-1) exit(1);
        _exit(1, "socket", exc)
    try:
        sock.connect((host, port))
    except OSError as exc:                          # if(n==-1) /*error*/ exit(1);
        _exit(1, "connect", exc)
    fd = sock.detach()
    print(f"connected to {host}:{port}", flush=True)

    buffer = MESSAGE                                # ptr=strcpy(buffer,"Hello!\n");
    nbytes = len(MESSAGE)
    nleft, ptr = nbytes, 0
    while nleft > 0:
        try:
            nwritten = os.write(fd, buffer[ptr:ptr + nleft])
        except OSError as exc:                      # if(nwritten<=0)/*error*/exit(1);
            _exit(1, "write", exc)
        print(f"write(fd,ptr,{nleft}) returned {nwritten}", flush=True)
        if nwritten <= 0:
            _exit(1)
        nleft -= nwritten
        ptr += nwritten

    nleft, received = nbytes, b""                   # nleft=nbytes; ptr=buffer;
    while nleft > 0:
        print(f"read(fd,ptr,{nleft}): waiting", flush=True)
        try:
            data = os.read(fd, nleft)
        except OSError as exc:                      # if(nread==-1)/*error*/exit(1);
            _exit(1, "read", exc)
        nread = len(data)
        print(f"read(fd,ptr,{nleft}) returned {nread} {data!r}", flush=True)
        if nread == 0:
            print("closed by peer", flush=True)     # else if(nread==0)break;
            break
        nleft -= nread
        received += data                            # ptr+=nread;
    nread = nbytes - nleft

    # buffer[nread] = '\0'; printf("echo: %s\n", buffer);
    print(f"echo: {received[:nread].decode(errors='replace')}", flush=True)
    os.close(fd)
    print("close(fd); exit(0)", flush=True)
    _exit(0)


# --- the 10th task: the TCP echo server --------------------------------------

def tcpserver(port, rcvbuf):
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)   # a C program's default action
    try:
        fd = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:                          # if((fd=socket(...))==-1)exit(1);
        _exit(1, "socket", exc)
    if rcvbuf:
        fd.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    try:
        fd.bind(("127.0.0.1", port))
    except OSError as exc:                          # if(bind(...)==-1)/*error*/exit(1);
        _exit(1, "bind", exc)
    try:
        fd.listen(GUIDE_BACKLOG)
    except OSError as exc:                          # if(listen(fd,5)==-1)/*error*/exit(1);
        _exit(1, "listen", exc)
    print(f"listening on 127.0.0.1:{fd.getsockname()[1]}", flush=True)
    while True:
        try:
            newsock, _addr = fd.accept()
        except OSError as exc:                      # if((newfd=accept(...))==-1) exit(1);
            _exit(1, "accept", exc)
        newfd = newsock.detach()
        total = reads = writes = 0
        while True:
            try:
                buffer = os.read(newfd, BUFSIZE)    # n=read(newfd,buffer,128)
            except OSError as exc:                  # if(n==-1)/*error*/exit(1);
                _exit(1, "read", exc)
            reads += 1
            n = len(buffer)
            if n == 0:
                break
            ptr = 0
            while n > 0:
                try:
                    nw = os.write(newfd, buffer[ptr:ptr + n])
                except OSError as exc:              # if((nw=write(newfd,ptr,n))<=0)exit(1);
                    _exit(1, "write", exc)
                if nw <= 0:
                    _exit(1)
                writes += 1
                total += nw
                n -= nw
                ptr += nw
        os.close(newfd)
        print(f"close(newfd): {total} bytes echoed, {reads} reads, {writes} writes",
              flush=True)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m bench.scenarios.texts_guide_io",
        description="The quick guide's TCP client (7th task) and echo server (10th task), "
                    "translated line for line, for the scenarios (see the module docstring). "
                    "Loopback only.")
    sub = parser.add_subparsers(dest="program", required=True)
    p = sub.add_parser("tcpcli", help="the 7th task: write Hello!\\n with the write loop, "
                                      "read 7 bytes with the read loop")
    p.add_argument("host", choices=["127.0.0.1"], help="loopback only")
    p.add_argument("port", type=int)
    p = sub.add_parser("tcpserver", help="the 10th task: iterative echo server, no "
                                         "SO_REUSEADDR, any error exit(1)")
    p.add_argument("--rcvbuf", type=int, default=0, metavar="BYTES",
                   help="SO_RCVBUF on the listening socket before listen (not the guide's)")
    p.add_argument("port", type=int)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.program == "tcpcli":
        return tcpcli(args.host, args.port)
    return tcpserver(args.port, args.rcvbuf)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
