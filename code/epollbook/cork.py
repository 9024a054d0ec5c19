"""TCP_CORK measured: how many data segments a response leaves in, and when its last byte arrives.

    RESPONSE, PIECES                  example 5's answer, whole and as a server writing it line by line
    WAYS                              how a server writes pieces: plain send(), TCP_NODELAY, TCP_CORK, MSG_MORE, joined
    WAYS_TOO                          those, the cork with TCP_NODELAY (BOTH), and the cork never pulled (NEVER_PULLED)
    slowly(pieces, pause)             the pieces as a slow producer yields them, *pause* seconds apart
    measure(write, pieces, *, way, pause, warm, request) -> Sent         any ``write(sock, pieces)``, measured
    send_pieces(way, pieces=PIECES, *, pause=PAUSE, warm=0) -> Sent       one response, written the way named
    compare_ways(ways=WAYS, *, pause=PAUSE, rounds=3) -> Comparison        every way, paused and at once: a table
    cork_ceiling(rounds=7) -> Ceiling                                      a cork never pulled: when the bytes leave
    as_a_client_sees(target, request) -> Received                          any server's answer, counted at the client
    pipelined(way, count=3) -> Sent                                        several answers on one connection
    head_and_file(way, size=FILE_SIZE) -> Sent                             a head from a buffer, a file by sendfile()

Some facts about TCP_CORK
-------------------------

TCP sends what a program gives it in segments: each ``send()`` on an idle
connection leaves at once, in a segment of its own, however small (with
``TCP_NODELAY``, or while Nagle's algorithm finds nothing unacknowledged). A
response written in five ``send()`` calls can leave in five segments, each
with its 40 bytes of headers, each a packet for every router and the receiver.

``TCP_CORK`` (Linux; BSD has ``TCP_NOPUSH``) holds partial segments back
while it is set: bytes sent are queued until a full segment's worth (the MSS)
is there, or until the cork is pulled (set back to 0), which sends what is
queued at once. A program corks, writes its pieces, and uncorks: the response
leaves in as few segments as its size allows. ``MSG_MORE`` says the same for
one ``send()`` ("more follows"), and joining the pieces into one buffer before
one ``send()`` does it in user space.

A cork that is never pulled does not hold for ever. The tcp(7) manual says
"there is a 200 millisecond ceiling"; the kernel implements it with its
zero-window probe timer, armed when bytes wait in the queue and nothing is in
flight, for the connection's retransmission timeout (at least 200 ms:
``tcp_probe0_base()`` in include/net/tcp.h). A connection whose timeout has
grown waits longer, and if another timer of the connection is pending (bytes
in flight wait for their retransmission timer), the probe timer is not armed
and the bytes wait for that one: 200 ms is a floor, not an exact figure.

Pulling the cork sends what is queued as Nagle's algorithm allows: on a
connection whose last small segment is still unacknowledged, a pulled cork
still waits for that acknowledgement, unless ``TCP_NODELAY`` is set too.

Linux also corks by itself: with ``net.ipv4.tcp_autocorking`` on (the
default since 3.14), a small ``send()`` is held back while an earlier segment
of the connection is still queued in the machine (in a device's queue, or a
qdisc), and the kernel counts each time in ``TCPAutoCorking``
(/proc/net/netstat). Nagle's algorithm merges too: a small piece waits while
an earlier small segment is unacknowledged. Both merge only pieces that follow
each other faster than the segments leave; a pause between the ``send()``
calls (a program that computes its next piece, waits for a database) defeats
both, and only the explicit cork still merges.

Every measurement here is live, between two sockets of this process on
127.0.0.1, counted by the kernel of the sending side (``TCP_INFO``'s
``tcpi_data_segs_out``: segments that carried data, read with
``probes.tcp_info``) or of the receiving side (``tcpi_data_segs_in``).
"""

import contextlib
import dataclasses
import socket
import statistics
import tempfile
import time

from epollbook import clients, probes
from epollbook.hangups import Table

RESPONSE = (b"HTTP/1.0 200 OK\r\nDate: Mon, 1 Jan 1996 01:01:01 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!")
"""Example 5's answer, byte for byte (tests/test_cork.py checks it against the example's file)."""

PIECES = (*(line + b"\r\n" for line in RESPONSE.split(b"\r\n")[:4]), b"\r\n", b"Hello, world!")
"""The same answer as a server that writes it line by line: status, two headers, a header and the blank line, body."""

PAUSE = 0.005
"""Seconds between two pieces of a slow producer: longer than a segment takes to leave and be acknowledged on
loopback, far shorter than the cork's 200 ms."""

WAIT = 5.0
"""How long (s) a client waits for the bytes it expects before a measurement gives up on them."""

FILE_SIZE = 20_000
"""The file ``head_and_file`` sends: smaller than a loopback segment (MSS 65,483 bytes), larger than a head."""


# -- how a server writes its pieces ------------------------------------------------------------------------


def slowly(pieces, pause=PAUSE):
    """Yield *pieces* one by one, *pause* seconds apart: a producer that computes, reads or waits for each."""
    for number, piece in enumerate(pieces):
        if number and pause:
            time.sleep(pause)
        yield piece


def _plain(sock, pieces):
    for piece in pieces:
        sock.sendall(piece)


def _nodelay(sock, pieces):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _plain(sock, pieces)


def _cork(sock, pieces):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    try:
        _plain(sock, pieces)
    finally:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)  # pulled: what is queued leaves now


def _nodelay_and_cork(sock, pieces):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _cork(sock, pieces)


def _cork_never_pulled(sock, pieces):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    _plain(sock, pieces)


def _msg_more(sock, pieces):
    # MSG_MORE on every piece but the last, which needs one piece of look-ahead: a producer does not say "last".
    pieces = iter(pieces)
    held = next(pieces, None)
    for piece in pieces:
        sock.sendall(held, socket.MSG_MORE)
        held = piece
    if held is not None:
        sock.sendall(held)


def _joined(sock, pieces):
    sock.sendall(b"".join(pieces))


WAYS = {
    "send() each piece": _plain,
    "TCP_NODELAY, send() each": _nodelay,
    "TCP_CORK, send() each, uncork": _cork,
    "MSG_MORE on all but the last": _msg_more,
    "join, one send()": _joined,
}
"""How a server writes a response in pieces, by name: each takes ``(sock, pieces)``."""

NEVER_PULLED = "TCP_CORK, never uncorked"
BOTH = "TCP_NODELAY and TCP_CORK, uncork"
WAYS_TOO = {**WAYS, BOTH: _nodelay_and_cork, NEVER_PULLED: _cork_never_pulled}
"""``WAYS``, and two more: the cork with ``TCP_NODELAY`` set too, and the cork never pulled."""


# -- one response, measured ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sent:
    """What one response cost: data segments (and all segments) the sender sent, and when its last byte arrived.

    ``last_byte_ms`` counts from the server's first ``send()`` to the client's
    ``recv()`` of the last byte; ``None`` if it had not arrived after ``WAIT``
    seconds. ``rto_ms`` is the connection's retransmission timeout when the
    sending began; ``autocorked`` how much ``TCPAutoCorking`` rose meanwhile
    (the counter is the machine's: other connections move it too).
    """

    way: str
    pieces: int
    size: int
    data_segments: int
    segments: int
    last_byte_ms: float | None
    rto_ms: float
    autocorked: int

    def cells(self):
        arrived = "never" if self.last_byte_ms is None else f"{self.last_byte_ms:.1f}"
        return [self.way, self.pieces, self.size, self.data_segments, arrived]


def _autocorking_count():
    return probes.netstat_counters().get("TCPAutoCorking", 0)


def _read(sock, size, timeout=WAIT):
    """Read *size* bytes from *sock*; return ``(bytes, time.monotonic() of the last recv())``, short after *timeout*."""
    received, last = bytearray(), None
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    with contextlib.suppress(OSError):  # a timeout: the caller sees how much came
        while len(received) < size and time.monotonic() < deadline:
            chunk = sock.recv(size - len(received))
            if not chunk:
                break
            received += chunk
            last = time.monotonic()
    return bytes(received), last


def _warm_up(client, server, exchanges):
    """Make *exchanges* small request-answer round trips, as a persistent connection has: the client's kernel has
    then left the quick-ACK mode of a new connection and delays its ACKs, as it does on a connection in use."""
    for _ in range(exchanges):
        client.sendall(b"?")
        server.recv(1)
        server.sendall(b"!" * 100)
        _read(client, 100)


def measure(write, pieces=PIECES, *, way="", pause=PAUSE, warm=0, request=b""):
    """Run ``write(sock, slowly(pieces, pause))`` on the server's end of a fresh connection; return a ``Sent``.

    What the client must receive is the pieces joined. Its end reads in a
    thread of its own as the bytes come. *warm* round trips come first; then
    the client sends *request*, which the server reads whole before it writes.
    """
    pieces = list(pieces)
    expected = sum(map(len, pieces))
    with clients.connected_pair() as (client, server):
        _warm_up(client, server, warm)
        client.sendall(request)
        _read(server, len(request))
        before, autocorked = probes.tcp_info(server), _autocorking_count()
        reader = clients.in_background(_read, client, expected)
        started = time.monotonic()
        write(server, slowly(pieces, pause))
        received, last = reader.result(WAIT + 1)
        after = probes.tcp_info(server)
    return Sent(way, len(pieces), len(received), after.data_segs_out - before.data_segs_out,
                after.segs_out - before.segs_out, None if last is None else (last - started) * 1000,
                before.rto_us / 1000, _autocorking_count() - autocorked)


def send_pieces(way, pieces=PIECES, *, pause=PAUSE, warm=0, request=b""):
    """*pieces* written the way named *way* (a key of ``WAYS_TOO``), measured: a ``Sent``."""
    if way not in WAYS_TOO:
        raise ValueError(f"{way!r} is not a way this module knows; choose one of {', '.join(map(repr, WAYS_TOO))}")
    return measure(WAYS_TOO[way], pieces, way=way, pause=pause, warm=warm, request=request)


# -- every way side by side ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Compared:
    """One way, measured *rounds* times with pauses between the pieces and as many times with none."""

    way: str
    paused: list
    at_once: list

    @staticmethod
    def _segments(runs):
        counts = sorted(run.data_segments for run in runs)
        return str(counts[0]) if counts[0] == counts[-1] else f"{counts[0]}–{counts[-1]}"

    def data_segments(self, paused=True):
        """The median number of data segments, paused or at once."""
        return statistics.median_low(run.data_segments for run in (self.paused if paused else self.at_once))

    def last_byte_ms(self, paused=True):
        """The median time to the last byte (ms), paused or at once; None if a run's last byte never came."""
        waits = [run.last_byte_ms for run in (self.paused if paused else self.at_once)]
        return None if None in waits else statistics.median(waits)

    def cells(self):
        def shown(wait):
            return "never" if wait is None else f"{wait:.2f}"
        return [self.way, self._segments(self.paused), shown(self.last_byte_ms()),
                self._segments(self.at_once), shown(self.last_byte_ms(paused=False))]


class Comparison(Table):
    """The ways side by side: ``way(name)`` finds one's ``Compared`` row."""

    def way(self, name):
        for row in self.rows:
            if row.way == name:
                return row
        raise KeyError(f"no row for {name!r}")

    def autocorked(self):
        """How much ``TCPAutoCorking`` rose during all the runs (other connections of the machine count too)."""
        return sum(run.autocorked for row in self.rows for run in row.paused + row.at_once)


def compare_ways(ways=tuple(WAYS), pieces=PIECES, *, pause=PAUSE, rounds=3):
    """Measure each of *ways* *rounds* times with *pause* between the pieces, and as often with none; a ``Comparison``.

    A fraction of a second for the defaults: the runs with pauses take
    ``pause`` times the number of pieces each.
    """
    rows = [Compared(way, [send_pieces(way, pieces, pause=pause) for _ in range(rounds)],
                     [send_pieces(way, pieces, pause=0) for _ in range(rounds)]) for way in ways]
    return Comparison([
        "how the server writes", f"{pause * 1000:g} ms apart: data segments", "last byte (ms)",
        "at once: data segments", "last byte (ms)"], rows)


# -- a cork never pulled --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ceiling:
    """When the bytes behind a cork that is never pulled arrive: one wait per connection, corked at once.

    ``waits_ms`` is sorted; a wait of ``None`` (listed last) never came within
    ``WAIT`` seconds. ``rto_ms`` holds each connection's retransmission
    timeout, read before it sent.
    """

    waits_ms: list
    rto_ms: list
    data_segments: list

    @property
    def arrived(self):
        return [wait for wait in self.waits_ms if wait is not None]

    @property
    def median_ms(self):
        return statistics.median(self.arrived) if self.arrived else None

    @property
    def outliers(self):
        """The waits more than half as long again as the median, and those that never came (as None)."""
        median = self.median_ms
        return [wait for wait in self.waits_ms if wait is None or (median is not None and wait > 1.5 * median)]


def cork_ceiling(rounds=7, pieces=(RESPONSE,)):
    """Cork *rounds* fresh connections at the same time, send *pieces* and never uncork; return a ``Ceiling``.

    The connections run side by side, so the whole takes one ceiling (about
    0.2 s), or the longest outlier (at most ``WAIT`` s).
    """
    runs = [clients.in_background(send_pieces, NEVER_PULLED, pieces) for _ in range(rounds)]
    results = [run.result(WAIT + 5) for run in runs]
    waits = sorted((sent.last_byte_ms for sent in results), key=lambda wait: (wait is None, wait or 0))
    return Ceiling(waits, [sent.rto_ms for sent in results], [sent.data_segments for sent in results])


# -- a server's answer, as its client counts it -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Received:
    """A server's answer as a client saw it: the bytes, the data segments they came in, and when the last came."""

    answer: bytes
    data_segments: int
    last_byte_ms: float | None


def as_a_client_sees(target, request=clients.REQUEST, *, timeout=WAIT):
    """Send *request* to *target* (a ``Server``, URL or address), read until it closes; return a ``Received``.

    The data segments are counted by the client's kernel
    (``tcpi_data_segs_in``), so this works for a server in another process.
    """
    with socket.create_connection(clients.address_of(target), timeout=timeout) as sock:
        before = probes.tcp_info(sock).data_segs_in
        started = time.monotonic()
        sock.sendall(request)
        answer, last = bytearray(), None
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
                last = time.monotonic()
        return Received(bytes(answer), probes.tcp_info(sock).data_segs_in - before,
                        None if last is None else (last - started) * 1000)


# -- where corking pays ----------------------------------------------------------------------------------------


def pipelined(way, count=3, *, pause=PAUSE):
    """*count* answers on one connection to *count* requests the client pipelined, written the way named *way*.

    The client sends its requests in one go; the server reads them, then
    works *pause* seconds on each answer after the first (it computes it,
    reads a file) and writes each as it is ready. Returns a ``Sent``.
    """
    return send_pieces(way, [RESPONSE] * count, pause=pause, request=clients.REQUEST * count)


HEAD_AND_FILE = {
    "send() the head, sendfile()": "plain",
    "TCP_CORK around both": "cork",
    "MSG_MORE on the head, sendfile()": "more",
    "read the file, one send()": "joined",
}
"""How a server sends a head from a buffer and a body from a file, by name."""


def head_and_file(way, size=FILE_SIZE, *, pause=PAUSE):
    """A head from a buffer, then a file of *size* bytes by ``socket.sendfile()``, sent the way named *way*.

    *way* is a key of ``HEAD_AND_FILE``; the server spends *pause* seconds
    opening the file after it sent the head. Returns a ``Sent``.
    """
    if way not in HEAD_AND_FILE:
        raise ValueError(f"{way!r} is not one of {', '.join(map(repr, HEAD_AND_FILE))}")
    how = HEAD_AND_FILE[way]
    head = RESPONSE.split(b"\r\n\r\n")[0].replace(b"Content-Length: 13", b"Content-Length: %d" % size) + b"\r\n\r\n"
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    with tempfile.TemporaryFile() as file:
        file.write(body)

        def write(sock, pieces):
            next(pieces)  # the head, as the producer gives it: then the pause, as it opens the file
            if how == "cork":
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            if how == "joined":
                next(pieces)
                file.seek(0)
                sock.sendall(head + file.read())
                return
            sock.sendall(head, socket.MSG_MORE if how == "more" else 0)
            next(pieces)
            file.seek(0)
            sock.sendfile(file)
            if how == "cork":
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)

        # The pieces only pace the writer and tell the reader how much comes.
        return measure(write, [head, body], way=way, pause=pause)

