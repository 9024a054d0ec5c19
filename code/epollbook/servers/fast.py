"""The book's fastest server: edge's loop with fewer system calls and less Python per request (chapter 11).

``edge`` spends about ten system calls on a request; this server spends
seven, and no Python it can do without. Each change keeps every behaviour
``edge`` has (the limits, the deadlines, the lingering close, the reserve
descriptor for ``EMFILE``), and each was measured on its own
(``python -m epollbook.bench throughput --server edge --server fast``):

1. **No non-blocking mode on accepted sockets.** ``setblocking(False)`` is
   an ``ioctl`` per connection. ``recv`` and ``send`` take ``MSG_DONTWAIT``
   instead: non-blocking for that call only, so nothing can ever block.
2. **No ``EPOLLOUT`` in the registration.** A connection registered for
   ``EPOLLOUT`` is reported writable as soon as it is registered, and again
   when the client's ACK frees the buffer after the answer: two wake-ups and a
   useless ``recv`` each. The whole answer fits the socket's buffer, so it is
   sent at once; ``EPOLLOUT`` is watched only in the rare case it does not.
3. **Read before registering.** A client sends its request right after it
   connects, so by the time the server accepts, the request has usually
   arrived: read it at once, answer, and only then register the connection
   (to hear its close). A connection is never reported just to be read.
4. **No wasted reads.** After the answer the server shuts down its side and
   waits for the client's FIN; a connection registered only now is reported
   if the FIN is already there, so the read that would find nothing is skipped.
5. **No ``unregister`` before ``close``.** Closing the last reference to a
   descriptor removes it from the epoll set (no socket here is ever
   duplicated), so the ``epoll_ctl(DEL)`` is one call too many.
6. **One clock read per turn**, and the connection table looked up first:
   the listener and the wake-up pair are rare next to the connections.
7. **A request judged once.** ``framing.judge`` is a pure function of the
   bytes; a load generator sends the same bytes every time, so the verdict
   of the last whole request is kept and reused when the next is identical.

Per request: ``accept4``, ``recvfrom``, ``sendto``, ``shutdown``,
``epoll_ctl(ADD)``, ``recvfrom`` (the client's FIN), ``close``, plus a share
of ``epoll_wait`` and of the ``accept4`` that ends each batch.

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


class FastConnection:
    """What ``skeleton.Connection`` holds, with ``events`` 0 until the connection is registered."""

    __slots__ = ("deadline", "drained", "events", "fd", "outgoing", "received", "request_deadline", "sock", "step")

    def __init__(self, sock, fd, step, request_deadline, deadline):
        self.sock = sock
        self.fd = fd
        self.step = step
        self.events = 0             # not registered yet: it is read before it is registered
        self.received = b""         # the request so far; most arrive in one piece and are never copied
        self.outgoing = b""
        self.drained = 0
        self.request_deadline = request_deadline
        self.deadline = deadline


class FastServer(EdgeServer):
    """``EdgeServer`` with its hot path rewritten: accept, read, answer, linger, close, in the fewest calls."""

    # EPOLLRDHUP so that a client's half-close is reported even when it sends nothing more.
    reading_events = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET
    writing_events = reading_events | select.EPOLLOUT  # only while an answer waits for room

    def __init__(self, *args, **keywords):
        super().__init__(*args, **keywords)
        self._now = time.monotonic()
        self._family = int(self.listener.family)
        self._known_request = self._known_verdict = None  # the last whole request, and what it got

    # -- the loop ------------------------------------------------------

    def serve_forever(self):
        poll, connections = self._epoll.poll, self._connections
        listener, wakeup = self.listener.fileno(), self._wakeup.fileno()
        while not self._stopping:
            events = poll(self._poll_timeout())
            self._now = time.monotonic()  # one clock read serves every step of this turn
            for fd, _ in events:
                connection = connections.get(fd)  # the connections first: they are most of the events
                if connection is not None:
                    connection.step(connection)
                elif fd == listener:
                    self._accept()
                elif fd == wakeup:
                    self._clear_wakeup()
            if self._revisit:
                revisit, self._revisit = self._revisit, []
                for fd in revisit:
                    self._handle(fd)
            self._enforce_deadlines()

    # -- accepting -----------------------------------------------------

    def _accept(self):
        # listener.accept() is _accept() (the descriptor) plus a socket.socket, a Python subclass whose
        # constructor and close() run Python code; the C type underneath does all this server needs.
        accept, connections, family, limits = self.listener._accept, self._connections, self._family, self.limits
        request_deadline = self._now + limits.request_timeout
        deadline = min(request_deadline, self._now + limits.idle_timeout)
        if deadline < self._next_deadline:
            self._next_deadline = deadline
        for _ in range(self.accepts_per_event):
            try:
                fd, _ = accept()
            except BlockingIOError:  # nobody is waiting: the queue is drained
                return
            except OSError as error:
                if error.errno in OUT_OF_DESCRIPTORS:
                    if self.out_of_descriptors():
                        continue
                    return
                continue  # ECONNABORTED: its client gave up; the next may not have
            connection = FastConnection(_socket.socket(family, socket.SOCK_STREAM, 0, fd), fd, self._read_request,
                                        request_deadline, deadline)
            connections[fd] = connection
            self._read_request(connection)  # the request is usually here already: no wake-up to read it
            if connection.events == 0 and connections.get(fd) is connection:
                self._register(connection, self.reading_events)  # not yet: wait for the rest
        self.not_drained(self.listener.fileno())

    def _register(self, connection, events):
        try:
            self._epoll.register(connection.fd, events)
        except OSError:  # ENOMEM, or ENOSPC past fs.epoll.max_user_watches: refuse this one, serve the others
            self._close(connection)
            return
        connection.events = events

    def _watch(self, connection, events):
        if connection.events == 0:
            self._register(connection, events)
        elif connection.events != events:
            self._epoll.modify(connection.fd, events)
            connection.events = events

    # -- a request's three steps: read it, write the answer, drain before closing --

    def _read_request(self, connection):
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
                self._answer(connection, verdict.answer)
                return
            self._set_deadline(connection, min(connection.request_deadline, self._now + self.limits.idle_timeout))
        self.not_drained(connection.fd)

    def _answer(self, connection, answer):
        try:
            sent = connection.sock.send(answer, DONTWAIT)  # the whole answer, nearly always: it fits the buffer
        except BlockingIOError:
            sent = 0
        except OSError:  # EPIPE, ECONNRESET: the client has gone
            self._close(connection)
            return
        if sent == len(answer):
            self._linger(connection)
            return
        connection.outgoing = memoryview(answer)[sent:]
        connection.step = self._write_answer
        self._set_deadline(connection, self._now + self.limits.idle_timeout)
        self._watch(connection, self.writing_events)  # now, and only now, EPOLLOUT: tell me when there is room

    def _write_answer(self, connection):
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
        self._linger(connection)

    def _linger(self, connection):
        # As edge: a FIN says "answer complete", then read what the client still sends until it closes.
        try:
            connection.sock.shutdown(socket.SHUT_WR)
        except OSError:  # ENOTCONN: the client reset the connection already
            self._close(connection)
            return
        connection.step = self._drain
        self._set_deadline(connection, self._now + self.limits.linger_seconds)  # never extended
        if connection.events == 0:
            # Answered at once: registering reports whatever is there already, the client's FIN included.
            self._register(connection, self.reading_events)
        else:
            # The edge that brought the request may have brought the client's FIN too, and no new edge
            # will come for it: read now.
            self._watch(connection, self.reading_events)
            self._drain(connection)

    def _drain(self, connection):
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
