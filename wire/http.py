"""Just enough HTTP/1.1 (RFC 9112) for the monitor: a sans-IO reader of one request, and replies.

:class:`RequestReader` is fed bytes as they arrive and returns a
:class:`Request` once a whole one is there, or raises :class:`HttpError`
with the status to answer (400, 405, 411, 413, 431, 501, 505).  Everything is
bounded: the request line and headers together (``MAX_HEAD``), the body
(``MAX_BODY``, and only with ``Content-Length``: a chunked body is refused),
the number of headers.  One request per connection: every reply says
``Connection: close`` (the monitor's pages are small; its event stream is
one long reply).
"""

import re
from urllib.parse import parse_qsl

MAX_HEAD = 8 * 1024      # request line and headers (nginx's large_client_header_buffers: 8k)
MAX_HEADERS = 64
MAX_BODY = 4 * 1024
METHODS = ("GET", "HEAD", "POST")

REASONS = {
    200: "OK", 303: "See Other", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
    421: "Misdirected Request",
    413: "Content Too Large", 415: "Unsupported Media Type", 431:
    "Request Header Fields Too Large", 501: "Not Implemented", 503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                   b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


_DIGITS = re.compile(r"[0-9]{1,18}")      # ASCII digits only: str.isdigit() takes "²"


class HttpError(Exception):
    """A request that gets ``status`` and ``message`` as its answer, and then a close."""

    def __init__(self, status, message, headers=()):
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.headers = headers      # more header lines for the reply (405's Allow)


class Request:
    """One parsed request: ``method``, ``path``, ``query`` (a dict), ``headers`` (lower-case names), ``body``."""

    __slots__ = ("method", "target", "path", "query", "headers", "body")

    def __init__(self, method, target, headers, body):
        self.method = method
        self.target = target
        path, _, query = target.partition("?")
        self.path = path.partition("#")[0] or "/"
        self.query = dict(parse_qsl(query))
        self.headers = headers
        self.body = body

    def __repr__(self):
        return f"<Request {self.method} {self.target}>"


class RequestReader:
    """Bytes in, one :class:`Request` out (sans-IO: no socket here)."""

    def __init__(self, max_head=MAX_HEAD, max_body=MAX_BODY):
        self.max_head = max_head
        self.max_body = max_body
        self._buf = bytearray()
        self._head = None       # (method, target, headers) once the head is read
        self._length = 0

    def feed(self, data):
        """Add ``data``; return the :class:`Request` once it is whole, else None.

        Raises
        ------
        HttpError
            for a request that is malformed, too large, or not one we serve.
        """
        self._buf += data
        if self._head is None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > self.max_head:
                    raise HttpError(431, "the request line and headers are longer than "
                                         f"{self.max_head} bytes")
                return None
            if end > self.max_head:
                raise HttpError(431, f"the request line and headers are longer than "
                                     f"{self.max_head} bytes")
            head = bytes(self._buf[:end])
            del self._buf[:end + 4]
            self._head = _parse_head(head)
            self._length = _body_length(*self._head, self.max_body)
        if len(self._buf) < self._length:
            return None
        method, target, headers = self._head
        return Request(method, target, headers, bytes(self._buf[:self._length]))


def _parse_head(head):
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise HttpError(400, "the request line is not 'METHOD TARGET HTTP/1.1'")
    method, target, version = parts
    if not set(method) <= _TOKEN:
        raise HttpError(400, "the method is not a token")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if version.startswith(b"HTTP/"):
            raise HttpError(505, "only HTTP/1.1 and HTTP/1.0 are served")
        raise HttpError(400, "the request line does not end with an HTTP version")
    method = method.decode("ascii")
    if method not in METHODS:
        raise HttpError(501 if method.isupper() else 400, f"method {method} is not served")
    try:
        target = target.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "the target is not ASCII") from None
    if not target.startswith("/"):
        raise HttpError(400, "the target must be a path starting with /")
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, f"more than {MAX_HEADERS} header fields")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or not set(name) <= _TOKEN:
            # Includes obsolete line folding and a space before the colon,
            # which RFC 9112 says to reject (request smuggling).
            raise HttpError(400, "a header line is not 'Name: value'")
        try:
            text = value.strip(b" \t").decode("latin-1")
        except UnicodeDecodeError:     # pragma: no cover - latin-1 decodes anything
            raise HttpError(400, "a header value cannot be read") from None
        key = name.decode("ascii").lower()
        if key in headers:
            if key in ("content-length", "host"):
                raise HttpError(400, f"{key} given twice")
            headers[key] += ", " + text
        else:
            headers[key] = text
    if version == b"HTTP/1.1" and "host" not in headers:
        raise HttpError(400, "an HTTP/1.1 request needs a Host header")
    return method, target, headers


def _body_length(method, _target, headers, max_body):
    if "transfer-encoding" in headers:
        raise HttpError(501, "a chunked or encoded body is not served; send Content-Length")
    length = headers.get("content-length")
    if length is None:
        if method == "POST":
            raise HttpError(411, "a POST needs Content-Length")
        return 0
    if not _DIGITS.fullmatch(length):
        raise HttpError(400, "Content-Length is not a number")
    length = int(length)
    if length > max_body:
        raise HttpError(413, f"the body is longer than {max_body} bytes")
    return length


def response(status, body=b"", content_type="text/plain; charset=utf-8", headers=(),
             head_only=False):
    """A whole reply (``Connection: close``) as bytes."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}",
             f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}",
             "Cache-Control: no-store",
             "Connection: close",
             *headers]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


def error_response(error):
    """The reply to an :class:`HttpError`: its status, and its message as the body."""
    return response(error.status, (error.message + "\n").encode(), headers=error.headers)


def stream_head(content_type="text/event-stream; charset=utf-8"):
    """The head of an endless reply (``/events``): no length; the end of the connection ends it."""
    return ("HTTP/1.1 200 OK\r\n"
            f"Content-Type: {content_type}\r\n"
            "Cache-Control: no-store\r\n"
            "X-Accel-Buffering: no\r\n"
            "Connection: close\r\n\r\n").encode()
