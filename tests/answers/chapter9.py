"""Answers to chapter 9's exercises, as students write them: wrong ones, and right ones written differently."""

import os
import socket
import struct
import time

from epollbook import checks
from epollbook.nagle import read_message

NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY)
CORK = (socket.IPPROTO_TCP, socket.TCP_CORK)


# -- ask: wrong -----------------------------------------------------------------------------------


def nodelay_on_a_socket_of_its_own(sock, head, body):
    fresh = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # "set it before connecting", on the wrong socket
    fresh.setsockopt(*NODELAY, 1)
    fresh.close()
    sock.sendall(head)
    sock.sendall(body)
    return read_message(sock)


def nodelay_set_to_zero(sock, head, body):
    sock.setsockopt(*NODELAY, 0)  # "no delay: zero"
    sock.sendall(head)
    sock.sendall(body)
    return read_message(sock)


def cork_left_on(sock, head, body):
    sock.setsockopt(*CORK, 1)
    sock.sendall(head)
    sock.sendall(body)
    return read_message(sock)


def sleeps_between_the_pieces(sock, head, body):
    sock.sendall(head)
    time.sleep(0.05)  # "give the first piece time to leave"
    sock.sendall(body)
    return read_message(sock)


def sends_only_the_head(sock, head, body):
    sock.sendall(head)
    return read_message(sock)


def forgets_to_return(sock, head, body):
    sock.sendall(head + body)
    read_message(sock)


# -- ask: right, written differently -------------------------------------------------------------


def joined(sock, head, body):
    sock.sendall(b"".join([head, body]))
    return read_message(sock)


def with_writev(sock, head, body):
    sent = os.writev(sock.fileno(), [head, body])
    sock.sendall((head + body)[sent:])
    return read_message(sock)


def more_is_coming(sock, head, body):
    sock.send(head, socket.MSG_MORE)
    sock.send(body)
    return read_message(sock)


def corked_then_pulled(sock, head, body):
    sock.setsockopt(*CORK, 1)
    sock.sendall(head)
    sock.sendall(body)
    sock.setsockopt(*CORK, 0)
    return read_message(sock)


def nodelay_each_time(sock, head, body):
    sock.setsockopt(socket.SOL_TCP, socket.TCP_NODELAY, True)
    for piece in (head, body):
        sock.sendall(piece)
    return read_message(sock)


# -- reply: wrong --------------------------------------------------------------------------------


def quickack_on_this_end(conn, head, body):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)  # acknowledges quickly; the client still delays
    conn.sendall(head)
    conn.sendall(body)


def reply_cork_left_on(conn, head, body):
    conn.setsockopt(*CORK, 1)
    conn.sendall(head)
    conn.sendall(body)


def nodelay_off_to_be_safe(conn, head, body):
    conn.setsockopt(*NODELAY, 0)
    conn.sendall(head)
    conn.sendall(body)


def pause_before_the_body(conn, head, body):
    conn.sendall(head)
    time.sleep(0.05)
    conn.sendall(body)


def head_only(conn, head, body):
    conn.sendall(head)


# -- reply: right, written differently ------------------------------------------------------------


def reply_gathered(conn, head, body):
    sent = conn.sendmsg([head, body])
    conn.sendall((head + body)[sent:])


def reply_with_nodelay(conn, head, body):
    if conn.getsockopt(*NODELAY) == 0:
        conn.setsockopt(*NODELAY, 1)
    conn.send(head)
    conn.send(body)


def reply_with_msg_more(conn, head, body):
    conn.sendall(head, socket.MSG_MORE)
    conn.sendall(body)


def reply_joined_in_a_bytearray(conn, head, body):
    answer = bytearray(head)
    answer += body
    conn.sendall(answer)


# -- nagle_is_on: wrong -------------------------------------------------------------------------


def always_on(sock):
    return True


def inverted(sock):
    return sock.getsockopt(*NODELAY) == 1


def at_the_socket_level(sock):
    return not sock.getsockopt(socket.SOL_SOCKET, socket.TCP_NODELAY)  # SOL_SOCKET's option 1 is SO_DEBUG


def reads_the_cork(sock):
    return not sock.getsockopt(*CORK)


def corked_means_off(sock):
    return not (sock.getsockopt(*NODELAY) or sock.getsockopt(*CORK))


def turns_it_off_to_look(sock):
    was = sock.getsockopt(*NODELAY)
    sock.setsockopt(*NODELAY, 1)
    return not was


def returns_the_number(sock):
    return 1 - sock.getsockopt(*NODELAY)


# -- nagle_is_on: right, written differently --------------------------------------------------------


def unpacked(sock):
    (value,) = struct.unpack("i", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 4))
    return value == 0


def through_a_duplicate(sock):
    with socket.socket(fileno=os.dup(sock.fileno())) as copy:
        return not bool(copy.getsockopt(socket.SOL_TCP, socket.TCP_NODELAY))


def compared(sock):
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0


C = checks

WRONG = [
    (C.check_ask, nodelay_on_a_socket_of_its_own, {}, "TCP_NODELAY is off on the socket"),
    (C.check_ask, nodelay_set_to_zero, {}, "TCP_NODELAY is off on the socket"),
    (C.check_ask, cork_left_on, {}, "TCP_CORK is still set"),
    (C.check_ask, sleeps_between_the_pieces, {}, "times as long"),
    (C.check_ask, sends_only_the_head, {}, "the whole request, head and body"),
    (C.check_ask, forgets_to_return, {}, "it returned None"),
    (C.check_reply, quickack_on_this_end, {}, "TCP_NODELAY is off on the socket"),
    (C.check_reply, reply_cork_left_on, {}, "TCP_CORK is still set"),
    (C.check_reply, nodelay_off_to_be_safe, {}, "times as long"),
    (C.check_reply, pause_before_the_body, {}, "times as long"),
    (C.check_reply, head_only, {}, "the client was still waiting"),
    (C.check_nagle_is_on, always_on, {}, "expected False for a client connection with TCP_NODELAY set"),
    (C.check_nagle_is_on, inverted, {}, "expected True for a new client connection"),
    (C.check_nagle_is_on, at_the_socket_level, {}, "expected False for a client connection with TCP_NODELAY set"),
    (C.check_nagle_is_on, reads_the_cork, {}, "expected False for a client connection with TCP_NODELAY set"),
    (C.check_nagle_is_on, corked_means_off, {"hidden": True}, "expected True for a corked client connection"),
    (C.check_nagle_is_on, turns_it_off_to_look, {}, "never set it"),
    (C.check_nagle_is_on, returns_the_number, {}, "expected True or False"),
]

RIGHT = [
    (C.check_ask, joined),
    (C.check_ask, with_writev),
    (C.check_ask, more_is_coming),
    (C.check_ask, corked_then_pulled),
    (C.check_ask, nodelay_each_time),
    (C.check_reply, reply_gathered),
    (C.check_reply, reply_with_nodelay),
    (C.check_reply, reply_with_msg_more),
    (C.check_reply, reply_joined_in_a_bytearray),
    (C.check_nagle_is_on, unpacked),
    (C.check_nagle_is_on, through_a_duplicate),
    (C.check_nagle_is_on, compared),
]
