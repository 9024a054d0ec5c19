"""A server's own epoll events, recorded without touching its code.

    python -m epollbook.trace example3                   # one line per event on stderr
    python -m epollbook.trace --to events.txt example3 --port 8080

    server = serve("example3", trace=True)               # from epollbook.launch
    ...
    server.trace()        # [Event(time=..., kind='poll', fd=4, mask=1), ...]

How it works
------------

The server runs exactly as ``python -m epollbook serve NAME`` runs it (its own
file, through ``runpy``), except that ``select.epoll`` is first replaced by
``RecordingEpoll``. That stand-in hands every call on to a real epoll object
and writes one line for each change to the interest list (``register``,
``modify``, ``unregister``) and for each event ``poll()`` returns. The real
type cannot be subclassed (``select.epoll`` is not an acceptable base type),
hence a stand-in with the same methods. ``selectors.EpollSelector`` (and so
asyncio) gets it too. What the server prints is untouched: the events go to
their own file, or to stderr when run by hand.

Each line is ``SECONDS KIND FD MASK``: ``time.monotonic()`` in the server (the
clock every process of the machine shares, so a notebook can place its own
moments on the same axis), ``register``/``modify``/``unregister``/``poll``, the
file descriptor, and the event mask as names (``EPOLLIN|EPOLLHUP``; ``-`` for an
``unregister``). A spinning server reports tens of thousands of events a
second, so recording stops after ``limit`` events, with one last line of kind
``truncated``: a trace is bounded like every other buffer of the book.
"""

import argparse
import contextlib
import os
import select
import sys
import time
from typing import NamedTuple

from epollbook.probes import EPOLL_EVENTS, epoll_event_names

LIMIT = 100_000
"""Events recorded at most, by default (a few MB of trace)."""

KINDS = ("register", "modify", "unregister", "poll", "truncated")


class Event(NamedTuple):
    """One line of a trace: what happened to *fd* at *time* (``time.monotonic()`` seconds)."""

    time: float
    kind: str    # 'register', 'modify', 'unregister', 'poll' (an event poll() returned), or 'truncated'
    fd: int      # -1 for 'truncated'
    mask: int    # the events asked for (register, modify) or reported (poll); 0 otherwise

    @property
    def names(self):
        """The mask as names: ``'EPOLLIN|EPOLLHUP'``."""
        return epoll_event_names(self.mask)

    def __str__(self):
        return f"{self.time:.6f} {self.kind} {self.fd} {self.names if self.kind != 'unregister' else '-'}"


def parse_trace(text):
    """The events in the text of a trace, a list of ``Event``; a last line cut short (still being written) is left out.

    Raises ``ValueError`` naming the first complete line that is not a trace line.
    """
    events = []
    lines = text.split("\n")
    for line in lines[:-1]:  # the part after the last newline is not a whole line yet
        if line.strip():
            events.append(parse_line(line))
    return events


def parse_line(line):
    """One ``Event`` from one line of a trace; raises ``ValueError`` if it is not one."""
    try:
        seconds, kind, fd, names = line.split()
        if kind not in KINDS:
            raise ValueError
        mask = 0 if names in ("-", "0") else sum(_bit(name) for name in names.split("|"))
        return Event(float(seconds), kind, int(fd), mask)
    except ValueError:
        raise ValueError(f"not a line of an epoll trace: {line!r}") from None


def _bit(name):
    if name.startswith("0x"):
        return int(name, 16)
    if name not in EPOLL_EVENTS:
        raise ValueError
    return EPOLL_EVENTS[name]


# -- recording ---------------------------------------------------------------------------------------


class _Recorder:
    """Writes events as lines to one file descriptor, up to a limit; each line in one write(), unbuffered."""

    def __init__(self, fd, limit=LIMIT):
        self.fd, self.left = fd, limit

    def record(self, kind, fd, mask):
        if self.left <= 0:
            return
        self.left -= 1
        event = Event(time.monotonic(), kind, fd, mask)
        if self.left == 0:
            event = Event(event.time, "truncated", -1, 0)
        os.write(self.fd, f"{event}\n".encode())


_recorder = None  # set by record_to(); RecordingEpoll writes through it


def _fileno(fd):
    return fd if isinstance(fd, int) else fd.fileno()


class RecordingEpoll:
    """A stand-in for ``select.epoll`` that records what it is asked and what it reports.

    Same arguments, return values and exceptions as ``select.epoll``; only
    calls that succeed are recorded.
    """

    def __init__(self, sizehint=-1, flags=0, *, _epoll=None):
        self._epoll = _epoll if _epoll is not None else _REAL_EPOLL(sizehint, flags)

    @classmethod
    def fromfd(cls, fd):
        return cls(_epoll=_REAL_EPOLL.fromfd(fd))

    def register(self, fd, eventmask=select.EPOLLIN | select.EPOLLPRI | select.EPOLLOUT):
        self._epoll.register(fd, eventmask)
        _recorder.record("register", _fileno(fd), eventmask)

    def modify(self, fd, eventmask):
        self._epoll.modify(fd, eventmask)
        _recorder.record("modify", _fileno(fd), eventmask)

    def unregister(self, fd):
        self._epoll.unregister(fd)
        _recorder.record("unregister", _fileno(fd), 0)

    def poll(self, timeout=None, maxevents=-1):
        events = self._epoll.poll(timeout, maxevents)
        for fd, mask in events:
            _recorder.record("poll", fd, mask)
        return events

    def fileno(self):
        return self._epoll.fileno()

    def close(self):
        self._epoll.close()

    @property
    def closed(self):
        return self._epoll.closed

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return f"<RecordingEpoll of {self._epoll!r}>"


_REAL_EPOLL = select.epoll


def record_to(fd, limit=LIMIT):
    """From now on, every ``select.epoll`` this process makes records its events to file descriptor *fd*."""
    global _recorder
    _recorder = _Recorder(fd, limit)
    select.epoll = RecordingEpoll
    if "selectors" in sys.modules:  # its EpollSelector took the real type when it was imported
        sys.modules["selectors"].EpollSelector._selector_cls = RecordingEpoll


# -- the command line, and the launcher's side -------------------------------------------------------


class TraceFile:
    """Where ``serve(name, trace=True)`` has a server write its events: a temporary file, read back as events.

    ``command()`` is the start of the server's command line; ``events()`` what
    it has recorded so far; ``close()`` keeps the events and removes the file.
    """

    def __init__(self, limit=LIMIT):
        import tempfile

        handle, self.path = tempfile.mkstemp(prefix="epollbook-trace-", suffix=".txt")
        os.close(handle)
        self.limit = limit
        self._kept = None

    def command(self):
        """The arguments after ``python`` that run a server with its events recorded here (the name follows)."""
        return ["-m", "epollbook.trace", "--to", self.path, "--limit", str(self.limit)]

    def events(self):
        """The events recorded so far, in order, as a list of ``Event``."""
        if self._kept is not None:
            return list(self._kept)
        with open(self.path) as trace:
            return parse_trace(trace.read())

    def close(self):
        """Keep what was recorded, remove the file; safe to call more than once."""
        if self._kept is None:
            try:
                self._kept = self.events()
            except FileNotFoundError:
                self._kept = []
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def main(argv=None):
    """``python -m epollbook.trace [--to FILE] [--limit N] NAME [--host H] [--port P] [--backlog N]``."""
    from epollbook import __main__ as command_line
    from epollbook import catalog

    parser = argparse.ArgumentParser(
        prog="python -m epollbook.trace",
        description="Run one of the book's servers with every epoll event it sees recorded, one line each.")
    parser.add_argument("--to", metavar="FILE", help="append the events to FILE (default: stderr)")
    parser.add_argument("--limit", type=int, default=LIMIT, metavar="N",
                        help=f"record at most N events (default {LIMIT:,})")
    parser.add_argument("name", choices=list(catalog.SERVERS), metavar="NAME",
                        help="a server from `python -m epollbook list`: " + ", ".join(catalog.SERVERS))
    args, server_arguments = parser.parse_known_args(argv)
    fd = 2 if args.to is None else os.open(args.to, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    record_to(fd, args.limit)
    return command_line.main(["serve", args.name, *server_arguments])


if __name__ == "__main__":
    sys.exit(main())
