"""Where the article's servers listen: the book's only addition to their code.

The article hard-codes ``bind(('0.0.0.0', 8080))`` and ``listen(1)``. The book's
copies take the address from the command line instead, so that two servers never
fight over one port and nothing listens beyond this machine unless asked::

    python -m epollbook.examples.example2 --host 127.0.0.1 --port 0 --backlog 1

``--port 0`` (the default) asks the kernel for a free port. ``announce()`` prints
the address once the socket listens: the book's launcher waits for that line
instead of probing with a connection, which example 1 (it serves exactly one)
could not spare.
"""

import argparse
import ipaddress
import sys


def _ipv4_address(text):
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an IPv4 address; the article's servers use AF_INET, "
            "so give one such as 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
        ) from None


def _port(text):
    if not (text.isascii() and text.isdigit()) or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give 0 (a free port) or 1-65535")
    return int(text)


def _backlog(text):
    # listen() takes a C int; the kernel then caps it at net.core.somaxconn.
    if not (text.isascii() and text.isdigit()) or int(text) > 2**31 - 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a backlog: give a whole number from 0 to {2**31 - 1}")
    return int(text)


def add_address_arguments(parser, backlog=1, backlog_help="default 1, as in the article"):
    """Add ``--host``, ``--port`` and ``--backlog`` to *parser*; return *parser*.

    The host and port default to 127.0.0.1 and a free port; the backlog to
    *backlog* (the article's 1 unless a server says otherwise), which
    *backlog_help* explains after "length of the listen queue".
    """
    parser.add_argument("--host", type=_ipv4_address, default="127.0.0.1",
                        help="IPv4 address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=_port, default=0,
                        help="TCP port (default 0: a free port chosen by the kernel)")
    parser.add_argument("--backlog", type=_backlog, default=backlog,
                        help=f"length of the listen queue ({backlog_help})")
    return parser


def parse_address(argv=None):
    """Return ``(host, port, backlog)`` from *argv* (default: ``sys.argv[1:]``).

    Bad values end the program with a one-line usage message (argparse's exit 2).
    """
    parser = add_address_arguments(argparse.ArgumentParser(description="Run one of the article's servers."))
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return args.host, args.port, args.backlog


def announce(serversocket):
    """Print the address *serversocket* listens on, as a URL, and flush it at once."""
    host, port = serversocket.getsockname()[:2]
    print(f"Listening on http://{host}:{port}/", flush=True)

