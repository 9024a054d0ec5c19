"""Example 3 (epoll, level-triggered) with every defect of the errata fixed.

The article's example 3 spins and leaks when a client closes early, dies on a
reset, spins on ``EPOLLOUT`` with nothing to write, never forgets a closed
connection, decodes arbitrary bytes and buffers an endless request for ever.
This is the same loop with those fixed; what it shares with ``edge`` lives in
``skeleton.py``, and this file holds only what is level-triggered about it.

    python -m epollbook serve level
    python -m epollbook.servers.level --port 8080 --idle-timeout 2 --show-requests
"""

import select
import sys

from epollbook.servers.running import main
from epollbook.servers.skeleton import ACCEPT_PAUSE, EpollServer


class LevelServer(EpollServer):
    """Level-triggered: whatever a step leaves for later, the next ``poll()`` reports again."""

    listener_events = select.EPOLLIN
    reading_events = select.EPOLLIN
    # EPOLLOUT only while an answer waits for buffer space: a socket with room to write is
    # reported as writable at every poll(), so a registration with nothing to write is a spin.
    writing_events = select.EPOLLOUT
    # One recv() or accept() per event, as in the article: what is left is reported again.
    reads_per_event = 1
    accepts_per_event = 1

    def not_drained(self, fd):
        pass  # the kernel reports it again at the next poll(), for as long as anything is left

    def out_of_descriptors(self):
        # The connection stays queued, so the listener stays readable and every poll() would
        # report it at once, for ever: a spin that also starves the connections we could serve.
        # Stop watching it for a moment instead; closing connections free descriptors meanwhile.
        self._pause_accepting(ACCEPT_PAUSE)
        return False


if __name__ == "__main__":
    sys.exit(main(LevelServer))
