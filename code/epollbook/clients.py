"""Clients for the book's servers: real tools, polite clients and rude ones.

Every function takes a *target*: a ``Server`` from ``epollbook.launch``, a URL
such as ``"http://127.0.0.1:8080/"``, or a ``(host, port)`` pair.

Polite: ``http_get`` (Python's ``http.client``), ``curl``, ``ab`` and ``wrk``
(the real programs, when installed), ``exchange`` (raw bytes in, raw bytes out).

Rude, as real clients are: ``stalled_client`` (sends part of a request, then
nothing), ``early_close_client`` (sends part of a request, then hangs up),
``reset_client`` (sends part of a request, then resets the connection),
``streaming_client`` (sends a request that never ends, as fast as it can),
``half_close_client`` (sends a request, half-closes, still reads the answer),
``non_utf8_request`` (valid HTTP whose bytes are not UTF-8), ``oversized_client``
(a head of any size), ``idle_clients`` (many connections that say nothing: a
slow-loris), ``pipelined_client`` (several requests in one go),
``reset_as_answered`` (clients that reset as the answer arrives, on the
server's own CPU).

For code that plays the server's side itself (the exercise checks):
``connected_pair`` (both ends of a real TCP connection), ``peek`` (has the
other side sent or closed anything yet?) and ``reset`` (end a connection
with an RST).
"""

import contextlib
import dataclasses
import http.client
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.parse

REQUEST = b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n"
"""A complete HTTP/1.0 request: its blank line (``\\r\\n\\r\\n``) ends it."""

FIRST_LINE = b"GET / HTTP/1.0\r\n"
"""The start of a request with no end: no blank line follows."""

# The Debian/Ubuntu package of each tool that is not a Python package.
DEBIAN_PACKAGES = {"curl": "curl", "ab": "apache2-utils", "wrk": "wrk", "chromium": "chromium", "ss": "iproute2",
                   "ip": "iproute2", "unshare": "util-linux"}


class ToolMissing(RuntimeError):
    """A program the book runs (curl, ab, wrk) is not installed."""


def require_tool(program):
    """Return the path of *program*, or raise ``ToolMissing`` saying how to install it."""
    path = shutil.which(program)
    if path is None:
        package = DEBIAN_PACKAGES.get(program, program)
        raise ToolMissing(
            f"{program} is not installed, so this step cannot run: install it "
            f"(on Debian or Ubuntu: `sudo apt-get install {package}`), then run the cell again"
        )
    return path


def address_of(target):
    """Return ``(host, port)`` for a Server, a URL or a ``(host, port)`` pair."""
    if hasattr(target, "address"):
        return target.address
    if isinstance(target, str):
        parts = urllib.parse.urlsplit(target)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"{target!r} is not a URL with a host and a port, such as 'http://127.0.0.1:8080/'")
        return parts.hostname, parts.port
    host, port = target
    return host, port


def url_of(target, path="/"):
    host, port = address_of(target)
    return f"http://{host}:{port}{path}"


# -- polite clients ---------------------------------------------------------


@dataclasses.dataclass
class Reply:
    """An HTTP response as a client saw it."""

    status: int
    reason: str
    headers: list
    body: bytes

    def __str__(self):
        lines = [f"{self.status} {self.reason}"] + [f"{name}: {value}" for name, value in self.headers]
        return "\n".join(lines) + "\n\n" + self.body.decode("utf-8", "replace")


def http_get(target, path="/", timeout=5.0):
    """GET *path* with Python's ``http.client``; return a ``Reply``.

    Raises ``TimeoutError`` if the server says nothing for *timeout* seconds.
    """
    connection = http.client.HTTPConnection(*address_of(target), timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return Reply(response.status, response.reason, response.getheaders(), response.read())
    except TimeoutError:
        raise TimeoutError(f"no answer from {url_of(target, path)} within {timeout:g} s") from None
    finally:
        connection.close()


def curl(target, *options, path="/", timeout=10.0, binary=False):
    """Run the real curl on *target* with *options*; return what it printed.

    ``curl(server, "-i")`` shows the response's headers too. The output is
    text with plain line ends, or with *binary* the bytes exactly as curl
    wrote them. Raises ``ToolMissing`` if curl is not installed, and
    ``CurlFailed`` (with curl's own message) if curl fails.
    """
    command = [require_tool("curl"), "--silent", "--show-error", "--max-time", str(timeout), *options,
               url_of(target, path)]
    finished = subprocess.run(command, capture_output=True, timeout=timeout + 5)
    if finished.returncode != 0:
        said = finished.stderr.decode(errors="replace").strip()
        raise CurlFailed(f"curl failed (exit {finished.returncode}): {said}")
    if binary:
        return finished.stdout
    return finished.stdout.decode("utf-8", "replace").replace("\r\n", "\n")


class CurlFailed(RuntimeError):
    """curl ran and failed: refused, timed out, or could not read the response."""


@dataclasses.dataclass
class LoadResult:
    """What ab reported after a run."""

    complete: int
    failed: int
    requests_per_second: float
    seconds: float
    report: str

    def __str__(self):
        return (f"{self.complete} requests complete, {self.failed} failed, in {self.seconds:.3f} s "
                f"({self.requests_per_second:,.0f} requests per second)")


@dataclasses.dataclass
class WrkResult:
    """What wrk reported after a run."""

    requests: int
    socket_errors: int  # connect, read, write and timeout errors, together
    non_2xx: int        # answers that were not 2xx or 3xx
    requests_per_second: float
    report: str
    cpu_seconds: float | None = None  # wrk's own CPU time, user + system, every thread (None: not measured)

    def __str__(self):
        return (f"{self.requests:,} requests, {self.socket_errors} socket errors, {self.non_2xx} not 2xx "
                f"({self.requests_per_second:,.0f} requests per second)")


def ab(target, requests=100, concurrency=1, timeout=30.0):
    """Load *target* with ApacheBench (``ab -n requests -c concurrency``); return a ``LoadResult``.

    Raises ``ToolMissing`` if ab is not installed.
    """
    command = [require_tool("ab"), "-q", "-n", str(requests), "-c", str(concurrency),
               "-s", str(int(timeout)), url_of(target)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=timeout + 5)
    if finished.returncode != 0:
        said = finished.stderr.strip() or finished.stdout.strip()
        raise RuntimeError(f"ab failed (exit {finished.returncode}): {said}")
    report = finished.stdout

    def field(label):
        match = re.search(rf"^{label}:\s+([\d.]+)", report, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"ab's report has no '{label}' line:\n{report}")
        return float(match[1])

    return LoadResult(int(field("Complete requests")), int(field("Failed requests")),
                      field("Requests per second"), field("Time taken for tests"), report)


def wrk(target, connections=100, seconds=2, threads=2, cpu=None):
    """Load *target* with wrk (``wrk -t threads -c connections -d seconds``); return a ``WrkResult``.

    With *cpu* (a CPU number), wrk runs on that CPU only. The result's
    ``cpu_seconds`` is wrk's own CPU time: on two cores it is wrk that runs
    out first, so its cost per request sets the rate. Raises ``ToolMissing``
    if wrk is not installed, ``RuntimeError`` if it fails.
    """
    command = [require_tool("wrk"), "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", url_of(target)]
    # Pinned before exec, so that wrk's threads inherit it: an affinity set on a pid later holds for that thread only.
    pin = None if cpu is None else lambda: os.sched_setaffinity(0, {cpu})
    with tempfile.TemporaryFile("w+") as output, tempfile.TemporaryFile("w+") as error_output:
        running = subprocess.Popen(command, stdout=output, stderr=error_output, preexec_fn=pin)
        returncode, usage = _wait_with_usage(running, seconds + 30)
        output.seek(0), error_output.seek(0)
        report, errors = output.read(), error_output.read()
    if returncode is None:
        raise RuntimeError(f"wrk did not end within {seconds + 30} s of a {seconds} s run, and was killed")
    summary = re.search(r"(\d+) requests in", report)
    if returncode != 0 or summary is None:
        raise RuntimeError(f"wrk failed (exit {returncode}): {errors.strip() or report.strip()}")
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", report)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", report)
    per_second = re.search(r"Requests/sec:\s+([\d.]+)", report)
    return WrkResult(int(summary[1]), sum(map(int, socket_errors.groups())) if socket_errors else 0,
                     int(non_2xx[1]) if non_2xx else 0, float(per_second[1]) if per_second else 0.0, report,
                     usage.ru_utime + usage.ru_stime)


def _wait_with_usage(process, timeout):
    """Reap *process* (a ``Popen``) within *timeout* seconds; return (exit status, its ``resource.struct_rusage``).

    ``os.wait4`` returns the child's own resource use, whatever else this
    process has started; ``Popen.wait`` would reap it without. On timeout the
    process is killed and the status is None.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)  # so that Popen does not try to reap it again
            return process.returncode, usage
        time.sleep(0.01)
    process.kill()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return None, usage


def exchange(target, request=REQUEST, *, timeout=5.0, piece_size=None, pause=0.0):
    """Send *request* (bytes), then read until the server closes; return what it sent.

    With *piece_size*, the request goes out that many bytes at a time, *pause*
    seconds apart: the way a slow network or a slow client delivers it.
    Raises ``TimeoutError`` if the server neither answers nor closes in time.
    """
    with socket.create_connection(address_of(target), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each piece leaves at once
        size = piece_size or len(request) or 1
        pieces = [request[i:i + size] for i in range(0, len(request), size)] or [b""]
        for number, piece in enumerate(pieces):
            if number and pause:
                time.sleep(pause)
            sock.sendall(piece)
        return read_until_closed(sock)


class NoEndOfAnswer(TimeoutError):
    """The server neither closed the connection nor sent more in time; ``received`` is what it had sent."""

    def __init__(self, received, seconds):
        self.received = received
        super().__init__(f"the server neither closed the connection nor sent more within {seconds:g} s "
                         f"(received so far: {received[:200]!r})")


def read_until_closed(sock):
    """Read from *sock* until the other side closes; return all it sent.

    A reset after the answer still returns what was sent. Raises ``NoEndOfAnswer``
    (a ``TimeoutError``) if the socket's timeout passes with neither data nor a close.
    """
    received = []
    try:
        while chunk := sock.recv(65536):
            received.append(chunk)
    except TimeoutError:
        raise NoEndOfAnswer(b"".join(received), sock.gettimeout()) from None
    except ConnectionResetError:
        pass
    return b"".join(received)


class Background:
    """A call running in a thread of its own (see ``in_background``).

    ``thread`` is that thread (``probes.process_state(os.getpid(), thread=...)``
    shows where it waits). ``finished`` is an Event set once the call has
    returned or raised; then ``value`` is what it returned and ``error`` what it
    raised (each None otherwise), and ``seconds`` how long it took since
    ``started``. ``result()`` waits for it. The thread never prints.
    """

    def __init__(self, call, *args, name=None):
        self.value = self.error = self.seconds = None
        self.finished = threading.Event()
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, args=(call, *args), daemon=True,
                                       name=name or f"in_background({getattr(call, '__qualname__', 'call')})")
        self.thread.start()

    def _run(self, call, *args):
        try:
            self.value = call(*args)
        except BaseException as error:  # kept for whoever waits on it, not printed by the thread
            self.error = error
        finally:
            self.seconds = time.monotonic() - self.started
            self.finished.set()

    @property
    def done(self):
        """True once the call has returned or raised."""
        return self.finished.is_set()

    def result(self, timeout=5.0):
        """Wait up to *timeout* seconds for the call; return what it returned, or raise what it raised.

        Raises ``TimeoutError`` if it is still running then.
        """
        if not self.finished.wait(timeout):
            raise TimeoutError(f"{self.thread.name} is still running after {timeout:g} s")
        if self.error is not None:
            raise self.error
        return self.value


def in_background(call, *args):
    """Start ``call(*args)`` in a daemon thread of its own; return a ``Background`` at once.

    For watching a call that blocks while a cell goes on:
    ``in_background(listener.accept)`` waits for a client,
    ``in_background(read_until_closed, sock)`` reads what a server sends.
    """
    return Background(call, *args)


class PendingRequest(Background):
    """A request running in the background (see ``start_request``): ``answered``, ``wait()``, ``seconds``."""

    def __init__(self, target, request, timeout):
        super().__init__(lambda: exchange(target, request, timeout=timeout), name="pending request")

    @property
    def answered(self):
        """True once the server has answered (or the request failed)."""
        return self.done

    def wait(self, timeout=10.0):
        """Wait for the answer; return the bytes received. Raises what the request raised."""
        if not self.finished.wait(timeout):
            raise TimeoutError(f"still no answer after {timeout:g} s")
        return self.result()


def start_request(target, request=REQUEST, timeout=10.0):
    """Send *request* from a background thread; return a ``PendingRequest`` at once.

    For watching a client wait: ``pending.answered``, ``pending.wait()``,
    ``pending.seconds``.
    """
    return PendingRequest(target, request, timeout)


# -- rude clients ---------------------------------------------------------


@contextlib.contextmanager
def stalled_client(target, sent=FIRST_LINE):
    """Connect, send *sent* (by default a request with no end), then say nothing.

    The connection stays open until the ``with`` block ends. Yields the socket,
    so the block can still send the rest (``sock.sendall(b"\\r\\n")``).
    """
    sock = socket.create_connection(address_of(target), timeout=5.0)
    try:
        sock.sendall(sent)
        yield sock
    finally:
        sock.close()


def early_close_client(target, sent=FIRST_LINE):
    """Connect, send *sent* (by default a request with no end), then close: a FIN, not a reset."""
    with socket.create_connection(address_of(target), timeout=5.0) as sock:
        sock.sendall(sent)


def reset_client(target, sent=FIRST_LINE):
    """Connect, send *sent*, then reset the connection (an RST, not a FIN)."""
    sock = socket.create_connection(address_of(target), timeout=5.0)
    try:
        sock.sendall(sent)
    finally:
        reset(sock)


def reset(sock):
    """Close *sock* with a reset: ``SO_LINGER`` of 0 makes ``close()`` send an RST instead of a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@dataclasses.dataclass
class Stream:
    """What ``streaming_client`` saw: how much it sent, how it ended, what came back."""

    sent: int        # bytes the client's send() calls took
    ended: str       # 'cut' (the server closed or reset), 'stalled' (the server stopped reading), 'sent all'
    answer: bytes    # what the server sent back before the end, if anything


def streaming_client(target, *, most=1 << 20, stall=2.0):
    """Send a request line, then header bytes without end and without pause, until the server cuts it off.

    Stops after *most* bytes (the server did not cut it off: ``ended ==
    'sent all'``), or when no byte has gone out for *stall* seconds (the server
    stopped reading and kept the connection open: ``'stalled'``). Its send
    buffer is small, so what it has sent is close to what the server has read.
    Returns a ``Stream``.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    answer, sent, ended = [], 0, "sent all"
    try:
        sock.settimeout(stall)
        sock.connect(address_of(target))
        sent += sock.send(FIRST_LINE)
        filler = b"X-Filler: " + b"x" * 4000 + b"\r\n"
        while sent < most:
            sent += sock.send(filler)
            if (waiting := peek(sock)) is not None:  # an answer, or the server closed
                answer.append(waiting)
                ended = "cut"
                break
    except TimeoutError:
        ended = "stalled"
    except OSError:  # EPIPE or ECONNRESET: the server closed, with our bytes unread
        ended = "cut"
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(0.5)
            answer.append(read_until_closed(sock))
        reset(sock)
    return Stream(sent, ended, b"".join(answer))


# -- both ends, for code that plays the server ------------------------------


@contextlib.contextmanager
def connected_pair():
    """Yield ``(client, server_side)``: the two ends of a real TCP connection on 127.0.0.1.

    The client sends each piece at once (``TCP_NODELAY``) and times out after
    5 s. Both ends are closed when the block ends; the server's side is shut
    down first, which wakes any code still blocked on it.
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=5.0)
        server_side, _ = listener.accept()
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        yield client, server_side
    finally:
        client.close()
        wake_and_close(server_side)


def wake_and_close(sock):
    """Wake whatever blocks on *sock*, then close it.

    ``shutdown()`` wakes a thread blocked on the socket; ``close()`` from another
    thread would not, on Linux (close(2)).
    """
    with contextlib.suppress(OSError):  # not connected, or closed already
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def wait_readable(sock, timeout):
    """Wait up to *timeout* seconds for *sock* to have bytes to read, or the other end's close; return True if so."""
    readable = select.poll()  # poll(), not epoll: it needs no file descriptor of its own
    readable.register(sock, select.POLLIN)
    return bool(readable.poll(timeout * 1000))


def peek(sock, size=4096):
    """What the other end of *sock* has sent that is not read yet, without reading it.

    Returns ``None`` if nothing has arrived, ``b''`` if the other end has
    closed (or reset) and nothing is left, else up to *size* bytes waiting.
    Never blocks.
    """
    # Asked first, because a socket with a timeout waits for data inside recv(), MSG_DONTWAIT or not.
    if not wait_readable(sock, 0):
        return None
    try:
        return sock.recv(size, socket.MSG_PEEK)
    except ConnectionResetError:
        return b""


# -- more rude clients: half-close, non-UTF-8, oversized, many idle, pipelined ----------


def half_close_client(target, request=REQUEST, timeout=5.0):
    """Send *request*, then ``shutdown(SHUT_WR)`` (a FIN: "I have said all") and read the answer until closed.

    The client still reads after its half-close, as HTTP/1.0 clients may: a
    server that closes on ``EPOLLRDHUP`` or on ``recv() == b''`` before
    answering gives it nothing. Returns the bytes it read (``b''`` if none).
    Raises ``NoEndOfAnswer`` (a ``TimeoutError``) if the server neither
    answers nor closes within *timeout* seconds.
    """
    with socket.create_connection(address_of(target), timeout=timeout) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        return read_until_closed(sock)


non_utf8_request = b"GET / HTTP/1.0\r\nHost: localhost\r\nUser-Agent: caf\xe9 \xff\xfe\r\n\r\n"
"""A complete, valid HTTP/1.0 request whose bytes are not UTF-8 (Latin-1 ``é``, then ``\\xff\\xfe``).

HTTP allows any byte above 0x7f in a field's value, so a server should answer
it; ``non_utf8_request.decode()`` raises ``UnicodeDecodeError``, as the
article's ``print(request.decode())`` does. Send it with
``exchange(target, non_utf8_request)``.
"""


def oversized_client(target, size, timeout=5.0):
    """Send a request whose head is *size* bytes long (one endless header, then its end), then read until closed.

    The head is ``GET / HTTP/1.0``, one ``X-Filler`` field of ``x``, and the
    empty line, *size* bytes in all (at least 40). The client stops sending
    early if the server closes or resets, or takes nothing for *timeout*
    seconds, and then reads whatever the server answered (a ``431`` from a
    server with a limit). Returns the bytes it read, ``b''`` if none.
    """
    prefix, suffix = FIRST_LINE + b"X-Filler: ", b"\r\n\r\n"
    head = prefix + b"x" * max(size - len(prefix) - len(suffix), 1) + suffix
    with socket.create_connection(address_of(target), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # EPIPE, ECONNRESET, a timeout: the server stopped taking it
            sock.sendall(head)
        try:
            return read_until_closed(sock)
        except NoEndOfAnswer as silent:
            return silent.received


@contextlib.contextmanager
def idle_clients(target, count, sent=b"", timeout=5.0):
    """Hold *count* connections to *target* open, each having sent *sent* (default nothing), until the block ends.

    A slow-loris: each connection costs the server a descriptor (a thread, for
    a thread-per-connection server) and sends no request end. Yields the list
    of sockets; closes them all (FINs) when the block ends. Raises
    ``TimeoutError`` if a connection is not established within *timeout*
    seconds (the server's listen queue is full), after closing those opened.
    """
    socks = []
    try:
        for _ in range(count):
            sock = socket.create_connection(address_of(target), timeout=timeout)
            socks.append(sock)
            if sent:
                sock.sendall(sent)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def pipelined_client(target, count=2, request=REQUEST, timeout=5.0):
    """Send *count* requests back to back in one go, then read until the server closes; return what it read.

    An HTTP/1.0 server answers the first and closes. If it closes with the
    others still unread, its kernel sends a reset instead of a FIN, which can
    destroy the answer before the client reads it; a server with a lingering
    close (``shutdown(SHUT_WR)``, then read until the client closes) delivers
    it. A large *count* (1000 requests: 35 kB) leaves bytes unread for sure.
    Raises ``NoEndOfAnswer`` if the server neither answers nor closes in time.
    """
    with socket.create_connection(address_of(target), timeout=timeout) as sock:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):  # reset mid-send: read what came
            sock.sendall(request * count)
        return read_until_closed(sock)


def reset_as_answered(server, attempts=100):
    """Clients that send a request and reset the connection as the answer's first byte arrives, one after another.

    A server that calls ``shutdown()`` after its ``send()`` (example 3 does)
    gets ENOTCONN if the reset lands between the two. That window is short, so
    the clients run in a thread pinned to one CPU, with the *server* (a
    ``launch.Server``) pinned to the same CPU and given the lowest priority: a
    client woken by the answer then runs before the server gets on. Returns how
    many clients it took for the server to exit, or None if it served all
    *attempts* and still runs (pinned and at the lowest priority from then on).
    """
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(server.pid, {cpu})
    os.setpriority(os.PRIO_PROCESS, server.pid, 19)

    def exited(within):
        try:
            server.wait(within)
        except TimeoutError:
            return False
        return True

    def clients():
        os.sched_setaffinity(0, {cpu})  # this thread only
        for attempt in range(1, attempts + 1):
            try:
                with stalled_client(server, sent=REQUEST) as sock:
                    sock.recv(1)  # the answer has begun to arrive
                    reset(sock)
            except OSError:  # refused, or reset: by a server dying with the connection open
                if exited(within=1.0):
                    return attempt
            if exited(within=0.0):
                return attempt
        return None

    return in_background(clients).result(timeout=60.0)
