"""The port numbers and the small services' wire formats, shared by servers and clients.

Ports are the texts' own: UNP's ``SERV_PORT``, the quick guide's 58001,
the worksheet's 3490, smallchat's 7711.  The standard ports of DAYTIME and
TIME need root, so the servers default to 8000 plus the standard port.
"""

import struct
import time

SERV_PORT = 9877                # UNP's unp.h: the echo servers and clients
GUIDE_PORT = 58001              # the quick guide's port, TCP and UDP
HELLO_PORT = 3490               # the worksheet's MYPORT
CHAT_PORT = 7711                # smallchat's

DAYTIME_STANDARD_PORT = 13      # RFC 867
DAYTIME_PORT = 8013
TIME_STANDARD_PORT = 37         # RFC 868
TIME_PORT = 8037

UNIXEPOCH = 2208988800          # seconds from 1900-01-01 to 1970-01-01 (Comer's constant)
TIME_ERA = 2**32                # seconds before a TIME reply's count wraps


def daytime_text(now=None):
    """RFC 867's reply: the local date and time, human-readable (``ctime``), CRLF-terminated."""
    return (time.ctime(now) + "\r\n").encode("ascii")


def time_reply(now=None):
    """RFC 868's reply: 4 bytes, big-endian seconds since 1900, modulo 2**32."""
    seconds = int(time.time() if now is None else now) + UNIXEPOCH
    return struct.pack("!I", seconds % TIME_ERA)


def decode_time(reply, now=None):
    """The Unix time that a 4-byte TIME reply stands for, in the era nearest ``now``.

    The 32 bits run out on 2036-02-07; a client that knows roughly what
    year it is decodes a wrapped count anyway.
    """
    if len(reply) != 4:
        raise ValueError(f"a TIME reply is 4 bytes, got {len(reply)}")
    seconds = struct.unpack("!I", reply)[0]
    now = time.time() if now is None else now
    era = round((now + UNIXEPOCH - seconds) / TIME_ERA)
    return seconds + era * TIME_ERA - UNIXEPOCH
