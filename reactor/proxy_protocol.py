"""The PROXY protocol's header, sans-IO: the client's real address, as a balancer sends it.

A balancer in TCP mode (HAProxy's ``send-proxy`` / ``send-proxy-v2``, nginx's
``proxy_protocol on``) connects to the server itself, so the server's peer is
the balancer.  With the PROXY protocol, the balancer's first bytes on each
connection say whose connection it relays.  The specification is HAProxy's
``doc/proxy-protocol.txt``; both of its versions are read here:

* **version 1**, one line of text: ``PROXY TCP4 192.0.2.1 198.51.100.7 56324
  443\\r\\n`` (or ``TCP6``, or ``UNKNOWN`` and anything up to the CRLF), at
  most 107 bytes with its CRLF;
* **version 2**, binary: a 12-byte signature, a version-and-command byte
  (``LOCAL``: the balancer's own connection, a health check; ``PROXY``: a
  relayed one), a family-and-transport byte, a 2-byte length, then the
  addresses and optional TLVs, which are skipped.

:func:`parse` takes the bytes received so far and says one of three things:
not enough yet (None), a :class:`Header` and how many bytes it took, or
:class:`HeaderError` naming what is wrong.  It refuses as early as it can:
bytes that cannot begin either version are an error at once, not after a
timeout.  The rules are the specification's, strictly: exactly one space
between fields, canonical addresses (no leading zeros), ports up to 65535, a
CRLF and never a lone CR or LF, version nibble 2, only the commands and
families it defines.  Transports other than TCP (UDP, UNIX) fall back to
UNSPEC, as the specification allows: the header is accepted and its
addresses ignored.

Who may send a header is the server's business (``--proxy-from``): the
specification warns that a server reachable directly must not believe one
from anybody.  What it leaves out: building headers (tests do it), and the
TLVs' meaning.
"""

import ipaddress
from typing import NamedTuple

V1_PREFIX = b"PROXY "
V1_MAX = 107                    # the longest line the specification allows, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16                   # signature, version and command, family, length

# The longest version 2 header accepted: its address block and TLVs may take
# up to 65,535 bytes by the specification, but a balancer sends a few dozen
# (with TLVs for TLS details, a few hundred).  A server may set its own limit.
V2_MAX = 4096

_LOCAL, _PROXY = 0x0, 0x1
# Family and transport byte -> (address family, address bytes for TCP, or 0: UNSPEC).
_V2_FAMILIES = {
    0x00: (None, 0),
    0x11: (4, 12), 0x12: (None, 12),      # TCP and UDP over IPv4
    0x21: (6, 36), 0x22: (None, 36),      # TCP and UDP over IPv6
    0x31: (None, 216), 0x32: (None, 216),  # UNIX stream and datagram
}


class HeaderError(ValueError):
    """The bytes are not a PROXY protocol header the specification allows; says which rule broke."""


class Header(NamedTuple):
    """A parsed header.

    ``source`` and ``destination`` are ``(host, port)`` as the balancer saw
    them, or None when the header says to use the connection's own
    addresses (v1 ``UNKNOWN``, v2 ``LOCAL``, or a transport other than TCP).
    ``length`` is how many bytes the header took: the application's own
    bytes start there.
    """

    version: int
    command: str            # "PROXY", "LOCAL" (v2) or "UNKNOWN" (v1)
    source: tuple | None
    destination: tuple | None
    length: int


def parse(data, v2_max=V2_MAX):
    """The header at the start of ``data``: a :class:`Header`, or None if more bytes are needed.

    Raises
    ------
    HeaderError
        as soon as ``data`` cannot be the start of a valid header.
    """
    data = bytes(data[:max(V1_MAX, v2_max)])
    if data[:1] == b"\r":
        return _parse_v2(data, v2_max)
    return _parse_v1(data)


# --- version 1 ---------------------------------------------------------------

def _parse_v1(data):
    if not V1_PREFIX.startswith(data[:len(V1_PREFIX)]):
        raise HeaderError("not a PROXY protocol header (it must start with 'PROXY ' or the "
                          "version 2 signature)")
    end = data.find(b"\r\n")
    if end < 0:
        if len(data) >= V1_MAX:
            raise HeaderError(f"version 1 header without CRLF in its first {V1_MAX} bytes")
        if b"\n" in data or (b"\r" in data and not data.endswith(b"\r")):
            raise HeaderError("version 1 header ends with a lone CR or LF, not CRLF")
        return None
    if end + 2 > V1_MAX:
        raise HeaderError(f"version 1 header longer than {V1_MAX} bytes")
    line = data[len(V1_PREFIX):end]
    if b"\r" in line or b"\n" in line:
        raise HeaderError("version 1 header holds a lone CR or LF")
    fields = line.split(b" ")
    if fields[0] == b"UNKNOWN":
        return Header(1, "UNKNOWN", None, None, end + 2)     # the rest of the line is ignored
    if fields[0] not in (b"TCP4", b"TCP6"):
        raise HeaderError(f"version 1 protocol {fields[0][:16]!r}: expected TCP4, TCP6 or "
                          f"UNKNOWN")
    if len(fields) != 5:
        raise HeaderError("version 1 header must be PROXY, protocol, two addresses and two "
                          "ports, separated by exactly one space")
    version = 4 if fields[0] == b"TCP4" else 6
    src, dst = (_v1_address(f, version) for f in fields[1:3])
    sport, dport = (_v1_port(f) for f in fields[3:5])
    return Header(1, "PROXY", (src, sport), (dst, dport), end + 2)


def _v1_address(field, version):
    text = field.decode("ascii", "replace")
    if version == 6 and ("." in text or "%" in text):
        raise HeaderError(f"version 1 address {text!r} is not an IPv6 address in hexadecimal")
    try:
        address = ipaddress.ip_address(text)    # refuses leading zeros in IPv4 (3.9.5+)
    except ValueError:
        raise HeaderError(f"version 1 address {text!r} is not a canonical IPv{version} "
                          f"address") from None
    if address.version != version:
        raise HeaderError(f"version 1 address {text!r} is not IPv{version}, as TCP{version} "
                          f"says")
    return str(address)


def _v1_port(field):
    if not field.isdigit() or (len(field) > 1 and field[:1] == b"0") or int(field) > 65535:
        raise HeaderError(f"version 1 port {field[:8]!r}: expected 0 to 65535, no leading zero")
    return int(field)


# --- version 2 ---------------------------------------------------------------

def _parse_v2(data, v2_max):
    if not V2_SIGNATURE.startswith(data[:len(V2_SIGNATURE)]):
        raise HeaderError("not a PROXY protocol header (it must start with 'PROXY ' or the "
                          "version 2 signature)")
    if len(data) < V2_FIXED:
        if len(data) > len(V2_SIGNATURE):
            _v2_check(data[12], data[13] if len(data) > 13 else None)
        return None
    command = _v2_check(data[12], data[13])
    length = V2_FIXED + int.from_bytes(data[14:16], "big")
    family, needed = _V2_FAMILIES[data[13]]
    if length > v2_max:
        raise HeaderError(f"version 2 header of {length} bytes, more than the {v2_max} allowed")
    if command == "PROXY" and length - V2_FIXED < needed:
        raise HeaderError(f"version 2 address block of {length - V2_FIXED} bytes, too short "
                          f"for its family (needs {needed})")
    if len(data) < length:
        return None
    if command == "LOCAL" or family is None:
        return Header(2, command, None, None, length)
    block = data[V2_FIXED:length]
    size = 4 if family == 4 else 16
    src = str(ipaddress.ip_address(block[:size]))
    dst = str(ipaddress.ip_address(block[size:2 * size]))
    sport = int.from_bytes(block[2 * size:2 * size + 2], "big")
    dport = int.from_bytes(block[2 * size + 2:2 * size + 4], "big")
    return Header(2, "PROXY", (src, sport), (dst, dport), length)


def _v2_check(ver_cmd, family):
    """The command of a version 2 header's 13th byte, once its 13th and 14th bytes are checked."""
    if ver_cmd >> 4 != 2:
        raise HeaderError(f"version 2 header with version {ver_cmd >> 4}: only 2 exists")
    if ver_cmd & 0xF not in (_LOCAL, _PROXY):
        raise HeaderError(f"version 2 command {ver_cmd & 0xF}: expected LOCAL (0) or PROXY (1)")
    if family is not None and family not in _V2_FAMILIES:
        raise HeaderError(f"version 2 family and transport byte {family:#04x} is not one the "
                          f"specification defines")
    return "LOCAL" if ver_cmd & 0xF == _LOCAL else "PROXY"
