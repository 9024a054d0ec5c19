"""Answers to chapter 5's exercises, as students write them: wrong ones, and right ones written differently."""

import contextlib
import errno
import os
import select
import socket
import time

from epollbook import checks

# -- drain: wrong ------------------------------------------------------------------------------


def the_articles_drain(conn, limit=65536):
    data = b""
    try:
        while True:
            data += conn.recv(1024)
    except socket.error:  # noqa: UP024 (the article's own words)
        pass
    return data, False


def one_recv_per_edge(conn, limit=65536):
    try:
        data = conn.recv(limit)
    except BlockingIOError:
        return b"", False
    return data, data == b""


def swallows_the_reset(conn, limit=65536):
    data = b""
    while len(data) < limit:
        try:
            piece = conn.recv(min(4096, limit - len(data)))
        except OSError:  # "nothing more to read"
            break
        if not piece:
            return data, True
        data += piece
    return data, False


def ignores_the_limit(conn, limit=65536):
    data = b""
    while True:
        try:
            piece = conn.recv(4096)
        except BlockingIOError:
            return data, False
        if not piece:
            return data, True
        data += piece


def nothing_read_means_closed(conn, limit=65536):
    data = b""
    while len(data) < limit:
        try:
            piece = conn.recv(limit - len(data))
        except BlockingIOError:
            break
        if not piece:
            break
        data += piece
    return data, data == b""


# -- drain: right, written differently ---------------------------------------------------------


def into_one_buffer(conn, limit=65536):
    buffer = bytearray(limit)
    view = memoryview(buffer)
    filled = 0
    while filled < limit:
        try:
            count = conn.recv_into(view[filled:])
        except BlockingIOError:
            break
        if count == 0:
            return bytes(buffer[:filled]), True
        filled += count
    return bytes(buffer[:filled]), False


def by_errno_without_blocking(conn, limit=65536):
    chunks, size, closed = [], 0, False
    while size < limit:
        try:
            chunk = conn.recv(min(limit - size, 1500), socket.MSG_DONTWAIT)
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                break
            raise
        if chunk == b"":
            closed = True
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), closed


# -- accept_all: wrong -------------------------------------------------------------------------


def the_articles_accept_loop(listener):
    connections = []
    try:
        while True:
            connection, address = listener.accept()
            connection.setblocking(0)
            connections.append(connection)
    except socket.error:  # noqa: UP024 (the article's own words)
        pass
    return connections


def one_accept_per_edge(listener):
    connection, _ = listener.accept()
    connection.setblocking(False)
    return [connection]


def lets_emfile_through(listener):
    connections = []
    while True:
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            return connections
        connection.setblocking(False)
        connections.append(connection)


def retries_emfile(listener):
    connections = []
    while True:
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            return connections
        except OSError as error:
            if error.errno == errno.EMFILE:
                time.sleep(0.01)  # "a descriptor will be free in a moment"
                continue
            raise
        connection.setblocking(False)
        connections.append(connection)


# Spare descriptors, each held for the life of the process by design.
_SPARES = {"forgets": [open(os.devnull, "rb")], "blocking": [open(os.devnull, "rb")]}  # noqa: SIM115


def _with_spare(spare, reopen=True, nonblocking=True):
    def accept_all(listener):
        connections = []
        while True:
            try:
                connection, _ = listener.accept()
            except BlockingIOError:
                return connections
            except OSError as error:
                if error.errno != errno.EMFILE or not spare:
                    return connections
                spare.pop().close()
                try:
                    refused, _ = listener.accept()
                    refused.close()
                except BlockingIOError:
                    return connections
                finally:
                    if reopen:
                        spare.append(open(os.devnull, "rb"))  # noqa: SIM115
                continue
            if nonblocking:
                connection.setblocking(False)
            connections.append(connection)
    return accept_all


forgets_to_reopen_the_spare = _with_spare(_SPARES["forgets"], reopen=False)
forgets_to_reopen_the_spare.__name__ = "forgets_to_reopen_the_spare"
leaves_connections_blocking = _with_spare(_SPARES["blocking"], nonblocking=False)
leaves_connections_blocking.__name__ = "leaves_connections_blocking"


# -- accept_all: right, written differently -----------------------------------------------------


_RESERVE = os.open(os.devnull, os.O_RDONLY)


def refuses_with_a_reserved_number(listener):
    global _RESERVE
    accepted = []
    while True:
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            return accepted
        except OSError as error:
            if error.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            os.close(_RESERVE)  # one number free again, for one refusal
            try:
                refused, _ = listener.accept()
                refused.close()
                more = True
            except BlockingIOError:
                more = False
            _RESERVE = os.open(os.devnull, os.O_RDONLY)
            if not more:
                return accepted
            continue
        sock.setblocking(False)
        accepted.append(sock)


class _Acceptor:
    """An accept loop that keeps its spare descriptor with it."""

    def __init__(self):
        self.spare = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    def refuse_one(self, listener):
        self.spare.close()
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            return False
        else:
            connection.close()
            return True
        finally:
            self.spare = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    def __call__(self, listener):
        taken = []
        while True:
            try:
                connection, _ = listener.accept()
            except BlockingIOError:
                break
            except OSError as error:
                if error.errno == errno.EMFILE and self.refuse_one(listener):
                    continue
                break
            connection.setblocking(False)
            taken.append(connection)
        return taken


a_spare_socket_kept_by_an_object = _Acceptor()
a_spare_socket_kept_by_an_object.__name__ = "a_spare_socket_kept_by_an_object"


# -- read_and_rearm: wrong --------------------------------------------------------------------

ONESHOT = select.EPOLLIN | select.EPOLLONESHOT


def _read_all(conn):
    data = b""
    try:
        while piece := conn.recv(4096):
            data += piece
    except BlockingIOError:
        pass
    return data


def forgets_to_rearm(epoll, conn):
    return _read_all(conn)


def registers_again(epoll, conn):
    data = _read_all(conn)
    epoll.register(conn, ONESHOT)  # "the article says the fd was removed"
    return data


def registers_again_if_it_can(epoll, conn):
    data = _read_all(conn)
    with contextlib.suppress(FileExistsError):
        epoll.register(conn, ONESHOT)
    return data


def rearms_without_oneshot(epoll, conn):
    data = _read_all(conn)
    epoll.modify(conn, select.EPOLLIN)
    return data


def unregisters(epoll, conn):
    data = _read_all(conn)
    epoll.unregister(conn)
    return data


def one_recv(epoll, conn):
    data = conn.recv(1024)
    epoll.modify(conn, ONESHOT)
    return data


# -- read_and_rearm: right, written differently --------------------------------------------------


def unregisters_and_registers_anew(epoll, conn):
    received = bytearray()
    while True:
        try:
            chunk = conn.recv(65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        received += chunk
    epoll.unregister(conn.fileno())
    epoll.register(conn.fileno(), select.EPOLLONESHOT | select.EPOLLIN)
    return bytes(received)


def rearms_with_more_flags(epoll, conn):
    parts = []
    while True:
        try:
            parts.append(conn.recv(8192, socket.MSG_DONTWAIT))
        except BlockingIOError:
            break
        if not parts[-1]:
            break
    epoll.modify(conn.fileno(), select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLONESHOT)
    return b"".join(parts)


C = checks
WRONG = [
    (C.check_drain, the_articles_drain, {}, "loops forever"),
    (C.check_drain, one_recv_per_edge, {}, "which means the client closed"),
    (C.check_drain, swallows_the_reset, {}, "swallowed"),
    (C.check_drain, ignores_the_limit, {}, "at most limit=10,000"),
    (C.check_drain, nothing_read_means_closed, {}, "still connected"),
    (C.check_accept_all, the_articles_accept_loop, {}, "no new edge comes for them until another client arrives"),
    (C.check_accept_all, one_accept_per_edge, {}, "accept until BlockingIOError"),
    (C.check_accept_all, lets_emfile_through, {}, "EMFILE is not the listener's fault"),
    (C.check_accept_all, retries_emfile, {}, "no retry cures"),
    (C.check_accept_all, forgets_to_reopen_the_spare, {}, "return 0 connections"),
    (C.check_accept_all, leaves_connections_blocking, {}, "non-blocking"),
    (C.check_read_and_rearm, forgets_to_rearm, {}, "still registered but disarmed"),
    (C.check_read_and_rearm, registers_again, {}, "FileExistsError (EEXIST)"),
    (C.check_read_and_rearm, registers_again_if_it_can, {}, "still registered but disarmed"),
    (C.check_read_and_rearm, rearms_without_oneshot, {}, "re-armed without EPOLLONESHOT"),
    (C.check_read_and_rearm, unregisters, {}, "removed it"),
    (C.check_read_and_rearm, one_recv, {}, "3,010 bytes"),
]

RIGHT = [
    (C.check_drain, into_one_buffer),
    (C.check_drain, by_errno_without_blocking),
    (C.check_accept_all, refuses_with_a_reserved_number),
    (C.check_accept_all, a_spare_socket_kept_by_an_object),
    (C.check_read_and_rearm, unregisters_and_registers_anew),
    (C.check_read_and_rearm, rearms_with_more_flags),
]
