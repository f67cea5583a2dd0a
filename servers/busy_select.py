"""The quick guide's select() server (11th task): one client at a time, ``busy`` to the rest.

    python -m servers.busy_select [port]        # default 58001, the guide's

While it serves a client the listener is BUSY, and each client that connects
meanwhile reads exactly ``busy\\n`` (5 bytes) and then the end of the stream;
when the served client leaves, the listener is IDLE again and the next client
is served.  Served clients get their bytes echoed, as in the guide.

The guide's loop, and where each part of it lives here::

    switch(state){                              reactor/states.py, LISTENER_TABLE
    case idle: FD_SET(fd,&rfds)                 listener_interest(): READ
    case busy: FD_SET(fd); FD_SET(afd)          ... and the connection's READ
    select(maxfd+1, &rfds, ...)                 Reactor.run_once
    idle, fd ready: accept; state=busy          IDLE --connection/admit--> IDLE --full--> BUSY
    busy, fd ready: accept; write "busy\\n";     BUSY --connection/reject--> BUSY
                    close(newfd)                StreamServer._reject
    busy, afd ready: read; n>0: write back      Connection.on_readable, Echo.data_received
                     n==0: close(afd); idle     BUSY --slot_freed--> IDLE

Two things differ from the guide, on purpose.  The guide's ``close(newfd)``
right after ``write`` sends a reset instead of a FIN if the rejected client
had already sent something, and a reset can destroy the ``busy\\n`` before
the client reads it; here the rejection half-closes, reads and discards for
up to two seconds until the client's EOF, and only then closes.  And the
guide's ``write`` of the echo blocks if the client does not read; here it
never does (see ``reactor.connection``).

``--max-clients N`` serves N at once instead of one.  Watch the listener
change state with ``--trace``.
"""

import cli
from servers.options import add_reactor_arguments, add_server_arguments, server_parser
from servers.service import run_stream_server
from servers.echo_select import ECHO
from wire.services import GUIDE_PORT



def build_parser():
    parser = server_parser(
        "python -m servers.busy_select",
        "The quick guide's select() server on selectlab's reactor: it echoes for one client at "
        "a time (--max-clients to change that), and every client arriving meanwhile reads "
        "'busy\\n' and is closed cleanly.")
    add_server_arguments(parser, GUIDE_PORT)
    add_reactor_arguments(parser, default_max_clients=1)
    return parser


def main(argv=None):
    return run_stream_server(build_parser().parse_args(argv), lambda: ECHO)


def cli_main():
    """Entry point of the console script."""
    cli.run(main)


if __name__ == "__main__":
    cli_main()
