"""TIME (RFC 868) over TCP and UDP, on the reactor (Comer ch. 9).

    python -m servers.time [port]           # default 8037; the standard port 37 needs root

The reply is the time as a 32-bit unsigned big-endian number of seconds since
1900-01-01 00:00 UTC -- the Unix time plus 2,208,988,800 s (Comer's
``UNIXEPOCH``).  Over TCP it is sent to each client, then the connection is
closed; over UDP, every datagram (Comer's client sends ``what time is
it?``; any content will do) gets it.  The 32 bits run out on 2036-02-07;
after that the count wraps to 0, as RFC 868 implies, and clients that know
roughly what year it is (``clients.time`` does) decode it anyway.
"""

from servers.replies import reply_service
from wire.services import TIME_PORT, TIME_STANDARD_PORT, time_reply

build_parser, main, cli_main = reply_service(
    "python -m servers.time",
    "TIME server (RFC 868): sends the time as 32-bit big-endian seconds since 1900.",
    TIME_PORT, TIME_STANDARD_PORT, time_reply)

if __name__ == "__main__":
    cli_main()
