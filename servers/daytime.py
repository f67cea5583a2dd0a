"""DAYTIME (RFC 867) over TCP and UDP, on the reactor (Comer ch. 10).

    python -m servers.daytime [port]        # default 8013; the standard port 13 needs root

Over TCP, each client is sent the date and time as one line of text and the
connection is closed (Comer 10.3: the server closes, the client reads to
EOF); whatever the client sends is ignored.  Over UDP, every datagram, empty
or not, is answered with the same line.  The text is C's ``ctime()``, as in
Comer's server: ``Sat Nov 21 07:33:10 2026``, ending in CRLF.  Both
protocols are served on the same port number from one loop.
"""

from servers.replies import reply_service
from wire.services import DAYTIME_PORT, DAYTIME_STANDARD_PORT, daytime_text

build_parser, main, cli_main = reply_service(
    "python -m servers.daytime",
    "DAYTIME server (RFC 867): sends the date and time as a line of text.",
    DAYTIME_PORT, DAYTIME_STANDARD_PORT, daytime_text)

if __name__ == "__main__":
    cli_main()
