"""What the corrected servers share outside their loops: their limits, their command line, and how they stop.

Each server module ends with ``main(TheServer)``::

    python -m epollbook.servers.level --port 8080 --idle-timeout 2 --show-requests

``main`` reads the address (``--host``, ``--port``, ``--backlog``, as the
article's examples do, from ``examples/command_line.py``), the ``Limits``,
and the server's own options; starts the server; announces its address once
it listens; serves until SIGINT or SIGTERM, which end it cleanly: every
connection closed, one line printed, exit status 0.
"""

import argparse
import dataclasses
import os
import signal
import sys

from epollbook.examples.command_line import add_address_arguments, announce
from epollbook.lifeline import exit_with_owner
from epollbook.servers.framing import MAX_HEAD

BACKLOG = 128
"""The corrected servers' listen backlog, unless told otherwise: room for ``ab -c 100``.

The article's ``listen(1)`` makes the kernel drop the SYNs of clients beyond
the second, and they retry a second later. The kernel caps any backlog at
``net.core.somaxconn``.
"""


@dataclasses.dataclass(frozen=True)
class Limits:
    """How long and how much a server gives each connection.

    ``request_timeout``: seconds from accepting a connection to the end of its
    request's head, however steadily it trickles in (a whole-request deadline:
    a per-``recv()`` timeout lets a slow-loris sending a byte every few seconds
    stay for ever). ``idle_timeout``: seconds a connection may go without
    sending a byte while we wait for its request, or without taking a byte of
    the answer. ``max_head``: the longest request head, in bytes.
    ``linger_seconds`` and ``linger_bytes``: after the answer, how long and how
    much the server keeps reading (and discarding) before it closes, so that
    bytes the client sent beyond its request do not make the close a reset
    that destroys the answer (the lingering close).
    """

    request_timeout: float = 10.0
    idle_timeout: float = 5.0
    max_head: int = MAX_HEAD
    linger_seconds: float = 2.0
    linger_bytes: int = 64 * 1024

    @staticmethod
    def add_arguments(parser):
        """Add ``--request-timeout``, ``--idle-timeout`` and ``--max-head`` to *parser*; return it."""
        default = Limits()
        parser.add_argument("--request-timeout", type=_seconds, default=default.request_timeout, metavar="SECONDS",
                            help="a request's head must be complete this long after its connection is accepted "
                                 f"(default {default.request_timeout:g})")
        parser.add_argument("--idle-timeout", type=_seconds, default=default.idle_timeout, metavar="SECONDS",
                            help="close a connection that sends nothing (or takes nothing) for this long "
                                 f"(default {default.idle_timeout:g})")
        parser.add_argument("--max-head", type=positive_whole, default=default.max_head, metavar="BYTES",
                            help=f"answer 431 to a longer request head (default {default.max_head})")
        return parser

    @classmethod
    def from_arguments(cls, args):
        """The ``Limits`` named by parsed command-line *args*."""
        return cls(request_timeout=args.request_timeout, idle_timeout=args.idle_timeout, max_head=args.max_head)


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time: give seconds above 0, such as 0.5 or 10")
    return value


def positive_whole(text):
    """An ``argparse`` type: a whole number above 0, or a one-line complaint."""
    if not (text.isascii() and text.isdigit()) or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return int(text)


def command_line(server_class, description=None):
    """The ``argparse`` parser ``main(server_class)`` reads its command line with; a program may add options.

    Its options: the address (``--host``, ``--port``, ``--backlog``), the
    ``Limits``, ``--show-requests`` and *server_class*'s own (its
    ``add_arguments``). *description* defaults to the first line of the
    docstring of *server_class*'s module.
    """
    if description is None:
        description = (sys.modules[server_class.__module__].__doc__ or "").split("\n", 1)[0]
    parser = argparse.ArgumentParser(description=description)
    add_address_arguments(parser, BACKLOG, f"default {BACKLOG}; the article's listen(1) holds 2")
    Limits.add_arguments(parser)
    parser.add_argument("--show-requests", action="store_true",
                        help="print each request's head (off by default: printing slows a server under ab)")
    server_class.add_arguments(parser)
    return parser


def main(server_class, argv=None):
    """Run a server of *server_class* from the command line until SIGINT or SIGTERM; return the exit status, 0.

    *server_class* is called as ``server_class((host, port), backlog, limits,
    show_requests=..., **its_options)``, where its options come from its
    ``add_arguments(parser)`` and ``options(args)``, and must provide
    ``listener``, ``serve_forever()``, ``stop()`` (safe in a signal handler),
    ``close()`` and ``connection_count``. Bad options end the program with
    argparse's one-line message and exit status 2; an address it cannot
    listen on, with one line and status 1.
    """
    parser = command_line(server_class)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    exit_with_owner()  # started by epollbook.launch: gone when the launcher is
    try:
        server = server_class((args.host, args.port), args.backlog, Limits.from_arguments(args),
                              show_requests=args.show_requests, **server_class.options(args))
    except OSError as error:  # EADDRINUSE, EACCES, EADDRNOTAVAIL: a sentence, not a traceback
        parser.exit(1, f"cannot listen on {args.host}:{args.port}: {os.strerror(error.errno)}\n")
    stopped_by = []

    def stop(signum, frame):
        # Only a note and a wake-up: the loop ends at its next turn, between two whole steps,
        # so no connection is ever left half accepted or half closed.
        stopped_by.append(signal.Signals(signum).name)
        server.stop()

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        announce(server.listener)
        server.serve_forever()
        open_connections = server.connection_count
    finally:
        server.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(f"Stopped by {stopped_by[0] if stopped_by else 'stop()'}; "
          f"closed {open_connections} open connection{'s' * (open_connections != 1)}.", flush=True)
    return 0
