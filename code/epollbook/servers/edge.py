"""Example 4 (epoll, edge-triggered) with every defect of the errata fixed.

The article's example 4 spins for ever in ``while True: recv()`` once a client
closes (``b''`` is not an exception), swallows resets and ``EMFILE`` in a broad
``except socket.error``, and shares example 3's other defects. This is the
same loop with those fixed; what it shares with ``level`` lives in
``skeleton.py``, and this file holds only what is edge-triggered about it.

    python -m epollbook serve edge
    python -m epollbook.servers.edge --port 8080 --reads-per-event 4
"""

import os
import select
import sys

from epollbook.servers.running import main, positive_whole
from epollbook.servers.skeleton import EpollServer


class EdgeServer(EpollServer):
    """Edge-triggered: each step drains until ``BlockingIOError`` or ``b''``, and a capped step is revisited."""

    listener_events = select.EPOLLIN | select.EPOLLET
    # Registered once for both directions and never modified: an edge comes only when something
    # changes (bytes arrive, buffer space frees up), so EPOLLOUT costs nothing while there is
    # nothing to write, and each connection's step decides what an event means.
    reading_events = writing_events = select.EPOLLIN | select.EPOLLOUT | select.EPOLLET
    accepts_per_event = 64

    def __init__(self, *args, reads_per_event=16, **keywords):
        # A cap on the drain: one client sending without pause must not keep the loop from the others.
        self.reads_per_event = reads_per_event
        # One descriptor kept in reserve for the day accept() fails with EMFILE (see out_of_descriptors).
        self._reserve = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            super().__init__(*args, **keywords)
        except BaseException:
            os.close(self._reserve)
            raise

    def not_drained(self, fd):
        # No new edge will come for what is already there: run the step again before the next wait.
        self._revisit.append(fd)

    def out_of_descriptors(self):
        # The failed connection stays queued and the queue did not change, so no edge will ever
        # report the listener again: it would starve. Free the reserve, take the connection and
        # close it at once (its client learns now, instead of waiting for ever), take the reserve
        # back, and go on draining the queue to BlockingIOError, which re-arms the edge.
        # Linux gives EMFILE before it looks at the queue, so the queue may also be empty:
        # then this accept() says BlockingIOError, the drain is complete, and going on would spin.
        os.close(self._reserve)
        try:
            sock, _ = self.listener.accept()
            sock.close()
            return True
        except BlockingIOError:
            return False
        except OSError:  # ECONNABORTED: its client gave up; the next one may be waiting
            return True
        finally:
            self._reserve = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    def close(self):
        super().close()
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--reads-per-event", type=positive_whole, default=16, metavar="N",
                            help="recv() calls one event may take before the others' turn (default 16)")

    @classmethod
    def options(cls, args):
        return {"reads_per_event": args.reads_per_event}


if __name__ == "__main__":
    sys.exit(main(EdgeServer))
