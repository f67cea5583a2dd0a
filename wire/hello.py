"""The worksheet's Hello session, sans-IO: bytes in, replies out.

The worksheet's ``serverFork.c`` answers ``Hello, World!\\n`` to every
message until the client sends ``quit``.  :class:`HelloSession` is that
conversation with no socket in it (this module imports neither ``socket`` nor
``selectors``), so the fork model and the reactor model of
``servers.hello`` run the very same code and give the same transcript.

What a message is.  The C server answers each ``recv()`` of at most
``MAXDATASIZE - 1`` bytes, and compares it with ``"quit"`` as it came, so
telnet's ``quit\\r\\n`` (CRLF) never ends the session, and how the
bytes happened to arrive decides how many greetings a client gets.  Here a
message is a *line* (LF-terminated, CR/LF stripped, so ``nc`` and telnet
work) -- but a line longer than ``maxdatasize - 1`` bytes is taken in pieces
of that size, each answered as a message, which is exactly what the
worksheet's MAXDATASIZE exercise shows (one long message, several
greetings; a ``quit`` split across pieces is missed), without depending on
timing.  A line longer than ``max_line`` in all is refused with an error
line and the session ends: a client cannot keep a server busy with one
endless line.  A last line without LF before the client's EOF is a message
too.

The session takes messages already framed: :meth:`HelloSession.line` for a
line, :meth:`HelloSession.piece` for a ``maxdatasize - 1`` byte piece of a
longer one.  Both servers frame with the shared ``LineFramer`` at
``piece_size``: the reactor model through ``reactor.protocols.LineProtocol``,
the fork model through UNP's ``readline`` (``wire.streamio.Reader``).
:meth:`HelloSession.feed` does the same framing for a caller that has bytes.

The session is a two-state machine, as data: ``SESSION``, a
``reactor.states.Machine`` (sans-IO too), drawn in ``docs/architecture.md``.
It is TALKING until ``quit``, a line too long, or the client's EOF makes it
DONE.
"""

import enum

from reactor.states import Machine
from wire.framing import MAX_LINE, LineFramer, LineTooLong, strip_eol

GREETING = b"Hello, World!\n"    # 14 bytes, the worksheet's reply
QUIT = b"quit"
MAXDATASIZE = 200                # the worksheet's server buffer (msgclient's is 100)


class HelloState(enum.Enum):
    TALKING = "talking"
    DONE = "done"


class HelloEvent(enum.Enum):
    MESSAGE = "message"
    QUIT = "quit"
    TOO_LONG = "too long"
    EOF = "eof"


class HelloAction(enum.Enum):
    REPLY = "reply"          # Hello, World! (or the message, with --echo)
    GOODBYE = "goodbye"      # Goodbye, ADDR (with --goodbye), then close
    REFUSE = "refuse"        # an error line, then close


_S, _E, _A = HelloState, HelloEvent, HelloAction

TABLE = {
    (_S.TALKING, _E.MESSAGE): (_S.TALKING, _A.REPLY),
    (_S.TALKING, _E.QUIT): (_S.DONE, _A.GOODBYE),
    (_S.TALKING, _E.TOO_LONG): (_S.DONE, _A.REFUSE),
    (_S.TALKING, _E.EOF): (_S.DONE, None),
}

SESSION = Machine("hello session", HelloState, HelloEvent, HelloState.TALKING, TABLE)

_END_REASONS = {_E.QUIT: "quit", _E.TOO_LONG: "line too long", _E.EOF: "peer eof"}


class HelloSession:
    """One client's conversation.

    Parameters
    ----------
    peer_host : str
        the client's address as text, for ``Goodbye, ADDR``.
    maxdatasize : int
        the worksheet's MAXDATASIZE: messages are taken ``maxdatasize - 1``
        bytes at most at a time.
    max_line : int
        the longest line accepted in all.
    goodbye : bool
        answer ``quit`` with ``Goodbye, ADDR\\n`` (the worksheet's first change).
    echo : bool
        answer each message with itself instead of the greeting (its second).
    """

    def __init__(self, peer_host, maxdatasize=MAXDATASIZE, max_line=MAX_LINE,
                 goodbye=False, echo=False):
        if maxdatasize < 2:
            raise ValueError("maxdatasize must be at least 2")
        self.peer_host = peer_host
        self.max_line = max_line
        self.goodbye = goodbye
        self.echo = echo
        self.state = SESSION.initial
        self.end_reason = None      # "quit", "line too long" or "peer eof", once DONE
        self._framer = LineFramer(maxdatasize - 1)
        self._line_so_far = 0       # bytes of the current line already taken in pieces

    @property
    def done(self):
        return self.state is HelloState.DONE

    @property
    def piece_size(self):
        """The framer's ``max_line`` for this session: MAXDATASIZE - 1 (the C string's NUL)."""
        return self._framer.max_length

    def line(self, message):
        """A whole line arrived (terminator stripped).

        Returns
        -------
        (reply, messages) : (bytes, list of bytes)
            what to send back (possibly ``b""``), and the messages taken, for
            the log (none once :attr:`done`, or for a refused line).
        """
        if self.done:
            return b"", []
        if self._line_so_far + len(message) > self.max_line:
            return self._fire(HelloEvent.TOO_LONG), []
        self._line_so_far = 0
        return self._message(message), [message]

    def piece(self, data):
        """The first :attr:`piece_size` bytes of a longer line arrived; answered as a message."""
        if self.done:
            return b"", []
        self._line_so_far += len(data)
        if self._line_so_far > self.max_line:
            return self._fire(HelloEvent.TOO_LONG), []
        return self._message(data), [data]

    def eof(self):
        """The client closed its end: the session is over.  Returns ``(reply, messages)``.

        A last unterminated line is the caller's to give to :meth:`line`
        first (the framer returns it at EOF).
        """
        if not self.done:
            self._fire(HelloEvent.EOF)
        return b"", []

    def feed(self, data):
        """Frame received bytes as both servers do and answer each message.

        Returns ``(reply, messages)`` for all of them together.  After
        :attr:`done`, further input is ignored.
        """
        self._framer.feed(data)
        reply = bytearray()
        messages = []
        for item in self._framer.lines():
            if self.done:
                break
            answer, taken = (self.piece(item.data) if isinstance(item, LineTooLong)
                             else self.line(strip_eol(item)))
            reply += answer
            messages += taken
        return bytes(reply), messages

    def feed_eof(self):
        """:meth:`feed`'s end: answer the last unterminated line, if any, then :meth:`eof`."""
        rest = self._framer.eof()
        reply, messages = self.line(rest) if rest else (b"", [])
        self.eof()
        return reply, messages

    def _message(self, message):
        if message == QUIT:
            return self._fire(HelloEvent.QUIT)
        self._fire(HelloEvent.MESSAGE)
        return message + b"\n" if self.echo else GREETING

    def _fire(self, event):
        """Apply one transition; return the bytes its action sends.  The only code that assigns ``state``."""
        self.state, action = SESSION.apply(self.state, event)
        if self.state is HelloState.DONE:
            self.end_reason = _END_REASONS[event]
        if action is HelloAction.GOODBYE:
            return f"Goodbye, {self.peer_host}\n".encode() if self.goodbye else b""
        if action is HelloAction.REFUSE:
            return f"error: line longer than {self.max_line} bytes; closing\n".encode()
        return b""
