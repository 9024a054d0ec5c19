"""Chapter 5's checks: ``drain``, ``accept_all`` and ``read_and_rearm``, the three places edge-triggered code slips.

Each hands the reader's function what an edge-triggered event loop would:
sockets in non-blocking mode, with bytes or connections already waiting (that
is what an event says), and judges what it returns and what it leaves behind.
"""

import contextlib
import errno
import fcntl
import os
import select
import socket
import struct
import termios
import threading
import time

from epollbook import clients, probes
from epollbook.checks.harness import ENDINGS, SECONDS, CheckFailed, Running, call, finish, passed, short
from epollbook.edges import descriptor_table_full


def _must_be_a_function(function):
    if not callable(function):
        Running(function)  # raises the harness's sentence for a value that is not a function


def _wait_until(condition, what, timeout=2.0):
    """Wait for the check's own setup (bytes or a close arriving over loopback); raise if it never comes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the check's own setup failed: {what} did not happen within {timeout:g} s")
        time.sleep(0.001)


def _polled(sock, mask):
    """The poll() events of *sock* among *mask*, now."""
    poller = select.poll()
    poller.register(sock, mask)
    return sum(events for _, events in poller.poll(0)) & mask


def _waiting_bytes(sock):
    """How many bytes wait on *sock* for a recv() (0 once it is closed)."""
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
    except (OSError, ValueError):
        return 0


# -- drain -----------------------------------------------------------------------------------------


def _returned(value):
    if isinstance(value, tuple) and len(value) == 2:
        data, closed = value
        shown = f"{len(data):,} bytes" if isinstance(data, bytes | bytearray) else short(data)
        return f"it returned ({shown}, {closed!r})"
    return f"it returned {short(value)}"


@contextlib.contextmanager
def _waiting(pieces, end):
    """A connection whose far end sent *pieces* and then ended as *end* says, all of it arrived: yield our end."""
    sent = b"".join(pieces)
    with clients.connected_pair() as (client, conn):
        conn.setblocking(False)
        for piece in pieces:
            client.sendall(piece)
        _wait_until(lambda: _waiting_bytes(conn) >= len(sent), f"{len(sent):,} bytes arriving")
        if end == "close":
            client.close()
            _wait_until(lambda: _polled(conn, select.POLLRDHUP), "the client's close arriving")
        elif end == "reset":
            clients.reset(client)
            _wait_until(lambda: _polled(conn, select.POLLERR), "the client's reset arriving")
        yield conn


def _drain_once(drain, conn, limit, situation, stuck):
    running = Running(drain, *((conn,) if limit is None else (conn, limit)))
    return finish(running, f"drain was still running {SECONDS:g} s after it was called on {situation}: {stuck}",
                  unblock=[conn])


def _expect(drain, pieces, end, *, limit=None, calls, stuck):
    """Call drain on a connection with *pieces* waiting, *end* as the client ended; compare with *calls*.

    *calls* is the list of ``(bytes, closed)`` results expected, one per call,
    each call made once the one before has returned.
    """
    sent = b"".join(pieces)
    with_limit = "" if limit is None else f" (limit={limit:,})"
    situation = f"a connection whose client sent {len(sent):,} bytes {ENDINGS[end]}{with_limit}"
    with _waiting(pieces, end) as conn:
        for number, (data, closed) in enumerate(calls, 1):
            running = _drain_once(drain, conn, limit, situation, stuck)
            nth = "" if len(calls) == 1 else f" on call {number} of {len(calls)}"
            if running.error is not None:
                raise CheckFailed(f"expected drain to return ({len(data):,} bytes, {closed}){nth} on {situation}; "
                                  f"{running.describe()}") from running.error
            value = running.value
            if not (isinstance(value, tuple) and len(value) == 2):
                raise CheckFailed(f"expected drain to return a pair (data, closed) on {situation}; "
                                  f"{_returned(value)}")
            got, got_closed = value
            if limit is not None and isinstance(got, bytes | bytearray) and len(got) > limit:
                raise CheckFailed(f"expected drain to return at most limit={limit:,} bytes{nth} on {situation}; "
                                  f"{_returned(value)}: stop reading once you have limit bytes")
            if got != data or got_closed is not closed:
                hint = ""
                if closed and got == data and got_closed is False:
                    hint = ": after the data, recv() returned b'', which means the client closed"
                elif not closed and got_closed:
                    hint = ": the client is still connected; only recv() returning b'' says it closed"
                raise CheckFailed(f"expected ({len(data):,} bytes, {closed}){nth} from drain on {situation}; "
                                  f"{_returned(value)}{hint}")


def _expect_reset(drain, pieces):
    sent = b"".join(pieces)
    situation = f"a connection whose client sent {len(sent):,} bytes then reset the connection"
    with _waiting(pieces, "reset") as conn:
        running = _drain_once(drain, conn, None, situation, "after a reset recv() raises ConnectionResetError")
        if not isinstance(running.error, ConnectionResetError):
            swallowed = running.error is None and isinstance(running.value, tuple) and running.value[1:] == (False,)
            hint = (": the reset was swallowed, so the caller keeps a dead connection and waits for an edge that "
                    "will never come; let ConnectionResetError through") if swallowed else ""
            raise CheckFailed(f"expected ConnectionResetError from drain on {situation}; {running.describe()}"
                              f"{hint}") from running.error


def check_drain(drain, *, hidden=False):
    """Check ``drain(conn, limit=65536) -> (data, closed)`` on live non-blocking connections.

    The bytes are waiting before the call, as after an edge. drain must read
    them all, until ``recv()`` raises ``BlockingIOError`` (then ``closed`` is
    False) or returns ``b''`` (the client closed: True), and return them, but
    never more than *limit* bytes in one call (then ``closed`` is False and the
    caller calls again); a reset must raise ``ConnectionResetError``.
    *hidden* runs the cases graders keep hidden instead.
    """
    _must_be_a_function(drain)
    request = clients.REQUEST
    if hidden:
        body = bytes(range(256)) * 47  # 12,032 bytes
        _expect(drain, [], "close", calls=[(b"", True)],
                stuck="it loops forever because recv() returns b'' once the client has closed")
        passed("drain returned (b'', True) for a client that closed without sending")
        _expect(drain, [body], "close", limit=5000, calls=[(body[:5000], False), (body[5000:10000], False),
                                                           (body[10000:], True)],
                stuck="it loops forever because recv() returns b'' once the client has closed")
        passed("drain returned 12,032 bytes in three calls of limit=5,000, then said the client had closed")
        _expect(drain, [body[:8192]], None, limit=8192, calls=[(body[:8192], False), (b"", False)],
                stuck="on a non-blocking socket recv() raises BlockingIOError once nothing is left: stop there")
        passed("drain returned exactly limit=8,192 bytes, then nothing")
        _expect_reset(drain, [])
        passed("drain raised ConnectionResetError for a reset with nothing waiting")
        return

    pieces = [request, b"x" * 3000, request]
    sent = b"".join(pieces)
    _expect(drain, pieces, None, calls=[(sent, False)],
            stuck="on a non-blocking socket recv() raises BlockingIOError once nothing is left: stop there")
    passed(f"drain returned all {len(sent):,} bytes waiting, and closed=False for a client still connected")
    _expect(drain, [], None, calls=[(b"", False)],
            stuck="on a non-blocking socket recv() raises BlockingIOError at once when nothing waits: stop there")
    passed("drain returned (b'', False) at once when nothing was waiting")
    _expect(drain, [request], "close", calls=[(request, True)],
            stuck="it loops forever because recv() returns b'' once the client has closed")
    passed("drain returned the request and closed=True for a client that closed after it")
    _expect_reset(drain, [request])
    passed("drain raised ConnectionResetError for a client that reset the connection")
    body = b"y" * 30_000
    _expect(drain, [body], None, limit=10_000,
            calls=[(body[:10_000], False), (body[10_000:20_000], False), (body[20_000:], False), (b"", False)],
            stuck="on a non-blocking socket recv() raises BlockingIOError once nothing is left: stop there")
    passed("drain read 30,000 bytes 10,000 at a time with limit=10,000, losing none")


# -- accept_all ------------------------------------------------------------------------------------


class _Queue:
    """A non-blocking listening socket and *clients* connected to it, all waiting in its accept queue."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=32)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.clients, self.returned = [], []

    def connect(self, count):
        for _ in range(count):
            self.clients.append(socket.create_connection(("127.0.0.1", self.port), timeout=2.0))
        _wait_until(lambda: self.queued() >= count, f"{count} connections queueing")

    def queued(self):
        """How many connections wait in the queue.

        For a listening socket, TCP_INFO's ``tcpi_unacked`` holds the queue's
        length (what ``ss`` shows as Recv-Q); reading /proc/net/tcp instead
        takes most of a second on a machine with 100,000 sockets.
        """
        info = self.listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
        return struct.unpack_from("I", info, 24)[0]  # after 8 one-byte fields and rto, ato, snd_mss, rcv_mss

    def left_waiting(self):
        """Accept (and close) whatever is still in the queue; return how many there were."""
        left = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                connection, _ = self.listener.accept()
                connection.close()
                left += 1
        return left

    def close(self):
        for sock in [*self.clients, *self.returned]:
            with contextlib.suppress(OSError, AttributeError):
                sock.close()
        clients.wake_and_close(self.listener)


def _gated(function):
    """*function*, run only once ``gate`` is set: the thread must start before descriptors run out."""
    gate = threading.Event()

    def when_told(*args):
        gate.wait(SECONDS)
        return function(*args)

    when_told.__name__ = getattr(function, "__name__", "accept_all")
    return when_told, gate


def _accept(accept_all, queue, free, situation):
    """Run accept_all on *queue*'s listener, with *free* descriptors to spare (None: plenty); return its list."""
    stuck = ("it went on trying after accept() failed with EMFILE, which no retry cures: only closing a "
             "descriptor does" if free is not None else
             "on a non-blocking listener accept() raises BlockingIOError once the queue is empty: stop there")
    function, gate = _gated(accept_all)
    running = Running(function, queue.listener)
    shortage = descriptor_table_full(free) if free is not None else contextlib.nullcontext()
    with shortage:
        gate.set()
        # Nothing here may need a new descriptor while the shortage lasts: finish() only waits on an Event.
        finish(running, f"accept_all was still running {SECONDS:g} s after it was called on {situation}: {stuck}",
               unblock=[queue.listener])
    if running.error is not None:
        hint = ""
        if isinstance(running.error, OSError) and running.error.errno == errno.EMFILE:
            hint = (": EMFILE is not the listener's fault; handle it so that no connection is left waiting "
                    "(the spare descriptor)")
        raise CheckFailed(f"expected accept_all to return a list of connections on {situation}; "
                          f"{running.describe()}{hint}") from running.error
    returned = running.value
    if not isinstance(returned, list | tuple) or not all(isinstance(sock, socket.socket) for sock in returned):
        raise CheckFailed(f"expected accept_all to return a list of the connected sockets it accepted on {situation}; "
                          f"it returned {short(returned)}")
    queue.returned.extend(returned)
    return list(returned)


def _judge_accepted(returned, expected, situation):
    if len(returned) != expected:
        raise CheckFailed(f"expected accept_all to return {expected} connections on {situation}; it returned "
                          f"{len(returned)}")
    if any(sock.fileno() == -1 for sock in returned):
        raise CheckFailed(f"expected the connections accept_all returned on {situation} to be open; some were closed")
    if any(sock.getblocking() for sock in returned):
        raise CheckFailed(f"expected every connection accept_all returns to be non-blocking (setblocking(False)) on "
                          f"{situation}: an edge-triggered loop drains each one until BlockingIOError")


def _judge_queue(queue, waiting, situation, after_shortage):
    left = queue.left_waiting()
    if left:
        if after_shortage:
            raise CheckFailed(f"expected no connection left waiting in the accept queue on {situation}; {left} of "
                              f"the {waiting} still waited, and with EPOLLET no new edge comes for them until "
                              "another client arrives: close a spare descriptor, accept and close each one, then "
                              "open the spare again")
        raise CheckFailed(f"expected accept_all to take every connection waiting on {situation}; {left} of the "
                          f"{waiting} were left in the queue, and with EPOLLET no new edge comes for them: accept "
                          "until BlockingIOError")


def _judge_refused(queue, refused, situation):
    """The clients that got no connection must have been told so: closed (or reset), not left hanging."""
    told = 0
    for client in refused:
        if clients.wait_readable(client, 1.0) and clients.peek(client) == b"":
            told += 1
    if told != len(refused):
        raise CheckFailed(f"expected the clients accept_all could not take on {situation} to be closed at once; "
                          f"{len(refused) - told} of {len(refused)} heard nothing")


def _case(accept_all, waiting, free, expected):
    queue = _Queue()
    try:
        queue.connect(waiting)
        connections = f"{waiting} connection{'s' if waiting != 1 else ''}"
        if free is None:
            situation = f"a listener with {connections} waiting"
        elif free == 0:
            situation = f"a listener with {connections} waiting while no file descriptor was left (EMFILE)"
        else:
            situation = (f"a listener with {connections} waiting while {free} file descriptors were left, "
                         "then EMFILE")
        returned = _accept(accept_all, queue, free, situation)
        _judge_queue(queue, waiting, situation, after_shortage=free is not None)
        _judge_accepted(returned, expected, situation)
        if free is not None:
            served = {sock.getpeername() for sock in returned}
            _judge_refused(queue, [client for client in queue.clients if client.getsockname() not in served],
                           situation)
        return situation
    finally:
        queue.close()


def check_accept_all(accept_all, *, hidden=False):
    """Check ``accept_all(listener) -> list of sockets``, an edge-triggered accept loop that survives EMFILE.

    The listener is non-blocking, with connections already waiting in its
    queue (that is what its edge said). accept_all must accept every one,
    until ``accept()`` raises ``BlockingIOError``, and return them,
    non-blocking. When ``accept()`` fails with ``EMFILE`` (the check leaves the
    process without a free descriptor) no connection may be left waiting, since
    no new edge would come for it: each must be accepted with a spare
    descriptor and closed at once. *hidden* runs the cases graders keep hidden.
    """
    _must_be_a_function(accept_all)
    if hidden:
        situation = _case(accept_all, 4, 2, 2)
        passed(f"accept_all returned 2 and closed 2 on {situation}")
        situation = _case(accept_all, 3, 0, 0)
        passed(f"accept_all closed all 3 again on {situation} (a second shortage)")
        situation = _case(accept_all, 5, None, 5)
        passed(f"accept_all returned all 5 on {situation}, after the shortages")
        return
    situation = _case(accept_all, 3, None, 3)
    passed(f"accept_all returned all 3 connections, non-blocking, on {situation}")
    situation = _case(accept_all, 2, 0, 0)
    passed(f"accept_all closed both clients, leaving none waiting, on {situation}")
    situation = _case(accept_all, 1, None, 1)
    passed(f"accept_all returned the connection on {situation}, once descriptors were back")


# -- read_and_rearm --------------------------------------------------------------------------------

ONESHOT = select.EPOLLIN | select.EPOLLONESHOT


def _registration(epoll, conn):
    for interest in probes.epoll_interest_list(os.getpid(), epoll.fileno()):
        if interest.fd == conn.fileno():
            return interest.events
    return None


def _event_for(epoll, conn, timeout):
    return any(fd == conn.fileno() for fd, _ in epoll.poll(timeout))


def _handle(read_and_rearm, epoll, conn, sent, what):
    """Call read_and_rearm after an event for *conn*; it must return *sent* and leave conn re-armed, one-shot."""
    _wait_until(lambda: _waiting_bytes(conn) >= len(sent), f"{len(sent):,} bytes arriving")
    try:
        got = call(read_and_rearm, epoll, conn)
    except FileExistsError:
        raise CheckFailed(f"expected read_and_rearm to re-arm the connection after {what}; register() raised "
                          "FileExistsError (EEXIST): after an EPOLLONESHOT event the fd is still registered, only "
                          "disarmed, so re-arm it with modify()") from None
    except OSError as error:
        raise CheckFailed(f"expected read_and_rearm to read and re-arm after {what}; it raised "
                          f"{type(error).__name__}: {error}") from None
    if got != sent:
        raise CheckFailed(f"expected read_and_rearm to return the {len(sent):,} bytes waiting after {what}; it "
                          f"returned {short(got)}")
    events = _registration(epoll, conn)
    if events is None:
        raise CheckFailed(f"expected the connection to stay registered after {what}; read_and_rearm removed it: "
                          "re-arm it with modify() instead")
    if not events & select.EPOLLIN:
        raise CheckFailed(f"expected the connection re-armed after {what}; it is still registered but disarmed "
                          f"({probes.epoll_event_names(events)}), so no event will come for its next bytes: re-arm it "
                          "with epoll.modify(conn, select.EPOLLIN | select.EPOLLONESHOT)")
    if not events & select.EPOLLONESHOT:
        raise CheckFailed(f"expected the connection re-armed with EPOLLIN|EPOLLONESHOT after {what}; it was re-armed "
                          f"without EPOLLONESHOT ({probes.epoll_event_names(events)}), so another thread could be "
                          "woken for it while one handles it")


def _arrives(epoll, conn, client, piece, what):
    client.sendall(piece)
    if not _event_for(epoll, conn, 2.0):
        raise CheckFailed(f"expected an event when {what} arrived; none came within 2 s: after an EPOLLONESHOT "
                          "event the registration stays disarmed until read_and_rearm re-arms it with "
                          "epoll.modify(conn, select.EPOLLIN | select.EPOLLONESHOT)")


def check_read_and_rearm(read_and_rearm, *, hidden=False):
    """Check ``read_and_rearm(epoll, conn) -> bytes`` on a live connection registered with EPOLLIN|EPOLLONESHOT.

    The check polls, and after each event for *conn* calls read_and_rearm,
    which must return every byte waiting (until ``BlockingIOError``) and re-arm
    the registration, one-shot still, so that the next bytes wake the poll
    again, once. *hidden* runs the cases graders keep hidden instead.
    """
    _must_be_a_function(read_and_rearm)
    with select.epoll() as epoll, clients.connected_pair() as (client, conn), \
            clients.connected_pair() as (other_client, other):
        for sock in (conn, other):
            sock.setblocking(False)
            epoll.register(sock, ONESHOT)
        if hidden:
            _arrives(epoll, other, other_client, b"other", "bytes for a second connection")
            for round_ in range(1, 4):
                piece = bytes([64 + round_]) * (20_000 * round_)
                _arrives(epoll, conn, client, piece, f"{len(piece):,} bytes (round {round_})")
                _handle(read_and_rearm, epoll, conn, piece, f"an event for {len(piece):,} bytes")
            passed("read_and_rearm read and re-armed three rounds in a row, up to 60,000 bytes each")
            _handle(read_and_rearm, epoll, other, b"other", "an event for the second connection")
            _arrives(epoll, other, other_client, b"again", "more bytes for the second connection")
            passed("read_and_rearm re-armed the connection it was given, not another")
            return

        _arrives(epoll, conn, client, clients.REQUEST, "a request")
        registered = _registration(epoll, conn)
        if registered is None or registered & select.EPOLLIN:
            raise RuntimeError(f"the check's own setup failed: after the event the fd is {registered!r}")
        _handle(read_and_rearm, epoll, conn, clients.REQUEST, "the first event")
        passed("read_and_rearm returned the request and left the fd registered with EPOLLIN|EPOLLONESHOT")
        _arrives(epoll, conn, client, b"x" * 3000, "3,000 more bytes")
        passed("the next bytes woke the poll again: the registration was re-armed")
        client.sendall(b"y" * 10)
        if _event_for(epoll, conn, 0.2):
            raise CheckFailed("expected no second event before read_and_rearm had handled the first (EPOLLONESHOT); "
                              "one came: the registration was re-armed without EPOLLONESHOT")
        _handle(read_and_rearm, epoll, conn, b"x" * 3000 + b"y" * 10, "an event for 3,010 bytes")
        passed("read_and_rearm read all 3,010 bytes waiting and re-armed again")
