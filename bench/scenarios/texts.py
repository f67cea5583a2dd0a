"""The texts' flawed programs, translated line for line, for the scenarios to run.

selectlab's own servers and clients fix what the texts show going wrong, so
the scenarios that show the failure itself need the original programs.  Each
one here is a small, faithful Python rendering of a program in the texts,
flaw included, and is used only by ``bench.scenarios``:

``tcpserv02 [--restart] PORT``
    UNP 5.9's server: fork per client, a SIGCHLD handler that calls ``wait``
    and ``printf``s, and an ``accept`` that is *not* restarted, so the first
    child to end aborts the server with ``accept error: Interrupted system
    call``.  ``--restart`` is ``tcpserv03``: ``if (errno == EINTR) continue``.
``mechod PORT``
    Comer ch. 13's single-thread concurrent ECHO server (TCPmechod): one
    ``select`` loop, but a blocking ``write`` back to each client, so one
    client that sends and never reads stops it for everyone (Comer 8.29).
``sigpipe [--ignore] PORT``
    CS:APP 11's server writing to a connection the client has closed: the
    first write returns normally, the second raises SIGPIPE, which kills
    the process (default action), or with ``--ignore`` returns EPIPE,
    "Broken pipe".
``udpcli HOST PORT``
    The quick guide's UDP client (3rd task): ``sendto``, then ``recvfrom``
    with no timeout, which blocks for ever when no answer comes (answer 1).

Each prints ``listening on 127.0.0.1:PORT`` (servers) as selectlab's servers
do, and listens on 127.0.0.1 only.  Python differs from C in two places, both
dealt with where they matter: CPython ignores SIGPIPE at start-up, and it
restarts system calls interrupted by a signal (PEP 475) unless the handler
raises.
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
TCP_CLOSE = 7           # include/net/tcp_states.h
TCP_CLOSE_WAIT = 8


def _listen(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    print(f"listening on 127.0.0.1:{sock.getsockname()[1]}", flush=True)
    return sock


def _str_echo(sock):
    """UNP's str_echo: read, writen, until EOF."""
    while True:
        data = sock.recv(MAXLINE)
        if not data:
            return
        sock.sendall(data)


# --- UNP tcpserv02 / tcpserv03 ---------------------------------------------

def tcpserv02(port, restart):
    listenfd = _listen(port)
    in_accept = False

    def sig_chld(signum, frame):
        pid, _stat = os.wait()
        print(f"child {pid} terminated", flush=True)   # UNP: "not recommended", kept
        if in_accept:
            # What accept() returns in C once a handler installed without
            # SA_RESTART returns: -1 with errno EINTR.  (Python would restart
            # the call itself, PEP 475, unless the handler raises.)
            raise InterruptedError(errno.EINTR, os.strerror(errno.EINTR))

    signal.signal(signal.SIGCHLD, sig_chld)
    while True:
        try:
            in_accept = True
            connfd, _addr = listenfd.accept()
            in_accept = False
        except OSError as exc:
            in_accept = False
            if restart and exc.errno == errno.EINTR:
                continue                                    # tcpserv03
            print(f"accept error: {exc.strerror}", flush=True)
            sys.exit(1)
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            listenfd.close()
            try:
                _str_echo(connfd)
            finally:
                os._exit(0)
        connfd.close()


# --- Comer's TCPmechod -----------------------------------------------------

def mechod(port):
    msock = _listen(port)
    afds = {msock.fileno(): msock}
    while True:
        readable, _, _ = select.select(list(afds), [], [])
        for fd in readable:
            if fd == msock.fileno():
                ssock, _addr = msock.accept()
                afds[ssock.fileno()] = ssock
                continue
            sock = afds[fd]
            # echo(): read, then a blocking write of all of it.  A client
            # that never reads fills its socket buffers, and this write
            # waits for it for ever, with every other client waiting too.
            try:
                data = sock.recv(MAXLINE)
                if data:
                    sock.sendall(data)
            except OSError as exc:
                # Comer's errexit("echo write: %s\n", strerror(errno)): the server ends.
                print(f"echo: {exc.strerror}", flush=True)
                return 1
            if not data:
                del afds[fd]
                sock.close()


# --- CS:APP's write to a closed connection ---------------------------------

def _tcp_state(sock):
    return struct.unpack("B", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1))[0]


def sigpipe(port, ignore):
    # CPython starts with SIGPIPE ignored; a C program has the default action.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN if ignore else signal.SIG_DFL)
    listenfd = _listen(port)
    connfd, _addr = listenfd.accept()
    print(f"SIGPIPE: {'ignored (SIG_IGN)' if ignore else 'default action (SIG_DFL)'}", flush=True)
    if connfd.recv(MAXLINE) == b"":
        print("read returned 0: the client has closed the connection", flush=True)
    # Only this program's own writes below: wait (at most 2 s) for the
    # client's TCP to answer the first one with a reset.
    n = connfd.send(b"first write\n")
    print(f"first write: returned {n}", flush=True)
    deadline = time.monotonic() + 2.0
    while _tcp_state(connfd) != TCP_CLOSE and time.monotonic() < deadline:
        time.sleep(0.01)
    print("the client's TCP answered with a reset" if _tcp_state(connfd) == TCP_CLOSE
          else "no reset within 2 s", flush=True)
    print("second write...", flush=True)
    try:
        n = connfd.send(b"second write\n")
    except OSError as exc:
        print(f"second write: returned -1, errno {errno.errorcode[exc.errno]}: "
              f"{exc.strerror}", flush=True)
        return 0
    print(f"second write: returned {n}", flush=True)
    return 0


# --- the quick guide's UDP client ------------------------------------------

def udpcli(host, port):
    fd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    n = fd.sendto(b"Hello!\n", (host, port))
    print(f"sent {n} bytes to {host}:{port}; waiting in recvfrom (no timeout)", flush=True)
    buffer, addr = fd.recvfrom(128)
    print(f"echo: {buffer.decode(errors='replace')}", end="", flush=True)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m bench.scenarios.texts",
        description="The texts' flawed programs, translated line for line, for the scenarios "
                    "(see the module docstring). Loopback only.")
    sub = parser.add_subparsers(dest="program", required=True)
    p = sub.add_parser("tcpserv02", help="UNP 5.9: accept aborted by EINTR after a SIGCHLD")
    p.add_argument("--restart", action="store_true", help="tcpserv03: continue on EINTR")
    p.add_argument("port", type=int)
    p = sub.add_parser("mechod", help="Comer ch. 13: select loop with blocking writes")
    p.add_argument("port", type=int)
    p = sub.add_parser("sigpipe", help="CS:APP 11: two writes to a connection the client closed")
    p.add_argument("--ignore", action="store_true", help="ignore SIGPIPE: EPIPE instead")
    p.add_argument("port", type=int)
    p = sub.add_parser("udpcli", help="the quick guide's UDP client: recvfrom with no timeout")
    p.add_argument("host", choices=["127.0.0.1"], help="loopback only")
    p.add_argument("port", type=int)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.program == "tcpserv02":
        return tcpserv02(args.port, args.restart)
    if args.program == "mechod":
        return mechod(args.port)
    if args.program == "sigpipe":
        return sigpipe(args.port, args.ignore)
    return udpcli(args.host, args.port)


if __name__ == "__main__":
    cli.run(main)       # exit with main's status; Ctrl-C is 130, as the shell's
