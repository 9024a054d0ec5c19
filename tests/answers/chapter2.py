"""Answers to chapter 2's exercises, as students write them: wrong ones, and right ones written differently."""

import errno
import re
import socket
import threading
import time

from epollbook import checks

RESPONSE = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!"


# -- receive_request: wrong --------------------------------------------------------


def the_articles_loop(conn, limit=65536):
    request = b""
    while b"\n\n" not in request and b"\n\r\n" not in request:
        request += conn.recv(1024)
    return request


def one_recv_is_one_request(conn, limit=65536):
    return conn.recv(65536)


def returns_on_close(conn, limit=65536):
    request = b""
    while b"\r\n\r\n" not in request and b"\n\n" not in request:
        if len(request) > limit:
            raise ValueError("too long")
        piece = conn.recv(4096)
        if not piece:
            return request
        request += piece
    return request


def no_limit(conn, limit=65536):
    request = b""
    while b"\r\n\r\n" not in request and b"\n\n" not in request:
        piece = conn.recv(4096)
        if not piece:
            raise ConnectionError("closed")
        request += piece
    return request


def looks_at_each_piece_alone(conn, limit=65536):
    request = b""
    while True:
        piece = conn.recv(4096)
        if not piece:
            raise ConnectionError("closed")
        request += piece
        if len(request) > limit:
            raise ValueError("too long")
        if b"\r\n\r\n" in piece or b"\n\n" in piece:
            return request


# -- receive_request: right, written differently ------------------------------------

END = re.compile(rb"\r?\n\r?\n")


def chunks_and_a_pattern(conn, limit=65536):
    chunks, size = [], 0
    while True:
        chunk = conn.recv(1500)
        if chunk == b"":
            raise ConnectionAbortedError("the client went away mid-request")
        chunks.append(chunk)
        size += len(chunk)
        joined = b"".join(chunks)
        if END.search(joined):
            return joined
        if size > limit:
            raise ValueError(f"{size} bytes and no end")


def line_by_line(conn, limit=65536):
    lines = []
    with conn.makefile("rb") as file:
        while True:
            line = file.readline(limit + 1)
            if not line:
                raise ConnectionError("EOF before the blank line")
            lines.append(line)
            if sum(map(len, lines)) > limit:
                raise ValueError("request too large")
            if line in (b"\r\n", b"\n"):
                return b"".join(lines)


# -- serve_forever: wrong ----------------------------------------------------------


def _read(connection, limit=65536):
    request = b""
    while b"\r\n\r\n" not in request and b"\n\n" not in request:
        if len(request) > limit:
            raise ValueError("too long")
        piece = connection.recv(4096)
        if not piece:
            raise ConnectionError("closed early")
        request += piece
    return request


def _serve(connection, read=_read):
    with connection:
        connection.settimeout(1.0)
        try:
            read(connection)
            connection.sendall(RESPONSE)
        except (OSError, ValueError):
            pass


def the_articles_server(serversocket):
    while True:
        connection, address = serversocket.accept()
        request = b""
        while b"\n\n" not in request and b"\n\r\n" not in request:
            request += connection.recv(1024)
        print(request.decode()[:-2])
        connection.send(RESPONSE)
        connection.close()


def answers_after_one_recv(serversocket):
    while True:
        try:
            connection, _ = serversocket.accept()
        except OSError as error:
            if error.errno == errno.EINVAL:
                return
            continue
        with connection:
            connection.settimeout(1.0)
            try:
                if connection.recv(65536):
                    connection.sendall(RESPONSE)
            except OSError:
                pass


def stops_on_any_accept_error(serversocket):
    while True:
        try:
            connection, _ = serversocket.accept()
        except OSError:  # what chapter 2 once taught: a closed listener, and nothing else, fails here
            return
        _serve(connection)


def never_returns(serversocket):
    while True:
        try:
            connection, _ = serversocket.accept()
        except OSError:
            time.sleep(0.01)
            continue
        _serve(connection)


def returns_only_once_closed(serversocket):
    while True:
        try:
            connection, _ = serversocket.accept()
        except OSError as error:
            if error.errno == errno.EBADF:
                return
            time.sleep(0.01)
            continue
        _serve(connection)


def _accepting(serve_one, name):
    """A server loop that is right about accept(), around *serve_one*; *name* tells the tests which it is."""
    def serve_forever(serversocket):
        while True:
            try:
                connection, _ = serversocket.accept()
            except OSError as error:
                if error.errno == errno.EINVAL:
                    return
                time.sleep(0.05)
                continue
            serve_one(connection)
    serve_forever.__name__ = name
    return serve_forever


def _no_timeout(connection):
    with connection:
        try:
            _read(connection)
            connection.sendall(RESPONSE)
        except (OSError, ValueError):
            pass


def _never_closed(connection, kept=[]):
    kept.append(connection)
    connection.settimeout(1.0)
    try:
        _read(connection)
        connection.sendall(RESPONSE)
    except (OSError, ValueError):
        pass


def _no_limit(connection):
    with connection:
        connection.settimeout(1.0)
        try:
            request = b""
            while b"\r\n\r\n" not in request and b"\n\n" not in request:
                piece = connection.recv(4096)
                if not piece:
                    raise ConnectionError("closed")
                request += piece
            connection.sendall(RESPONSE)
        except OSError:
            pass


def _answers_at_the_limit(connection):
    with connection:
        connection.settimeout(1.0)
        try:
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 65536:
                piece = connection.recv(4096)
                if not piece:
                    raise ConnectionError("closed")
                request += piece
            connection.sendall(RESPONSE)  # enough read: treat it as the request
        except OSError:
            pass


def _closes_only_what_it_answers_or_refuses(connection):
    connection.settimeout(1.0)
    try:
        _read(connection)
        connection.sendall(RESPONSE)
        connection.close()
    except ValueError:
        connection.close()
    except OSError:
        pass  # dropped, but left open


def _limit_too_large(connection):
    _serve(connection, read=lambda c: _read(c, limit=16 << 20))


no_timeout = _accepting(_no_timeout, "no_timeout")
never_closes = _accepting(_never_closed, "never_closes")
no_size_limit = _accepting(_no_limit, "no_size_limit")
answers_at_the_limit = _accepting(_answers_at_the_limit, "answers_at_the_limit")
limit_of_16_mib = _accepting(_limit_too_large, "limit_of_16_mib")
leaves_dropped_connections_open = _accepting(_closes_only_what_it_answers_or_refuses,
                                             "leaves_dropped_connections_open")


# -- serve_forever: right, written differently -----------------------------------


def asks_whether_still_listening(serversocket):
    while True:
        try:
            connection, _ = serversocket.accept()
        except OSError:
            if not serversocket.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                return  # shut down: no longer a listening socket
            time.sleep(0.1)  # a passing shortage (EMFILE, ENOBUFS, ECONNABORTED): try again soon
            continue
        connection.settimeout(1)
        try:
            with connection.makefile("rb") as requests:
                received = 0
                while (line := requests.readline(8192)) not in (b"\r\n", b"\n"):
                    received += len(line)
                    if not line or received > 65536:
                        raise ConnectionError("no request")
            connection.sendall(RESPONSE)
        except (OSError, UnicodeError):
            pass
        finally:
            connection.close()


PASSING = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED, errno.EPROTO, errno.EPERM}


def names_the_passing_errors(serversocket):
    def handle(connection):
        buffer = bytearray()
        while not (buffer.endswith(b"\r\n\r\n") or buffer.endswith(b"\n\n")):
            if len(buffer) >= 64 * 1024:
                return
            chunk = connection.recv(2048)
            if not chunk:
                return
            buffer += chunk
        connection.sendall(RESPONSE)

    while True:
        try:
            connection, _ = serversocket.accept()
        except OSError as error:
            if error.errno not in PASSING:
                break
            time.sleep(1.0)  # what asyncio does after EMFILE
        else:
            try:
                connection.settimeout(1.0)
                handle(connection)
            except Exception:
                pass
            finally:
                connection.close()


def a_thread_per_client(serversocket):
    threads = []
    while True:
        try:
            connection, _ = serversocket.accept()
        except OSError as error:
            if error.errno in (errno.EINVAL, errno.EBADF):
                break
            time.sleep(0.05)
            continue
        thread = threading.Thread(target=_serve, args=(connection,), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(2.0)


C = checks
WRONG = [
    (C.check_receive_request, the_articles_loop, {}, "loops forever"),
    (C.check_receive_request, one_recv_is_one_request, {}, "all 35 bytes"),
    (C.check_receive_request, returns_on_close, {}, "expected ConnectionError"),
    (C.check_receive_request, no_limit, {}, "limit=1000"),
    (C.check_receive_request, looks_at_each_piece_alone, {"hidden": True}, "not in the last piece alone"),
    (C.check_serve_forever, the_articles_server, {}, "not UTF-8"),
    (C.check_serve_forever, answers_after_one_recv, {}, "one recv() is not one request"),
    (C.check_serve_forever, no_timeout, {}, "said nothing"),
    (C.check_serve_forever, never_closes, {}, "kept the connection open"),
    (C.check_serve_forever, no_size_limit, {}, "was still reading"),
    (C.check_serve_forever, limit_of_16_mib, {}, "was still reading"),
    (C.check_serve_forever, answers_at_the_limit, {}, "no 200 answer to a request that never ended"),
    (C.check_serve_forever, leaves_dropped_connections_open, {}, "still open"),
    (C.check_serve_forever, stops_on_any_accept_error, {}, "EMFILE"),
    (C.check_serve_forever, never_returns, {}, "errno EINVAL, return"),
    (C.check_serve_forever, returns_only_once_closed, {}, "errno EINVAL, return"),
]

RIGHT = [
    (C.check_receive_request, chunks_and_a_pattern),
    (C.check_receive_request, line_by_line),
    (C.check_serve_forever, asks_whether_still_listening),
    (C.check_serve_forever, names_the_passing_errors),
    (C.check_serve_forever, a_thread_per_client),
]
