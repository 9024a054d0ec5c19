"""Nagle's algorithm, delayed ACKs and TCP_NODELAY, measured on this kernel.

    REQUEST_HEAD, BODY                     a request in two pieces: its head, then its body
    request_head(body), answer_head(body)  the heads of a request carrying *body* and of the echo server's answer
    read_message(sock), body_of(message)   one HTTP message (head and Content-Length body) from a socket, as bytes
    two_sends, one_send, gathered, more_then_last, corked       ways to send a head and a body
    nodelay(sock)                          TCP_NODELAY as the kernel has it: 1 or 0
    serve_requests(conn, answer)           the echo server's loop on one connection
    open_link(answer=one_send, ...)        a persistent connection to an echo server in a thread: a ``Link``
    alternate(rounds, **contenders)        time each contender once per round, in turn: a ``Comparison``
    paced(round_trip, pause, rounds)       time one contender with a pause before each round: a ``Series``
    accepted_options()                     which accepted sockets inherit the listener's TCP_NODELAY
    nodelay_of_accepted(server, client)    TCP_NODELAY of a server process's accepted socket, borrowed with pidfd_getfd
    still_buffered()                       send() with TCP_NODELAY still copies into the socket's buffer
    small_sends(count, size)               data segments that *count* small send()s cost, with and without TCP_NODELAY
    asyncio_nodelay()                      TCP_NODELAY on both ends of a real asyncio connection

Some facts about Nagle's algorithm
----------------------------------

Nagle's algorithm (RFC 896) holds back a segment smaller than the maximum
segment size while data sent earlier is not yet acknowledged: small writes
wait and leave together, once the ACK comes. Delayed ACKs (RFC 1122) are the
other side's economy: a receiver waits a little (on Linux at least 40 ms,
``TCP_DELACK_MIN``) before acknowledging, in the hope of carrying the ACK on an
answer of its own. Each is harmless alone. Together they deadlock for the
length of the ACK timer when a program writes twice and then waits for an
answer (write-write-read): the first piece leaves at once; the second waits for
the ACK of the first; the receiver, which cannot answer half a request, waits
for more before it acknowledges. After about 40 ms its timer fires, the ACK
goes, the second piece follows, and the answer comes.

``TCP_NODELAY`` turns Nagle's algorithm off for one socket: every ``send()``
leaves as soon as the window allows. It does not make a socket unbuffered:
``send()`` still copies into the socket's send buffer and returns, a write
larger than the buffer still waits for room, and many small ``send()``
calls cost more segments than with Nagle's algorithm (Linux's autocorking
merges some of them still). Sending the request in one piece (one
``send()`` of the joined bytes, ``sendmsg()`` with a list, ``MSG_MORE`` on all
but the last piece, or ``TCP_CORK`` pulled after the last) avoids the stall
with Nagle left on.

A new connection starts in quick-ACK mode (the receiver acknowledges at once
for its first segments), so the stall shows from a connection's second round
trip on: ``Comparison`` keeps each contender's first round apart. Linux copies
a listening socket's options into each connection when the handshake
completes, not when ``accept()`` returns: a connection that completed before
the option was set on the listener does not have it.

How long a receiver goes on delaying its ACKs is its kernel's heuristic.
Measured on Linux 6.x: a client that writes twice stalls on every request,
however paced; a server that answers in two pieces stalls when requests
follow each other closely, but not after a pause of 50 ms, after which the
client acknowledged at once.

Everything here runs on 127.0.0.1, between threads of this process, except
``nodelay_of_accepted``, which borrows a server process's socket.
"""

import asyncio
import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import os
import socket
import statistics
import struct
import termios
import time

from epollbook import clients, probes

REQUEST_HEAD = b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\n"
BODY = b"hello"
"""A request in two pieces: its head, then its body (which a real client may read from a file after the head)."""

TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", 12)  # include/uapi/linux/tcp.h; Python names it since 3.7 on Linux
SIOCOUTQ = termios.TIOCOUTQ  # the same request number: bytes in a socket's send queue (sent or not, not acknowledged)
SYS_PIDFD_GETFD = 438  # the same number on every architecture Linux has added system calls to since 5.1

MOST_HEAD = 16384
"""The longest head ``read_message`` accepts: every buffer has a limit."""


def answer_head(body):
    """The head of the echo server's answer to a request whose body is *body*: it echoes the body."""
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)


def request_head(body):
    """The head of a request carrying *body*."""
    return b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % len(body)


class MessageError(ConnectionError):
    """The other side closed in the middle of a message, or sent something that is not one."""


def read_message(sock):
    """Read one HTTP message from *sock*: a head that ends with a blank line, then Content-Length bytes of body.

    Returns the whole message as bytes, or ``b''`` if the other side closed
    before sending any of it. Reads no further than the message, so the next
    one stays in the socket. Raises ``MessageError`` if the other side closes
    in the middle, or sends a head longer than 16 KiB or without a valid
    Content-Length; ``TimeoutError`` after the socket's own timeout.
    """
    head = b""
    while b"\r\n\r\n" not in head:
        # Peek, then take exactly up to the blank line: what follows is the body, or the next message.
        waiting = sock.recv(MOST_HEAD, socket.MSG_PEEK)
        if not waiting:
            if head:
                raise MessageError(f"the other side closed after {len(head)} bytes of a head: {head[:60]!r}")
            return b""
        end = (head + waiting).find(b"\r\n\r\n")
        take = len(waiting) if end < 0 else end + 4 - len(head)
        head += sock.recv(take)
        if len(head) > MOST_HEAD:
            raise MessageError(f"a head longer than {MOST_HEAD} bytes: {head[:60]!r}...")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            if not value.strip().isdigit():
                raise MessageError(f"Content-Length is not a number: {line!r}")
            length = int(value)
    body = b""
    while len(body) < length:
        piece = sock.recv(length - len(body))
        if not piece:
            raise MessageError(f"the other side closed after {len(body)} of the body's {length} bytes")
        body += piece
    return head + body


def body_of(message):
    """The body of a whole message ``read_message`` returned."""
    return message.partition(b"\r\n\r\n")[2]


# -- ways to send a head and a body ------------------------------------------------------------


def two_sends(sock, head, body):
    """Two ``send()`` calls, as code that writes each piece when it has it: write, write."""
    sock.sendall(head)
    sock.sendall(body)


def one_send(sock, head, body):
    """One ``send()`` of the joined bytes."""
    sock.sendall(head + body)


def gathered(sock, head, body):
    """One ``sendmsg()`` with both pieces (the kernel gathers them, as ``writev()`` does)."""
    sent = sock.sendmsg([head, body])
    if sent < len(head) + len(body):  # a full send buffer took part of it: the rest as one piece
        sock.sendall((head + body)[sent:])


def more_then_last(sock, head, body):
    """The head with ``MSG_MORE`` ("more is coming: hold it"), then the body without, which releases both."""
    sock.sendall(head, socket.MSG_MORE)
    sock.sendall(body)


def corked(sock, head, body):
    """``TCP_CORK`` on, both pieces, cork pulled: the kernel sends full segments, and the rest when pulled."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    try:
        sock.sendall(head)
        sock.sendall(body)
    finally:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)


def nodelay(sock):
    """``TCP_NODELAY`` of *sock* as the kernel has it: 1 (Nagle's algorithm off) or 0 (on)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


# -- a persistent connection and its echo server ------------------------------------------------------------


def serve_requests(conn, answer=one_send, quickack=False):
    """Answer each request on *conn* with ``answer(conn, answer_head(body), body)`` until the client closes.

    With *quickack*, ``TCP_QUICKACK`` is set before each read: this end
    acknowledges at once instead of delaying (Linux clears it again by itself,
    so it is set each time). Returns the number of requests answered.
    """
    answered = 0
    while True:
        if quickack:
            conn.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)
        message = read_message(conn)
        if not message:
            return answered
        body = body_of(message)
        answer(conn, answer_head(body), body)
        answered += 1


class Link:
    """A persistent connection on 127.0.0.1: ``client`` here, the server's end answering in a thread.

    ``round_trip(sends)`` sends one request with *sends* and reads the answer:
    the seconds it took. ``close()`` closes the client, which ends the server's
    thread, and then the server's end; a ``Link`` is a context manager too.
    ``server`` is the thread (a ``clients.Background``), ``server_side`` the
    server's socket.
    """

    def __init__(self, client, server_side, server):
        self.client, self.server_side, self.server = client, server_side, server

    def round_trip(self, sends=two_sends, body=BODY):
        """Send one request carrying *body* with ``sends(sock, head, body)``, read the answer; return the seconds.

        Raises ``MessageError`` if the answer does not echo the body.
        """
        started = time.perf_counter()
        sends(self.client, request_head(body), body)
        answer = read_message(self.client)
        took = time.perf_counter() - started
        if body_of(answer) != body:
            raise MessageError(f"the answer does not echo the request's body: {answer[:80]!r}")
        return took

    def close(self):
        self.client.close()
        self.server.finished.wait(2.0)
        clients.wake_and_close(self.server_side)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def open_link(answer=one_send, *, client_nodelay=False, server_nodelay=False, server_quickack=False,
              timeout=5.0, runner=clients.Background):
    """Open a ``Link``: a connection whose server's end answers each request with ``answer(conn, head, body)``.

    *client_nodelay* and *server_nodelay* set ``TCP_NODELAY`` on either end;
    *server_quickack* makes the server's end acknowledge at once. Both ends
    time out after *timeout* seconds. *runner* starts the server's loop in a
    thread: ``runner(serve_requests, conn, answer, quickack)``.
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=timeout)
        server_side, _ = listener.accept()
    server_side.settimeout(timeout)
    if client_nodelay:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if server_nodelay:
        server_side.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        server = runner(serve_requests, server_side, answer, server_quickack)
    except BaseException:
        client.close()
        server_side.close()
        raise
    return Link(client, server_side, server)


# -- measuring side by side ---------------------------------------------------------------------------


OUTLIER_FACTOR = 4
"""A round is an outlier if it took more than this many times its contender's median, or less than its share."""


@dataclasses.dataclass
class Series:
    """One contender's round trips: ``first`` (a new connection's first round, apart) and ``times`` (the rest)."""

    name: str
    first: float
    times: list

    @property
    def median(self):
        return statistics.median(self.times)

    @property
    def outliers(self):
        """The rounds more than ``OUTLIER_FACTOR`` times the median away from it, either way."""
        median = self.median
        return [t for t in self.times if t > median * OUTLIER_FACTOR or t * OUTLIER_FACTOR < median]


@dataclasses.dataclass
class Comparison:
    """What ``alternate`` measured: a ``Series`` per contender, by name, in the order given."""

    series: dict
    rounds: int

    def __getitem__(self, name):
        return self.series[name]

    def ratio(self, slow, fast):
        """How many times the median of *slow* is that of *fast*."""
        return self[slow].median / self[fast].median

    def rows(self):
        """One row per contender: name, first round, median, fastest, slowest, outliers (ms)."""
        return [(s.name, s.first * 1e3, s.median * 1e3, min(s.times) * 1e3, max(s.times) * 1e3,
                 [round(t * 1e3, 2) for t in s.outliers]) for s in self.series.values()]

    def _repr_markdown_(self):
        lines = [f"| contender | first round | median of {self.rounds} | fastest | slowest | outliers |",
                 "| --- | ---: | ---: | ---: | ---: | --- |"]
        for name, first, median, low, high, outliers in self.rows():
            shown = ", ".join(f"{t:g}" for t in outliers) or "none"
            lines.append(f"| {name} | {first:.3f} ms | **{median:.3f} ms** | {low:.3f} ms | {high:.3f} ms | {shown} |")
        return "\n".join(lines)

    def __str__(self):
        return "\n".join(f"{name}: first {first:.3f} ms, median {median:.3f} ms ({low:.3f}-{high:.3f}), "
                         f"outliers {outliers}" for name, first, median, low, high, outliers in self.rows())


def alternate(rounds, **contenders):
    """Call each contender once per round, in turn, *rounds* times after a first round kept apart; a ``Comparison``.

    A contender is a callable that does one round trip (``link.round_trip``,
    ``lambda: clients.http_get(server)``); what it returns is not used. Taking
    turns spreads whatever else the machine does over all of them alike. A
    connection waits while the others take their turns: keep a contender that
    stalls for tens of milliseconds apart from one whose stall depends on the
    pace of its requests (``paced`` measures that pace's effect).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")

    def timed(contender):
        started = time.perf_counter()
        contender()
        return time.perf_counter() - started

    firsts = {name: timed(contender) for name, contender in contenders.items()}
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, contender in contenders.items():
            times[name].append(timed(contender))
    return Comparison({name: Series(name, firsts[name], times[name]) for name in contenders}, rounds)


def paced(round_trip, pause, rounds):
    """Time *rounds* calls of *round_trip* with *pause* seconds of silence before each; a ``Series`` ("paced").

    The first call (a connection's first round) is kept apart as in ``alternate``.
    """
    first = None
    times = []
    for _ in range(rounds + 1):
        time.sleep(pause)
        started = time.perf_counter()
        round_trip()
        took = time.perf_counter() - started
        if first is None:
            first = took
        else:
            times.append(took)
    return Series(f"{pause * 1e3:g} ms between requests", first, times)


# -- the option, inherited -----------------------------------------------------------------------------


@dataclasses.dataclass
class Inherited:
    """One case of ``accepted_options``: how the listener was set, and TCP_NODELAY of the accepted socket."""

    case: str
    listener: int
    accepted: int


def accepted_options():
    """Which accepted sockets have ``TCP_NODELAY``: a list of ``Inherited``, one per way of setting the listener.

    The cases: a listener without the option; one with it, set before the
    client connects; one set after a client's handshake completed but before
    ``accept()``; and an accepted socket whose listener is given the option
    only afterwards.
    """
    cases = []
    for case in ("not set", "set before the client connects", "set after the handshake, before accept()",
                 "set after accept()"):
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            if case == "set before the client connects":
                listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with socket.create_connection(listener.getsockname(), timeout=5.0) as client:
                if case == "set after the handshake, before accept()":
                    # create_connection() returned: the handshake is done, the connection waits in the queue.
                    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                accepted, _ = listener.accept()
                with accepted:
                    if case == "set after accept()":
                        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    cases.append(Inherited(case, nodelay(listener), nodelay(accepted)))
                del client
    return cases


class CannotBorrow(OSError):
    """This kernel or its rules do not let us borrow another process's socket (``pidfd_getfd``)."""


def borrow_socket(pid, fd):
    """A duplicate, in this process, of file descriptor *fd* of process *pid*, as a ``socket.socket``.

    Uses ``pidfd_getfd()`` (Linux 5.6), which needs the right to trace *pid*
    (our own child is fine unless the machine forbids tracing). Close the
    result: the owner's descriptor stays as it was. Raises ``CannotBorrow``
    with the reason if it is not allowed or not available.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as error:  # ENOSYS before Linux 5.3, EPERM under some sandboxes
        raise CannotBorrow(error.errno, f"pidfd_open({pid}) failed: {error.strerror}") from None
    try:
        fd = libc.syscall(ctypes.c_long(SYS_PIDFD_GETFD), ctypes.c_long(pidfd), ctypes.c_long(fd), ctypes.c_long(0))
        if fd < 0:
            number = ctypes.get_errno()
            raise CannotBorrow(number, f"pidfd_getfd({pid}, ...) failed: {os.strerror(number)}")
    finally:
        os.close(pidfd)
    return socket.socket(fileno=fd)


def nodelay_of_accepted(server, client, timeout=2.0):
    """``TCP_NODELAY`` of the socket *server* (a running ``launch.Server``) accepted for *client*, or None.

    *client* is our connected socket; the server's socket is the one whose
    peer is *client*'s address, found among the server's descriptors and
    borrowed for a moment (``borrow_socket``). Waits up to *timeout* seconds
    for the server to accept; returns None if it has not. Raises
    ``CannotBorrow`` if this machine does not allow it.
    """
    wanted = client.getsockname()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for fd, what in probes.open_fds(server.pid).items():
            if not what.startswith("socket:"):
                continue
            try:
                borrowed = borrow_socket(server.pid, fd)
            except CannotBorrow as error:
                if error.errno == errno.EBADF:  # closed meanwhile
                    continue
                raise
            with borrowed, contextlib.suppress(OSError):  # not connected: the listener, or one being closed
                if borrowed.getpeername() == wanted:
                    return nodelay(borrowed)
        time.sleep(0.005)
    return None


# -- not unbuffered -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Buffered:
    """What ``still_buffered`` saw: ``offered`` bytes written with TCP_NODELAY to a peer that reads nothing."""

    nodelay: int
    offered: int
    taken: int          # what one non-blocking send() took, at once
    peer_unread: int    # what reached the peer's socket, unread
    not_sent: int       # what waits in our send buffer, not yet sent (TCP_INFO's notsent_bytes)
    blocked_for: float  # seconds a blocking sendall() of as much again waited
    timed_out: bool     # whether that sendall() ended by its timeout, the room never coming
    timeout: float


def _ioctl_int(sock, request):
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0"))[0]


def still_buffered(offered=8 << 20, timeout=0.2):
    """Write *offered* bytes with TCP_NODELAY to a peer that never reads; a ``Buffered``.

    One non-blocking ``send()`` takes what fits in the buffers and returns at
    once; a blocking ``sendall()`` of as much again waits for room that never
    comes, until its *timeout*.
    """
    with clients.connected_pair() as (client, server_side):  # the client has TCP_NODELAY set
        client.setblocking(False)
        taken = client.send(bytes(offered))
        deadline = time.monotonic() + 1.0
        # Loopback delivers within microseconds; wait until what can reach the peer has reached it.
        while _ioctl_int(client, SIOCOUTQ) > (probes.tcp_info(client).notsent_bytes or 0) \
                and time.monotonic() < deadline:
            time.sleep(0.002)
        peer_unread = _ioctl_int(server_side, termios.FIONREAD)
        not_sent = probes.tcp_info(client).notsent_bytes
        client.settimeout(timeout)
        started = time.monotonic()
        try:
            client.sendall(bytes(offered))
            timed_out = False
        except TimeoutError:
            timed_out = True
        blocked_for = time.monotonic() - started
        return Buffered(nodelay(client), offered, taken, peer_unread, not_sent, blocked_for, timed_out, timeout)


def small_sends(count=100, size=10):
    """Data segments that *count* ``send()`` calls of *size* bytes cost: ``{"Nagle on": n, "TCP_NODELAY": m}``.

    Counted with ``TCP_INFO``'s ``data_segs_out`` on the sender, the peer
    reading all the while (its kernel acknowledges at once).
    """
    segments = {}
    for name, option in (("Nagle on", 0), ("TCP_NODELAY", 1)):
        with clients.connected_pair() as (client, server_side):
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, option)
            before = probes.tcp_info(client).data_segs_out
            for _ in range(count):
                client.send(b"x" * size)
            received = 0
            server_side.settimeout(5.0)
            while received < count * size:
                received += len(server_side.recv(65536))
            segments[name] = probes.tcp_info(client).data_segs_out - before
    return segments


# -- asyncio ------------------------------------------------------------------------------------------


def asyncio_nodelay(timeout=5.0):
    """TCP_NODELAY of both ends of a connection asyncio made: ``{"client": 1, "server": 1}``.

    Read from the transports' own sockets (``get_extra_info("socket")``).
    asyncio runs in a thread of its own: a notebook's kernel already runs an
    event loop in this one.
    """
    async def connect():
        seen = {}
        accepted = asyncio.Event()

        async def on_client(reader, writer):
            seen["server"] = nodelay(writer.get_extra_info("socket"))
            accepted.set()
            writer.close()

        server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        async with server:
            _, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
            seen["client"] = nodelay(writer.get_extra_info("socket"))
            await asyncio.wait_for(accepted.wait(), timeout)
            writer.close()
            await writer.wait_closed()
        return seen

    return clients.in_background(asyncio.run, connect()).result(timeout + 1.0)
