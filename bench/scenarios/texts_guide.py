"""The quick guide's TCP echo servers, translated line for line, for the scenarios to run.

Sanguino's *A Quick Guide to Networking Software* gives two TCP echo servers
whose every error path is ``/*error*/exit(1)``, so one client that goes
wrong can end the server.  Each is rendered here as it is written, flaws
included, and is used only by ``bench.scenarios``:

``iterative PORT``
    The 10th task's server: ``listen(fd,5)``, then ``accept``; ``read(newfd,
    buffer,128)`` and ``write`` it all back until ``read`` returns 0;
    ``close(newfd)``; back to ``accept``.  One client at a time, the others
    waiting in the listen queue (answers 11 and 12).
``fork PORT``
    The 12th task's concurrent server: ``SIGCHLD`` set to ``SIG_IGN`` (the
    kernel reaps the children), ``accept`` retried on ``EINTR``, ``fork``;
    the child closes ``fd``, runs the same echo loop, ``close(newfd);
    exit(0)``; the parent closes ``newfd``, retrying on ``EINTR``.

``PORT`` replaces the guide's "58001" (0 picks a free one).  Each listens
on 127.0.0.1 only and prints ``listening on 127.0.0.1:PORT`` as selectlab's
servers do.  The one other addition: before each ``exit(1)``, a line saying
which call failed and its errno (``write: -1, errno ECONNRESET (Connection
reset by peer): exit(1)``), which the guide's servers do not print, so that
a scenario can say which error path it took.

Python differs from C in three places, each made to behave as the C does:
CPython ignores SIGPIPE at start-up, and these programs restore its default
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

BUFSIZE = 128           # the guide's char buffer[128]
GUIDE_BACKLOG = 5       # the guide's listen(fd,5)


def _exit(status, call=None, exc=None):
    """C's ``exit``: flush stdout, end the process (``os._exit``: a child never runs on in its parent's loop)."""
    if call is not None:
        print(f"{call}: -1, errno {errno.errorcode.get(exc.errno, exc.errno)} "
              f"({exc.strerror}): exit({status})", flush=True)
    sys.stdout.flush()
    os._exit(status)


def _listen(port):
    """socket, bind, listen, each ``/*error*/exit(1)``; the guide's getaddrinfo(NULL,...) is 127.0.0.1 here."""
    try:
        fd = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        _exit(1, "socket", exc)
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
    """The guide's loop: read 128, write it all, until read returns 0; any error exit(1)."""
    while True:
        try:
            buffer = os.read(newfd, BUFSIZE)
        except OSError as exc:                      # if(n==-1)/*error*/exit(1);
            _exit(1, "read", exc)
        n = len(buffer)
        if n == 0:
            return
        ptr = 0
        while n > 0:
            try:
                nw = os.write(newfd, buffer[ptr:ptr + n])
            except OSError as exc:                  # if((nw=write(...))<=0)/*error*/exit(1);
                _exit(1, "write", exc)
            if nw <= 0:
                _exit(1)
            n -= nw
            ptr += nw


# --- the 10th task: the iterative TCP echo server ----------------------------

def iterative(port):
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)   # a C program's default action
    fd = _listen(port)
    while True:
        try:
            newsock, _addr = fd.accept()
        except OSError as exc:                      # if((newfd=accept(...))==-1) exit(1);
            _exit(1, "accept", exc)
        newfd = newsock.detach()
        _echo(newfd)
        os.close(newfd)


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
        description="The quick guide's TCP echo servers, translated line for line, exit(1) on "
                    "every error included, for the scenarios (see the module docstring). "
                    "Loopback only.")
    sub = parser.add_subparsers(dest="program", required=True)
    for name, text in (("iterative", "the 10th task: one client at a time"),
                       ("fork", "the 12th task: a child per client, SIGCHLD ignored")):
        p = sub.add_parser(name, help=f"{text}; any error exit(1)")
        p.add_argument("port", type=int)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.program == "iterative":
        return iterative(args.port)
    return fork(args.port)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
