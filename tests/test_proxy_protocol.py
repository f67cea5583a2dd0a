"""The PROXY protocol header parser, sans-IO: the specification's examples, its rules, and
properties on random and mutated input (tier 1)."""

import ipaddress
import socket
import struct
import subprocess
import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import DEADLINE, ROOT, recv_all, recv_exactly
from reactor.proxy_protocol import V1_MAX, V2_MAX, V2_SIGNATURE, Header, HeaderError, parse


def v1(proto, src, dst, sport, dport):
    return f"PROXY {proto} {src} {dst} {sport} {dport}\r\n".encode()


def v2(command=0x1, family=0x11, block=b"", version=0x2):
    return V2_SIGNATURE + bytes([version << 4 | command, family]) + struct.pack("!H", len(block)) \
        + block


def v2_inet(src, dst, sport, dport, tlvs=b""):
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    family = 0x11 if s.version == 4 else 0x21
    return v2(family=family, block=s.packed + d.packed + struct.pack("!HH", sport, dport) + tlvs)


# --- what HAProxy and nginx send ---------------------------------------------

@pytest.mark.parametrize("header, expected", [
    (v1("TCP4", "192.168.0.1", "192.168.0.11", 56324, 443),
     ("PROXY", ("192.168.0.1", 56324), ("192.168.0.11", 443))),
    (v1("TCP6", "2001:db8::1", "::1", 1, 65535),
     ("PROXY", ("2001:db8::1", 1), ("::1", 65535))),
    (b"PROXY UNKNOWN\r\n", ("UNKNOWN", None, None)),
    (b"PROXY UNKNOWN ffff:f::f ffff:f::f 65535 65535\r\n", ("UNKNOWN", None, None)),
    (v2_inet("127.0.0.9", "127.0.0.1", 40000, 9877),
     ("PROXY", ("127.0.0.9", 40000), ("127.0.0.1", 9877))),
    (v2_inet("::1", "2001:db8::2", 5, 6, tlvs=b"\x01\x00\x02h2"),
     ("PROXY", ("::1", 5), ("2001:db8::2", 6))),
    (v2(command=0x0, family=0x00), ("LOCAL", None, None)),
    (v2(command=0x0, family=0x11, block=bytes(12)), ("LOCAL", None, None)),     # a health check
    (v2(family=0x00), ("PROXY", None, None)),            # UNSPEC: use the connection's own
    (v2(family=0x12, block=bytes(12)), ("PROXY", None, None)),   # UDP: falls back to UNSPEC
    (v2(family=0x31, block=bytes(216)), ("PROXY", None, None)),  # UNIX: likewise
])
def test_the_headers_balancers_send_are_read(header, expected):
    """Each header the specification defines gives the client's address (or says to use the
    connection's own), and the application's bytes start right after it."""
    got = parse(header + b"hello\n")
    assert (got.command, got.source, got.destination) == expected
    assert got.length == len(header) and got.version == (2 if header[:1] == b"\r" else 1)


def test_the_longest_version_1_line_is_accepted_and_one_more_byte_is_not():
    """107 bytes with the CRLF is the specification's maximum; a server must accept it."""
    longest = b"PROXY UNKNOWN " + b"f" * (V1_MAX - 16) + b"\r\n"
    assert len(longest) == V1_MAX and parse(longest).length == V1_MAX
    with pytest.raises(HeaderError, match="107"):
        parse(b"PROXY UNKNOWN " + b"f" * (V1_MAX - 15) + b"\r\n")
    with pytest.raises(HeaderError, match="without CRLF"):
        parse(b"PROXY UNKNOWN " + b"f" * 200)


@pytest.mark.parametrize("data, rule", [
    (b"GET / HTTP/1.1\r\n", "must start with"),
    (b"\r\n\r\n\x00\r\nQUIX\n", "must start with"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "lone CR or LF"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rx", "lone CR or LF"),
    (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "expected TCP4"),
    (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "exactly one space"),
    (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "canonical"),
    (b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n", "is not IPv4"),
    (b"PROXY TCP6 ::ffff:1.2.3.4 ::1 1 2\r\n", "hexadecimal"),
    (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "hexadecimal"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "0 to 65535"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "leading zero"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "0 to 65535"),
    (v2(version=0x1), "only 2 exists"),
    (v2(command=0x2), "LOCAL"),
    (v2(family=0x13), "family"),
    (v2(family=0x11, block=bytes(11)), "too short"),
    (v2(family=0x21, block=bytes(12)), "too short"),
    (v2(block=bytes(V2_MAX)), "more than"),
])
def test_a_header_that_breaks_a_rule_is_refused_with_the_rule(data, rule):
    """Anything that does not exactly match the specification is refused (the connection is
    then closed), with a message that says which rule it broke."""
    with pytest.raises(HeaderError, match=rule):
        parse(data)


@pytest.mark.parametrize("start", [b"GET", b"\x16\x03\x01", b"\r\n\r\nX", b"PROXZ", b"\r\x00"])
def test_bytes_that_cannot_begin_a_header_are_refused_at_once(start):
    """A client that is not a balancer is turned away on its first bytes, not after a timeout."""
    with pytest.raises(HeaderError):
        parse(start)


# --- properties --------------------------------------------------------------

ipv4 = st.ip_addresses(v=4)
ipv6 = st.ip_addresses(v=6)
ports = st.integers(0, 65535)


def in_hex(address):
    """An IPv6 address as version 1 writes it: in hexadecimal, compressed as RFC 5952 says.

    Not ``str()``: from Python 3.13 on, it writes an IPv4-mapped address as
    ``::ffff:1.2.3.4``, which a TCP6 line may not hold.
    """
    packed = address.packed         # not .exploded: 3.13 writes that one dotted too
    groups = [format(int.from_bytes(packed[i:i + 2], "big"), "x") for i in range(0, 16, 2)]
    run = (0, 0)        # the longest run of zero groups, the first of equal ones
    for start in range(8):
        end = start
        while end < 8 and groups[end] == "0":
            end += 1
        if end - start > run[1] - run[0]:
            run = (start, end)
    if run[1] - run[0] < 2:
        return ":".join(groups)
    return ":".join(groups[:run[0]]) + "::" + ":".join(groups[run[1]:])


def test_the_hexadecimal_form_is_pythons_where_python_writes_hexadecimal():
    """The property tests' addresses are written the way Python writes them, wherever
    Python writes hexadecimal: so what the parser gives back can be compared with str()."""
    for text in ("::", "::1", "1::", "2001:db8::1", "2001:db8:0:0:1::1", "1:0:0:2:0:0:0:3",
                 "fe80::1:2:3:4", "1:2:3:4:5:6:7:8", "0:1:0:1:0:1:0:1"):
        address = ipaddress.IPv6Address(text)
        assert in_hex(address) == str(address), text
    assert in_hex(ipaddress.IPv6Address("::ffff:1.2.3.4")) == "::ffff:102:304"


@st.composite
def headers(draw):
    """A valid header, its source and destination (as the parser gives them back: str())."""
    kind = draw(st.sampled_from(["v1-4", "v1-6", "v2-4", "v2-6"]))
    family = ipv4 if kind.endswith("4") else ipv6
    src, dst, sport, dport = draw(family), draw(family), draw(ports), draw(ports)
    source, destination = (str(src), sport), (str(dst), dport)
    if kind.startswith("v1"):
        text = str if kind.endswith("4") else in_hex
        return v1("TCP" + kind[-1], text(src), text(dst), sport, dport), source, destination
    tlvs = draw(st.binary(max_size=64))
    return v2_inet(str(src), str(dst), sport, dport, tlvs), source, destination


MAPPED = ipaddress.IPv6Address("::ffff:1.2.3.4")    # which Python 3.13 writes with dots


@settings(max_examples=300, deadline=None)
@given(headers(), st.binary(max_size=64))
@example((v1("TCP6", in_hex(MAPPED), "::1", 1, 2), (str(MAPPED), 1), ("::1", 2)), b"")
def test_any_valid_header_gives_back_its_addresses_and_leaves_the_payload(header, payload):
    """Whatever the addresses and ports, the parser returns them and the header's exact length."""
    data, source, destination = header
    got = parse(data + payload)
    assert (got.source, got.destination, got.length) == (source, destination, len(data))


@settings(max_examples=200, deadline=None)
@given(headers())
def test_every_prefix_of_a_valid_header_waits_for_more(header):
    """A header that arrives a byte at a time is never refused half-way (None until complete)."""
    data = header[0]
    for end in range(len(data)):
        assert parse(data[:end]) is None, data[:end]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_give_none_a_header_or_a_header_error(data):
    """No input makes the parser fail in any other way (the server's one log line depends on it)."""
    try:
        got = parse(data)
    except HeaderError:
        return
    assert got is None or (isinstance(got, Header) and 0 < got.length <= len(data))


@settings(max_examples=500, deadline=None)
@given(headers(), st.data())
def test_a_mutated_header_is_refused_or_read_within_its_bytes(header, data):
    """One byte changed anywhere: the parser refuses it, waits, or reads a header no longer than
    the bytes it was given; never anything else."""
    raw = bytearray(header[0])
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] = data.draw(st.integers(0, 255))
    try:
        got = parse(bytes(raw))
    except HeaderError:
        return
    assert got is None or got.length <= len(raw)


# --- on a server: --proxy-protocol ---------------------------------------------

def _ended(sock):
    """True once the server has ended ``sock`` (EOF or reset)."""
    try:
        return recv_all(sock) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("version", [1, 2])
def test_the_client_in_the_header_is_the_one_served_and_logged(start_server, version):
    """Behind a balancer, the echo comes back without the header, and the log names the client
    the header gives (127.0.0.9:5555), not the balancer."""
    server = start_server("servers.echo_select", "--proxy-protocol", "-v")
    header = (v1("TCP4", "127.0.0.9", "127.0.0.1", 5555, server.port) if version == 1
              else v2_inet("127.0.0.9", "127.0.0.1", 5555, server.port))
    with socket.create_connection(server.address, timeout=DEADLINE) as c:
        c.sendall(header + b"ping\n")
        assert recv_exactly(c, 5) == b"ping\n"
    server.wait_for_log("127.0.0.9:5555 closed (peer eof): in ")
    assert f"127.0.0.9:5555: PROXY v{version} from 127.0.0.1:" in server.log()


def test_the_hello_server_says_goodbye_to_the_real_client(start_server):
    """The worksheet's `Goodbye, ADDR` names the client the balancer relays."""
    server = start_server("servers.hello", "--model", "select", "--goodbye", "--proxy-protocol")
    with socket.create_connection(server.address, timeout=DEADLINE) as c:
        c.sendall(v2_inet("127.0.0.9", "127.0.0.1", 4000, server.port) + b"quit\n")
        assert recv_all(c) == b"Goodbye, 127.0.0.9\n"


@pytest.mark.parametrize("opening", [b"GET / HTTP/1.0\r\n\r\n", b"PROXY TCP4 1.2.3.4\n",
                                     v2(version=0x3), b"PROXY " + b"x" * 200])
def test_a_bad_header_costs_that_connection_only(start_server, opening):
    """Garbage, a lone LF, a wrong version, an endless line: that connection is closed with one
    log line, nothing of it reaches the protocol, and the next client is served."""
    server = start_server("servers.echo_select", "--proxy-protocol")
    with socket.create_connection(server.address, timeout=DEADLINE) as c:
        c.sendall(opening)
        assert _ended(c)
    server.wait_for_log("refused:")
    assert server.log().count("refused:") == 1
    with socket.create_connection(server.address, timeout=DEADLINE) as c:
        c.sendall(b"PROXY UNKNOWN\r\nok")
        assert recv_exactly(c, 2) == b"ok"


def test_a_header_that_dribbles_in_too_slowly_is_cut_off(start_server):
    """A client that sends part of a header and waits is closed at --proxy-timeout, not held."""
    server = start_server("servers.echo_select", "--proxy-protocol", "--proxy-timeout", "0.3")
    with socket.create_connection(server.address, timeout=DEADLINE) as c:
        c.sendall(b"PROXY TCP4 ")
        assert _ended(c)
    server.wait_for_log("no complete PROXY header within 0.3 s")


def test_a_header_from_outside_proxy_from_is_not_believed(start_server):
    """Only the named balancers may say who a client is: from anywhere else, even a valid
    header is refused (or any client could claim any address)."""
    server = start_server("servers.echo_select", "--proxy-protocol", "--proxy-from", "10.0.0.0/8")
    with socket.create_connection(server.address, timeout=DEADLINE) as c:
        c.sendall(v1("TCP4", "127.0.0.9", "127.0.0.1", 5555, server.port) + b"x")
        assert _ended(c)
    server.wait_for_log("not from a trusted balancer")


def test_a_bad_proxy_from_is_one_line_on_stderr():
    """A typo in --proxy-from is a one-line error and exit status 2, not a traceback."""
    proc = subprocess.run([sys.executable, "-m", "servers.echo_select", "--proxy-protocol",
                           "--proxy-from", "10.0.0.300", "0"], capture_output=True, cwd=ROOT,
                          timeout=DEADLINE)
    assert proc.returncode == 2 and proc.stderr.decode().count("\n") == 1
    assert "--proxy-from" in proc.stderr.decode() and "Traceback" not in proc.stderr.decode()
