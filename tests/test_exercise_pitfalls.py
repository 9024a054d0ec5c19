"""Each check catches the mistakes its exercise is about, and says which one it saw.

A check that passes the solution and fails the stub could still wave through
the very pitfall the exercise teaches. These are the plausible wrong answers,
each with the words its failure message must contain.
"""

import socket

import pytest

from epollbook import checks
from epollbook.checks import CheckFailed

RESPONSE = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!"


# -- make_response ----------------------------------------------------------

def counts_characters(text):
    return (f"HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(text)}\r\n\r\n{text}").encode()


def returns_text(text):
    return f"HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {len(text.encode())}\r\n\r\n{text}"


def no_charset(text):
    body = text.encode()
    return b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def encodes_latin1(text):
    body = text.encode("latin-1", "replace")
    return b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


# -- open_listener ----------------------------------------------------------

def without_reuseaddr(port):
    listener = socket.socket()
    listener.bind(("127.0.0.1", port))
    listener.listen()
    return listener


def on_every_interface(port):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen()
    return listener


def never_listens(port):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    return listener


def shares_the_port(port):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    return listener


# -- receive_request --------------------------------------------------------

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


# -- serve_forever ----------------------------------------------------------

def _read(connection):
    request = b""
    while b"\r\n\r\n" not in request and b"\n\n" not in request:
        if len(request) > 65536:
            raise ValueError("too long")
        piece = connection.recv(4096)
        if not piece:
            raise ConnectionError("closed early")
        request += piece
    return request


def the_articles_server(serversocket):
    while True:
        connection, address = serversocket.accept()
        request = b""
        while b"\n\n" not in request and b"\n\r\n" not in request:
            request += connection.recv(1024)
        print(request.decode()[:-2])
        connection.send(RESPONSE)
        connection.close()


def no_timeout(serversocket):
    while True:
        try:
            connection, _ = serversocket.accept()
        except OSError:
            return
        with connection:
            try:
                _read(connection)
                connection.sendall(RESPONSE)
            except (OSError, ValueError):
                pass


def never_closes(serversocket):
    kept = []
    while True:
        try:
            connection, _ = serversocket.accept()
        except OSError:
            return
        kept.append(connection)
        connection.settimeout(1.0)
        try:
            _read(connection)
            connection.sendall(RESPONSE)
        except (OSError, ValueError):
            pass


def never_returns(serversocket):
    while True:
        try:
            connection, _ = serversocket.accept()
        except OSError:
            continue  # the listening socket is closed, and this loop never notices
        with connection:
            connection.settimeout(1.0)
            try:
                _read(connection)
                connection.sendall(RESPONSE)
            except (OSError, ValueError):
                pass


PITFALLS = [
    (checks.check_make_response, counts_characters, {}, "count bytes, not characters"),
    (checks.check_make_response, returns_text, {}, "should return bytes"),
    (checks.check_make_response, no_charset, {}, "charset=utf-8"),
    (checks.check_make_response, encodes_latin1, {}, "the text in UTF-8"),
    (checks.check_open_listener, without_reuseaddr, {}, "SO_REUSEADDR"),
    (checks.check_open_listener, on_every_interface, {}, "127.0.0.1"),
    (checks.check_open_listener, never_listens, {}, "call listen()"),
    (checks.check_open_listener, shares_the_port, {"hidden": True}, "SO_REUSEPORT"),
    (checks.check_receive_request, the_articles_loop, {}, "loops forever"),
    (checks.check_receive_request, one_recv_is_one_request, {}, "all 35 bytes"),
    (checks.check_receive_request, returns_on_close, {}, "expected ConnectionError"),
    (checks.check_receive_request, no_limit, {}, "limit=1000"),
    (checks.check_receive_request, looks_at_each_piece_alone, {"hidden": True}, "not in the last piece alone"),
    (checks.check_serve_forever, the_articles_server, {}, "not UTF-8"),
    (checks.check_serve_forever, no_timeout, {}, "said nothing"),
    (checks.check_serve_forever, never_closes, {}, "kept the connection open"),
    (checks.check_serve_forever, never_returns, {}, "let the OSError from accept() end the loop"),
]


@pytest.mark.parametrize("check, wrong_answer, options, expected_words", PITFALLS,
                         ids=[f"{check.__name__}-{answer.__name__}" for check, answer, _, _ in PITFALLS])
def test_check_catches_the_pitfall_and_names_it(check, wrong_answer, options, expected_words):
    wrong_answer.__name__ = check.__name__.removeprefix("check_")  # as the reader would name it
    with pytest.raises(CheckFailed) as failure:
        check(wrong_answer, **options)
    assert expected_words in str(failure.value), f"the check failed for another reason: {failure.value}"
