"""Command-line plumbing shared by every server and client of selectlab.

* :class:`Parser`: ``argparse`` whose errors are one line (``prog: error:
  what is wrong (see --help)``) instead of a usage dump, and whose
  ``--help`` reports an output it cannot write instead of ignoring it.
* :func:`port`, :func:`positive_int`, :func:`positive_float`: argument types.
* :func:`script_name`: a command's console script, named after its module;
  run through it, errors and usage lines name the script.
* :class:`Fatal` and :func:`run`: a command raises ``Fatal("what is wrong;
  what to do")`` and :func:`run` prints it as one line on stderr and exits
  non-zero, with no traceback.  Ctrl-C in a command that does not handle
  it itself also ends quietly (exit status 130, the shell's convention),
  and so does a command whose reader has gone (``| head -1``: 141).
* :func:`setup_logging`: ``-v``/``-q``/``--trace`` to logging levels, on a
  handler that never blocks (``reactor.logwriter``).
"""

import argparse
import errno
import logging
import math
import os
import select
import sys

from reactor.logwriter import LineFormatter, LogWriter

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130      # 128 + SIGINT, what a shell reports for Ctrl-C
EXIT_BROKEN_PIPE = 141      # 128 + SIGPIPE, what a shell reports for `yes | head -1`'s yes


class Fatal(Exception):
    """An error the user can fix; the message says what is wrong and what to do."""

    def __init__(self, message, status=EXIT_FAILURE):
        super().__init__(message)
        self.status = status


# Console scripts are named after the module `python -m` runs: see script_name().
SCRIPT_PREFIX = "selectlab-"


def script_name(module):
    """The console script that runs ``python -m module``: ``servers.echo_select`` ->
    ``selectlab-servers-echo-select`` (setup.cfg's entry points follow this rule)."""
    return SCRIPT_PREFIX + module.replace(".", "-").replace("_", "-")


def _as_invoked(prog):
    """``prog`` (``python -m MODULE``), or MODULE's console script's name if that is what runs."""
    if prog and prog.startswith("python -m "):
        script = script_name(prog.removeprefix("python -m "))
        if os.path.basename((getattr(sys, "argv", None) or [""])[0]) == script:
            return script
    return prog


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors fit on one line, and name the command as it was run.

    ``prog`` is given as ``python -m MODULE``; run through MODULE's console
    script, the parser takes the script's name instead, so that usage lines
    and errors name what the user typed, as :func:`run`'s errors do.
    """

    def __init__(self, prog=None, *args, **kwargs):
        super().__init__(_as_invoked(prog), *args, **kwargs)

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")

    def print_help(self, file=None):
        # argparse ignores an error writing the help; written and flushed here, it
        # reaches run() (`--help > /dev/full` is one line and exit 1, not silence and 0).
        file = sys.stdout if file is None else file
        file.write(self.format_help())
        file.flush()


def _checked(text, parse, ok, what, expected):
    """``parse(text)`` if it succeeds and ``ok`` of it holds, else argparse's one-line error."""
    try:
        value = parse(text)
    except (ValueError, OverflowError):
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"invalid {what} {text!r}: expected {expected}")
    return value


def port(text):
    """argparse type: a TCP/UDP port number, 0 meaning "any free port"."""
    return _checked(text, _whole, lambda v: 0 <= v <= 65535, "port", "a number from 0 to 65535")


def positive_int(text):
    """argparse type: a whole number greater than zero."""
    return whole_number_from(1)(text)


def whole_number_from(low, why=""):
    """argparse type: a whole number from ``low`` up; ``why`` ends the error (say, why not less).

    One message for every value refused, 0 as much as ``low - 1`` or ``x``.
    """
    def whole_number(text):
        return _checked(text, _whole, lambda v: v >= low, "value",
                        f"a whole number from {low} up{why}")
    return whole_number


def positive_float(text):
    """argparse type: a number of seconds greater than zero (and not infinite)."""
    return _checked(text, _seconds, lambda v: v > 0, "value", "a positive number")


def seconds_from_zero(text):
    """argparse type: a number of seconds, 0 or more (``--grace 0``: at once)."""
    return _checked(text, _seconds, lambda v: v >= 0, "value", "0 or a positive number")


def byte_size(text):
    """argparse type: a number of bytes from 1 up, optionally with K, M or G (KiB, MiB, GiB)."""
    return _checked(text, _bytes, lambda v: v >= 1, "size",
                    "a number of bytes from 1 up, such as 65536, 64K or 8M")


def _whole(text):
    return int(text, 10)


def _seconds(text):
    value = float(text)
    # inf would reach select() as a timeout it cannot take; nan compares false anyway.
    return value if math.isfinite(value) else None


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _bytes(text):
    number = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = number[-1:] if number[-1:] in ("K", "M", "G") else ""
    return int(number[:len(number) - len(unit)], 10) * _UNITS[unit]


def add_verbosity(parser, more="a line for each client (open, closed and why, rejected)"):
    """Add ``-v/--verbose`` and ``-q/--quiet``; ``more``: what ``-v`` adds besides debug messages."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true",
                       help=f"log more: {more} and debug messages")
    group.add_argument("-q", "--quiet", action="store_true",
                       help="log only warnings and errors")


def setup_logging(args, trace=False, prefix=""):
    """Send the ``selectlab`` logs to stderr at the level asked for; return the writer.

    The handler is a :class:`~reactor.logwriter.LogWriter` (returned, for the
    loop to attach; None when ``sys.stderr`` has no descriptor): a log line
    never blocks the server; lines its destination cannot take are dropped
    and counted.  What each level shows (the rule is Redis's: lines about each
    client only when asked for):

    * default: the server's own events (``selectlab``, INFO and up);
    * ``-q``: warnings and errors only;
    * ``-v``: debug messages too, and a line per client event
      (``selectlab.clients``: open, closed, rejected, idle);
    * ``--trace``: every state transition (``selectlab.trace``), and the
      client lines, whatever ``-q`` says: asking for it is asking to see it.

    The counters (``selectlab.stats``: ``--stats``, SIGUSR1) are always
    shown, since they are only logged when asked for.

    ``prefix`` starts every message (a worker process names itself).

    Meant for a command's ``main()``: it replaces (and closes) any handler
    the ``selectlab`` logger had, and it sets logging's process-wide flags
    so that records skip the caller's frame and thread and process names.
    """
    # The line format uses none of these, and each costs every record a
    # lookup (the logging HOWTO's "Optimization" section): the caller's frame
    # and file most of all.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    try:
        writer = handler = LogWriter(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        # sys.stderr has no descriptor (an embedding program or a test put
        # an object in its place): there is no pipe or terminal behind it to
        # fill up, so it is written as it is.
        writer = None
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter(prefix))
    root = logging.getLogger("selectlab")
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler]
    root.propagate = False
    verbose = getattr(args, "verbose", False)
    if verbose:
        root.setLevel(logging.DEBUG)
    elif getattr(args, "quiet", False):
        root.setLevel(logging.WARNING)
    else:
        root.setLevel(logging.INFO)
    logging.getLogger("selectlab.trace").setLevel(logging.INFO if trace else logging.WARNING)
    logging.getLogger("selectlab.clients").setLevel(
        logging.INFO if verbose or trace else logging.WARNING)
    logging.getLogger("selectlab.stats").setLevel(logging.INFO)
    return writer


def run(main, argv=None):
    """Run ``main(argv)`` and exit with its status, turning :class:`Fatal` into one line.

    So is an output that cannot be written (``> /dev/full``, a full disk).
    A stdout whose reader has gone (``| head -1``) ends the command quietly
    with :data:`EXIT_BROKEN_PIPE`, as SIGPIPE ends a Unix tool (Python
    ignores SIGPIPE, so the write raises ``BrokenPipeError`` instead).
    """
    try:
        status = main(argv)
        sys.stdout.flush()
    except Fatal as exc:
        sys.stderr.write(f"{prog_name()}: error: {exc}\n")
        status = exc.status
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise       # a socket's peer, say: not the output's reader
        _discard_stdout()
        status = EXIT_BROKEN_PIPE
    except OSError as exc:
        if exc.errno not in _OUTPUT_ERRNOS or exc.filename is not None:
            raise
        sys.stderr.write(f"{prog_name()}: error: cannot write the output: "
                         f"{exc.strerror}\n")
        _discard_stdout()
        status = 1
    sys.exit(status or 0)


def _discard_stdout():
    """Point stdout at /dev/null: what is still buffered cannot be written either, and
    flushing it at exit would raise a second error (the signal module's "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _stdout_reader_gone():
    """True if stdout is a pipe (or socket) nobody reads any more: poll() says POLLERR or POLLHUP."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


# Errors that only writing the output gives here: a full disk or device, a quota, I/O.
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO}


def prog_name():
    """The command as it was run: ``python -m servers.echo_select``, or a console script's name."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        # A package run with -m runs its __main__ module: name the package.
        return f"python -m {spec.name.removesuffix('.__main__')}"
    return os.path.basename(sys.argv[0]) or "selectlab"
