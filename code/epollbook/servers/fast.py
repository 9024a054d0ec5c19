"""The book's fastest server: edge's loop in fewer system calls and less Python per request (chapter 11).

``edge`` makes about twelve system calls per request, nearly two of them
reads that find nothing; this server makes nine, all of them useful. It
keeps every behaviour ``edge`` has (the limits, the deadlines, the lingering
close, the reserve descriptor for ``EMFILE``). Each step was measured on its
own, against uvloop in the same run (``python -m epollbook.bench throughput
--server fast --server uvloop`` measures the result). Steps 2 and 5 saved
about 2 µs of server CPU per request each (a wasted wake-up and read, a
failing accept and its exception); each of the others saved less than the
noise of a shared two-core machine (a microsecond or two), and they are kept
because they cost no clarity.

1. **No non-blocking mode on accepted sockets.** ``setblocking(False)`` is
   an ``ioctl`` per connection. ``recv`` and ``send`` take ``MSG_DONTWAIT``
   instead: non-blocking for that call, so nothing here can ever block.
2. **No ``EPOLLOUT`` in the registration.** A connection registered for
   ``EPOLLOUT`` is reported writable as soon as it is registered, and again
   when the client's ACK frees the buffer after the answer: wake-ups and
   reads that find nothing. The whole answer fits the socket's buffer, so it
   is sent at once; ``EPOLLOUT`` is watched only if it ever does not fit.
3. **No ``unregister`` before ``close``.** Closing the last reference to a
   descriptor removes it from the epoll set (no socket here is ever
   duplicated), so the ``epoll_ctl(DEL)`` is one call too many.
4. **No read that finds nothing after the answer.** ``edge`` reads once more
   right after its ``shutdown``, in case the client's FIN came with the
   request (no new edge would come for it). An event's mask says what holds
   now, not only what changed: without ``EPOLLRDHUP`` the FIN is not there
   yet, and it will make an edge of its own when it comes.
5. **One accept per report.** The listener is level-triggered, so it is
   reported for as long as a connection waits, and one ``accept()`` per
   report always finds one. Draining an edge-triggered listener in batches
   ends every batch with ``BlockingIOError``: a system call and a Python
   exception, and under a load of 100 connections the batches are short.
6. **Less Python per request.** Accepted sockets are the C type under
   ``socket.socket`` (whose constructor and ``close()`` run Python code);
   one clock read per turn of the loop; the connection table looked up
   before the rare listener and wake-up pair; the hot path in fewer calls;
   and since ``framing.judge`` is a pure function of the bytes and a load
   generator sends the same bytes every time, the last whole request's
   verdict is reused when the next request is identical.

7. **Fewer wake-ups under load.** A thread asleep in ``epoll_wait`` is woken
   by whoever makes one of its sockets ready, and the waker pays: on
   loopback, the client's side of a connection (its handshake, its request,
   its FIN) runs in the client's process, on the client's CPU, and so does
   each wake-up of the server it causes. On two cores it is the load
   generator that runs out first, so what it pays per request sets the rate.
   A slow server is woken less (it is still busy when the next event comes),
   which is why ``edge``, spending more CPU per request, served more requests
   per second than ``fast`` did before this step. So after a turn that
   handled more than one event while ``gather_from`` (32) connections or more
   were open, this server sleeps ``gather_seconds`` (20 µs, plus the
   kernel's timer slack, 50 µs by default) before it waits again, and the
   events of that time come back from one wait, woken by no one. The same
   pause with two to four connections cost up to half their rate (each turn
   waited with nothing else to do), hence the 32: with few connections this
   server is as it was.
   While events gather, the listener's queue fills too, so one accept per
   report would make the pause the ceiling of accepts: up to
   ``accepts_while_gathering`` (8) then. Chapter 11 measures all of it.

Per request: ``accept4``, ``getsockname`` (CPython's socket constructor
checks the descriptor with it: only a server with no socket objects at all
would avoid it, and Python has no ``shutdown`` for a bare descriptor),
``epoll_ctl(ADD)``, ``recvfrom``, ``sendto``, ``shutdown``, ``recvfrom`` (the
client's FIN) and ``close``, plus a share of an ``epoll_wait`` (and under
load, of a ``clock_nanosleep``): nine, as uvloop's ten (it also asks
``getpeername`` and sets ``TCP_NODELAY``, and closes without lingering).

Tried and left out, because they measured worse: reading a connection
before registering it (when the server accepts, the request has often not
arrived yet, and that read finds nothing); and ``EPOLLONESHOT`` with a read
of the client's FIN a little after the answer, so that the FIN wakes
nobody (a quarter of those reads came too early, and cost more than the
wake-ups saved).

    python -m epollbook serve fast
    python -m epollbook.servers.fast --port 8080 --reads-per-event 4
"""

import _socket
import contextlib
import select
import socket
import sys
import time

from epollbook.servers import framing
from epollbook.servers.edge import EdgeServer
from epollbook.servers.running import main
from epollbook.servers.skeleton import OUT_OF_DESCRIPTORS, RECV_SIZE

DONTWAIT = socket.MSG_DONTWAIT

ENDED = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
"""An event's bits that say the client's FIN (or a reset) is there: reading will not find nothing."""

REVISITED = select.EPOLLIN | ENDED
"""The mask a step revisited without an event assumes: anything may be there."""


class FastConnection:
    """What ``skeleton.Connection`` holds; built without a Python-level socket and without a bytearray."""

    __slots__ = ("deadline", "drained", "events", "fd", "outgoing", "received", "request_deadline", "sock", "step")

    def __init__(self, sock, fd, step, request_deadline, deadline):
        self.sock = sock
        self.fd = fd
        self.step = step
        self.events = 0             # what it is registered for: set by _register, right after accept
        self.received = b""         # the request so far; most arrive in one piece and are never copied
        self.outgoing = b""
        self.drained = 0
        self.request_deadline = request_deadline
        self.deadline = deadline


class FastServer(EdgeServer):
    """``EdgeServer`` with its hot path rewritten: accept, read, answer, linger, close, in the fewest calls."""

    # Level-triggered: the listener is reported while a connection waits in its queue, so the one accept()
    # per report always finds one, and never ends a batch with the BlockingIOError (a system call and an
    # exception) that draining an edge-triggered listener needs.
    listener_events = select.EPOLLIN
    accepts_per_event = 1
    # EPOLLRDHUP so that a client's half-close is reported even when it sends nothing more.
    reading_events = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET
    writing_events = reading_events | select.EPOLLOUT  # only while an answer waits for room

    # What accepted connections are: the C type under socket.socket, whose constructor and close() run no Python.
    socket_type = _socket.socket

    # Step 7: after a turn with more than one event while this many connections are open, sleep gather_seconds
    # (plus the kernel's timer slack, 50 µs by default) before the next wait, and accept up to
    # accepts_while_gathering connections per report, the queue having had time to fill.
    gather_from = 32
    gather_seconds = 20e-6
    accepts_while_gathering = 8

    def __init__(self, *args, **keywords):
        super().__init__(*args, **keywords)
        self._now = time.monotonic()
        self._family = int(self.listener.family)
        self._known_request = self._known_verdict = None  # the last whole request, and what it got

    # -- the loop ------------------------------------------------------

    def serve_forever(self):
        poll, connections = self._epoll.poll, self._connections
        listener, wakeup = self.listener.fileno(), self._wakeup.fileno()
        sleep, gathering = time.sleep, False
        while not self._stopping:
            events = poll(self._poll_timeout())
            self._now = time.monotonic()  # one clock read serves every step of this turn
            for fd, mask in events:
                connection = connections.get(fd)  # the connections first: they are most of the events
                if connection is not None:
                    connection.step(connection, mask)
                elif fd == listener:
                    self._accept(self.accepts_while_gathering if gathering else 1)
                elif fd == wakeup:
                    self._clear_wakeup()
            if self._revisit:
                revisit, self._revisit = self._revisit, []
                for fd in revisit:
                    self._handle(fd)
            self._enforce_deadlines()
            # Step 7: under load, let the next turn's events gather instead of being woken for each of them.
            gathering = len(events) > 1 and len(connections) >= self.gather_from
            if gathering:
                sleep(self.gather_seconds)

    # -- accepting -----------------------------------------------------

    def _accept(self, most=1):
        """Accept up to *most* connections: one per report, unless events were left to gather (step 7)."""
        limits = self.limits
        for _ in range(most):
            try:
                fd, _ = self.listener._accept()  # the descriptor: listener.accept() adds a socket.socket, in Python
            except BlockingIOError:  # the queue is empty (a client gave up meanwhile, or a batch took them all)
                return
            except OSError as error:
                if error.errno in OUT_OF_DESCRIPTORS:
                    self.out_of_descriptors()  # edge's reserve descriptor; level-triggered, the listener comes back
                return  # ECONNABORTED: its client gave up; the next report brings the next one
            request_deadline = self._now + limits.request_timeout
            connection = FastConnection(self.socket_type(self._family, socket.SOCK_STREAM, 0, fd), fd,
                                        self._read_request, request_deadline,
                                        min(request_deadline, self._now + limits.idle_timeout))
            self._connections[fd] = connection
            if connection.deadline < self._next_deadline:
                self._next_deadline = connection.deadline
            self._register(connection, self.reading_events)

    def _register(self, connection, events):
        try:
            self._epoll.register(connection.fd, events)
        except OSError:  # ENOMEM, or ENOSPC past fs.epoll.max_user_watches: refuse this one, serve the others
            self._close(connection)
            return
        connection.events = events

    def _watch(self, connection, events):
        if connection.events != events:
            self._epoll.modify(connection.fd, events)
            connection.events = events

    # -- a request's three steps: read it, write the answer, drain before closing --

    def _handle(self, fd):
        # A step revisited without an event: assume the client's FIN may be there, so drains read.
        if (connection := self._connections.get(fd)) is not None:
            connection.step(connection, REVISITED)
        elif fd == self.listener.fileno():
            self._accept()

    def _read_request(self, connection, mask):
        sock = connection.sock
        for _ in range(self.reads_per_event):
            try:
                chunk = sock.recv(RECV_SIZE, DONTWAIT)
            except BlockingIOError:  # nothing more for now
                return
            except OSError:  # ECONNRESET, ETIMEDOUT: the connection is gone
                chunk = b""
            if not chunk:
                self._close(connection)
                return
            received = connection.received
            if not received:
                received = connection.received = chunk
            else:  # a request in pieces: gather them in a bytearray, extended in place
                if type(received) is bytes:
                    received = connection.received = bytearray(received)
                received += chunk
            if received == self._known_request:
                verdict = self._known_verdict
            else:
                verdict = framing.judge(received, self.limits.max_head)
                if verdict is not None and verdict.answer is framing.RESPONSE and type(received) is bytes:
                    self._known_request, self._known_verdict = received, verdict
            if verdict is not None:
                if self.show_requests and verdict.head:
                    print("-" * 40 + "\n" + framing.printable(verdict.head), flush=True)
                connection.received = None
                self._answer(connection, verdict.answer, mask)
                return
            self._set_deadline(connection, min(connection.request_deadline, self._now + self.limits.idle_timeout))
        self.not_drained(connection.fd)

    def _answer(self, connection, answer, mask):
        try:
            sent = connection.sock.send(answer, DONTWAIT)  # the whole answer, nearly always: it fits the buffer
        except BlockingIOError:
            sent = 0
        except OSError:  # EPIPE, ECONNRESET: the client has gone
            self._close(connection)
            return
        if sent == len(answer):
            self._after_answer(connection, mask)
            return
        connection.outgoing = memoryview(answer)[sent:]
        connection.step = self._write_answer
        self._set_deadline(connection, self._now + self.limits.idle_timeout)
        self._watch(connection, self.writing_events)  # now, and only now, EPOLLOUT: tell me when there is room

    def _write_answer(self, connection, mask):
        while connection.outgoing:
            try:
                sent = connection.sock.send(connection.outgoing, DONTWAIT)
            except BlockingIOError:  # still no room: wait for the next EPOLLOUT edge
                return
            except OSError:
                self._close(connection)
                return
            connection.outgoing = connection.outgoing[sent:]
            self._set_deadline(connection, self._now + self.limits.idle_timeout)
        self._watch(connection, self.reading_events)  # the answer is out: EPOLLOUT would only report room, again
        self._after_answer(connection, mask)

    def _after_answer(self, connection, mask):
        """The whole answer is sent, and *connection* is registered for reading: close it, lingering."""
        self._linger(connection, mask)

    def _linger(self, connection, mask):
        # As edge: a FIN says "answer complete", then read what the client still sends until it closes.
        try:
            connection.sock.shutdown(socket.SHUT_WR)
        except OSError:  # ENOTCONN: the client reset the connection already
            self._close(connection)
            return
        connection.step = self._drain
        self._set_deadline(connection, self._now + self.limits.linger_seconds)  # never extended
        # The mask is what holds now, not only what changed: without EPOLLRDHUP the client's FIN is not here
        # yet, and when it comes it makes an edge of its own. Reading now would find nothing.
        if mask & ENDED:
            self._drain(connection, mask)

    def _drain(self, connection, mask):
        sock = connection.sock
        for _ in range(self.reads_per_event):
            try:
                chunk = sock.recv(RECV_SIZE, DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:  # the client's FIN (or a reset): the end of this connection
                self._close(connection)
                return
            connection.drained += len(chunk)
            if connection.drained > self.limits.linger_bytes:  # it keeps sending: stop listening
                self._close(connection)
                return
        self.not_drained(connection.fd)

    # -- deadlines and closing ------------------------------------------------

    def _set_deadline(self, connection, when):
        connection.deadline = when
        if when < self._next_deadline:
            self._next_deadline = when

    def _time_out(self, connection):
        if connection.step == self._read_request:
            with contextlib.suppress(OSError):  # a courtesy, only if it fits at once: its time is up
                connection.sock.send(framing.TIMED_OUT, DONTWAIT)
        self._close(connection)

    def _close(self, connection):
        """Close *connection*; its close removes it from the epoll set (nothing else holds its descriptor)."""
        if self._connections.pop(connection.fd, None) is connection:
            connection.sock.close()


if __name__ == "__main__":
    sys.exit(main(FastServer))
