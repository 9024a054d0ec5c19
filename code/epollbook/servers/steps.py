"""The way from edge to fast, one step at a time: each step a server of its own (chapter 11).

    python -m epollbook.servers.steps STEP [--port P ...]     STEP: one of STEPS
    throughput.step_server("step2")                           started in the background, as serve() does

``step0`` is ``edge``; each next step changes one idea of fast.py's docstring
(its numbers name them), on top of the one before; ``step6`` has steps 4 to 6
too, and ``fast`` is the server of that name, step 7 added. The two after it
are ``fast`` with one of its steps taken back, to measure what that step
saves on its own; the last is ``fast`` pausing however few connections are
open, to measure why step 7 waits for 32. They take every option ``edge``
takes; they are measured, not tested as the catalog's servers are.
"""

import contextlib
import math
import select
import socket
import sys
import time

from epollbook.servers import framing
from epollbook.servers.edge import EdgeServer
from epollbook.servers.fast import REVISITED, FastConnection, FastServer
from epollbook.servers.running import main
from epollbook.servers.skeleton import RECV_SIZE, Connection

DONTWAIT = socket.MSG_DONTWAIT


class NoSetblocking(EdgeServer):
    """Step 1: no ``setblocking(False)`` (an ioctl) per connection; ``MSG_DONTWAIT`` on each recv and send instead."""

    def _add(self, sock):
        now = time.monotonic()
        connection = Connection(sock, self._read_request, self.reading_events, now + self.limits.request_timeout)
        try:
            self._epoll.register(connection.fd, connection.events)
        except OSError:
            sock.close()
            return
        self._connections[connection.fd] = connection
        self._set_deadline(connection, min(connection.request_deadline, now + self.limits.idle_timeout))

    def _recv(self, connection):
        try:
            chunk = connection.sock.recv(RECV_SIZE, DONTWAIT)
        except BlockingIOError:
            return None
        except OSError:
            chunk = b""
        if not chunk:
            self._close(connection)
        return chunk

    def _write_answer(self, connection):
        while connection.outgoing:
            try:
                sent = connection.sock.send(connection.outgoing, DONTWAIT)
            except BlockingIOError:
                self._watch(connection, self.writing_events)
                return
            except OSError:
                self._close(connection)
                return
            connection.outgoing = connection.outgoing[sent:]
            self._set_deadline(connection, time.monotonic() + self.limits.idle_timeout)
        self._linger(connection)

    def _time_out(self, connection):
        if connection.step == self._read_request:
            with contextlib.suppress(OSError):
                connection.sock.send(framing.TIMED_OUT, DONTWAIT)
        self._close(connection)


class NoEpollout(NoSetblocking):
    """Step 2: no ``EPOLLOUT`` in the registration: watched only when an answer does not fit."""

    reading_events = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET
    writing_events = reading_events | select.EPOLLOUT


class NoUnregister(NoEpollout):
    """Step 3: no ``unregister`` before ``close``: closing the descriptor takes it out of the epoll set."""

    def _close(self, connection):
        if self._connections.pop(connection.fd, None) is connection:
            connection.sock.close()


class BatchAccepts(FastServer):
    """fast without step 5: its listener edge-triggered and drained in batches of up to 64, as edge's."""

    listener_events = select.EPOLLIN | select.EPOLLET
    accepts_per_event = 64

    def _accept(self, most=None):  # however many fast would take: the batch is this class's own
        limits = self.limits
        for _ in range(self.accepts_per_event):
            try:
                fd, _ = self.listener._accept()
            except BlockingIOError:
                return
            except OSError:
                continue
            request_deadline = self._now + limits.request_timeout
            connection = FastConnection(self.socket_type(self._family, socket.SOCK_STREAM, 0, fd), fd,
                                        self._read_request, request_deadline,
                                        min(request_deadline, self._now + limits.idle_timeout))
            self._connections[fd] = connection
            self._register(connection, self.reading_events)
        self.not_drained(self.listener.fileno())


class AlwaysDrain(FastServer):
    """fast without step 4: reading once more right after its shutdown, as edge does, whatever the event said."""

    def _linger(self, connection, mask):
        super()._linger(connection, REVISITED)


class WakingForEachEvent(FastServer):
    """Steps 1 to 6, without step 7: never pausing before a wait, so woken for each event that finds it asleep."""

    gather_from = math.inf


class GatheringAlways(FastServer):
    """fast with step 7 whatever the number of connections: pausing after every busy turn, even with two clients."""

    gather_from = 0


STEPS = {"step0": EdgeServer, "step1": NoSetblocking, "step2": NoEpollout, "step3": NoUnregister,
         "step6": WakingForEachEvent, "fast": FastServer,
         "fast-batch-accepts": BatchAccepts, "fast-always-drain": AlwaysDrain, "fast-gathering-always": GatheringAlways}
"""Each step's server class, by name, in order: step0 is edge, step6 is steps 1 to 6, fast is steps 1 to 7."""

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in STEPS:
        sys.exit(f"usage: python -m epollbook.servers.steps STEP [options]; STEP is one of {', '.join(STEPS)}")
    sys.exit(main(STEPS[sys.argv[1]], sys.argv[2:]))
