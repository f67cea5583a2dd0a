"""A chat room: antirez's smallchat on the reactor.

    python -m servers.chat [port]        # default 7711, smallchat's SERVER_PORT

Every line a member sends goes to every *other* member, prefixed with the
sender's name: ``user:3> hello``.  ``/nick NAME`` sets the name (a new
member is ``user:N``, N being its connection number).  The greeting, the
``nick> line`` form and the ``Unsupported command`` reply are smallchat's.
Try it with two or three ``nc localhost 7711``.

smallchat names its own shortcuts; each is where a real server has work to
do, and here is where it is done:

* "we just hope that there is a well formed message waiting for us": a
  member's bytes go through ``reactor.protocols.LineProtocol``, so a line
  split over two reads is one line, and two lines in one read are two.  A
  line longer than 4,096 bytes gets an error line and ends that member's
  connection.
* "we don't do ANY BUFFERING. We just use the kernel socket buffers. If the
  content does not fit, we don't care": here every member has an output
  buffer, and two limits, so that a member who does not read can neither
  lose other members their lines nor grow the server's memory, and never
  slows the room:

  - **output limit** (``--max-output``, default 8 MiB): a line that would
    take a member's buffer past it cuts that member off at once (reason
    ``output limit``), as IRC servers do when a client's sendq is full;
  - **slow member** (``--slow-timeout``, default 10 s): a member whose
    buffer stays above the high-water mark (64 KiB; its connection is
    PAUSED and the room hears ``pause_writing``) for that long is cut off
    (reason ``not reading``), however little it holds: Redis's soft limit.

  The room never waits for anybody: lines keep going to every other member,
  in the order they were said.  A member that reads as fast as the room
  talks gets every line; one that falls more than ``--max-output`` behind
  is cut off, as IRC servers and Redis's pub/sub do with theirs.

``-v`` logs each member joining and leaving, and each line said (smallchat
prints every message on the console); the counters (SIGUSR1, ``--stats``)
add ``chat_members``, ``chat_lines`` and ``chat_slow_disconnections``.
"""

import argparse
import logging

import cli
from reactor.protocols import LineProtocol
from servers.options import add_reactor_arguments, add_server_arguments, server_parser
from servers.service import build_stream_service
from wire.framing import MAX_LINE
from wire.services import CHAT_PORT

log = logging.getLogger("selectlab")
client_log = logging.getLogger("selectlab.clients")


WELCOME = b"Welcome to Simple Chat! Use /nick <nick> to set your nick.\n"     # smallchat's
UNSUPPORTED = b"Unsupported command\n"                                        # smallchat's

# How long a member may stay above the high-water mark before it is cut off
# (Redis's pub/sub soft limit is 8 MiB held for 60 s; a chat line is small
# and a member that has not taken 64 KiB in 10 s is not reading).
SLOW_TIMEOUT = 10.0

# A name: 1 to 32 bytes (smallchat's nick buffer is 32), no spaces or control
# characters, so that "NAME> line" reads unambiguously.
MAX_NICK = 32


class Room:
    """The members, in the order they joined, and what they say.

    Parameters
    ----------
    slow_timeout : float
        how long a member may stay above the high-water mark.
    """

    def __init__(self, slow_timeout=SLOW_TIMEOUT):
        self.slow_timeout = slow_timeout
        self.members = {}           # Member -> None: a set that keeps the order of joining
        self._everyone = ()         # the same, as a tuple, remade on join and leave only
        self.lines = 0
        self.slow_disconnections = 0

    def join(self, member):
        self.members[member] = None
        self._everyone = tuple(self.members)

    def leave(self, member):
        if self.members.pop(member, 0) is None:
            self._everyone = tuple(self.members)

    def say(self, sender, line):
        """Send ``line`` to every member but ``sender``, as ``NICK> line``."""
        self.lines += 1
        message = b"%s> %s\n" % (sender.nick, line)
        for member in self._everyone:       # a member cut off meanwhile is skipped by write
            if member is not sender:
                member.conn.write(message)

    def counters(self):
        return {"chat_members": len(self.members), "chat_lines": self.lines,
                "chat_slow_disconnections": self.slow_disconnections}


class Member(LineProtocol):
    """One member's connection: its name, its lines, and the slow-member timer."""

    max_line = MAX_LINE

    def __init__(self, room):
        self.room = room
        self.conn = None
        self.nick = b""
        self._slow_timer = None

    def connection_made(self, conn):
        self.conn = conn
        self.nick = b"user:%d" % conn.ident
        # Join first: the write may find the member gone already, and then
        # connection_lost (leave) runs inside it.
        self.room.join(self)
        conn.write(WELCOME)

    def line_received(self, conn, line):
        if line.startswith(b"/"):
            self._command(conn, line)
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s> %s", self.nick.decode("utf-8", "backslashreplace"),
                      line.decode("utf-8", "backslashreplace"))
        self.room.say(self, line)

    def _command(self, conn, line):
        command, _, argument = line.partition(b" ")
        if command == b"/nick" and argument:
            if len(argument) > MAX_NICK or any(c <= 0x20 or c == 0x7F for c in argument):
                conn.write(b"error: a nick is 1 to %d bytes, with no spaces or control "
                           b"characters\n" % MAX_NICK)
                return
            client_log.info("%s is now %s", conn, argument.decode("utf-8", "backslashreplace"))
            self.nick = argument
        else:
            conn.write(UNSUPPORTED)

    def line_too_long(self, conn, piece):
        conn.write(b"error: line longer than %d bytes; closing\n" % self.max_line)
        conn.close(reason="line too long")

    # --- the member who does not read ------------------------------------

    def pause_writing(self, conn):
        self._slow_timer = conn.reactor.call_later(self.room.slow_timeout, self._too_slow)

    def resume_writing(self, conn):
        self._cancel_slow_timer()

    def _too_slow(self):
        self._slow_timer = None
        self.room.slow_disconnections += 1
        client_log.info("%s: above the high-water mark for %g s, %d bytes waiting: cutting it "
                        "off", self.conn, self.room.slow_timeout, self.conn.buffered)
        self.conn.abort("not reading")

    def _cancel_slow_timer(self):
        if self._slow_timer is not None:
            self._slow_timer.cancel()
            self._slow_timer = None

    def connection_lost(self, conn, reason):
        self._cancel_slow_timer()
        self.room.leave(self)


def build_parser():
    parser = server_parser(
        "python -m servers.chat",
        "A chat room (antirez's smallchat) on selectlab's reactor: every line a member sends "
        "goes to every other member as 'NAME> line'; '/nick NAME' sets the name. A member who "
        "does not read is cut off (see --max-output and --slow-timeout) and never slows the "
        "room. -v also logs every line said.")
    add_server_arguments(parser, CHAT_PORT)
    add_reactor_arguments(parser, workers=False)   # one room: its members in one process
    parser.add_argument("--slow-timeout", type=cli.positive_float, default=SLOW_TIMEOUT,
                        metavar="SECS",
                        help=f"cut off a member whose unread output stays above the high-water "
                             f"mark (64 KiB) for SECS seconds (default {SLOW_TIMEOUT:g}; "
                             f"Redis's soft output limit)")
    parser.add_argument("--workers", help=argparse.SUPPRESS)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers not in (None, "1"):
        parser.error("--workers: the room lives in one process's memory, so workers would "
                     "each hold a room of their own whose members never hear each other; run "
                     "one chat server (it serves thousands of members on one core)")
    room = Room(args.slow_timeout)
    service = build_stream_service(args, lambda: Member(room))
    service.add_counters(room.counters)
    return service.run(args.grace, args.stats)


def cli_main():
    """Entry point of the console script."""
    cli.run(main)


if __name__ == "__main__":
    cli_main()
