"""Chapter 1's checks: ``make_response``, ``open_listener``, ``receive_exactly``."""

import contextlib
import errno
import http.client
import shutil
import socket
import threading

from epollbook import clients, probes
from epollbook.checks.harness import ENDINGS, PIECE_SECONDS, SECONDS, CheckFailed, Running, call, finish, passed, short
from epollbook.checks.http_response import UTF8_LABELS, media_type, read_response

# -- make_response ------------------------------------------------------------


@contextlib.contextmanager
def _serving_bytes(response, connections):
    """Serve the bytes *response* to the next *connections* clients, each after its request; yield the address."""
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
        clients.wake_and_close(listener)
        thread.join(2.0)


def _judge_response(text, response):
    """Raise ``CheckFailed`` unless the bytes *response* are the exercise's response carrying *text*."""
    asked_for = f"make_response({short(text)})"
    body = text.encode("utf-8")
    message = read_response(response, asked_for)
    if message.status_line != "HTTP/1.0 200 OK":
        raise CheckFailed(f"expected the status line 'HTTP/1.0 200 OK' from {asked_for}; "
                          f"it is {short(message.status_line)}")
    length = message.field("Content-Length")
    if length is None:
        raise CheckFailed(f"expected a Content-Length header from {asked_for}, so the client knows where the body "
                          "ends; there is none")
    if not (length.isascii() and length.isdigit()):
        raise CheckFailed(f"expected Content-Length to be a number of bytes; {asked_for} says {short(length)}")
    if message.body != body:
        raise CheckFailed(f"expected the body of {asked_for} to be the text in UTF-8, {short(body)}; "
                          f"it is {short(message.body)}")
    if int(length) != len(body):
        hint = ": count bytes, not characters" if int(length) == len(text) else ""
        raise CheckFailed(f"expected Content-Length: {len(body)} for {short(text)} ({len(body)} bytes in UTF-8, "
                          f"{len(text)} characters); the response says {length}{hint}")
    content_type = message.field("Content-Type")
    parsed = media_type(content_type or "")
    if parsed is None or parsed[0] != "text/plain" or parsed[1].get("charset", "").lower() not in UTF8_LABELS:
        raise CheckFailed("expected Content-Type: text/plain; charset=utf-8, so that clients decode the body as UTF-8; "
                          f"the response says {short(content_type)}")


def _read_as_real_clients_do(text, response):
    """Serve *response* to http.client, and curl when installed; each must read the text back. Returns their names."""
    body = text.encode("utf-8")
    readers = ["http.client"] + (["curl"] if shutil.which("curl") else [])
    with _serving_bytes(response, connections=len(readers)) as address:
        try:
            reply = clients.http_get(address)
        except (http.client.HTTPException, OSError) as error:
            raise CheckFailed(f"http.client could not read the response to {short(text)} "
                              f"({type(error).__name__}: {error})") from None
        if (reply.status, reply.body) != (200, body):
            raise CheckFailed(f"expected http.client to read status 200 and {short(body)}; "
                              f"it read {reply.status} and {short(reply.body)}")
        if "curl" in readers:
            try:
                by_curl = clients.curl(address, binary=True)
            except clients.CurlFailed as error:
                raise CheckFailed(f"curl could not read the response to {short(text)}: {error}") from None
            if by_curl != body:
                raise CheckFailed(f"expected curl to read the body {short(body)}; it read {short(by_curl)}")
    return readers


def check_make_response(make_response, *, hidden=False):
    """Check ``make_response(text) -> bytes``: an HTTP/1.0 200 response whose body is *text* in UTF-8.

    The response's bytes must follow the standard to the letter: the status
    line ``HTTP/1.0 200 OK``, every line of the head ending in ``\\r\\n``, a
    ``Content-Length`` that counts the body's bytes, a ``Content-Type`` of
    plain text in UTF-8 (written any way the standard allows), headers in any
    order, extra ones welcome. Then real clients read it from a real socket:
    Python's ``http.client``, and curl when installed.
    *hidden* runs the texts graders keep hidden instead: a long one, one holding
    an empty line, one with no Latin letters.
    """
    if hidden:
        texts = ["é" * 50_000, "line one\r\n\r\nline three", "日本語のテキスト"]
    else:
        texts = ["Hello, world!", "Grüße aus Köln ☕", ""]
    for text in texts:
        response = call(make_response, text, letting_through=())
        if not isinstance(response, (bytes, bytearray, memoryview)):
            raise CheckFailed(f"make_response({short(text)}) should return bytes, ready for send(); "
                              f"it returned {type(response).__name__}: {short(response)}")
        response = bytes(response)
        _judge_response(text, response)
        readers = _read_as_real_clients_do(text, response)
        passed(f"make_response({short(text, 24)}): {len(text.encode())} bytes of body; {' and '.join(readers)} "
               "read it back")


# -- open_listener ---------------------------------------------------------------


def _listener_from(open_listener, port, holding="the connection just closed there waits in TIME_WAIT"):
    try:
        listener = call(open_listener, port)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise CheckFailed(f"expected to listen on port {port} again at once; bind() failed with 'Address already "
                              f"in use' because {holding}: set SO_REUSEADDR before bind()") from None
        raise CheckFailed(f"expected open_listener({port}) to return a listening socket; it raised "
                          f"{type(error).__name__}: {error}") from None
    if not isinstance(listener, socket.socket):
        raise CheckFailed(f"open_listener({port}) should return a socket; it returned {type(listener).__name__}")
    return listener


def _accepted(listener):
    """The connection a client just made to *listener*, accepted whatever mode the reader's socket was given."""
    listener.settimeout(5.0)  # the connection is queued, or about to be
    try:
        return listener.accept()[0]
    except OSError as error:
        raise CheckFailed(f"expected a client's connection to wait in the queue of the socket "
                          f"open_listener(0) returned; accept() on it raised {error!r}") from None


def check_open_listener(open_listener, *, hidden=False):
    """Check ``open_listener(port) -> socket``: listening on 127.0.0.1:*port* (0: a free port), reopenable at once.

    The check opens a listener, serves one connection that the server side closes
    first (which leaves it in TIME_WAIT for a minute), closes the listener, and
    opens one again on the same port, as a restarted server would. Where the
    kernel's TIME_WAIT table is full (a load test ran within the minute), the
    closed connection skips TIME_WAIT and leaves the port free; then a
    connection kept open holds the port instead, which ``bind()`` treats the
    same way.
    *hidden* runs the case graders keep hidden instead: a second listener on a
    port that still listens must be refused (``SO_REUSEPORT`` would let two
    servers share it without a word).
    """
    with contextlib.ExitStack() as held:
        listener = held.enter_context(_listener_from(open_listener, 0))
        host, port = listener.getsockname()[:2]
        if listener.type != socket.SOCK_STREAM or listener.family != socket.AF_INET:
            raise CheckFailed(f"expected an IPv4 TCP socket (AF_INET, SOCK_STREAM); "
                              f"got {listener.family!r}, {listener.type!r}")
        if host != "127.0.0.1":
            raise CheckFailed(f"expected the socket bound to 127.0.0.1, this machine only; it is bound to {host}"
                              + (", every interface" if host == "0.0.0.0" else ""))
        if not listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise CheckFailed(f"expected a listening socket on port {port}; it is bound but not listening: "
                              "call listen()")
        if hidden:
            try:
                second = call(open_listener, port)
            except OSError:
                passed(f"a second listener on port {port}, which still listens, is refused")
                return
            second.close()
            raise CheckFailed(f"expected open_listener({port}) to fail while port {port} still listens; it opened "
                              "a second listener: SO_REUSEPORT lets two servers share a port without a word")
        skipped = probes.time_wait_table().dropped
        with socket.create_connection(("127.0.0.1", port), timeout=5.0) as client:
            _accepted(listener).close()  # the server closes first: its end of the connection goes to TIME_WAIT
            client.recv(1)
        holding, reopened = ("the connection just closed there waits in TIME_WAIT",
                             "right after a connection there closed (it waits in TIME_WAIT)")
        if probes.time_wait_table().dropped > skipped:  # it skipped TIME_WAIT, or another program's close did
            held.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5.0))
            held.enter_context(_accepted(listener))
            full = "the kernel's TIME_WAIT table is full, so the one just closed skipped TIME_WAIT"
            holding, reopened = f"a connection is open there ({full})", f"while a connection there is open ({full})"
        listener.close()
        passed(f"open_listener(0) listens on 127.0.0.1:{port}")
        with _listener_from(open_listener, port, holding) as again:
            if again.getsockname()[1] != port:
                raise CheckFailed(f"open_listener({port}) should listen on port {port}; "
                                  f"it listens on {again.getsockname()[1]}")
        passed(f"listening again on port {port} {reopened}")


# -- receive_exactly ------------------------------------------------------------------


def _receive_exactly(receive_exactly, size, pieces, *, then=b"", end=None):
    """Run ``receive_exactly(conn, size)`` on a live connection while a client sends *pieces*.

    Each piece goes out once the reader's code has read the one before and
    waits for more, so the pieces arrive one by one however busy the machine
    is. The client sends the bytes *then* right behind the last piece (the
    next message, which ``receive_exactly`` must leave unread), and ends with
    *end*: None (stays connected), 'close' or 'reset'. Returns ``(running,
    left)``: the finished call and the bytes it left unread on the connection.
    """
    with clients.connected_pair() as (client, server_side):
        running = Running(receive_exactly, server_side, size)
        sender = running.feed(client, server_side, [*pieces[:-1], pieces[-1] + then], end=end)
        sent = sum(map(len, pieces))
        finish(running, f"receive_exactly(conn, {size:,}) was still running {SECONDS:g} s after the client sent "
               f"{sent:,} bytes in {len(pieces)} piece(s) {ENDINGS[end]}"
               + (": when recv() returns b'', the client has closed and no more bytes will come" if end else ""),
               seconds=SECONDS + PIECE_SECONDS * len(pieces), unblock=[server_side])
        left = b""
        if running.error is None and end is None:
            if server_side.fileno() == -1:
                raise CheckFailed(f"expected receive_exactly(conn, {size:,}) to leave the connection open: the "
                                  "bytes after the message belong to the next read; it closed it")
            sender.finished.wait(SECONDS)
            client.shutdown(socket.SHUT_WR)  # so that reading what is left ends
            server_side.settimeout(1.0)
            left = clients.read_until_closed(server_side)
    sender.finished.wait(1.0)
    return running, left


def check_receive_exactly(receive_exactly, *, hidden=False):
    """Check ``receive_exactly(conn, size) -> bytes``: exactly *size* bytes from a blocking socket, and no more.

    It must return the *size* bytes however they arrive (in pieces, one by one),
    leave on the socket the bytes that come after them (they are the next
    message's), and raise ``ConnectionError`` if the client closes the connection
    before *size* bytes have come. *hidden* runs the cases graders keep hidden
    instead: a megabyte sent at once, a size of 0, a client that resets.
    """
    message = b"0123456789" * 3  # 30 bytes
    next_message = b"NEXT MESSAGE"
    if hidden:
        big = bytes(range(256)) * 4096  # 1 MiB: far more than one recv() returns
        cases = [("1 MiB sent at once", len(big), [big], next_message, None),
                 ("nothing, when asked for 0 bytes", 0, [b""], next_message, None),
                 ("a client that resets the connection after 10 of 30 bytes", 30, [message[:10]], b"", "reset")]
    else:
        cases = [("30 bytes in 3 pieces, the next message right behind the last", 30,
                  [message[:10], message[10:20], message[20:]], next_message, None),
                 ("30 bytes followed at once by the next message", 30, [message], next_message, None),
                 ("a client that closes after 10 of 30 bytes", 30, [message[:10]], b"", "close")]
    for description, size, pieces, then, end in cases:
        running, left = _receive_exactly(receive_exactly, size, pieces, then=then, end=end)
        expected = b"".join(pieces)
        if end is not None:
            if not isinstance(running.error, ConnectionError):
                raise CheckFailed(f"expected ConnectionError from {description} (the bytes asked for will never "
                                  f"come); {running.describe()}") from running.error
            passed(f"receive_exactly raised {type(running.error).__name__} for {description}")
            continue
        if running.error is not None or running.value != expected:
            returned_bytes = running.error is None and isinstance(running.value, (bytes, bytearray))
            got = f"it returned {len(running.value):,} bytes" if returned_bytes else running.describe()
            short_read = returned_bytes and len(running.value) < size
            hint = ": one recv() returns what has arrived so far, not what you asked for" if short_read else ""
            raise CheckFailed(f"expected receive_exactly(conn, {size:,}) to return the {size:,} bytes "
                              f"of {description}; {got}{hint}") from running.error
        if left != then:
            raise CheckFailed(f"expected the {len(then)} bytes after the first {size:,} ({short(then)}) to be left "
                              f"on the socket for the next read; {len(then) - len(left)} of them were gone: never "
                              "ask recv() for more than the bytes still missing")
        passed(f"receive_exactly returned {description}" + (", and left the next message unread" if then else ""))

