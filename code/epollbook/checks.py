"""The checks behind the book's exercises.

Each ``check_*`` function takes the reader's function, runs it against live
sockets on 127.0.0.1 (real connections, real clients, some of them rude), and
either prints what passed or raises ``CheckFailed``, an ``AssertionError``
whose message says in one sentence what was expected and what happened.

The reader's code runs in a thread with a time limit, so an answer that hangs
(the classic endless ``recv()`` loop) fails its check instead of hanging the
notebook; the check then closes the sockets it gave that code, which ends most
such loops. ``hidden=True`` runs the harder cases that graders keep hidden
(the student version's check cells call each check without it).

No reference answer lives here: a check knows what a right answer does, not
how it is written.
"""

import contextlib
import errno
import http.client
import shutil
import socket
import struct
import subprocess
import threading
import time

from epollbook import clients

SECONDS = 2.0
"""How long the reader's code may take for one case before the check calls it stuck."""


class CheckFailed(AssertionError):
    """An exercise's check failed; the message says what was expected and what happened."""


def _passed(message):
    print(f"\N{HEAVY CHECK MARK} {message}")


def _short(data, limit=60):
    """*data* as a short literal for a message."""
    text = repr(data)
    return text if len(text) <= limit else text[:limit - 5] + "...'" + (")" if text.endswith(")") else "")


class _Outcome:
    def __init__(self):
        self.finished = threading.Event()
        self.value = self.error = None


def _start(function, *args):
    """Run ``function(*args)`` in a daemon thread; return an ``_Outcome`` to wait on."""
    outcome = _Outcome()

    def run():
        try:
            outcome.value = function(*args)
        except BaseException as error:  # handed to the check, which judges it
            outcome.error = error
        finally:
            outcome.finished.set()

    threading.Thread(target=run, name=f"exercise {getattr(function, '__name__', function)}", daemon=True).start()
    return outcome


def _not_written(function, error):
    if isinstance(error, NotImplementedError):
        raise CheckFailed(f"{function.__name__} is not written yet (it raises NotImplementedError): "
                          "replace the stub with your code, run its cell, then this one") from None


def _finish(function, outcome, seconds, stuck, unblock=()):
    """Wait for *outcome*; if it is not done in *seconds*, unblock it and fail with *stuck*."""
    if not outcome.finished.wait(seconds):
        for sock in unblock:
            _shut(sock)
        outcome.finished.wait(1.0)
        raise CheckFailed(stuck + ("" if outcome.finished.is_set() else
                                   " (it is still running in the background: restart the kernel to stop it)"))
    if outcome.error is not None:
        _not_written(function, outcome.error)
    return outcome


def _shut(sock):
    """Wake whatever blocks on *sock*, then close it."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@contextlib.contextmanager
def _connected_pair():
    """Yield ``(client, server_side)``: two ends of a real TCP connection on 127.0.0.1."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=5.0)
        server_side, _ = listener.accept()
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        yield client, server_side
    finally:
        client.close()
        _shut(server_side)


# -- Chapter 1: make_response ---------------------------------------------


@contextlib.contextmanager
def _serving_bytes(response, connections):
    """Serve *response* (bytes) to the next *connections* clients; yield the address."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5.0)

    def serve():
        with contextlib.suppress(OSError):
            for _ in range(connections):
                connection, _ = listener.accept()
                with connection:
                    connection.settimeout(5.0)
                    request = b""
                    while b"\r\n\r\n" not in request and (piece := connection.recv(4096)):
                        request += piece
                    connection.sendall(response)

    thread = threading.Thread(target=serve, name="serving make_response", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()
    finally:
        _shut(listener)
        thread.join(2.0)


def _read_with_http_client(address):
    connection = http.client.HTTPConnection(*address, timeout=5.0)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


def check_make_response(make_response, *, hidden=False):
    """Check ``make_response(text) -> bytes``: an HTTP/1.0 200 response whose body is *text* in UTF-8.

    Each text's response is served from a real socket to Python's ``http.client``
    (and to curl, when installed), which must read exactly the text back, with a
    ``Content-Length`` that counts bytes and a ``Content-Type`` of plain text in UTF-8.
    *hidden* runs the texts graders keep hidden instead: a long one, one holding
    an empty line, one with no Latin letters.
    """
    texts = ["é" * 50_000, "line one\r\n\r\nline three", "日本語のテキスト"] if hidden else ["Hello, world!", "Grüße aus Köln ☕", ""]
    for text in texts:
        response = _call(make_response, text, letting_through=())
        if not isinstance(response, (bytes, bytearray)):
            raise CheckFailed(f"make_response({_short(text)}) should return bytes, ready for send(); "
                              f"it returned {type(response).__name__}: {_short(response)}")
        response = bytes(response)
        body = text.encode("utf-8")
        with _serving_bytes(response, connections=2) as address:
            try:
                reply, received = _read_with_http_client(address)
            except (http.client.HTTPException, OSError) as error:
                raise CheckFailed(f"http.client could not read the response to {_short(text)} "
                                  f"({type(error).__name__}: {error}); the response began {_short(response)}") from None
            if reply.status != 200:
                raise CheckFailed(f"expected status 200 for {_short(text)}; http.client read {reply.status} {reply.reason}")
            length = reply.getheader("Content-Length")
            if received != body:
                if body.startswith(received) and length == str(len(text)):
                    raise CheckFailed(f"expected Content-Length: {len(body)} for {_short(text)} ({len(body)} bytes in UTF-8, "
                                      f"{len(text)} characters); the response says {length}, so http.client read only "
                                      f"{_short(received)}: count bytes, not characters")
                raise CheckFailed(f"expected the body {_short(body)} (the text in UTF-8); http.client read {_short(received)}")
            if length != str(len(body)):
                raise CheckFailed(f"expected Content-Length: {len(body)} for {_short(text)}; the response says {length!r}")
            content_type = (reply.getheader("Content-Type") or "").replace(" ", "").lower()
            if not content_type.startswith("text/plain") or "charset=utf-8" not in content_type:
                raise CheckFailed("expected Content-Type: text/plain; charset=utf-8, so that clients decode the body "
                                  f"as UTF-8; the response says {reply.getheader('Content-Type')!r}")
            if shutil.which("curl"):
                by_curl = _curl_body(address)
                if by_curl != body:
                    raise CheckFailed(f"expected curl to read the body {_short(body)}; it read {_short(by_curl)}")
        _passed(f"make_response({_short(text)}): http.client{' and curl' if shutil.which('curl') else ''} "
                f"read {len(body)} bytes back, Content-Length {len(body)}")


def _curl_body(address):
    finished = subprocess.run(["curl", "--silent", "--max-time", "5", f"http://{address[0]}:{address[1]}/"],
                              capture_output=True, timeout=10)
    return finished.stdout


# -- Chapter 1: open_listener ---------------------------------------------


def _call(function, *args, letting_through=(OSError,)):
    """Call the reader's *function* with the time limit; return its value.

    Exceptions in *letting_through* are raised for the check to judge; any other
    becomes a ``CheckFailed`` that names it.
    """
    call = f"{function.__name__}({', '.join(_short(arg) for arg in args)})"
    outcome = _finish(function, _start(function, *args), SECONDS, f"{call} did not return within {SECONDS:g} s")
    if isinstance(outcome.error, letting_through):
        raise outcome.error
    if outcome.error is not None:
        raise CheckFailed(f"expected {call} to return; it raised {type(outcome.error).__name__}: {outcome.error}") from outcome.error
    return outcome.value


def _listener_from(open_listener, port):
    try:
        listener = _call(open_listener, port)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise CheckFailed(f"expected to listen on port {port} again at once; bind() failed with 'Address already in use' "
                              "because the connection just closed there waits in TIME_WAIT: set SO_REUSEADDR before bind()") from None
        raise CheckFailed(f"expected open_listener({port}) to return a listening socket; it raised "
                          f"{type(error).__name__}: {error}") from None
    if not isinstance(listener, socket.socket):
        raise CheckFailed(f"open_listener({port}) should return a socket; it returned {type(listener).__name__}")
    return listener


def check_open_listener(open_listener, *, hidden=False):
    """Check ``open_listener(port) -> socket``: listening on 127.0.0.1:*port* (0: a free port), reopenable at once.

    The check opens a listener, serves one connection that the server side closes
    first (which leaves it in TIME_WAIT for a minute), closes the listener, and
    opens one again on the same port, as a restarted server would.
    *hidden* runs the case graders keep hidden instead: a second listener on a
    port that still listens must be refused (``SO_REUSEPORT`` would let two
    servers share it without a word).
    """
    with _listener_from(open_listener, 0) as listener:
        host, port = listener.getsockname()[:2]
        if listener.type != socket.SOCK_STREAM or listener.family != socket.AF_INET:
            raise CheckFailed(f"expected an IPv4 TCP socket (AF_INET, SOCK_STREAM); got {listener.family!r}, {listener.type!r}")
        if host != "127.0.0.1":
            raise CheckFailed(f"expected the socket bound to 127.0.0.1, this machine only; it is bound to {host}"
                              + (", every interface" if host == "0.0.0.0" else ""))
        if not listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise CheckFailed(f"expected a listening socket on port {port}; it is bound but not listening: call listen()")
        if hidden:
            try:
                second = _call(open_listener, port)
            except OSError:
                _passed(f"a second listener on port {port}, which still listens, is refused")
                return
            second.close()
            raise CheckFailed(f"expected open_listener({port}) to fail while port {port} still listens; it opened "
                              "a second listener: SO_REUSEPORT lets two servers share a port without a word")
        with socket.create_connection(("127.0.0.1", port), timeout=5.0) as client:
            connection, _ = listener.accept()
            connection.close()  # the server closes first: its side of the connection waits in TIME_WAIT
            client.recv(1)
    _passed(f"open_listener(0) listens on 127.0.0.1:{port}")
    with _listener_from(open_listener, port) as again:
        if again.getsockname()[1] != port:
            raise CheckFailed(f"open_listener({port}) should listen on port {port}; it listens on {again.getsockname()[1]}")
    _passed(f"listening again on port {port} right after a connection there closed (it waits in TIME_WAIT)")


# -- Chapter 2: receive_request -------------------------------------------


def _receive(receive_request, pieces, *, limit=None, pause=0.005, close_after=False, reset_after=False, stuck=""):
    """Send *pieces* over a real connection and run the reader's ``receive_request`` on the other end.

    Returns the ``_Outcome`` (value or error). The client keeps the connection
    open unless told to close or reset it. *stuck* says what a reader's code
    that is still running after the time limit has most likely got wrong.
    """
    with _connected_pair() as (client, server_side):
        args = (server_side,) if limit is None else (server_side, limit)
        outcome = _start(receive_request, *args)
        for number, piece in enumerate(pieces):
            if number:
                time.sleep(pause)
            with contextlib.suppress(OSError):  # the reader's code may have closed its end already
                client.sendall(piece)
        if reset_after:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
        elif close_after:
            client.close()
        sent = b"".join(pieces)
        how = "then closed the connection" if close_after or reset_after else "then waited"
        return _finish(receive_request, outcome, SECONDS,
                       f"receive_request was still running {SECONDS:g} s after the client sent "
                       f"{_short(sent)} ({len(sent):,} bytes) and {how}" + (f": {stuck}" if stuck else ""),
                       unblock=[server_side])


def _outcome_text(outcome):
    if outcome.error is None:
        return f"it returned {_short(outcome.value)}"
    return f"it raised {type(outcome.error).__name__}: {outcome.error}"


def check_receive_request(receive_request, *, hidden=False):
    """Check ``receive_request(conn, limit=65536) -> bytes`` on live connections.

    It must return all the bytes of a request once they hold the blank line that
    ends it (``b"\\r\\n\\r\\n"``, or ``b"\\n\\n"`` from clients that end lines
    with a bare LF), however the request is cut into pieces; raise
    ``ConnectionError`` if the client closes before that blank line; and raise
    ``ValueError`` once more than *limit* bytes arrive without one.
    *hidden* runs the cases graders keep hidden instead.
    """
    request = clients.REQUEST
    if hidden:
        long_request = b"GET / HTTP/1.0\r\n" + b"".join(b"X-Padding-%05d: %s\r\n" % (n, b"x" * 60) for n in range(300)) + b"\r\n"
        polite = [
            ("a request whose blank line is split between two pieces", [request[:-1], request[-1:]],
             {"stuck": "look for the blank line in all the bytes received so far, not in the last piece alone"}),
            ("a request ending its lines with a bare LF", [b"GET / HTTP/1.0\n", b"Host: localhost\n\n"], {}),
            (f"a request of {len(long_request):,} bytes in pieces of 1,000",
             [long_request[i:i + 1000] for i in range(0, len(long_request), 1000)], {"pause": 0.001}),
        ]
        rude = [("a client that resets the connection before the blank line", {"reset_after": True, "stuck": "after a reset, recv() raises; let that end it"})]
    else:
        polite = [("a request sent 5 bytes at a time", [request[i:i + 5] for i in range(0, len(request), 5)], {})]
        rude = [("a client that closes before the blank line",
                 {"close_after": True, "stuck": "it loops forever because recv() returns b'' once the client has closed"})]

    for description, pieces, options in polite:
        expected = b"".join(pieces)
        outcome = _receive(receive_request, pieces, **options)
        if outcome.error is not None or outcome.value != expected:
            raise CheckFailed(f"expected receive_request to return all {len(expected)} bytes of {description}; "
                              f"{_outcome_text(outcome)}") from outcome.error
        _passed(f"receive_request returned {description}")

    for description, options in rude:
        outcome = _receive(receive_request, [clients.FIRST_LINE], **options)
        if not isinstance(outcome.error, ConnectionError):
            raise CheckFailed(f"expected ConnectionError from {description}; {_outcome_text(outcome)}") from outcome.error
        _passed(f"receive_request raised {type(outcome.error).__name__} for {description}")

    if not hidden:
        limit = 1000
        flood = [b"GET / HTTP/1.0\r\n"] + [b"X-Flood: " + b"y" * 90 + b"\r\n"] * 40  # 4 KB, no blank line
        outcome = _receive(receive_request, flood, limit=limit, pause=0.001,
                           stuck=f"stop reading once more than limit={limit} bytes have arrived without a blank line")
        if not isinstance(outcome.error, ValueError):
            raise CheckFailed(f"expected ValueError once more than limit={limit} bytes arrived without a blank line; "
                              f"{_outcome_text(outcome)}") from outcome.error
        _passed(f"receive_request raised ValueError past limit={limit} bytes")


# -- Chapter 2: serve_forever ---------------------------------------------


class _Listener(socket.socket):
    """A listening socket that remembers the connections it accepts, so the check can close them."""

    def accept(self):
        connection, address = super().accept()
        self.accepted.append(connection)
        return connection, address


def _open_listener():
    listener = _Listener(socket.AF_INET, socket.SOCK_STREAM)
    listener.accepted = []
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener


def check_serve_forever(serve_forever, *, hidden=False):
    """Check ``serve_forever(serversocket)``: a blocking server that no client can stop or stall.

    The check gives it a listening socket on 127.0.0.1 and sends, one after
    another: a polite request, non-UTF-8 bytes, a client that closes early, one
    that resets, and one that connects and says nothing; after each, a polite
    client must still be answered with status 200, and each answer must end with
    the server closing the connection. Finally it closes the listening socket,
    and ``serve_forever`` must return. *hidden* runs the cases graders keep
    hidden instead: an oversized request and a run of clients in a row.
    """
    listener = _open_listener()
    address = listener.getsockname()
    outcome = _start(serve_forever, listener)

    def still_serving(after, report=True):
        if outcome.finished.is_set():
            if outcome.error is not None:
                _not_written(serve_forever, outcome.error)
                raise CheckFailed(f"expected serve_forever to go on serving after {after}; it raised "
                                  f"{type(outcome.error).__name__}: {outcome.error}") from outcome.error
            raise CheckFailed(f"expected serve_forever to go on serving after {after}; it returned")
        try:
            reply = clients.exchange(address, clients.REQUEST, timeout=3.0)
        except clients.NoEndOfAnswer as error:
            if not error.received:
                raise CheckFailed(f"expected an answer after {after}; a polite client waited 3 s and got nothing "
                                  "(is the server stuck on that client?)") from None
            raise CheckFailed(f"expected the server to close the connection after its answer (that is how an HTTP/1.0 "
                              f"answer ends) after {after}; it sent {_short(error.received)} and kept the connection open") from None
        except OSError as error:
            if outcome.error is not None:
                _not_written(serve_forever, outcome.error)
            stuck = "" if outcome.finished.is_set() else " (is it stuck on that client?)"
            raise CheckFailed(f"expected an answer after {after}; a polite client got none{stuck}: "
                              f"{type(error).__name__}: {error}") from None
        if not reply.startswith(b"HTTP/1.") or b" 200 " not in reply.split(b"\r\n", 1)[0]:
            raise CheckFailed(f"expected a 200 response after {after}; a polite client got {_short(reply)}")
        if report:
            _passed(f"answered a polite client after {after}")

    def rude(client, *args, **options):
        # What the rude client itself sees does not matter, only whether the server survives it.
        with contextlib.suppress(OSError):
            client(address, *args, **options)

    try:
        still_serving("starting")
        if hidden:
            rude(clients.exchange, b"GET / HTTP/1.0\r\n" + b"X: " + b"z" * 200_000, timeout=SECONDS)
            still_serving("a client that sent 200 KB without ever ending its request")
            for served in range(20):
                still_serving(f"{served} requests in a row", report=False)
            _passed("answered 20 polite clients in a row")
        else:
            rude(clients.exchange, b"GET /\xff\xfe HTTP/1.0\r\n\r\n", timeout=SECONDS)
            still_serving("a request holding bytes that are not UTF-8")
            rude(clients.early_close_client)
            still_serving("a client that closed before finishing its request")
            rude(clients.reset_client)
            still_serving("a client that reset the connection")
            with clients.stalled_client(address, b""):
                still_serving("a client that connected and said nothing (drop it after 1 s)")
    finally:
        _shut(listener)
        returned = outcome.finished.wait(SECONDS)
        if not returned:
            for connection in listener.accepted:
                _shut(connection)
    if not returned:
        raise CheckFailed(f"expected serve_forever to return once its listening socket is closed; it was still running "
                          f"{SECONDS:g} s later: let the OSError from accept() end the loop")
    if outcome.error is not None and not isinstance(outcome.error, OSError):
        raise CheckFailed(f"expected serve_forever to return once its listening socket is closed; it raised "
                          f"{type(outcome.error).__name__}: {outcome.error}") from outcome.error
    _passed("serve_forever returned once its listening socket was closed")
