"""Answers to chapter 1's exercises, as students write them: wrong ones, and right ones written differently."""

import email.utils
import io
import socket

from epollbook import checks

# -- make_response: wrong -----------------------------------------------------


def counts_characters(text):
    return (f"HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(text)}\r\n\r\n{text}").encode()


def returns_text(text):
    return (f"HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(text.encode())}\r\n\r\n{text}")


def no_charset(text):
    body = text.encode()
    return b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def encodes_latin1(text):
    body = text.encode("latin-1", "replace")
    return (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def bare_newlines(text):
    body = text.encode()
    return b"HTTP/1.0 200 OK\nContent-Type: text/plain; charset=utf-8\nContent-Length: %d\n\n%s" % (len(body), body)


def crlf_but_bare_blank_line(text):
    body = text.encode()
    return b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\n\n%s" % (len(body), body)


def http_1_1_status(text):
    body = text.encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def no_reason_phrase(text):
    body = text.encode()
    return (b"HTTP/1.0 200\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def no_content_length(text):
    return b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text.encode()


def html_content_type(text):
    body = text.encode()
    return (b"HTTP/1.0 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def space_before_colon(text):
    body = text.encode()
    return (b"HTTP/1.0 200 OK\r\nContent-Type : text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def body_ends_with_a_line_break(text):
    body = text.encode()
    return (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s\r\n"
            % (len(body) + 2, body))


def two_content_lengths(text):
    body = text.encode()
    return (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


# -- make_response: right, written differently ------------------------------------


def quoted_charset_and_lower_case_names(text):
    body = text.encode("utf-8")
    return (b'HTTP/1.0 200 OK\r\ncontent-length: ' + str(len(body)).encode()
            + b'\r\ncontent-type: text/plain; charset="UTF-8"\r\n\r\n' + body)


def with_extra_headers_built_from_a_list(text):
    body = bytearray(text, "utf-8")
    lines = ["HTTP/1.0 200 OK", f"Date: {email.utils.formatdate(usegmt=True)}", "Server: mine/0.1",
             f"Content-Length: {len(body)}", "Connection: close", "Content-Type: Text/Plain;Charset=utf8", "", ""]
    return bytearray("\r\n".join(lines), "ascii") + body


def from_a_dict_of_headers(text):
    body = text.encode()
    headers = {"Content-Type": "text/plain;  format=flowed ;charset=UTF-8", "Content-Length": len(body)}
    head = "HTTP/1.0 200 OK\r\n" + "".join(f"{name}:{value}\r\n" for name, value in headers.items()) + "\r\n"
    return memoryview(head.encode() + body)


# -- open_listener: wrong --------------------------------------------------------


def without_reuseaddr(port):
    listener = socket.socket()
    listener.bind(("127.0.0.1", port))
    listener.listen()
    return listener


def reuseaddr_after_bind(port):
    listener = socket.socket()
    listener.bind(("127.0.0.1", port))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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


def on_ipv6_loopback(port):
    listener = socket.socket(socket.AF_INET6)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("::1", port))
    listener.listen()
    return listener


# -- open_listener: right, written differently -----------------------------------


def with_create_server(port):
    return socket.create_server(("127.0.0.1", port))  # sets SO_REUSEADDR itself on POSIX


def by_name_with_a_backlog(port):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, True)
    listener.bind(("localhost", port))
    listener.listen(128)
    listener.setblocking(True)
    return listener


# -- receive_exactly: wrong ---------------------------------------------------------


def one_recv(conn, size):
    return conn.recv(size)


def reads_whole_chunks(conn, size):
    data = b""
    while len(data) < size:
        piece = conn.recv(1024)
        if not piece:
            raise ConnectionError("closed")
        data += piece
    return data[:size]


def through_a_file(conn, size):
    with conn.makefile("rb") as file:
        return file.read(size)


def asks_for_all_of_it_each_time(conn, size):
    data = b""
    while len(data) < size:
        piece = conn.recv(size)
        if not piece:
            raise ConnectionError("closed")
        data += piece
    return data[:size]


def ignores_the_end(conn, size):
    data = b""
    while len(data) < size:
        data += conn.recv(size - len(data))
    return data


def closes_when_done(conn, size):
    with conn:
        data = b""
        while len(data) < size:
            piece = conn.recv(size - len(data))
            if not piece:
                raise ConnectionError("closed")
            data += piece
        return data


def returns_what_came_on_close(conn, size):
    data = b""
    while len(data) < size:
        piece = conn.recv(size - len(data))
        if not piece:
            break
        data += piece
    return data


# -- receive_exactly: right, written differently ----------------------------------


def into_a_buffer(conn, size):
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = conn.recv_into(view[got:])
        if n == 0:
            raise ConnectionResetError(f"the peer closed after {got} of {size} bytes")
        got += n
    return bytes(buffer)


def waiting_for_all(conn, size):
    chunks, missing = [], size
    while missing:
        chunk = conn.recv(missing, socket.MSG_WAITALL)
        if chunk == b"":
            raise ConnectionAbortedError("closed early")
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def into_a_bytes_io(conn, size):
    received = io.BytesIO()
    while received.tell() != size:
        piece = conn.recv(min(size - received.tell(), 16384))
        if len(piece) == 0:
            raise ConnectionError
        received.write(piece)
    return received.getvalue()


C = checks
OVER_READ = "never ask recv() for more than the bytes still missing"
WRONG = [
    (C.check_make_response, counts_characters, {}, "count bytes, not characters"),
    (C.check_make_response, returns_text, {}, "should return bytes"),
    (C.check_make_response, no_charset, {}, "charset=utf-8"),
    (C.check_make_response, encodes_latin1, {}, "to be the text in UTF-8"),
    (C.check_make_response, bare_newlines, {}, "end in \\r\\n"),
    (C.check_make_response, crlf_but_bare_blank_line, {}, "bare \\n"),
    (C.check_make_response, http_1_1_status, {}, "status line 'HTTP/1.0 200 OK'"),
    (C.check_make_response, no_reason_phrase, {}, "status line 'HTTP/1.0 200 OK'"),
    (C.check_make_response, no_content_length, {}, "a Content-Length header"),
    (C.check_make_response, html_content_type, {}, "Content-Type: text/plain"),
    (C.check_make_response, space_before_colon, {}, "'Name: value'"),
    (C.check_make_response, body_ends_with_a_line_break, {}, "to be the text in UTF-8"),
    (C.check_make_response, two_content_lengths, {}, "one Content-Length header"),
    (C.check_open_listener, without_reuseaddr, {}, "SO_REUSEADDR"),
    (C.check_open_listener, reuseaddr_after_bind, {}, "SO_REUSEADDR before bind()"),
    (C.check_open_listener, on_every_interface, {}, "127.0.0.1"),
    (C.check_open_listener, never_listens, {}, "call listen()"),
    (C.check_open_listener, on_ipv6_loopback, {}, "IPv4"),
    (C.check_open_listener, shares_the_port, {"hidden": True}, "SO_REUSEPORT"),
    (C.check_receive_exactly, one_recv, {}, "one recv() returns what has arrived so far"),
    (C.check_receive_exactly, reads_whole_chunks, {}, OVER_READ),
    (C.check_receive_exactly, through_a_file, {}, OVER_READ),
    (C.check_receive_exactly, asks_for_all_of_it_each_time, {}, OVER_READ),
    (C.check_receive_exactly, ignores_the_end, {}, "when recv() returns b''"),
    (C.check_receive_exactly, returns_what_came_on_close, {}, "expected ConnectionError"),
    (C.check_receive_exactly, closes_when_done, {}, "to leave the connection open"),
]

RIGHT = [
    (C.check_make_response, quoted_charset_and_lower_case_names),
    (C.check_make_response, with_extra_headers_built_from_a_list),
    (C.check_make_response, from_a_dict_of_headers),
    (C.check_open_listener, with_create_server),
    (C.check_open_listener, by_name_with_a_backlog),
    (C.check_receive_exactly, into_a_buffer),
    (C.check_receive_exactly, waiting_for_all),
    (C.check_receive_exactly, into_a_bytes_io),
]
