"""What the contenders share: their command line, their listening socket, and how they stop.

Each contender ends with ``sys.exit(run(serve_until_stopped))`` or, on asyncio, ``sys.exit(run_asyncio(...))``.
"""

import argparse
import asyncio
import os
import signal
import socket
import sys

from epollbook.examples.command_line import add_address_arguments, announce
from epollbook.lifeline import exit_with_owner
from epollbook.servers.running import BACKLOG


def listen(description, argv=None):
    """Read ``--host``, ``--port``, ``--backlog`` and return a listening socket (blocking), announced.

    Bad options end the program with argparse's one line and status 2; an
    address it cannot listen on, with one line and status 1.
    """
    parser = argparse.ArgumentParser(description=description)
    add_address_arguments(parser, BACKLOG, f"default {BACKLOG}, as the book's corrected servers")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    exit_with_owner()  # started by epollbook.launch: gone when the launcher is
    try:
        listener = socket.create_server((args.host, args.port), backlog=args.backlog)
    except OSError as error:
        parser.exit(1, f"cannot listen on {args.host}:{args.port}: {os.strerror(error.errno)}\n")
    return listener


class Stopped(Exception):
    """Raised by the signal handler of a contender that has no loop of its own to wake (selectors)."""


def stop_on_signals():
    """Make SIGINT and SIGTERM raise ``Stopped(name of the signal)`` in the main thread."""
    def stop(signum, frame):
        raise Stopped(signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)


def run_asyncio(start_serving, description, loop_factory=asyncio.new_event_loop):
    """Serve with ``await start_serving(listener)`` on a loop from *loop_factory* until SIGINT or SIGTERM; return 0.

    *start_serving* returns an ``asyncio.Server``; it is closed on the signal,
    and the program prints which signal stopped it.
    """
    listener = listen(description)
    loop = loop_factory()
    stopped_by = []

    async def serve():
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, lambda signum=signum: (stopped_by.append(signum.name), stop.set()))
        server = await start_serving(listener)
        announce(listener)
        await stop.wait()
        server.close()
        # A coroutine per connection (streams) is still waiting for its request: end it, so its finally closes.
        waiting = asyncio.all_tasks() - {asyncio.current_task()}
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)

    try:
        loop.run_until_complete(serve())
    finally:
        loop.close()
    print(f"Stopped by {stopped_by[0]}.", flush=True)
    return 0
