"""Host name and addresses, as the quick guide's 1st and 2nd tasks print them.

    python -m clients.hostinfo [NAME ...]

Prints this host's name (``gethostname``), then for each NAME (default: this
host's name) its canonical name and every address, IPv4 and IPv6, each with
its hexadecimal form as the guide prints it::

    host name: tejo
    canonical hostname: tejo.tecnico.ulisboa.pt
    internet address: 193.136.138.142 (C1888A8E)

The hex is the address as one number (the guide's ``ntohl`` of ``s_addr``,
printed with ``%08lX``); for IPv6, all 128 bits.  A name that does not
resolve gets ``python -m clients.hostinfo: error: getaddrinfo: ...`` on
stderr, as every command's errors begin, and exit status 1, after the other
names are done.
"""

import socket
import sys

import cli


def address_hex(family, address):
    """``127.0.0.1`` -> ``7F000001``: the address as one big-endian number, in hex."""
    packed = socket.inet_pton(family, address)
    return packed.hex().upper()


def describe(name):
    """The guide's lines for ``name``; raises ``socket.gaierror``."""
    infos = socket.getaddrinfo(name, None, type=socket.SOCK_DGRAM, flags=socket.AI_CANONNAME)
    lines = [f"canonical hostname: {infos[0][3] or name}"]
    seen = set()
    for family, _type, _proto, _canon, sockaddr in infos:
        address = sockaddr[0]
        if (family, address) in seen or family not in (socket.AF_INET, socket.AF_INET6):
            continue
        seen.add((family, address))
        lines.append(f"internet address: {address} ({address_hex(family, address)})")
    return lines


def build_parser():
    parser = cli.Parser(
        prog="python -m clients.hostinfo",
        description="Prints this host's name, then the canonical name and every address "
                    "(with its hex form) of each NAME, as the quick guide's first two tasks do.")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="host names or addresses to look up (default: this host's name)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    host = socket.gethostname()
    sys.stdout.write(f"host name: {host}\n")
    status = 0
    for name in args.names or [host]:
        try:
            lines = describe(name)
        except socket.gaierror as exc:
            sys.stderr.write(f"{parser.prog}: error: getaddrinfo: {name}: {exc.strerror}\n")
            status = 1
            continue
        except UnicodeError:
            sys.stderr.write(f"{parser.prog}: error: getaddrinfo: {name}: not a valid host "
                             f"name\n")
            status = 1
            continue
        sys.stdout.write("".join(line + "\n" for line in lines))
    return status


def cli_main():
    """Entry point of the console script."""
    cli.run(main)


if __name__ == "__main__":
    cli_main()
