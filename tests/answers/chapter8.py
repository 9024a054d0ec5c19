"""Answers to chapter 8's exercises, as students write them: wrong ones, and right ones written differently."""

import ctypes
import socket
import struct
import sys

from epollbook import checks as C

RESPONSE = (b"HTTP/1.0 200 OK\r\nDate: Mon, 1 Jan 1996 01:01:01 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!")
CORK, NODELAY, INFO = socket.TCP_CORK, socket.TCP_NODELAY, socket.TCP_INFO
TCP = socket.IPPROTO_TCP


# -- data_segments_sent: wrong -----------------------------------------------------------------------------------


def reads_segs_out(sock):
    info = sock.getsockopt(TCP, INFO, 256)
    return struct.unpack_from("I", info, 136)[0]  # tcpi_segs_out: every segment, ACKs too


def reads_data_segs_in(sock):
    info = sock.getsockopt(TCP, INFO, 256)
    return struct.unpack_from("I", info, 152)[0]  # one field too early


def reads_eight_bytes(sock):
    info = sock.getsockopt(TCP, INFO, 256)
    return struct.unpack_from("Q", info, 156)[0]  # a __u32, read as a __u64


def asks_for_too_few_bytes(sock):
    info = sock.getsockopt(TCP, INFO, 104)  # the size of struct tcp_info in an old header
    return struct.unpack_from("I", info, 156)[0]


def never_checks_the_length(sock):
    info = sock.getsockopt(TCP, INFO, 512)
    return struct.unpack_from("I", info, 156)[0]


def big_endian(sock):
    info = sock.getsockopt(TCP, INFO, 512)
    if len(info) < 160:
        return None
    return struct.unpack_from(">I", info, 156)[0]


# -- data_segments_sent: right, written differently ---------------------------------------------------------------


def slices_and_converts(sock):
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1024)
    field = info[156:160]
    return int.from_bytes(field, sys.byteorder) if len(field) == 4 else None


class TcpInfoStart(ctypes.Structure):
    _fields_ = [("head", ctypes.c_uint8 * 136), ("segs_out", ctypes.c_uint32), ("segs_in", ctypes.c_uint32),
                ("notsent_bytes", ctypes.c_uint32), ("min_rtt", ctypes.c_uint32),
                ("data_segs_in", ctypes.c_uint32), ("data_segs_out", ctypes.c_uint32)]


def with_ctypes(sock):
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, ctypes.sizeof(TcpInfoStart))
    if len(raw) < ctypes.sizeof(TcpInfoStart):
        return None
    return TcpInfoStart.from_buffer_copy(raw).data_segs_out


def with_memoryview(sock):
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 300)
    words = memoryview(raw)[:len(raw) // 4 * 4].cast("I")
    return words[156 // 4] if len(words) > 156 // 4 else None


# -- send_corked: wrong ------------------------------------------------------------------------------------------


def never_uncorks(sock, pieces):
    sock.setsockopt(TCP, CORK, 1)
    for piece in pieces:
        sock.sendall(piece)


def corks_after_the_first_send(sock, pieces):
    for number, piece in enumerate(pieces):
        sock.sendall(piece)
        if number == 0:
            sock.setsockopt(TCP, CORK, 1)
    sock.setsockopt(TCP, CORK, 0)


def nodelay_instead(sock, pieces):
    sock.setsockopt(TCP, NODELAY, 1)  # "send it all at once"
    for piece in pieces:
        sock.sendall(piece)


def corks_each_piece(sock, pieces):
    for piece in pieces:
        sock.setsockopt(TCP, CORK, 1)
        sock.sendall(piece)
        sock.setsockopt(TCP, CORK, 0)


def uncorks_only_on_success(sock, pieces):
    sock.setsockopt(TCP, CORK, 1)
    for piece in pieces:
        sock.sendall(piece)
    sock.setsockopt(TCP, CORK, 0)


def pushes_with_nodelay_at_the_end(sock, pieces):
    sock.setsockopt(TCP, CORK, 1)
    try:
        for piece in pieces:
            sock.sendall(piece)
    finally:
        sock.setsockopt(TCP, NODELAY, 1)  # pushes what is queued, but the cork stays in


def closes_when_done(sock, pieces):
    with sock:  # "the response is complete": but the socket is the caller's
        sock.setsockopt(TCP, CORK, 1)
        for piece in pieces:
            sock.sendall(piece)
        sock.setsockopt(TCP, CORK, 0)


# -- send_corked: right, written differently -------------------------------------------------------------------


def joins_then_sends_once(sock, pieces):
    data = bytearray()
    try:
        for piece in pieces:
            data += piece
    finally:
        sock.sendall(data)  # what came before a failure still goes


def msg_more_with_look_ahead(sock, pieces):
    held = None
    try:
        for piece in pieces:
            if held is not None:
                sock.sendall(held, socket.MSG_MORE)
            held = piece
    finally:
        if held is not None:
            sock.sendall(held)


def cork_in_a_context_manager(sock, pieces):
    class Corked:
        def __enter__(self):
            sock.setsockopt(socket.SOL_TCP, socket.TCP_CORK, True)

        def __exit__(self, *exc_info):
            sock.setsockopt(socket.SOL_TCP, socket.TCP_CORK, False)

    with Corked():
        sock.sendall(b"".join(pieces))


# -- answer_pipelined: wrong ----------------------------------------------------------------------------------


def _complete_requests(buffer):
    *requests, rest = buffer.split(b"\r\n\r\n")
    return requests, rest


def answers_each_at_once(conn):
    buffer = b""
    while data := conn.recv(65536):
        requests, buffer = _complete_requests(buffer + data)
        for _ in requests:
            conn.sendall(RESPONSE)


def closes_after_the_first_burst(conn):
    data = conn.recv(65536)
    conn.setsockopt(TCP, CORK, 1)
    for _ in _complete_requests(data)[0]:
        conn.sendall(RESPONSE)
    conn.close()  # as HTTP/1.0 would: but the client pipelines more


def corks_each_answer(conn):
    buffer = b""
    while data := conn.recv(65536):
        requests, buffer = _complete_requests(buffer + data)
        for _ in requests:
            conn.setsockopt(TCP, CORK, 1)
            conn.sendall(RESPONSE)
            conn.setsockopt(TCP, CORK, 0)


def corks_the_whole_connection(conn):
    conn.setsockopt(TCP, CORK, 1)
    buffer = b""
    while data := conn.recv(65536):
        requests, buffer = _complete_requests(buffer + data)
        for _ in requests:
            conn.sendall(RESPONSE)
    conn.setsockopt(TCP, CORK, 0)


def answers_one_per_recv(conn):
    conn.setsockopt(TCP, CORK, 1)
    while data := conn.recv(65536):
        if b"\r\n\r\n" in data:
            conn.setsockopt(TCP, CORK, 1)
            conn.sendall(RESPONSE)
            conn.setsockopt(TCP, CORK, 0)


def forgets_a_partial_request(conn):
    while data := conn.recv(65536):
        count = data.count(b"\r\n\r\n")
        conn.setsockopt(TCP, CORK, 1)
        conn.sendall(RESPONSE * count)
        conn.setsockopt(TCP, CORK, 0)


# -- answer_pipelined: right, written differently ----------------------------------------------------------------


def joins_the_answers(conn):
    pending = bytearray()
    while True:
        data = conn.recv(4096)
        if not data:
            return
        pending += data
        answers = []
        while (end := pending.find(b"\r\n\r\n")) >= 0:
            del pending[:end + 4]
            answers.append(RESPONSE)
        if answers:
            conn.sendall(b"".join(answers))


def msg_more_between_answers(conn):
    buffer = b""
    while data := conn.recv(1 << 16):
        buffer += data
        count = buffer.count(b"\r\n\r\n")
        buffer = buffer.rsplit(b"\r\n\r\n", 1)[-1]
        for number in range(count):
            conn.send(RESPONSE, socket.MSG_MORE if number < count - 1 else 0)


WRONG = [
    (C.check_data_segments_sent, reads_segs_out, {}, "which is tcpi_segs_out"),
    (C.check_data_segments_sent, reads_data_segs_in, {}, "which is tcpi_data_segs_in"),
    (C.check_data_segments_sent, reads_eight_bytes, {}, "4 bytes at offset 156"),
    (C.check_data_segments_sent, asks_for_too_few_bytes, {}, "ask getsockopt for enough bytes"),
    (C.check_data_segments_sent, big_endian, {}, "native byte order"),
    (C.check_data_segments_sent, never_checks_the_length, {"hidden": True}, "check len() of what getsockopt returned"),
    (C.check_send_corked, never_uncorks, {}, "TCP_CORK was still set"),
    (C.check_send_corked, corks_after_the_first_send, {}, "before the first send()"),
    (C.check_send_corked, nodelay_instead, {}, "each piece left in a segment of its own"),
    (C.check_send_corked, corks_each_piece, {}, "each piece left in a segment of its own"),
    (C.check_send_corked, uncorks_only_on_success, {"hidden": True}, "in a finally: clause"),
    (C.check_send_corked, pushes_with_nodelay_at_the_end, {}, "TCP_CORK was still set"),
    (C.check_send_corked, closes_when_done, {}, "it closed the socket"),
    (C.check_answer_pipelined, answers_each_at_once, {}, "cork while you answer them"),
    (C.check_answer_pipelined, corks_each_answer, {}, "cork while you answer them"),
    (C.check_answer_pipelined, corks_the_whole_connection, {}, "still held by the cork"),
    (C.check_answer_pipelined, answers_one_per_recv, {}, "answers to 1 of them"),
    (C.check_answer_pipelined, forgets_a_partial_request, {"hidden": True}, "keep an incomplete one"),
    (C.check_answer_pipelined, closes_after_the_first_burst, {}, "wait for more requests"),
]

RIGHT = [
    (C.check_data_segments_sent, slices_and_converts),
    (C.check_data_segments_sent, with_ctypes),
    (C.check_data_segments_sent, with_memoryview),
    (C.check_send_corked, joins_then_sends_once),
    (C.check_send_corked, msg_more_with_look_ahead),
    (C.check_send_corked, cork_in_a_context_manager),
    (C.check_answer_pipelined, joins_the_answers),
    (C.check_answer_pipelined, msg_more_between_answers),
]
