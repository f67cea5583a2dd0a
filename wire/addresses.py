"""Socket addresses as text: in the logs, the ``listening on HOST:PORT`` line, the Hello server's goodbye.

An IPv4 client of a dual-stack IPv6 socket arrives as ``::ffff:127.0.0.1``;
both functions show it as plain IPv4.
"""


def peer_host(addr):
    """The host of ``addr`` as the worksheet's ``inet_ntoa`` gives it: no port, IPv4 plainly."""
    host = addr[0] if isinstance(addr, tuple) else str(addr)
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]     # an IPv4 client on a dual-stack socket
    return host


def format_address(addr):
    """``('::ffff:127.0.0.1', 5000, 0, 0)`` -> ``127.0.0.1:5000``; IPv6 in brackets."""
    if not isinstance(addr, tuple):
        return str(addr) or "?"
    host = peer_host(addr)
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
