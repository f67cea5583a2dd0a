"""The worksheet's server with its suggested alterations, translated line for line, for the scenarios.

    python -m bench.scenarios.texts_worksheet serverfork [--maxdatasize N] [--status] PORT

The "Concurrent Servers" worksheet's ``serverFork.c``: the parent prints
``Server: got connection from ADDR`` and forks; the child answers every
``recv`` of at most MAXDATASIZE - 1 bytes with ``Hello, World!\\n`` (14
bytes) until what it received, as a C string, is exactly ``quit``.  Its
error paths are the worksheet's: ``perror("Server recv")`` or
``perror("Server send")``, then ``exit(1)``.  What it does not check is
kept too: a ``recv`` that returns 0 (the client's EOF) is a message, "",
answered like any other.  The alterations the worksheet asks for, as
options:

``--maxdatasize N``
    "Change the MAXDATASIZE in the server to just 20" (default 200).
``--status``
    "The parent needs to catch the signal and examine the exit code":
    the SIGCHLD handler's ``wait( NULL)`` becomes ``wait( &status)``, and
    the parent prints how each child ended (``Server: child PID exit
    status 1``).  A C handler should not call ``printf`` (UNP 5.8 says so of
    its own ``sig_chld``, which does it anyway); a Python handler runs
    between two bytecodes, outside the kernel's signal delivery, so here it
    is safe.

Without ``--status`` the handler is the worksheet's ``while( wait( NULL) >
0);``, which gets each exit status "but throw[s] it away".  Either way the
handler's ``wait`` blocks for as long as any other child runs, so the
scenarios serve one client at a time with it.

Where Python differs from C: CPython ignores SIGPIPE at start-up, and a C
program has the default action, so it is restored; a Python handler is
installed without SA_RESTART, so ``accept`` returns EINTR, the handler runs,
and Python restarts ``accept`` (PEP 475), which is what the C program's
SA_RESTART gives.  The parent's stdout is flushed after each line, as on a
terminal.  It listens on 127.0.0.1 only (the C server binds INADDR_ANY) and
prints ``listening on 127.0.0.1:PORT`` first, as selectlab's servers do.
"""

import argparse
import os
import signal
import socket
import sys

BACKLOG = 10            # max no. of pending connections in server queue
MAXDATASIZE = 200
HELLO = b"Hello, World!\n"      # send( connfd, "Hello, World!\n", 14, 0)


def perror(what, exc):
    sys.stderr.write(f"{what}: {exc.strerror}\n")
    sys.stderr.flush()


def exit_code(status):
    """What the parent reads in ``status``: ``exit status N`` or ``killed by signal N``."""
    if os.WIFEXITED(status):
        return f"exit status {os.WEXITSTATUS(status)}"
    return f"killed by signal {os.WTERMSIG(status)}"


def wait_status():
    """``wait( &status)``: ``(pid, status)``, pid -1 (ECHILD) when no child is left."""
    try:
        return os.wait()
    except ChildProcessError:
        return -1, 0


def sigchld_handler(show_status):
    def handler(s, frame):
        while True:                     # wait for any child to finish
            pid, status = wait_status()
            if pid <= 0:
                return
            if show_status:
                print(f"Server: child {pid} {exit_code(status)}", flush=True)
    return handler


def child(connfd, maxdatasize):
    """The child process dealing with a client (never returns)."""
    while True:
        try:
            msg = connfd.recv(maxdatasize - 1)
        except OSError as exc:
            perror("Server recv", exc)
            os._exit(1)                 # error end of child
        msg = msg.split(b"\0", 1)[0]    # msg[numbytes] = '\0': C's string ends at a NUL
        sys.stderr.buffer.write(b"Message received: " + msg + b"\n")
        sys.stderr.flush()
        try:
            connfd.send(HELLO)
        except OSError as exc:
            perror("Server send", exc)
            os._exit(1)                 # error end of child
        if msg == b"quit":              # } while( strcmp( msg, "quit") != 0);
            break
    connfd.close()
    os._exit(0)                         # end of child!


def serverfork(port, maxdatasize, show_status):
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)       # as a C program has it
    listenfd = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listenfd.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listenfd.bind(("127.0.0.1", port))
    listenfd.listen(BACKLOG)
    print(f"listening on 127.0.0.1:{listenfd.getsockname()[1]}", flush=True)
    signal.signal(signal.SIGCHLD, sigchld_handler(show_status))
    while True:                                         # main accept() loop
        try:
            connfd, client_addr = listenfd.accept()
        except OSError as exc:
            perror("Server accept", exc)
            continue
        print(f"Server: got connection from {client_addr[0]}", flush=True)
        if not os.fork():
            listenfd.close()            # child does not need the listener
            child(connfd, maxdatasize)
        connfd.close()                  # parent does not need the connection socket


def _maxdatasize(text):
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError("MAXDATASIZE must be 2 or more (a byte, and the NUL)")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m bench.scenarios.texts_worksheet",
        description="The worksheet's serverFork.c with its suggested alterations, translated "
                    "line for line for the scenarios (see the module docstring). Loopback only.")
    sub = parser.add_subparsers(dest="program", required=True)
    p = sub.add_parser("serverfork", help="the worksheet's fork server: Hello, World! per recv")
    p.add_argument("--maxdatasize", type=_maxdatasize, default=MAXDATASIZE, metavar="N",
                   help=f"the server's MAXDATASIZE (default {MAXDATASIZE}): recv takes N-1 bytes")
    p.add_argument("--status", action="store_true",
                   help="the parent examines each child's exit code and prints it")
    p.add_argument("port", type=int)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return serverfork(args.port, args.maxdatasize, args.status)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
