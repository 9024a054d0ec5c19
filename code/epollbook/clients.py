"""Clients for the book's servers: real tools, polite clients and rude ones.

Every function takes a *target*: a ``Server`` from ``epollbook.launch``, a URL
such as ``"http://127.0.0.1:8080/"``, or a ``(host, port)`` pair.

Polite: ``http_get`` (Python's ``http.client``), ``curl`` and ``ab`` (the real
programs, when installed), ``exchange`` (raw bytes in, raw bytes out).

Rude, as real clients are: ``stalled_client`` (sends part of a request, then
nothing), ``early_close_client`` (sends part of a request, then hangs up),
``reset_client`` (sends part of a request, then resets the connection).
"""

import contextlib
import dataclasses
import http.client
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
import urllib.parse

REQUEST = b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n"
"""A complete HTTP/1.0 request: its blank line (``\\r\\n\\r\\n``) ends it."""

FIRST_LINE = b"GET / HTTP/1.0\r\n"
"""The start of a request with no end: no blank line follows."""

# The Debian/Ubuntu package of each tool that is not a Python package.
DEBIAN_PACKAGES = {"curl": "curl", "ab": "apache2-utils", "wrk": "wrk", "chromium": "chromium"}


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
    except socket.timeout:
        raise TimeoutError(f"no answer from {url_of(target, path)} within {timeout:g} s") from None
    finally:
        connection.close()


def curl(target, *options, path="/", timeout=10.0):
    """Run the real curl on *target* with *options*; return what it printed.

    ``curl(server, "-i")`` shows the response's headers too. Raises
    ``ToolMissing`` if curl is not installed.
    """
    command = [require_tool("curl"), "--silent", "--show-error", "--max-time", str(timeout), *options, url_of(target, path)]
    finished = subprocess.run(command, capture_output=True, timeout=timeout + 5)
    if finished.returncode != 0:
        raise RuntimeError(f"curl failed (exit {finished.returncode}): {finished.stderr.decode(errors='replace').strip()}")
    return finished.stdout.decode("utf-8", "replace").replace("\r\n", "\n")


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


def ab(target, requests=100, concurrency=1, timeout=30.0):
    """Load *target* with ApacheBench (``ab -n requests -c concurrency``); return a ``LoadResult``.

    Raises ``ToolMissing`` if ab is not installed.
    """
    command = [require_tool("ab"), "-q", "-n", str(requests), "-c", str(concurrency),
               "-s", str(int(timeout)), url_of(target)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=timeout + 5)
    if finished.returncode != 0:
        raise RuntimeError(f"ab failed (exit {finished.returncode}): {finished.stderr.strip() or finished.stdout.strip()}")
    report = finished.stdout

    def field(label):
        match = re.search(rf"^{label}:\s+([\d.]+)", report, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"ab's report has no '{label}' line:\n{report}")
        return float(match[1])

    return LoadResult(int(field("Complete requests")), int(field("Failed requests")),
                      field("Requests per second"), field("Time taken for tests"), report)


def exchange(target, request=REQUEST, *, timeout=5.0, piece_size=None, pause=0.0):
    """Send *request* (bytes), then read until the server closes; return what it sent.

    With *piece_size*, the request goes out that many bytes at a time, *pause*
    seconds apart: the way a slow network or a slow client delivers it.
    Raises ``TimeoutError`` if the server neither answers nor closes in time.
    """
    with socket.create_connection(address_of(target), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each piece leaves at once
        pieces = [request] if piece_size is None else [request[i:i + piece_size] for i in range(0, len(request), piece_size)]
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
    except socket.timeout:
        raise NoEndOfAnswer(b"".join(received), sock.gettimeout()) from None
    except ConnectionResetError:
        pass
    return b"".join(received)


class PendingRequest:
    """A request running in the background (see ``start_request``)."""

    def __init__(self, target, request, timeout):
        self._done = threading.Event()
        self.reply = self.error = None
        self.started = time.monotonic()
        self.seconds = None  # how long the answer took, once it came

        def run():
            try:
                self.reply = exchange(target, request, timeout=timeout)
            except OSError as error:  # TimeoutError included
                self.error = error
            finally:
                self.seconds = time.monotonic() - self.started
                self._done.set()

        threading.Thread(target=run, name="pending request", daemon=True).start()

    @property
    def answered(self):
        """True once the server has answered (or the request failed)."""
        return self._done.is_set()

    def wait(self, timeout=10.0):
        """Wait for the answer; return the bytes received. Raises what the request raised."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"still no answer after {timeout:g} s")
        if self.error is not None:
            raise self.error
        return self.reply


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
    """Connect, send *sent*, then reset the connection (``SO_LINGER`` 0: an RST, not a FIN)."""
    with socket.create_connection(address_of(target), timeout=5.0) as sock:
        sock.sendall(sent)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
