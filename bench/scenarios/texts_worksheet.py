"""The worksheet's ``serverFork.c``, translated line for line, flaws included, and its alterations.

    python -m bench.scenarios.texts_worksheet serverfork [--no-handler | --status]
        [--maxdatasize N] [PORT]

PORT defaults to 3490, MYPORT.  The "Concurrent Servers" worksheet's
fork()ing server: for each client the parent prints ``Server: got
connection from ADDR`` and forks; the child closes the listener, then
answers every ``recv`` of at most MAXDATASIZE - 1 bytes with ``Hello,
World!\\n`` (14 bytes) until what it received, as a C string, is exactly
``quit``.  Its error paths are the worksheet's: ``perror("Server recv")`` or
``perror("Server send")``, then ``exit(1)``.  selectlab's ``servers.hello``
fixes what goes wrong here; the scenarios (``bench.scenarios.worksheet`` and
``worksheet_changes``) run this one to show it going wrong:

* the SIGCHLD handler, ``while( wait( NULL) > 0);``, reaps the child that
  ended and then *blocks* in ``wait`` for as long as any other child still
  runs: the parent accepts nobody in the meantime (UNP ch. 5, 5.10: "there is
  no way to prevent wait from blocking if there are running children"), so
  the scenarios serve one client at a time with it;
* ``strcmp( msg, "quit")`` compares the bytes as they came, so telnet's
  ``quit\\r\\n`` never ends the child;
* a client that leaves without ``quit``: ``recv`` returns 0, ``msg`` is "",
  answered like any other message, the child sends into the closed
  connection, and the second such send raises SIGPIPE, which kills it
  (CS:APP 11).

The worksheet's alterations, as options:

``--no-handler``
    "Comment out the signal handler stuff": nothing reaps the children, and
    each finished one stays a zombie.
``--maxdatasize N``
    "Change the MAXDATASIZE in the server to just 20" (default 200).
``--status``
    "The parent needs to catch the signal and examine the exit code":
    the SIGCHLD handler's ``wait( NULL)`` becomes ``wait( &status)``, and
    the parent prints how each child ended (``Server: child PID exit
    status 1``).  A C handler should not call ``printf`` (UNP 5.8 says so of
    its own ``sig_chld``, which does it anyway); a Python handler runs
    between two bytecodes, outside the kernel's signal delivery, so here it
    is safe.  Without it the handler gets each exit status "but throw[s] it
    away".

Where Python differs from C, and what is done about it:

* CPython ignores SIGPIPE at start-up; a C program has the default action,
  so it is restored here.
* C's ``SA_RESTART`` restarts ``accept`` in the kernel once the handler has
  returned.  A Python handler does not run inside the kernel's signal
  delivery: with SA_RESTART the kernel would restart ``accept`` before the
  handler ran at all, and it would run only after the next client came.  So
  the handler is installed as CPython does it (no SA_RESTART): ``accept``
  returns EINTR, the handler runs at once, and Python restarts ``accept``
  (PEP 475) -- what the C program does.  During the handler SIGCHLD is
  blocked, as the kernel blocks a signal during its C handler.
* The parent's stdout is flushed after each line, as on a terminal (C's
  stdio would buffer it in a pipe), each line in one write; stderr is
  unbuffered, as in C.
* It listens on 127.0.0.1 only (the C server binds INADDR_ANY) and prints
  ``listening on 127.0.0.1:PORT`` first, as selectlab's servers do.
"""

import argparse
import os
import signal
import socket
import sys

import cli

MYPORT = 3490           # the port users connect to
BACKLOG = 10            # max no. of pending connections in server queue
MAXDATASIZE = 200

HELLO = b"Hello, World!\n"      # send( connfd, "Hello, World!\n", 14, 0)


def printf(line):
    """``printf`` of one line on stdout, in one write: a child's stderr shares the pipe."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


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
    """The handler: ``while( wait( NULL) > 0);``, or with ``show_status`` each status printed."""
    def handler(s, frame):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        try:
            while True:                 # wait for any child to finish
                pid, status = wait_status()
                if pid <= 0:
                    return
                if show_status:
                    printf(f"Server: child {pid} {exit_code(status)}")
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    return handler


def c_string(buf):
    """``msg`` as C sees it: the bytes before the first NUL."""
    return buf.split(b"\0", 1)[0]


def child(connfd, maxdatasize):
    """The child process dealing with a client (never returns)."""
    msg = b""       # no message yet!
    while True:
        try:
            msg = connfd.recv(maxdatasize - 1)
        except OSError as exc:
            perror("Server recv", exc)
            os._exit(1)                 # error end of child
        msg = c_string(msg)             # msg[numbytes] = '\0': end of string
        sys.stderr.buffer.write(b"Message received: " + msg + b"\n")
        sys.stderr.flush()
        try:
            connfd.send(HELLO)          # the count it returns is not looked at, as in C
        except OSError as exc:
            perror("Server send", exc)
            os._exit(1)                 # error end of child
        if msg == b"quit":              # } while( strcmp( msg, "quit") != 0);
            break
    connfd.close()
    os._exit(0)                         # end of child!


def serverfork(port, handler, maxdatasize, show_status):
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)       # as a C program has it
    try:
        listenfd = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        perror("Server socket", exc)
        return 1
    try:
        # Set Unix socket level to allow address reuse
        listenfd.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    except OSError as exc:
        perror("Server setsockopt", exc)
        return 1
    try:
        listenfd.bind(("127.0.0.1", port))
    except OSError as exc:
        perror("Server bind", exc)
        return 1
    try:
        listenfd.listen(BACKLOG)
    except OSError as exc:
        perror("Server listen", exc)
        return 1
    printf(f"listening on 127.0.0.1:{listenfd.getsockname()[1]}")

    if handler:
        # Signal handler stuff: reap all dead processes
        signal.signal(signal.SIGCHLD, sigchld_handler(show_status))
    else:
        # The signal handler stuff commented out: SIGCHLD's default action, as
        # a C program started from a shell has it.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    while True:                                         # main accept() loop
        try:
            connfd, client_addr = listenfd.accept()
        except OSError as exc:
            perror("Server accept", exc)
            continue
        client_address = client_addr[0]                 # inet_ntoa( client_addr.sin_addr)
        printf(f"Server: got connection from {client_address}")
        try:
            pid = os.fork()
        except OSError as exc:
            # C's !fork() takes -1 (no child) for the parent's branch: the
            # connection is closed and the loop goes on.  C says nothing; the
            # perror shows why this client got no answer.
            perror("Server fork", exc)
            pid = -1
        if not pid:
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
    p = sub.add_parser("serverfork", help="the worksheet's fork server: Hello, World! per recv "
                                          "until it receives exactly 'quit'")
    handler = p.add_mutually_exclusive_group()
    handler.add_argument("--no-handler", dest="handler", action="store_false",
                         help="the signal handler stuff commented out: no SIGCHLD handler, so "
                              "finished children stay zombies")
    handler.add_argument("--status", action="store_true",
                         help="the parent examines each child's exit code and prints it")
    p.add_argument("--maxdatasize", type=_maxdatasize, default=MAXDATASIZE, metavar="N",
                   help=f"the server's MAXDATASIZE (default {MAXDATASIZE}): recv takes N-1 bytes")
    p.add_argument("port", nargs="?", type=int, default=MYPORT,
                   help=f"the port to listen on (default {MYPORT}, MYPORT; 0 picks one)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return serverfork(args.port, args.handler, args.maxdatasize, args.status)


if __name__ == "__main__":
    cli.run(main)       # exit with main's status; Ctrl-C is 130, as the shell's
