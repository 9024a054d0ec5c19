"""How a TCP connection ends, as the server's end sees it: the hang-up truth table, measured on this kernel.

    ENDINGS                              every way a connection ends, as data, each with the code that makes it happen
    measure(ending, window=WINDOW)       one ``Row``: what the server's end showed after that ending
    truth_table(endings=ENDINGS)         a ``Table`` of rows: HTML in a notebook, text when printed
    reading_an_error()                   a reset's error, read with SO_ERROR, recv() and SO_ERROR again
    where_hup_comes_from()               which ends make EPOLLHUP appear, registered as example 3 registers: 0
    a_stopped_peer(seconds=2.5)          a client process stopped: what its connection shows then, and once it ended
    answer_then_close(close, ...)        a client that pipelined bytes, answered, then closed with *close*
    close_at_once(conn)                  ``conn.close()``: with unread bytes, a reset

Some facts about hang-ups
-------------------------

A connection has two directions, and each side can end its sending direction
alone: ``shutdown(SHUT_WR)`` sends a FIN and the other side's ``recv()``
returns ``b''`` once it has read everything before it; ``close()`` does the
same for the direction it still had, and gives up the socket. A FIN from the
other side sets ``EPOLLIN`` (``recv()`` will not block: it returns ``b''``) and
``EPOLLRDHUP`` ("read hang-up": the peer will send nothing more). Nothing in
the FIN says whether the peer closed or only shut down its writing side, so
from the server's end the two look the same; only a ``send()`` tells them
apart, later, when the closed peer's kernel answers it with a reset.

``EPOLLHUP`` is not "the peer closed". Linux reports it once *both* directions
are shut (or the connection is gone): the peer's FIN plus our own
``shutdown(SHUT_WR)``, our own ``shutdown(SHUT_RDWR)`` alone, or a reset.
``EPOLLERR`` comes with a pending error, which ``SO_ERROR`` names and a
failing ``recv()`` or ``send()`` raises: reading it, either way, consumes it,
so the next call sees no error. That is why each column of the table is
measured on a fresh connection ended the same way.

A reset (an RST segment) ends both directions at once, and at once: a peer
that closes with ``SO_LINGER`` set to 0 sends one, and so does a peer that
closes while bytes it was sent lie unread in its socket. That second case is
the "lingering close" problem: a server that answers and closes while the
client's pipelined bytes are unread resets the connection, and the reset can
destroy the tail of an answer the client has not received yet. The fix is to
``shutdown(SHUT_WR)`` (the answer is followed by a FIN), read until the client
closes its side, then close.

A peer that is simply gone (its process stopped, its machine unplugged) sends
nothing, so nothing arrives and epoll reports nothing: the connection looks
open, for ever. While the peer's *kernel* lives, as it does for a stopped
process, it even acknowledges what we send. Only a timeout of our own finds
such a peer.

Every row here is measured live, between two sockets of this process (or a
client process, for the stopped peer), on 127.0.0.1.
"""

import contextlib
import dataclasses
import errno
import html
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from epollbook import clients, probes

WINDOW = 0.25
"""How long (s) a connection is watched before "no event" is recorded: on loopback every ending arrives in well
under a millisecond, so this only bounds the wait for what never comes."""

REQUEST = clients.REQUEST
SENT = b"answer"
"""What the table's ``send()`` column sends."""

WATCHED = {
    "EPOLLIN|EPOLLRDHUP": select.EPOLLIN | select.EPOLLRDHUP,
    "EPOLLIN|EPOLLRDHUP|EPOLLOUT": select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLOUT,
    "0": 0,
}
"""The registrations each row is watched with: a reader's, one waiting to write, and example 3's after its answer
(``epoll.modify(fileno, 0)``), where only what the kernel always adds, EPOLLERR and EPOLLHUP, can come."""


# -- connections to end ------------------------------------------------------------------------------


@dataclasses.dataclass
class Connection:
    """A live connection to end: the server's end, and the client's where it is in this process.

    The client has sent ``REQUEST`` and the server's end has read it, so that
    whatever it shows next comes from the ending alone. The server's end is
    non-blocking, as an epoll server holds it.
    """

    server: socket.socket
    client: socket.socket | None = None      # None when the client is another process
    process: subprocess.Popen | None = None  # that process


# The client that runs as a process of its own: it connects COUNT times, sends the request on each, says so,
# then waits on its standard input, whose end (or a signal) ends it.
_CLIENT_PROCESS = """
import socket, sys
host, port, count, request = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode()
sockets = [socket.create_connection((host, port)) for _ in range(count)]
for sock in sockets:
    sock.sendall(request)
print("ready", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def connections(count, *, in_another_process=False, timeout=10.0):
    """Yield *count* ``Connection`` s on 127.0.0.1, each with its request read; close them all after the block.

    With *in_another_process* the client ends are in one client process
    (a Python started for the purpose), which is continued, told to end, and
    waited for after the block, whatever state the block left it in. Raises
    ``TimeoutError`` if the client process does not connect within *timeout* s.
    """
    made, process = [], None
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(timeout)
        try:
            if in_another_process:
                host, port = listener.getsockname()
                process = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _CLIENT_PROCESS, host, str(port), str(count), REQUEST.decode()],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                for _ in range(count):
                    server_end, _ = listener.accept()
                    made.append(Connection(server_end, process=process))
                if not clients.wait_readable(process.stdout, timeout):
                    raise TimeoutError(f"the client process did not connect within {timeout:g} s")
            else:
                for _ in range(count):
                    client = socket.create_connection(listener.getsockname(), timeout=timeout)
                    server_end, _ = listener.accept()
                    made.append(Connection(server_end, client=client))
                    client.sendall(REQUEST)
            for connection in made:
                _read_request(connection.server, timeout)
                connection.server.setblocking(False)
            yield made
        finally:
            for connection in made:
                connection.server.close()
                if connection.client is not None:
                    connection.client.close()
            if process is not None:
                _end_process(process)


def _read_request(sock, timeout):
    sock.settimeout(timeout)
    received = b""
    while len(received) < len(REQUEST):
        piece = sock.recv(len(REQUEST) - len(received))
        if not piece:
            raise ConnectionError("the client closed before its request was read")
        received += piece


def _end_process(process):
    """Continue a client process (it may be stopped), let it end by closing its input, and reap it (once)."""
    if process.returncode is not None:  # reaped already: its pid may be another process's by now
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGCONT)
    with contextlib.suppress(OSError):
        process.stdin.close()
    try:
        process.wait(5.0)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    process.stdout.close()


# -- the ways a connection ends ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ending:
    """One way a connection ends: who does it, the call, and ``make(connection)``, which does it for real."""

    name: str                            # a short key: 'close', 'shut_wr', 'reset', ...
    side: str                            # 'client' or 'server': whose call ends it
    call: str                            # the call, as code, for the table
    make: Callable[[Connection], None]
    in_another_process: bool = False     # the client must be a process of its own (to be stopped)

    def __str__(self):
        return self.call


def _close_unread(connection):
    connection.server.send(SENT)
    if not clients.wait_readable(connection.client, 5.0):  # on loopback it is there already; a busy machine may lag
        raise TimeoutError("the server's bytes did not reach the client")
    connection.client.close()


def _stop(connection):
    """Stop the client's process (SIGSTOP) and wait until the kernel shows it stopped."""
    pid = connection.process.pid
    os.kill(pid, signal.SIGSTOP)  # stopping a stopped process does nothing: each connection of it may ask
    deadline = time.monotonic() + 5.0
    while probes.process_state(pid).state not in "Tt":
        if time.monotonic() > deadline:
            raise TimeoutError(f"the client process {pid} did not stop")
        time.sleep(0.002)


ENDINGS = (
    Ending("close", "client", "client.close()", lambda connection: connection.client.close()),
    Ending("shut_wr", "client", "client.shutdown(SHUT_WR)",
           lambda connection: connection.client.shutdown(socket.SHUT_WR)),
    Ending("close unread", "client", "client.close(), the server's bytes unread", _close_unread),
    Ending("reset", "client", "client.close() with SO_LINGER 0 (a reset)",
           lambda connection: clients.reset(connection.client)),
    Ending("stopped", "client", "client process stopped (SIGSTOP)", _stop, in_another_process=True),
    Ending("server shut_rd", "server", "server.shutdown(SHUT_RD)",
           lambda connection: connection.server.shutdown(socket.SHUT_RD)),
    Ending("server shut_wr", "server", "server.shutdown(SHUT_WR)",
           lambda connection: connection.server.shutdown(socket.SHUT_WR)),
    Ending("server shut_rdwr", "server", "server.shutdown(SHUT_RDWR)",
           lambda connection: connection.server.shutdown(socket.SHUT_RDWR)),
)
"""Every way a connection ends that the table shows, in its order. ``ending(name)`` finds one by name."""


def ending(name):
    """The ``Ending`` called *name*; raises ``KeyError`` naming the known ones if there is none."""
    for each in ENDINGS:
        if each.name == name:
            return each
    raise KeyError(f"no ending called {name!r}; the endings are {', '.join(repr(each.name) for each in ENDINGS)}")


# -- measuring ----------------------------------------------------------------------------------------


def outcome(call):
    """What ``call()`` (a ``recv()`` or ``send()``) did, in a word: ``"b''"``, ``"6 bytes"``, or the errno's name."""
    try:
        result = call()
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error.errno))
    if isinstance(result, int):
        return f"{result} bytes"
    return repr(result) if len(result) <= 16 else f"{len(result)} bytes"


def so_error(sock):
    """The pending error of *sock* (``getsockopt(SOL_SOCKET, SO_ERROR)``) by name, ``'0'`` for none.

    Reading it clears it: the next ``recv()`` or ``send()`` no longer sees it.
    """
    number = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    return errno.errorcode.get(number, str(number)) if number else "0"


def events_seen(sock, window=WINDOW):
    """The event mask *sock* shows under each registration of ``WATCHED``: ``{registration: mask}``.

    Waits up to *window* seconds for anything a reader would see (EPOLLIN,
    EPOLLRDHUP, EPOLLERR, EPOLLHUP), then asks every registration at once: the
    level-triggered answer is the socket's state then, 0 if it shows nothing.
    """
    with contextlib.ExitStack() as stack:
        watching = {}
        for name, mask in WATCHED.items():
            epoll = stack.enter_context(select.epoll())
            epoll.register(sock.fileno(), mask)
            watching[name] = epoll
        watching["EPOLLIN|EPOLLRDHUP"].poll(window)
        return {name: sum(events for _, events in epoll.poll(0)) for name, epoll in watching.items()}


def _error_arrives(sock, window):
    """Wait up to *window* seconds for EPOLLERR or EPOLLHUP on *sock*: the peer's answer to what we sent."""
    with select.epoll() as epoll:
        epoll.register(sock.fileno(), 0)
        return bool(epoll.poll(window))


def send_twice(sock, window=WINDOW):
    """``send()`` twice, the second once the peer's kernel has had *window* s to answer the first: two outcomes."""
    first = outcome(lambda: sock.send(SENT))
    if not first[0].isdigit():
        return first, outcome(lambda: sock.send(SENT))
    _error_arrives(sock, window)
    return first, outcome(lambda: sock.send(SENT))


@dataclasses.dataclass(frozen=True)
class Row:
    """What the server's end of a connection showed after one ``Ending``.

    ``events`` maps each registration of ``WATCHED`` to the mask seen;
    ``so_error`` is the pending error; ``recv`` and ``send`` are the outcomes
    of two calls in a row (``"b''"``, ``"6 bytes"``, ``'EAGAIN'``,
    ``'ECONNRESET'``, ``'EPIPE'``). Each was seen on a fresh connection ended
    the same way, since reading an error consumes it.
    """

    ending: Ending
    events: dict
    so_error: str
    recv: tuple
    send: tuple

    @property
    def mask(self):
        """The mask seen registered for ``EPOLLIN|EPOLLRDHUP``, as a reader registers."""
        return self.events["EPOLLIN|EPOLLRDHUP"]

    def names(self, registration="EPOLLIN|EPOLLRDHUP"):
        """The mask seen under *registration*, as names: ``'EPOLLIN|EPOLLRDHUP'``, ``'0'`` for nothing."""
        return probes.epoll_event_names(self.events[registration])

    def cells(self):
        """The row as the table's text cells, in ``COLUMNS`` order."""
        return [self.ending.call, *(self.names(registration) for registration in WATCHED), self.so_error,
                " then ".join(self.recv), " then ".join(self.send)]


COLUMNS = ["ending", "events, registered EPOLLIN|EPOLLRDHUP", "... with EPOLLOUT too", "... registered 0",
           "SO_ERROR", "recv(), twice", "send(), twice"]


def measure(ending, window=WINDOW):
    """End three live connections as *ending* says; return the ``Row`` of what the server's end showed.

    One connection is watched with epoll and then read, one asked for
    ``SO_ERROR``, one written to. Raises ``OSError`` or ``TimeoutError`` if
    the connections cannot be made.
    """
    with connections(3, in_another_process=ending.in_another_process) as (watched, asked, written):
        for connection in (watched, asked, written):
            ending.make(connection)
        events = events_seen(watched.server, window)
        received = (outcome(lambda: watched.server.recv(4096)), outcome(lambda: watched.server.recv(4096)))
        return Row(ending, events, so_error(asked.server), received, send_twice(written.server, window))


@dataclasses.dataclass(frozen=True)
class ErrorRead:
    """One reset connection's error, read three times in a row: ``SO_ERROR``, then ``recv()``, then ``SO_ERROR``."""

    events: int       # the mask that announced it (registered EPOLLIN|EPOLLRDHUP)
    so_error: str     # the first read: the error's name
    recv: str         # what recv() did next
    so_error_again: str

    def __str__(self):
        return (f"{probes.epoll_event_names(self.events)}: SO_ERROR {self.so_error}, then recv() "
                f"{self.recv}, then SO_ERROR {self.so_error_again}")


def reading_an_error(window=WINDOW):
    """Reset a live connection; on the server's end, once epoll shows it, read ``SO_ERROR``, ``recv()``, ``SO_ERROR``.

    Returns an ``ErrorRead``: whichever call reads the pending error first
    takes it, and the calls after it see none.
    """
    with connections(1) as (connection,):
        clients.reset(connection.client)
        events = events_seen(connection.server, window)["EPOLLIN|EPOLLRDHUP"]
        first = so_error(connection.server)
        received = outcome(lambda: connection.server.recv(4096))
        return ErrorRead(events, first, received, so_error(connection.server))


class Table:
    """Rows of measurements with headings: HTML in a notebook (``_repr_html_``), aligned text with ``str()``."""

    def __init__(self, columns, rows):
        self.columns = list(columns)
        self.rows = list(rows)

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)

    def __repr__(self):
        return str(self)

    def _cells(self):
        return [row.cells() if hasattr(row, "cells") else list(row) for row in self.rows]

    def __str__(self):
        lines = [self.columns, *self._cells()]
        widths = [max(len(str(line[column])) for line in lines) for column in range(len(self.columns))]
        return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
                         for line in lines)

    def _repr_html_(self):
        def cell(text, tag="td"):
            # Let a long mask wrap after each '|', and a call after its object's '.', so the table fits the page.
            return f"<{tag}>{html.escape(str(text)).replace('|', '|<wbr>').replace('.', '.<wbr>')}</{tag}>"
        head = "".join(cell(column, "th") for column in self.columns)
        body = "".join("<tr>" + "".join(map(cell, cells)) + "</tr>" for cells in self._cells())
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class TruthTable(Table):
    """The hang-up truth table: a ``Row`` per ending. ``row(name)`` finds the row of an ending by its name."""

    def __init__(self, rows):
        super().__init__(COLUMNS, rows)

    def row(self, name):
        for row in self.rows:
            if row.ending.name == name:
                return row
        raise KeyError(f"no row for {name!r}")


def truth_table(endings=ENDINGS, window=WINDOW):
    """Measure every ending of *endings*; return the ``TruthTable``. Takes about a second, most of it waiting."""
    return TruthTable(measure(each, window) for each in endings)


# -- a peer that is simply gone ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StoppedPeer:
    """What the server's end showed of a client process while it was stopped, and once it had ended."""

    seconds_watched: float   # how long the server's end was watched while the client was stopped
    while_stopped: int       # the mask seen then (registered EPOLLIN|EPOLLRDHUP): 0 for nothing
    keepalive: float | None  # TCP keepalive's idle time and interval meanwhile, one probe allowed (None: off)
    keepalive_error: str     # SO_ERROR after the watch: 'ETIMEDOUT' had a probe gone unanswered, '0' if none did
    quiet_for: float         # seconds since the peer last sent data, at the end of the watch
    acknowledged: float      # seconds since its kernel last acknowledged anything: a keepalive probe, say
    sent_while_stopped: int  # bytes send() took after the watch: the stopped process's kernel acknowledges them
    once_ended: int          # the mask seen once the process was continued and had ended


def since_last_heard(sock):
    """``(seconds since the peer last sent data, seconds since it last acknowledged anything)``, from TCP_INFO.

    ``struct tcp_info`` (linux/tcp.h) holds them as ``tcpi_last_data_recv`` and
    ``tcpi_last_ack_recv``, in milliseconds, at bytes 52 and 56 on every
    architecture.
    """
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 64)
    last_data, last_ack = struct.unpack_from("II", info, 52)
    return last_data / 1000, last_ack / 1000


def a_stopped_peer(seconds=2.5, keepalive=1, timeout=5.0):
    """Stop a client process (SIGSTOP) and watch its connection for *seconds*; then continue it, let it end, and
    watch again (up to *timeout* s). Returns a ``StoppedPeer``. Nothing outlives the call: the process is reaped.

    With *keepalive* (whole seconds), the server's end sends TCP keepalive
    probes after that long without traffic and that often, and gives up after
    one unanswered probe: watched for more than twice *keepalive*, a peer that
    did not answer would have failed the connection with ``ETIMEDOUT``.
    """
    with connections(1, in_another_process=True) as (connection,), select.epoll() as epoll:
        server = connection.server
        if keepalive:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            server.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, keepalive)
            server.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, keepalive)
            server.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 1)
        epoll.register(server.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
        _stop(connection)
        started = time.monotonic()
        while_stopped = sum(mask for _, mask in epoll.poll(seconds))
        watched = time.monotonic() - started
        keepalive_error = so_error(server)
        quiet_for, acknowledged = since_last_heard(server)
        sent = 0
        for _ in range(3):
            with contextlib.suppress(BlockingIOError):
                sent += server.send(SENT)
        _end_process(connection.process)
        once_ended = sum(mask for _, mask in epoll.poll(timeout))
    return StoppedPeer(watched, while_stopped, keepalive, keepalive_error, quiet_for, acknowledged, sent, once_ended)


# -- where EPOLLHUP comes from ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HangUp:
    """The mask example 3's registration (0, after its answer) showed once *client* and *server* had done their part."""

    client: str   # 'stays' or 'closes'
    server: str   # 'nothing', 'shutdown(SHUT_WR)' or 'shutdown(SHUT_RDWR)'
    events: int

    @property
    def hup(self):
        return bool(self.events & select.EPOLLHUP)

    def cells(self):
        return [f"client {self.client}", f"server: {self.server}", probes.epoll_event_names(self.events)]


SERVER_SHUTDOWNS = {"nothing": None, "shutdown(SHUT_WR)": socket.SHUT_WR, "shutdown(SHUT_RDWR)": socket.SHUT_RDWR}


def where_hup_comes_from(window=WINDOW):
    """Every pairing of a client that stays or closes with a server that does nothing or shuts down: a ``Table``.

    Each connection is registered as example 3 registers it after its answer,
    ``epoll.modify(fileno, 0)``, so only EPOLLERR and EPOLLHUP can show.
    """
    cases = []
    for client_closes in (False, True):
        for server_does, how in SERVER_SHUTDOWNS.items():
            with connections(1) as (connection,):
                if client_closes:
                    connection.client.close()
                if how is not None:
                    connection.server.shutdown(how)
                with select.epoll() as epoll:
                    epoll.register(connection.server.fileno(), 0)
                    events = sum(mask for _, mask in epoll.poll(window))
            cases.append(HangUp("closes" if client_closes else "stays", server_does, events))
    return Table(["the client", "the server", "events, registered 0"], cases)


# -- closing with unread bytes: the lingering close ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClientSaw:
    """What a client saw of an answer: how many of its bytes it received, and how the connection ended."""

    received: int
    expected: int
    end: str        # "b''" (a clean end) or the error's name: 'ECONNRESET'

    @property
    def whole(self):
        return self.received == self.expected and self.end == "b''"

    def __str__(self):
        return f"received {self.received:,} of {self.expected:,} bytes, then recv() gave {self.end}"


PIPELINED = b"GET /next HTTP/1.0\r\n\r\n"
"""What the client sends right behind its request, which the server never reads: a second, pipelined request."""


def close_at_once(conn):
    """``conn.close()``: with bytes unread in *conn*, Linux resets the connection instead of closing it."""
    conn.close()


def answer_then_close(close, *, answer_size=1_000_000, pipelined=PIPELINED, timeout=5.0):
    """A client sends a request and *pipelined* bytes behind it; the server reads the request alone, answers
    *answer_size* bytes, then calls ``close(conn)``. Returns ``ClientSaw``: what the client received, how it ended.

    The client reads in a thread until the end of the connection and then
    closes its own end. Raises ``TimeoutError`` if the client is still
    reading *timeout* s after *close* returned.
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=timeout)
        conn, _ = listener.accept()
    saw = {}

    def read_to_the_end():
        received = 0
        try:
            client.sendall(REQUEST + pipelined)
            while piece := client.recv(65536):
                received += len(piece)
            saw["end"] = "b''"
        except OSError as error:
            saw["end"] = errno.errorcode.get(error.errno, str(error))
        finally:
            saw["received"] = received
            client.close()

    reader = threading.Thread(target=read_to_the_end, name="pipelining client", daemon=True)
    try:
        conn.settimeout(timeout)
        reader.start()
        _read_request(conn, timeout)
        conn.sendall(b"x" * answer_size)
        close(conn)
        reader.join(timeout)
        if reader.is_alive():
            raise TimeoutError(f"the client was still reading {timeout:g} s after the server closed")
    finally:
        conn.close()
        clients.wake_and_close(client)
        reader.join(timeout)
    return ClientSaw(saw["received"], answer_size, saw["end"])
