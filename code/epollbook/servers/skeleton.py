"""The skeleton the two epoll servers share: the connection table, a request's three steps, deadlines, one close.

``level.py`` and ``edge.py`` are this class plus what differs: the flags they
register, how much they read or accept per event, and what they do when the
process runs out of file descriptors. Everything else is written once, here.

Some facts about epoll
----------------------

An epoll instance is a set kept by the kernel: the *interest list* (which
descriptors, for which events) and the *ready list* (which of them have
something to report). ``epoll.poll()`` hands out the ready list. The kernel
adds ``EPOLLERR`` and ``EPOLLHUP`` to every registration, asked or not.

**Level-triggered** (the default): a descriptor is reported at every
``poll()`` for as long as its condition holds. Bytes left unread are
reported again; that is forgiving, and it is also why a condition nobody
acts on is a spin: a connection whose client has gone stays "readable" (the
end of the stream is readable: ``recv()`` returns ``b''``) and a socket
registered for ``EPOLLOUT`` with nothing to write is reported as writable at
every turn, each turn returning at once. So a level-triggered server watches
``EPOLLOUT`` only while it has something to write, and closes a connection as
soon as ``recv()`` says it has ended.

**Edge-triggered** (``EPOLLET``): a descriptor is reported when its state
*changes*: new bytes arrive, buffer space frees up, a connection is queued.
Then once, however much is left. A server that does not read until
``recv()`` raises ``BlockingIOError`` may never hear of the rest: no new
bytes, no new edge. So an edge-triggered server drains: reads until
``BlockingIOError`` (nothing more now) or ``b''`` (the end; reading again
returns ``b''`` for ever, without blocking, so a loop that only stops on the
exception spins), and accepts until ``BlockingIOError`` likewise. Draining
one busy client without end starves the others, so the drain is capped and a
connection that still has bytes is visited again *without* waiting for an edge,
which will not come.

**Hang-ups.** ``EPOLLRDHUP`` arrives with the last bytes of a request when a
client half-closes after sending it (``shutdown(SHUT_WR)``), and such a client
is still reading: it must get its answer. ``EPOLLHUP`` means both directions
are shut (a reset, or the client's FIN after our own ``shutdown(SHUT_WR)``),
which is how a lingering close normally ends. So the event mask decides
nothing here. Each connection is at one step (reading its request, writing
its answer, or draining before the close) and every event for it, whatever
its bits, runs that step; ``recv()`` and ``send()`` then say what really
happened: bytes, ``b''`` (the end), ``BlockingIOError`` (nothing now), or
the error (``ECONNRESET``, ``EPIPE``) of a connection that is gone.

**Closing.** Every connection is closed exactly once, in ``_close``, which
unregisters it first (a descriptor's registration goes with its last
reference, so a ``dup`` of it would keep it alive) and removes it from the
table, so nothing about it outlives it. After the answer the server shuts
down its sending side and reads for a little while before closing: a
socket closed with unread bytes sends a reset instead of a FIN, and a reset
can destroy an answer still on its way (the "lingering close").

**Timeouts.** A client that never finishes its request holds a descriptor
and a buffer for as long as we let it. Each connection has a deadline (its
whole request within ``request_timeout``, no silence longer than
``idle_timeout``, a bounded linger); ``poll()``'s own timeout wakes the loop
at the earliest one, and nothing runs while nothing is due.

**Out of descriptors.** ``accept()`` fails with ``EMFILE`` when the process
has no descriptor left, and the connection stays queued. Level-triggered,
the listener is then reported again at once, for ever: a spin. Edge-triggered,
it is not reported again until yet another client connects (the queue did
not change): the clients queued meanwhile wait unheard. Linux even says
``EMFILE`` before it looks at the queue, so the error does not mean anybody
is waiting. Each variant answers in its own way (see ``out_of_descriptors``).
"""

import contextlib
import errno
import math
import select
import socket
import time

from epollbook.servers import framing
from epollbook.servers.running import BACKLOG, Limits

RECV_SIZE = 4096
"""Bytes asked of each ``recv()``: a whole request head of an ordinary client."""

ACCEPT_PAUSE = 0.1
"""Seconds a server stops accepting when the process is out of descriptors."""

# accept() fails this way when the process or the whole system has no descriptor (or memory)
# left for one more connection; the connection waits in the listen queue meanwhile.
OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class Connection:
    """One client's connection: its socket, the step it is at, its buffers and its deadline."""

    __slots__ = ("deadline", "drained", "events", "fd", "outgoing", "received", "request_deadline", "sock", "step")

    def __init__(self, sock, step, events, request_deadline):
        self.sock = sock
        self.fd = sock.fileno()
        self.step = step              # what to do at its next event: read, write or drain
        self.events = events          # what it is registered for
        self.received = bytearray()   # the request so far: at most max_head + RECV_SIZE bytes
        self.outgoing = memoryview(b"")
        self.drained = 0              # bytes read and thrown away while lingering
        self.request_deadline = request_deadline
        self.deadline = request_deadline


class EpollServer:
    """An HTTP server on one epoll instance, answering every request the article's way.

    Methods for the caller:

    - ``EpollServer(address=("127.0.0.1", 0), backlog=BACKLOG, limits=None, *, show_requests=False)``
      binds and listens (``SO_REUSEADDR``), with ``Limits()`` unless told; raises ``OSError`` if it cannot.
      Given ``listener=`` (a socket already listening), it serves that one instead, and ``close()`` closes it.
    - ``serve_forever()``: serve until ``stop()``; the connections stay open until ``close()``.
    - ``stop()``: make ``serve_forever()`` return at its next turn; safe from a signal handler or another thread.
    - ``close()``: close every connection, the listener and the epoll instance; safe to call twice.
      Also a context manager that closes.

    Instance variables: ``listener`` (the listening socket), ``limits``,
    ``connection_count`` (open connections).

    What a variant sets (class attributes): ``listener_events``,
    ``reading_events``, ``writing_events`` (the flags registered for the
    listener, and for a connection while it reads and while it writes), and
    ``reads_per_event`` and ``accepts_per_event`` (how many ``recv()`` or
    ``accept()`` one event may take before the loop turns to the others).

    Methods a variant overrides:

    - ``not_drained(fd)``: a step stopped at its cap with more perhaps to
      come; say whether and how it is visited again.
    - ``out_of_descriptors()``: ``accept()`` failed for lack of a descriptor;
      return True to go on accepting, False to stop for this event.
    - ``add_arguments(parser)`` and ``options(args)``: the variant's own
      command-line options, passed to its constructor as keywords.
    """

    listener_events: int
    reading_events: int
    writing_events: int
    reads_per_event: int
    accepts_per_event: int

    def __init__(self, address=("127.0.0.1", 0), backlog=BACKLOG, limits=None, *, show_requests=False,
                 listener=None):
        self.limits = limits or Limits()
        self.show_requests = show_requests
        self._connections = {}        # fd -> Connection: every open connection, and only those
        self._revisit = []            # fds whose step stopped at its cap: run again before waiting
        self._next_deadline = math.inf
        self._accepting_again_at = math.inf
        self._stopping = False
        # A listener opened elsewhere is served as it is: fast-reuseport's parent opens one per worker.
        self.listener = socket.create_server(address, backlog=backlog) if listener is None else listener
        try:
            self.listener.setblocking(False)
            # stop() wakes a waiting poll() by writing a byte to this pair.
            self._wakeup, self._waker = socket.socketpair()
            self._wakeup.setblocking(False)
            self._waker.setblocking(False)
            self._epoll = select.epoll()
            self._epoll.register(self._wakeup.fileno(), select.EPOLLIN)
            self._epoll.register(self.listener.fileno(), self.listener_events)
        except BaseException:
            self.close()
            raise

    # -- the loop ------------------------------------------------------

    def serve_forever(self):
        """Serve until ``stop()`` is called; return then."""
        while not self._stopping:
            # The event's bits are not looked at: the step's own accept(), recv() or send() finds
            # out what happened (see "Hang-ups" above).
            for fd, _ in self._epoll.poll(self._poll_timeout()):
                self._handle(fd)
            revisit, self._revisit = self._revisit, []
            for fd in revisit:
                self._handle(fd)
            self._enforce_deadlines()

    def _poll_timeout(self):
        """Seconds until something is due: 0 if a step must run again, -1 (no limit) if nothing ever is."""
        if self._revisit:
            return 0
        due = min(self._next_deadline, self._accepting_again_at)
        return -1 if due == math.inf else max(due - time.monotonic(), 0)

    def _handle(self, fd):
        if fd == self.listener.fileno():
            self._accept()
        elif fd == self._wakeup.fileno():
            self._clear_wakeup()
        elif (connection := self._connections.get(fd)) is not None:  # None: closed earlier in this turn
            connection.step(connection)

    def stop(self):
        """Make ``serve_forever()`` return at its next turn, waking it if it waits."""
        self._stopping = True
        with contextlib.suppress(OSError):  # its buffer is full of wake-ups already, or it is closed
            self._waker.send(b"\0")

    def _clear_wakeup(self):
        try:
            while self._wakeup.recv(4096):
                pass
        except BlockingIOError:
            pass

    # -- accepting -----------------------------------------------------

    def _accept(self):
        for _ in range(self.accepts_per_event):
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:  # nobody is waiting: the queue is drained
                return
            except OSError as error:
                if error.errno in OUT_OF_DESCRIPTORS:
                    if self.out_of_descriptors():
                        continue
                    return
                # One connection failed (ECONNABORTED: its client gave up while it waited); the next may not.
                continue
            self._add(sock)
        self.not_drained(self.listener.fileno())

    def _add(self, sock):
        sock.setblocking(False)
        now = time.monotonic()
        connection = Connection(sock, self._read_request, self.reading_events, now + self.limits.request_timeout)
        try:
            self._epoll.register(connection.fd, connection.events)
        except OSError:  # ENOMEM, or ENOSPC past fs.epoll.max_user_watches: refuse this one, serve the others
            sock.close()
            return
        self._connections[connection.fd] = connection
        self._set_deadline(connection, min(connection.request_deadline, now + self.limits.idle_timeout))

    def _pause_accepting(self, seconds):
        """Stop watching the listener for *seconds*; new clients wait in its queue meanwhile."""
        self._epoll.unregister(self.listener.fileno())
        self._accepting_again_at = time.monotonic() + seconds

    # -- a request's three steps: read it, write the answer, drain before closing --

    def _read_request(self, connection):
        for _ in range(self.reads_per_event):
            chunk = self._recv(connection)
            if not chunk:  # None: nothing more for now; b'': the connection is closed
                return
            connection.received += chunk
            verdict = framing.judge(connection.received, self.limits.max_head)
            if verdict is not None:
                if self.show_requests and verdict.head:
                    print("-" * 40 + "\n" + framing.printable(verdict.head), flush=True)
                return self._answer(connection, verdict.answer)
            now = time.monotonic()
            self._set_deadline(connection, min(connection.request_deadline, now + self.limits.idle_timeout))
        self.not_drained(connection.fd)

    def _answer(self, connection, answer):
        connection.received = None  # the request's bytes are not needed any more
        connection.outgoing = memoryview(answer)
        connection.step = self._write_answer
        self._write_answer(connection)  # most answers fit in the socket's buffer at once

    def _write_answer(self, connection):
        while connection.outgoing:
            try:
                sent = connection.sock.send(connection.outgoing)
            except BlockingIOError:  # the buffer is full: wait until the client takes some
                self._watch(connection, self.writing_events)
                return
            except OSError:  # EPIPE, ECONNRESET: the client has gone
                self._close(connection)
                return
            connection.outgoing = connection.outgoing[sent:]
            self._set_deadline(connection, time.monotonic() + self.limits.idle_timeout)
        self._linger(connection)

    def _linger(self, connection):
        # The answer is sent. Say so with a FIN, then read what the client still sends until it
        # closes too, so that our close() does not find unread bytes and send a reset instead.
        try:
            connection.sock.shutdown(socket.SHUT_WR)
        except OSError:  # ENOTCONN: the client reset the connection already; nothing to wait for
            self._close(connection)
            return
        connection.step = self._drain
        self._watch(connection, self.reading_events)
        self._set_deadline(connection, time.monotonic() + self.limits.linger_seconds)  # never extended
        self._drain(connection)

    def _drain(self, connection):
        for _ in range(self.reads_per_event):
            chunk = self._recv(connection)
            if not chunk:
                return
            connection.drained += len(chunk)
            if connection.drained > self.limits.linger_bytes:  # it keeps sending: stop listening
                self._close(connection)
                return
        self.not_drained(connection.fd)

    def _recv(self, connection):
        """Bytes from *connection*; ``None`` if there are none now; ``b''`` if it has ended (and is now closed)."""
        try:
            chunk = connection.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return None
        except OSError:  # ECONNRESET, ETIMEDOUT: the connection is gone
            chunk = b""
        if not chunk:
            self._close(connection)
        return chunk

    def _watch(self, connection, events):
        if connection.events != events:
            self._epoll.modify(connection.fd, events)
            connection.events = events

    # -- deadlines -----------------------------------------------------

    def _set_deadline(self, connection, when):
        connection.deadline = when
        self._next_deadline = min(self._next_deadline, when)

    def _enforce_deadlines(self):
        now = time.monotonic()
        if now >= self._accepting_again_at:
            self._accepting_again_at = math.inf
            self._epoll.register(self.listener.fileno(), self.listener_events)
        if now < self._next_deadline:
            return
        # A deadline has come: look at every connection (rare: at most once per expiry), and find the next one.
        self._next_deadline = math.inf
        for connection in list(self._connections.values()):
            if connection.deadline <= now:
                self._time_out(connection)
            else:
                self._next_deadline = min(self._next_deadline, connection.deadline)

    def _time_out(self, connection):
        if connection.step == self._read_request:
            with contextlib.suppress(OSError):  # a courtesy, only if it fits at once: its time is up
                connection.sock.send(framing.TIMED_OUT)
        self._close(connection)

    # -- closing -------------------------------------------------------

    def _close(self, connection):
        """Close *connection*: the one way any connection ends. Safe for one already closed."""
        if self._connections.pop(connection.fd, None) is not connection:
            return
        self._epoll.unregister(connection.fd)
        connection.sock.close()

    @property
    def connection_count(self):
        return len(self._connections)

    def close(self):
        """Close every connection, then the listener and the epoll instance."""
        for connection in list(self._connections.values()):
            self._close(connection)
        for resource in ("_epoll", "listener", "_wakeup", "_waker"):
            if hasattr(self, resource):
                getattr(self, resource).close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # -- what a variant overrides ---------------------------------------

    def not_drained(self, fd):
        """A step on *fd* (a connection, or the listener) stopped at its cap; more may be waiting."""
        raise NotImplementedError

    def out_of_descriptors(self):
        """``accept()`` failed with ``EMFILE`` or the like; return True to go on accepting."""
        raise NotImplementedError

    @classmethod
    def add_arguments(cls, parser):
        """Add this server's own command-line options to *parser*."""

    @classmethod
    def options(cls, args):
        """The keyword arguments of this server's constructor that its options named in *args*."""
        return {}
