"""The listen backlog, measured: what the kernel does with connections no one has accepted yet, and what clients see.

    listening(backlog)                     a socket listening on 127.0.0.1 (a free port); drained and closed after
    fill_queue(backlog, extra=2)           a ``Fill``: how many of backlog + 1 + extra clients complete with no accept()
    retries(accept_after=(0.5, 1.5))       a ``Retry`` per client whose SYN was dropped: when its connect() got through
    half_open(clients=2, free_at=0.5)      a ``HalfOpen``: clients that believe they are connected, and the server
    syn_retransmission_times(retries, linear)   when a client sends its SYN again, by the kernel's settings
    proc_net_tcp_lines(port)               the listener's line of /proc/net/tcp, as the kernel wrote it
    listener_view(port)                    its queue, backlog and own drop count, as ``ss -ltnm`` shows them
    listener_drops(port)                   how many SYNs and handshakes this listener dropped (``ss -ltnm``'s ``d``)
    tcp_state(sock), server_states(port)   the TCP state of our socket (TCP_INFO); of the server's ends (ss)
    applied_backlog(asked)                 the backlog the kernel applies to ``listen(asked)`` (``ss``'s Send-Q)
    python_defaults()                      a ``Default`` per Python API: what it asks for, and what the kernel applied
    ACCEPT_QUEUE_SETTINGS                  the kernel settings that shape the queue, to read with ``probes.sysctl``

Some facts about the listen queue
---------------------------------

A TCP connection opens with a handshake the server's *kernel* performs on its
own: the client sends a SYN, the kernel answers with a SYN-ACK and keeps a
small record of the half-open connection (``ss`` shows it as ``SYN-RECV``),
the client's ACK completes it. The client's ``connect()`` returns as it sends
that ACK. The completed connection then waits, ``ESTABLISHED``, in the
listening socket's *accept queue* until the program calls ``accept()``. The
program plays no part in the handshake: a server that never accepts still has
connections completed for it.

``listen(backlog)`` bounds the accept queue. Linux counts it full when more
than *backlog* connections wait, so backlog + 1 complete before any
``accept()`` (``listen(0)`` still lets one in). The kernel silently lowers a
backlog above ``net.core.somaxconn`` to it. ``ss -ltn`` shows a listening
socket's queue as Recv-Q (waiting now) and its backlog as Send-Q;
``/proc/net/tcp`` shows the waiting count as the listener's ``rx_queue``.

A SYN that finds the accept queue full is dropped, without an answer. It is not
refused: a reset would tell the client "nobody listens here" (``connect()``
fails with ``ECONNREFUSED`` at once), and here somebody does. The client's
kernel, having heard nothing, sends its SYN again after one second, then
after waits twice as long each time: 1 s, 3 s, 7 s, 15 s ... after the first
(RFC 6298), ``net.ipv4.tcp_syn_retries`` times, then ``ETIMEDOUT``. Since Linux
6.5 the first ``net.ipv4.tcp_syn_linear_timeouts`` waits (4 by default) and one
more are a second each before the doubling starts: 1 s, 2 s, 3 s, 4 s, 5 s, 7 s,
11 s ... Its ``connect()`` blocks all that while, in ``SYN-SENT``, unless the
program set a timeout of its own. So a full queue costs a client a second at least, never an error.
The kernel counts each drop twice: ``ListenOverflows`` and ``ListenDrops`` in
``/proc/net/netstat`` (for the whole machine, so other programs move them
too), and in the listener's own drop counter (``ss -ltnm`` prints it as ``d``).

The handshake can also fail at its last step. Several SYNs may arrive while
the queue still has room (a burst, or clients whose retransmitted SYNs go out
at the same tick), each gets its SYN-ACK, and then their ACKs find the queue
full. The client is connected as far as it knows: ``connect()`` has
returned, ``send()`` takes its bytes. The server's kernel drops the ACK (one
more ``ListenOverflows``) and, since ``net.ipv4.tcp_abort_on_overflow`` is 0
by default, keeps the half-open record and sends its SYN-ACK again later: the
connection completes when a retransmission, of that SYN-ACK's answer or of the
client's data, finds room. With ``tcp_abort_on_overflow`` set to 1 it would
send a reset instead, and the "connected" client's next ``recv()`` or
``send()`` would fail with ``ECONNRESET``. Half-open records are bounded too;
beyond the bound, with ``net.ipv4.tcp_syncookies`` on, the kernel answers with
a *SYN cookie*: the SYN-ACK itself encodes the connection, and the server keeps
no record at all. Then only the client's next segment can complete the
connection: a client that waits for the server to speak first waits for ever.

The server program sees none of this: ``accept()`` hands out what is in the
queue, and the dropped ones are nowhere. Only the counters, and the clients'
waits, show them. Every function here measures it live, between sockets of
this process on 127.0.0.1, and closes every socket it opened (those still in
``SYN-SENT`` too), after draining what its listeners held.
"""

import asyncio
import contextlib
import dataclasses
import errno
import inspect
import re
import select
import shutil
import socket
import socketserver
import subprocess
import time

from epollbook import clients, probes
from epollbook.hangups import Table

ACCEPT_QUEUE_SETTINGS = (
    "net.core.somaxconn",              # the most any listen() gets
    "net.ipv4.tcp_syn_linear_timeouts",  # Linux 6.5+: SYNs sent again a second apart this many times, then doubling
    "net.ipv4.tcp_abort_on_overflow",  # 0: drop a handshake's last ACK at a full queue; 1: answer it with a reset
    "net.ipv4.tcp_syn_retries",        # how many times a client sends its SYN again before connect() gives up
    "net.ipv4.tcp_synack_retries",     # how many times the server sends its SYN-ACK again
    "net.ipv4.tcp_syncookies",         # 1: SYN cookies once the half-open records are too many
    "net.ipv4.tcp_max_syn_backlog",    # a bound on half-open records (with syncookies off)
)
"""The kernel settings (``probes.sysctl``) that shape the accept queue and what its clients see; all only read."""

HOST = "127.0.0.1"


def _state(found):
    """A socket's TCP state as ss spells it (``SYN-SENT``), whichever spelling the probe's table uses."""
    return found.state.replace("_", "-")


# -- listeners and connecting clients --------------------------------------------------------------------


@contextlib.contextmanager
def listening(backlog):
    """Yield a TCP socket listening on 127.0.0.1 (a free port) with ``listen(backlog)``.

    When the block ends, the connections still in its accept queue are
    accepted and closed, then the listener is closed: nothing is left waiting.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind((HOST, 0))
        listener.listen(backlog)
        yield listener
    finally:
        drain(listener)
        listener.close()


def drain(listener):
    """Accept and close every connection waiting in *listener*'s accept queue; return how many there were."""
    listener.setblocking(False)
    drained = 0
    with contextlib.suppress(OSError):  # BlockingIOError: the queue is empty; another: the listener is closed already
        while True:
            connection, _ = listener.accept()
            connection.close()
            drained += 1
    return drained


def start_connecting(port):
    """A non-blocking socket whose ``connect()`` to 127.0.0.1:*port* has begun: its SYN is sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    error = sock.connect_ex((HOST, port))
    if error not in (0, errno.EINPROGRESS):
        sock.close()
        raise ConnectionError(f"connect() to {HOST}:{port} failed at once: {errno.errorcode.get(error, error)}")
    return sock


def connect_outcome(sock):
    """What became of connecting socket *sock* so far: 'connected', 'connecting', or an error's name (ECONNREFUSED)."""
    events = select.poll()
    events.register(sock, select.POLLOUT)
    if not events.poll(0):
        return "connecting"
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    return "connected" if error == 0 else errno.errorcode.get(error, str(error))


def tcp_state(sock):
    """The TCP state of our own socket *sock* as its kernel holds it (``'SYN-SENT'``), from ``TCP_INFO``.

    The state is the first byte of ``struct tcp_info``: one ``getsockopt()``,
    where finding the socket in ``/proc/net/tcp`` means reading the whole table
    (slow on a machine that has just run a load test: every connection it made
    lingers there in ``TIME-WAIT`` for a minute).
    """
    state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
    return probes.TCP_STATES.get(state, str(state)).replace("_", "-")


def client_states(socks):
    """``{client's local port: TCP state}`` for each of our client sockets *socks* (``tcp_state``)."""
    return {sock.getsockname()[1]: tcp_state(sock) for sock in socks}


_SS_STATES = {"ESTAB": "ESTABLISHED"}  # ss's abbreviation; its other names are the kernel's, with dashes


def parse_ss_states(text, port):
    """``{peer's port: state}`` of the sockets with local port *port* in what ``ss -tan`` prints, LISTEN left out."""
    states = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[0] in ("State", "LISTEN"):
            continue
        local_port, peer_port = (field.rpartition(":")[2] for field in fields[3:5])
        if local_port == str(port) and peer_port.isdigit():
            states[int(peer_port)] = _SS_STATES.get(fields[0], fields[0])
    return states


def server_states(port):
    """``{client's port: TCP state}`` of the server's ends of connections to *port* (the listener left out).

    Half-open connections show as ``SYN-RECV``; a connection completed from a
    SYN cookie has no record until it is completed, so it is not there at all.
    Read with ``ss`` (one quick netlink query), or from ``/proc/net/tcp``
    without it.
    """
    if shutil.which("ss"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            finished = subprocess.run(["ss", "-tan", f"( sport = :{port} )"], capture_output=True, text=True,
                                      timeout=10)
            if finished.returncode == 0:
                return parse_ss_states(finished.stdout, port)
    return {found.remote[1]: _state(found) for found in probes.tcp_sockets(port)
            if found.local[1] == port and _state(found) != "LISTEN"}


# -- the kernel's own counts of a listener ---------------------------------------------------------------


def parse_listener_drops(text):
    """The drop count in what ``ss -ltnm`` prints for one listening socket (its ``skmem:(...,dN)``); None if absent."""
    match = re.search(r"skmem:\([^)]*\bd(\d+)\)", text)
    return int(match[1]) if match else None


@dataclasses.dataclass(frozen=True)
class ListenerView:
    """A listening socket as ``ss -ltnm`` shows it: its queue, its backlog and its own drop count."""

    waiting: int        # connections waiting for accept() (Recv-Q)
    backlog: int        # the backlog the kernel applies (Send-Q)
    drops: int | None   # SYNs and handshakes it dropped since it listens (skmem's d); None if not shown


def listener_view(port):
    """How the socket listening on 127.0.0.1:*port* looks to ``ss -ltnm``: a ``ListenerView``.

    One quick netlink query, where ``probes.listen_queue`` also reads the whole
    of ``/proc/net/tcp``. Returns None without ``ss``, when it fails, or when
    nothing listens there.
    """
    if not shutil.which("ss"):
        return None
    try:
        finished = subprocess.run(["ss", "-ltnm", f"( sport = :{port} )"], capture_output=True, text=True,
                                  timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    queues = [queue for queue in probes.parse_ss_listening(finished.stdout) if queue.port == port]
    if finished.returncode != 0 or len(queues) != 1:
        return None
    return ListenerView(queues[0].waiting, queues[0].backlog, parse_listener_drops(finished.stdout))


def listener_drops(port):
    """How many SYNs and completed handshakes the socket listening on 127.0.0.1:*port* has dropped since it listens.

    The kernel counts each drop in the listener itself (``sk_drops``), which
    ``ss -ltnm`` prints as ``d``: unlike ``ListenOverflows``, no other program
    moves it. Returns None without ``ss`` or when it fails.
    """
    view = listener_view(port)
    return None if view is None else view.drops


def proc_net_tcp_lines(port):
    """The header of ``/proc/net/tcp`` and the line of the socket listening on *port*, as the kernel wrote them.

    In that line ``rx_queue`` (after the colon in ``tx_queue:rx_queue``, in hex)
    is the number of connections waiting for ``accept()``. Raises
    ``LookupError`` if nothing listens on *port*.
    """
    with open("/proc/net/tcp") as table:
        header, *lines = table.read().splitlines()
    # A listener's line: local address with the port in hex, remote 00000000:0000, state 0A (LISTEN).
    found = [line for line in lines if f":{port:04X} 00000000:0000 0A " in line]
    if not found:
        raise LookupError(f"nothing listens on port {port} in /proc/net/tcp")
    return "\n".join([header.rstrip(), *(line.rstrip() for line in found)])


def applied_backlog(asked):
    """The backlog the kernel applies when a socket calls ``listen(asked)``: ``ss``'s Send-Q (None without ss)."""
    with listening(asked) as listener:
        return _applied(listener)


def syn_retransmission_times(retries, linear=0, initial=1.0):
    """The moments (s after the first SYN) a client's kernel sends its SYN again when nothing answers.

    *retries* is ``net.ipv4.tcp_syn_retries``; *linear* is
    ``net.ipv4.tcp_syn_linear_timeouts`` (0 on kernels before 6.5, which lack
    it): the first *linear* + 1 waits are *initial* seconds each, and each
    later one twice the one before. ``syn_retransmission_times(4)`` is
    ``[1.0, 3.0, 7.0, 15.0]``; ``syn_retransmission_times(4, linear=2)`` is
    ``[1.0, 2.0, 3.0, 5.0]``.
    """
    moments, now = [], 0.0
    for number in range(retries):
        now += initial * 2 ** max(number - linear, 0)
        moments.append(now)
    return moments


def syn_schedule():
    """``syn_retransmission_times`` with this kernel's settings (no linear timeouts where the kernel has none)."""
    try:
        linear = probes.sysctl_int("net.ipv4.tcp_syn_linear_timeouts")
    except LookupError:
        linear = 0
    return syn_retransmission_times(probes.sysctl_int("net.ipv4.tcp_syn_retries"), linear)


# -- N + 1 ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Fill:
    """What ``fill_queue`` saw: clients started against a listener that never accepts."""

    backlog: int          # what listen() was given
    clients: int          # clients that sent a SYN
    completed: int        # of them, those whose connect() completed
    syn_sent: int         # of them, those still in SYN-SENT: their SYN was dropped
    refused: int          # of them, those refused (ECONNREFUSED): none, on Linux
    waiting: int          # connections in the accept queue, from ss (Recv-Q; /proc/net/tcp's rx_queue without ss)
    applied: int | None   # the backlog as the kernel holds it, from ss (Send-Q); None without ss
    drops: int | None     # the listener's own drop count, from ss -ltnm; None without ss

    def cells(self):
        return [self.backlog, self.clients, self.completed, self.syn_sent, self.refused, self.waiting,
                "?" if self.applied is None else self.applied, "?" if self.drops is None else self.drops]


FILL_COLUMNS = ("listen()", "clients", "completed", "in SYN-SENT", "refused", "waiting (Recv-Q)",
                "backlog (Send-Q)", "listener's drops")


def fill_queue(backlog, extra=2, settle=0.1):
    """Start backlog + 1 + *extra* clients against a listener that never calls ``accept()``; return a ``Fill``.

    Each client's ``connect()`` is non-blocking, so the SYNs go out one after
    another; then the clients are watched for *settle* seconds (a dropped SYN
    is sent again only after a second, so what has not completed by then is
    waiting). Every socket is closed before it returns.
    """
    with listening(backlog) as listener, contextlib.ExitStack() as cleanup:
        port = listener.getsockname()[1]
        socks = []
        for _ in range(backlog + 1 + extra):
            socks.append(cleanup.enter_context(start_connecting(port)))
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            time.sleep(0.01)
        outcomes = [connect_outcome(sock) for sock in socks]
        states = client_states(socks)
        view = listener_view(port)
        if view is None:  # no ss: the waiting count from /proc/net/tcp, the rest unknown
            view = ListenerView(probes.listen_queue(port, HOST).waiting, None, None)
        return Fill(backlog, len(socks), outcomes.count("connected"),
                    sum(state == "SYN-SENT" for state in states.values()), outcomes.count("ECONNREFUSED"),
                    view.waiting, view.backlog, view.drops)


def fill_table(backlogs=(0, 1, 2, 5), extra=2):
    """``fill_queue`` for each backlog in *backlogs*, as a ``Table`` (``table.rows`` are the ``Fill`` s)."""
    return Table(FILL_COLUMNS, [fill_queue(backlog, extra) for backlog in backlogs])


# -- a dropped SYN, sent again ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Retry:
    """A client whose SYN met a full queue (backlog 0, one connection waiting) that the server emptied later."""

    room_after: float             # seconds after the client's first SYN when accept() made room in the queue
    state_while_waiting: str      # the client's TCP state a quarter of a second in: SYN-SENT
    outcome: str                  # 'connected', 'connecting' (not yet, at the deadline), or an error's name
    connected_after: float | None  # seconds from the first SYN until connect() completed; None if it did not
    drops: int | None             # the listener's own drop count when it ended: the client's SYNs it dropped


def retries(accept_after=(0.5, 1.5), timeout=5.0):
    """One client per delay in *accept_after*, each against its own full queue; return a ``Retry`` for each.

    Each listener has backlog 0 and one connection already waiting, so the
    client's SYN is dropped. *accept_after* seconds after that SYN the waiting
    connection is accepted, which makes room; the client gets in when its SYN
    is sent again after that. The clients run side by side, in this thread
    (all the waiting is the kernel's), for at most *timeout* seconds.
    """
    with contextlib.ExitStack() as cleanup:
        listeners = [cleanup.enter_context(listening(0)) for _ in accept_after]
        ports = [listener.getsockname()[1] for listener in listeners]
        for port in ports:  # the connection that fills each queue
            cleanup.enter_context(socket.create_connection((HOST, port), timeout=timeout))
        started = time.monotonic()
        socks = [cleanup.enter_context(start_connecting(port)) for port in ports]
        watched = select.poll()
        for sock in socks:
            watched.register(sock, select.POLLOUT)
        pending = {sock.fileno(): number for number, sock in enumerate(socks)}
        connected_after, outcomes, seen = [None] * len(socks), ["connecting"] * len(socks), [None] * len(socks)
        to_accept = sorted((delay, number) for number, delay in enumerate(accept_after))
        look_at = 0.25
        while pending and (now := time.monotonic() - started) < timeout:
            if seen[0] is None and now >= look_at:
                seen = [tcp_state(sock) for sock in socks]
            while to_accept and now >= to_accept[0][0]:
                _, number = to_accept.pop(0)
                connection, _ = listeners[number].accept()  # the one waiting: room for one more
                connection.close()
            upcoming = [delay for delay, _ in to_accept] + ([look_at] if seen[0] is None else []) + [timeout]
            for fileno, _ in watched.poll(max(min(upcoming) - now, 0) * 1000):
                number = pending.pop(fileno)
                watched.unregister(fileno)
                connected_after[number] = time.monotonic() - started
                outcomes[number] = connect_outcome(socks[number])
        return [Retry(delay, seen[number] or "not looked at", outcomes[number],
                      connected_after[number] if outcomes[number] == "connected" else None,
                      listener_drops(ports[number]))
                for number, delay in enumerate(accept_after)]


# -- connected, as far as the client knows ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HalfOpenClient:
    """One client of ``half_open``: when it believed it was connected, and when the server really had it."""

    port: int                      # the client's local port
    connected_after: float | None  # seconds from its first SYN until its connect() completed; None if never
    sent: int                      # bytes its send() took, right after connect() completed
    server_side: str               # the server's end of it just after the clients connected: its TCP state,
    #                                'ESTABLISHED' (in the accept queue), 'SYN-RECV' (a half-open record), or 'none'
    accepted_after: float | None   # seconds from its first SYN until accept() returned it; None if never
    received: int                  # of its bytes, those the server read after accept()

    @property
    def believed_connected(self):
        """True if its connect() had completed while the server's kernel had no completed connection for it."""
        return self.connected_after is not None and self.server_side != "ESTABLISHED"


@dataclasses.dataclass(frozen=True)
class HalfOpen:
    """What ``half_open`` saw: its clients, the listener's drops, and how the kernel's counters rose meanwhile."""

    clients: list
    free_at: float          # seconds after the first SYNs when accept() made room for one connection
    looked_at: float        # seconds after the first SYNs when the server's side was read
    drops: int | None       # the listener's own drop count at the end (SYNs and last ACKs dropped)
    counters: dict          # how much ListenOverflows, ListenDrops, SyncookiesSent, SyncookiesRecv rose (machine-wide)
    timeout: float          # seconds after the first SYNs when it stopped watching, at the latest

    @property
    def believed(self):
        """The clients that believed they were connected before the server's kernel had completed them."""
        return [client for client in self.clients if client.believed_connected]


HALF_OPEN_COUNTERS = ("ListenOverflows", "ListenDrops", "SyncookiesSent", "SyncookiesRecv")


def half_open(clients=2, free_at=0.5, timeout=6.0, payload=b"hello"):
    """*clients* clients against one full queue (backlog 0), their SYNs sent together; return a ``HalfOpen``.

    Their SYNs are dropped, so each client's kernel sends its SYN again after
    a second, all at nearly the same moment. *free_at* seconds in, the
    connection that filled the queue is accepted: room for one. Each client
    sends *payload* as soon as its ``connect()`` completes, as an HTTP client
    sends its request. Once every client has connected (or 1.5 s after
    *free_at*), the server's side is read from ``/proc/net/tcp``; from then on
    the server accepts whatever arrives and reads what it brings, until every
    connected client has been accepted or *timeout* seconds have passed. Whether
    a client ever believes it is connected before the server has it depends on
    the retransmitted SYNs arriving together: it is measured, not assumed.
    """
    counted_before = probes.netstat_counters()
    with listening(0) as listener, contextlib.ExitStack() as cleanup:
        port = listener.getsockname()[1]
        cleanup.enter_context(socket.create_connection((HOST, port), timeout=timeout))  # fills the queue
        started = time.monotonic()
        socks = [cleanup.enter_context(start_connecting(port)) for _ in range(clients)]
        by_port = {sock.getsockname()[1]: number for number, sock in enumerate(socks)}
        connected_after, accepted_after = [None] * clients, [None] * clients
        sent, received = [0] * clients, [0] * clients
        watched = select.poll()
        for sock in socks:
            watched.register(sock, select.POLLOUT)
        connecting = {sock.fileno(): number for number, sock in enumerate(socks)}
        server_side, looked_at, freed = None, None, False

        def now():
            return time.monotonic() - started

        while now() < timeout:
            if not freed and now() >= free_at:
                connection, _ = listener.accept()
                connection.close()
                freed = True
            if server_side is None and freed and (not connecting or now() >= free_at + 1.5):
                looked_at, server_side = now(), server_states(port)
                watched.register(listener, select.POLLIN)
            if server_side is not None and not connecting and all(
                    accepted_after[n] is not None for n in range(clients) if connected_after[n] is not None):
                break
            wait = (free_at - now()) if not freed else 0.05
            for fileno, _ in watched.poll(max(wait, 0) * 1000):
                if fileno == listener.fileno():
                    connection, (_, client_port) = listener.accept()
                    with connection:
                        number = by_port.get(client_port)
                        if number is not None:
                            accepted_after[number] = now()
                            connection.settimeout(1.0)
                            with contextlib.suppress(OSError):
                                received[number] = len(connection.recv(len(payload)))
                    continue
                number = connecting.pop(fileno)
                watched.unregister(fileno)
                if connect_outcome(socks[number]) == "connected":
                    connected_after[number] = now()
                    with contextlib.suppress(OSError):
                        sent[number] = socks[number].send(payload)
        drops = listener_drops(port)
    counted_after = probes.netstat_counters()
    server_side = server_side or {}
    return HalfOpen(
        [HalfOpenClient(sock_port, connected_after[n], sent[n], server_side.get(sock_port, "none"),
                        accepted_after[n], received[n])
         for sock_port, n in by_port.items()],
        free_at, looked_at, drops,
        {name: counted_after.get(name, 0) - counted_before.get(name, 0) for name in HALF_OPEN_COUNTERS}, timeout)


# -- what Python asks for --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Default:
    """One Python API that listens: what backlog its code asks for, and what the kernel applied (ss's Send-Q)."""

    api: str
    asks: str            # read from the object: an attribute, a parameter's default
    applied: int | None  # None without ss

    def cells(self):
        return [self.api, self.asks, "?" if self.applied is None else self.applied]


DEFAULT_COLUMNS = ("Python", "asks for", "backlog the kernel applied (ss)")


def _applied(sock):
    view = listener_view(sock.getsockname()[1])
    return None if view is None else view.backlog


def _asyncio_default():
    """asyncio's ``create_server`` default backlog, and the backlog a server it starts gets (in a loop of its own)."""
    async def start():
        loop = asyncio.get_running_loop()
        asked = inspect.signature(loop.create_server).parameters["backlog"].default
        server = await loop.create_server(asyncio.Protocol, HOST, 0)
        try:
            return asked, _applied(server.sockets[0])
        finally:
            server.close()
            await server.wait_closed()

    return asyncio.run(start())


def python_defaults():
    """A ``Table`` of ``Default`` s: Python's ways of listening without naming a backlog, each measured.

    The backlog each asks for is read from the code (an attribute, a
    parameter's default), the one applied from ss. ``socket.listen()`` with no
    argument asks for ``min(SOMAXCONN, 128)`` in C, where no attribute shows
    it: only the kernel's view does. asyncio's server runs in a thread with
    an event loop of its own (a notebook's kernel already runs one).
    """
    rows = []
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        sock.listen()
        rows.append(Default("socket.listen()", f"no argument (socket.SOMAXCONN is {socket.SOMAXCONN})",
                            _applied(sock)))
    default = inspect.signature(socket.create_server).parameters["backlog"].default
    with socket.create_server((HOST, 0)) as sock:
        rows.append(Default("socket.create_server(address)", f"backlog={default!r}: listen() with no argument",
                            _applied(sock)))
    server = socketserver.TCPServer((HOST, 0), socketserver.BaseRequestHandler)
    try:
        rows.append(Default("socketserver.TCPServer", f"request_queue_size = {server.request_queue_size}",
                            _applied(server.socket)))
    finally:
        server.server_close()
    asked, applied = clients.in_background(_asyncio_default).result(timeout=10.0)
    rows.append(Default("asyncio: loop.create_server()", f"backlog={asked}", applied))
    return Table(DEFAULT_COLUMNS, rows)
