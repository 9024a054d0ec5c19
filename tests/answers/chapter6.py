"""Answers to chapter 6's exercises, as students write them: wrong ones, and right ones written differently."""

import select
import socket
import struct
import time

from epollbook import checks

RESPONSE = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!"


# -- how_it_ended: wrong -------------------------------------------------------------------


def rdhup_before_err(conn, events):
    if events & select.EPOLLRDHUP:
        return "eof"
    if events & select.EPOLLERR:
        return "reset"
    return "open"


def hup_means_closed(conn, events):
    if events & select.EPOLLERR:
        return "reset"
    if events & select.EPOLLHUP:  # what the article says EPOLLHUP means
        return "eof"
    return "open"


def reads_to_find_out(conn, events):
    try:
        data = conn.recv(4096)
    except BlockingIOError:
        return "open"
    except ConnectionResetError:
        return "reset"
    return "eof" if data == b"" else "open"


def peeks_one_byte(conn, events):
    try:
        data = conn.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return "open"
    except ConnectionResetError:
        return "reset"
    return "eof" if data == b"" else "open"


def epollin_means_eof(conn, events):
    if events & select.EPOLLERR:
        return "reset"
    if events & select.EPOLLIN:
        return "eof"
    return "open"


# -- how_it_ended: right, written differently -------------------------------------------------


def asks_so_error(conn, events):
    if conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
        return "reset"
    return "eof" if events & (select.EPOLLRDHUP | select.EPOLLHUP) else "open"


NAMES = {select.EPOLLERR: "reset", select.EPOLLRDHUP: "eof"}


def first_bit_that_matters(conn, events):
    for bit, name in NAMES.items():  # in order: an error outranks the end of the data
        if events & bit:
            return name
    return "open"


def peeks_after_the_mask(conn, events):
    if events & (select.EPOLLERR | select.EPOLLHUP) == select.EPOLLERR | select.EPOLLHUP:
        return "reset"
    if not events & select.EPOLLRDHUP:
        return "open"
    try:
        conn.recv(1, socket.MSG_PEEK)
    except ConnectionResetError:
        return "reset"
    return "eof"


# -- on_readable: wrong ------------------------------------------------------------------------


def _complete(request):
    return b"\r\n\r\n" in request or b"\n\n" in request


def closes_on_rdhup(conn, events, request):
    if events & select.EPOLLRDHUP:  # "the client hung up": no one to answer
        return False
    request += conn.recv(4096)
    if _complete(request):
        conn.sendall(RESPONSE)
        return False
    return True


def closes_on_empty_recv_first(conn, events, request):
    while True:
        try:
            data = conn.recv(4096)
        except BlockingIOError:
            break
        if not data:
            return False  # closed: drop it
        request += data
    if _complete(request):
        conn.sendall(RESPONSE)
        return False
    return True


def keeps_watching_after_eof(conn, events, request):
    data = conn.recv(4096)
    request += data
    if _complete(request):
        conn.sendall(RESPONSE)
        return False
    return True


def answers_the_first_piece(conn, events, request):
    data = conn.recv(4096)
    if not data:
        return False
    request += data
    conn.sendall(RESPONSE)
    return False


def never_done_after_answering(conn, events, request):
    data = conn.recv(4096)
    if not data and not _complete(request):
        return False
    request += data
    if _complete(request) and data:
        conn.sendall(RESPONSE)
    return True


# -- on_readable: right, written differently ----------------------------------------------------


def drains_then_decides(conn, events, request):
    finished = False
    while True:
        try:
            data = conn.recv(1024)
        except BlockingIOError:
            break
        if not data:
            finished = True
            break
        request.extend(data)
    if _complete(request):
        conn.sendall(RESPONSE)
        return False
    return not finished


def one_recv_per_call(conn, events, request):
    data = conn.recv(65536)
    request[len(request):] = data
    if b"\n\n" in request.replace(b"\r\n", b"\n"):
        sent = 0
        while sent < len(RESPONSE):
            try:
                sent += conn.send(RESPONSE[sent:])
            except BlockingIOError:
                time.sleep(0.001)
        return False
    return bool(data)


# -- close_gracefully: wrong ---------------------------------------------------------------------


def closes_at_once(conn):
    conn.close()


def shuts_down_both_then_closes(conn):
    conn.shutdown(socket.SHUT_RDWR)
    conn.close()


def shuts_down_writing_then_closes(conn):
    conn.shutdown(socket.SHUT_WR)
    conn.close()


def lingers_then_closes(conn):
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 5))
    conn.close()


def reads_once(conn):
    conn.shutdown(socket.SHUT_WR)
    conn.recv(65536)
    conn.close()


def drains_without_a_deadline(conn):
    conn.shutdown(socket.SHUT_WR)
    while conn.recv(65536):
        pass
    conn.close()


def a_timeout_per_recv(conn):
    conn.shutdown(socket.SHUT_WR)
    conn.settimeout(1.0)
    try:
        while conn.recv(4096):
            pass
    except TimeoutError:
        pass
    conn.close()


# -- close_gracefully: right, written differently ---------------------------------------------------


def with_a_deadline_and_select(conn):
    with conn:
        conn.shutdown(socket.SHUT_WR)
        conn.setblocking(False)
        deadline = time.monotonic() + 1.0
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([conn], [], [], left)
            if not readable:
                break
            try:
                if not conn.recv(16384):
                    break
            except BlockingIOError:
                continue
            except OSError:
                break


def with_epoll(conn):
    try:
        conn.shutdown(socket.SHUT_WR)
        ends = time.monotonic() + 0.8
        with select.epoll() as epoll:
            epoll.register(conn.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
            conn.setblocking(False)
            while time.monotonic() < ends and epoll.poll(ends - time.monotonic()):
                if conn.recv(1 << 16) == b"":
                    break
    except OSError:
        pass
    finally:
        conn.close()


C = checks
WRONG = [
    (C.check_how_it_ended, rdhup_before_err, {}, "expected 'reset' for a client that reset"),
    (C.check_how_it_ended, hup_means_closed, {}, "expected 'eof' for a client that sent its request and closed"),
    (C.check_how_it_ended, reads_to_find_out, {}, "to be left for the server to read"),
    (C.check_how_it_ended, peeks_one_byte, {}, "expected 'eof' for a client that sent its request and closed"),
    (C.check_how_it_ended, epollin_means_eof, {}, "expected 'open'"),
    (C.check_on_readable, closes_on_rdhup, {}, "not that it stopped listening"),
    (C.check_on_readable, closes_on_empty_recv_first, {}, "not that it stopped listening"),
    (C.check_on_readable, keeps_watching_after_eof, {}, "would spin"),
    (C.check_on_readable, answers_the_first_piece, {}, "expected no answer before the blank line"),
    (C.check_on_readable, never_done_after_answering, {}, "stay open for ever"),
    (C.check_close_gracefully, closes_at_once, {}, "close() with unread bytes sends a reset"),
    (C.check_close_gracefully, shuts_down_both_then_closes, {}, "close() with unread bytes sends a reset"),
    (C.check_close_gracefully, shuts_down_writing_then_closes, {}, "close() with unread bytes sends a reset"),
    (C.check_close_gracefully, lingers_then_closes, {}, "close() with unread bytes sends a reset"),
    (C.check_close_gracefully, reads_once, {}, "200,000 bytes"),
    (C.check_close_gracefully, drains_without_a_deadline, {"hidden": True}, "give up after 1 s in all"),
    (C.check_close_gracefully, a_timeout_per_recv, {"hidden": True}, "not per recv()"),
]

RIGHT = [
    (C.check_how_it_ended, asks_so_error),
    (C.check_how_it_ended, first_bit_that_matters),
    (C.check_how_it_ended, peeks_after_the_mask),
    (C.check_on_readable, drains_then_decides),
    (C.check_on_readable, one_recv_per_call),
    (C.check_close_gracefully, with_a_deadline_and_select),
    (C.check_close_gracefully, with_epoll),
]
