"""The quick guide's TCP client and echo servers, translated line for line, for the scenarios.

Sanguino's *A Quick Guide to Networking Software* gives a TCP client and two
TCP echo servers whose every error path is ``/*error*/exit(1)``, so one
client that goes wrong can end the server.  Each is rendered here as it is
written, flaws included, and is used only by ``bench.scenarios``
(``guide_io``, ``guide_servers``):

``tcpcli HOST PORT``
    The 6th and 7th tasks' client: ``socket``, ``connect``, then the
    ``nleft``/``nwritten`` loop that writes ``Hello!\\n`` (7 bytes) and the
    ``nleft``/``nread`` loop that reads 7 bytes back, leaving it early when
    ``read`` returns 0 ("closed by peer"), then ``printf("echo: %s\\n")``,
    ``close(fd)``, ``exit(0)``.  The guide's comment ``/**closed by peer``
    lacks its ``*/``, which would comment out the rest of the loop; it is
    read here as meant.  Whether ``write`` and ``read`` may have to be
    called more than once, and what ``read`` does when the peer closes, are
    the guide's answers 8 and 9.
``iterative [--rcvbuf BYTES] PORT``
    The 10th task's server: ``bind`` with no ``SO_REUSEADDR`` (the guide's
    code sets none), ``listen(fd,5)``, then ``accept``; ``read(newfd,
    buffer,128)`` and ``write`` it all back until ``read`` returns 0;
    ``close(newfd)``; back to ``accept``.  One client at a time, the others
    waiting in the listen queue (answers 11 and 12).  ``--rcvbuf`` (not the
    guide's: the experiment's) sets ``SO_RCVBUF`` on the listening socket
    before ``listen``, so that a connection's receive window is small from
    its start.
``fork PORT``
    The 12th task's concurrent server: ``SIGCHLD`` set to ``SIG_IGN`` (the
    kernel reaps the children), ``accept`` retried on ``EINTR``, ``fork``;
    the child closes ``fd``, runs the same echo loop, ``close(newfd);
    exit(0)``; the parent closes ``newfd``, retrying on ``EINTR``.

``PORT`` replaces the guide's "58001" (0 picks a free one).  The servers
listen on 127.0.0.1 only and print ``listening on 127.0.0.1:PORT`` as
selectlab's servers do.  What the guide's programs do not print and these
do, so that a scenario can see which path they took: the client a line for
each ``write`` and ``read`` call and its return value (the line
``read(...): waiting`` comes just before the call that may block), the
iterative server a line when it closes a connection (bytes echoed, in how
many reads and writes), and all of them, before each ``exit(1)``, the call
that failed and its errno (``write: -1, errno ECONNRESET (Connection reset
by peer): exit(1)``).

Python differs from C in three places, each made to behave as the C does:
CPython ignores SIGPIPE at start-up, and the servers restore its default
action, as a C program has it (the guide: "Do not forget to protect the
child process against the SIGPIPE signal" -- its code does not); ``read``
and ``write`` are ``os.read`` and ``os.write`` on the descriptor, the same
system calls, not ``recv`` and ``send``; and an ``OSError`` is C's ``-1``
with ``errno``.  PEP 475 restarts a call a signal interrupts, so the fork
server's ``EINTR`` loops never turn (with SIGCHLD ignored, no signal
interrupts it in C either).
"""

import argparse
import errno
import os
import signal
import socket
import sys

import cli

BUFSIZE = 128           # the guide's char buffer[128]
GUIDE_BACKLOG = 5       # the guide's listen(fd,5)
MESSAGE = b"Hello!\n"   # the 7th task's strcpy(buffer,"Hello!\n"); nbytes=7


def _exit(status, call=None, exc=None):
    """C's ``exit``: flush stdout, end the process.

    ``os._exit``: a child never runs on in its parent's loop.
    """
    if call is not None:
        print(f"{call}: -1, errno {errno.errorcode.get(exc.errno, exc.errno)} "
              f"({exc.strerror}): exit({status})", flush=True)
    sys.stdout.flush()
    os._exit(status)


def _listen(port, rcvbuf=0):
    """socket, bind, listen, each ``/*error*/exit(1)``; getaddrinfo(NULL,...) is 127.0.0.1 here.

    ``rcvbuf``: SO_RCVBUF before ``listen`` (not the guide's), unless 0.
    """
    try:
        fd = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        _exit(1, "socket", exc)
    if rcvbuf:
        fd.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    try:
        fd.bind(("127.0.0.1", port))
    except OSError as exc:
        _exit(1, "bind", exc)
    try:
        fd.listen(GUIDE_BACKLOG)
    except OSError as exc:                          # if(listen(fd,5)==-1)/*error*/exit(1);
        _exit(1, "listen", exc)
    print(f"listening on 127.0.0.1:{fd.getsockname()[1]}", flush=True)
    return fd


def _echo(newfd):
    """The guide's loop: read 128, write it all, until read returns 0; any error exit(1).

    Returns ``(bytes echoed, reads, writes)``, for the iterative server's close line.
    """
    total = reads = writes = 0
    while True:
        try:
            buffer = os.read(newfd, BUFSIZE)        # n=read(newfd,buffer,128)
        except OSError as exc:                      # if(n==-1)/*error*/exit(1);
            _exit(1, "read", exc)
        reads += 1
        n = len(buffer)
        if n == 0:
            return total, reads, writes
        ptr = 0
        while n > 0:
            try:
                nw = os.write(newfd, buffer[ptr:ptr + n])
            except OSError as exc:                  # if((nw=write(...))<=0)/*error*/exit(1);
                _exit(1, "write", exc)
            if nw <= 0:
                _exit(1)
            writes += 1
            total += nw
            n -= nw
            ptr += nw


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


# --- the 10th task: the iterative TCP echo server ----------------------------

def iterative(port, rcvbuf=0):
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)   # a C program's default action
    fd = _listen(port, rcvbuf)
    while True:
        try:
            newsock, _addr = fd.accept()
        except OSError as exc:                      # if((newfd=accept(...))==-1) exit(1);
            _exit(1, "accept", exc)
        newfd = newsock.detach()
        total, reads, writes = _echo(newfd)
        os.close(newfd)
        print(f"close(newfd): {total} bytes echoed, {reads} reads, {writes} writes",
              flush=True)


# --- the 12th task: the fork concurrent server -------------------------------

def fork(port):
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)   # not protected, as the guide's code
    # act.sa_handler=SIG_IGN; sigaction(SIGCHLD,&act,NULL): no zombies.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    fd = _listen(port)
    while True:
        # do newfd=accept(...); while(newfd==-1&&errno==EINTR);
        while True:
            try:
                newsock, _addr = fd.accept()
            except InterruptedError:
                continue
            except OSError as exc:                  # if(newfd==-1)/*error*/exit(1);
                _exit(1, "accept", exc)
            break
        newfd = newsock.detach()
        try:
            pid = os.fork()
        except OSError as exc:                      # if((pid=fork())==-1)/*error*/exit(1);
            _exit(1, "fork", exc)
        if pid == 0:                                # child process
            fd.close()
            _echo(newfd)
            os.close(newfd)
            _exit(0)
        # parent process: do ret=close(newfd); while(ret==-1&&errno==EINTR);
        while True:
            try:
                os.close(newfd)
            except InterruptedError:
                continue
            except OSError as exc:                  # if(ret==-1)/*error*/exit(1);
                _exit(1, "close", exc)
            break


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m bench.scenarios.texts_guide",
        description="The quick guide's TCP client (7th task) and echo servers (10th and 12th "
                    "tasks), translated line for line, exit(1) on every error included, for the "
                    "scenarios (see the module docstring). Loopback only.")
    sub = parser.add_subparsers(dest="program", required=True)
    p = sub.add_parser("tcpcli", help="the 7th task: write Hello!\\n with the write loop, "
                                      "read 7 bytes with the read loop")
    p.add_argument("host", choices=["127.0.0.1"], help="loopback only")
    p.add_argument("port", type=int)
    p = sub.add_parser("iterative", help="the 10th task: one client at a time, no SO_REUSEADDR; "
                                         "any error exit(1)")
    p.add_argument("--rcvbuf", type=int, default=0, metavar="BYTES",
                   help="SO_RCVBUF on the listening socket before listen (not the guide's)")
    p.add_argument("port", type=int)
    p = sub.add_parser("fork", help="the 12th task: a child per client, SIGCHLD ignored; "
                                    "any error exit(1)")
    p.add_argument("port", type=int)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.program == "tcpcli":
        return tcpcli(args.host, args.port)
    if args.program == "iterative":
        return iterative(args.port, args.rcvbuf)
    return fork(args.port)


if __name__ == "__main__":
    cli.run(main)       # exit with main's status; Ctrl-C is 130, as the shell's
