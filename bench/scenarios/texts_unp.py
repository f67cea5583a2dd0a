"""UNP ch. 5's programs for two of its boundary conditions, translated, for the scenarios to run.

Stevens's *UNIX Network Programming* ch. 5 walks through what happens at
each step of an echo session's end, and warns that an interrupted
``connect`` cannot simply be called again.  The programs here let a
scenario watch both, and are used only by ``bench.scenarios``:

``tcpserv01 [--pause-at-eof] PORT``
    5.2's first server: ``listen``, then for each client ``fork``; the
    child closes the listening socket, runs ``str_echo`` (``read``,
    ``writen``, until ``read`` returns 0; an error is ``err_sys``: a message,
    ``exit(1)``) and ``exit(0)``s; the parent
    closes the connected socket.  No ``SIGCHLD`` handler, so every child
    that ends stays a zombie (5.7, step 7).  ``--pause-at-eof`` is the one
    addition: when ``read`` returns 0 the child prints ``child PID: read
    returned 0`` and waits for SIGUSR1 before its ``exit``, a pause point
    between step 4 and step 5 of "Normal Termination" that lets ``netstat``
    see the connection half closed (the server's side in CLOSE_WAIT, the
    client's in FIN_WAIT_2) for as long as the scenario likes.
``connect_intr [--handler raise|return] [--on-eintr again|select] HOST PORT``
    5.9's warning about ``connect`` (the text gives it in prose, no code): a
    client whose ``connect`` is interrupted by a caught SIGALRM.  With
    ``--handler raise`` (the default) the handler raises ``InterruptedError``,
    which is what C's ``connect`` returns when a handler installed without
    ``SA_RESTART`` returns: -1, errno EINTR.  Then ``--on-eintr again``
    calls ``connect`` again, as one would restart ``accept``; ``--on-eintr
    select`` (the default) is the text's fix: ``select`` until the socket is
    writable, then ``getsockopt(SO_ERROR)`` for the outcome (first trying
    ``connect`` once more with O_NONBLOCK set, to show the error a second
    call returns at once: EALREADY).  ``--handler return`` lets the handler
    return, as a C handler does: CPython then does not raise, and shows what
    it does itself.  Once connected, the client sends ``hello`` and prints
    the echo.

Each prints ``listening on 127.0.0.1:PORT`` (servers) as selectlab's servers
do, and listens and connects on loopback only.  Python differs from C where a
signal interrupts a system call: CPython restarts it (PEP 475) unless the
handler raises, so a handler that raises ``InterruptedError`` stands for C's
EINTR.
"""

import argparse
import errno
import os
import select
import signal
import socket
import struct
import sys
import time

import cli

MAXLINE = 4096          # unp.h
LISTENQ = 1024          # unp.h
# How long connect_intr's select waits for the connection, at most: well
# past the SYN retransmissions a scenario waits for, short of for ever.
CONNECT_WAIT = 30.0
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT"}      # include/net/tcp_states.h


def _listen(port):
    """socket, bind 127.0.0.1:PORT, listen(LISTENQ); says where, as selectlab's servers do.

    No SO_REUSEADDR: tcpserv01 sets none, and the scenario binds port 0, a
    fresh port that no old connection holds.
    """
    listenfd = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listenfd.bind(("127.0.0.1", port))
    listenfd.listen(LISTENQ)
    print(f"listening on 127.0.0.1:{listenfd.getsockname()[1]}", flush=True)
    return listenfd


# --- UNP tcpserv01 -----------------------------------------------------------

def err_sys(what, exc):
    """UNP's err_sys: the message and strerror(errno) on stderr, then exit(1)."""
    sys.stderr.write(f"{what}: {exc.strerror}\n")
    sys.stderr.flush()
    os._exit(1)


def str_echo(sockfd, pause_at_eof):
    """UNP's str_echo: read, writen, until read returns 0 (then, with the pause point, wait).

    A read error (a reset: ECONNRESET) is ``err_sys("str_echo: read error")``,
    a write error Writen's ``err_sys("writen error")``: message, exit 1.
    """
    while True:
        try:
            buf = sockfd.recv(MAXLINE)
        except OSError as exc:
            err_sys("str_echo: read error", exc)
        if not buf:
            break
        try:
            sockfd.sendall(buf)                     # Writen
        except OSError as exc:
            err_sys("writen error", exc)
    if pause_at_eof:
        print(f"child {os.getpid()}: read returned 0; waiting for SIGUSR1 before exit(0)",
              flush=True)
        signal.sigwait({signal.SIGUSR1})


def tcpserv01(port, pause_at_eof):
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)   # as a C program has it
    listenfd = _listen(port)
    while True:
        connfd, _cliaddr = listenfd.accept()
        if os.fork() == 0:                          # child process
            # Held until sigwait takes it, so that SIGUSR1 cannot kill the child.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
            listenfd.close()                        # close listening socket
            status = 1      # a Python error too ends the child, never back into accept's loop
            try:
                str_echo(connfd, pause_at_eof)      # process the request
                status = 0
            finally:
                os._exit(status)
        connfd.close()                              # parent closes connected socket


# --- UNP 5.9: connect interrupted by a signal --------------------------------

def _tcp_state(sock):
    state = struct.unpack("B", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1))[0]
    return TCP_STATES.get(state, str(state))


def _errno_text(exc):
    return f"-1, errno {errno.errorcode.get(exc.errno, exc.errno)} ({exc.strerror})"


def _wait_writable(sockfd, servaddr):
    """The text's fix: select until writable, then getsockopt(SO_ERROR); True if connected."""
    sockfd.setblocking(False)
    try:
        sockfd.connect(servaddr)
        print("connect again (O_NONBLOCK): returned 0", flush=True)
    except OSError as exc:
        print(f"connect again (O_NONBLOCK): {_errno_text(exc)}, at once", flush=True)
    print("select: waiting for the socket to become writable", flush=True)
    _, writable, _ = select.select([], [sockfd], [], CONNECT_WAIT)
    if not writable:
        print(f"select: not writable within {CONNECT_WAIT:g} s", flush=True)
        return False
    error = sockfd.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    print(f"select: writable; getsockopt(SO_ERROR) = {error} "
          f"({os.strerror(error) if error else 'connected'})", flush=True)
    sockfd.setblocking(True)
    return error == 0


def connect_intr(host, port, handler, on_eintr):
    def sig_alrm(signum, frame):
        print("SIGALRM caught", flush=True)
        if handler == "raise":
            # C: the handler returns, connect returns -1 with errno EINTR.
            raise InterruptedError(errno.EINTR, os.strerror(errno.EINTR))

    signal.signal(signal.SIGALRM, sig_alrm)
    sockfd = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    servaddr = (host, port)
    print(f"connect to {host}:{port} ...", flush=True)
    start = time.monotonic()
    try:
        sockfd.connect(servaddr)
        print(f"connect returned 0, {time.monotonic() - start:.1f} s after it was called",
              flush=True)
    except InterruptedError as exc:
        print(f"connect error: {exc.strerror} (EINTR); the socket, local port "
              f"{sockfd.getsockname()[1]}, is in {_tcp_state(sockfd)}", flush=True)
        if on_eintr == "again":
            again = time.monotonic()
            try:
                sockfd.connect(servaddr)
            except OSError as exc:
                print(f"connect again: {_errno_text(exc)}", flush=True)
                return 1
            print(f"connect again: returned 0, {time.monotonic() - again:.1f} s after it "
                  f"was called", flush=True)
        elif not _wait_writable(sockfd, servaddr):
            return 1
    sockfd.settimeout(5.0)
    sockfd.sendall(b"hello\n")
    echo = b""
    while not echo.endswith(b"\n"):
        chunk = sockfd.recv(MAXLINE)
        if not chunk:
            break
        echo += chunk
    print(f"echo: {echo.decode(errors='replace').rstrip()}", flush=True)
    sockfd.close()
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m bench.scenarios.texts_unp",
        description="UNP ch. 5's programs for the normal-termination and interrupted-connect "
                    "scenarios (see the module docstring). Loopback only.")
    sub = parser.add_subparsers(dest="program", required=True)
    p = sub.add_parser("tcpserv01", help="UNP 5.2: fork per client, no SIGCHLD handler")
    p.add_argument("--pause-at-eof", action="store_true",
                   help="when read returns 0, wait for SIGUSR1 before the child's exit")
    p.add_argument("port", type=int)
    p = sub.add_parser("connect_intr", help="UNP 5.9: connect interrupted by SIGALRM")
    p.add_argument("--handler", choices=["raise", "return"], default="raise",
                   help="raise: EINTR, as in C (default); return: what CPython then does")
    p.add_argument("--on-eintr", choices=["again", "select"], default="select",
                   help="after EINTR: call connect again, or select for writability and read "
                        "SO_ERROR (the text's fix; the default)")
    p.add_argument("host", choices=["127.0.0.1"], help="loopback only")
    p.add_argument("port", type=int)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.program == "tcpserv01":
        return tcpserv01(args.port, args.pause_at_eof)
    return connect_intr(args.host, args.port, args.handler, args.on_eintr)


if __name__ == "__main__":
    cli.run(main)       # exit with main's status; Ctrl-C is 130, as the shell's
