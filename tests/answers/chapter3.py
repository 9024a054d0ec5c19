"""Answers to chapter 3's exercises, as students write them: wrong ones, and right ones written differently."""

import concurrent.futures
import contextlib
import errno
import re
import select
import socket
import threading
import time

from epollbook import checks

RESPONSE = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!"
BUSY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"


def _complete(request):
    return b"\r\n\r\n" in request or b"\n\n" in request


# -- receive_request_by: wrong --------------------------------------------------------


def timeout_per_recv(conn, seconds, limit=65536):
    conn.settimeout(seconds)  # each recv() may wait this long: a byte now and then resets it
    request = b""
    while not _complete(request):
        if len(request) > limit:
            raise ValueError("too long")
        piece = conn.recv(4096)
        if not piece:
            raise ConnectionError("closed")
        request += piece
    return request


def clock_between_recvs(conn, seconds, limit=65536):
    deadline = time.monotonic() + seconds
    request = b""
    while not _complete(request):
        if time.monotonic() > deadline:
            raise TimeoutError("too slow")
        if len(request) > limit:
            raise ValueError("too long")
        piece = conn.recv(4096)  # with no timeout: a silent client keeps it here for ever
        if not piece:
            raise ConnectionError("closed")
        request += piece
    return request


def short_timeouts_to_watch_the_clock(conn, seconds, limit=65536):
    deadline = time.monotonic() + seconds
    conn.settimeout(0.05)  # wake often to look at the clock; but a timeout here is not the deadline
    request = b""
    while not _complete(request):
        if time.monotonic() > deadline:
            raise TimeoutError("too slow")
        if len(request) > limit:
            raise ValueError("too long")
        piece = conn.recv(4096)
        if not piece:
            raise ConnectionError("closed")
        request += piece
    return request


def deadline_without_limit(conn, seconds, limit=65536):
    deadline = time.monotonic() + seconds
    request = b""
    while not _complete(request):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("too slow")
        conn.settimeout(left)
        piece = conn.recv(4096)
        if not piece:
            raise ConnectionError("closed")
        request += piece
    return request


def deadline_but_returns_on_close(conn, seconds, limit=65536):
    deadline = time.monotonic() + seconds
    request = b""
    while not _complete(request) and len(request) <= limit:
        conn.settimeout(max(deadline - time.monotonic(), 0.001))
        piece = conn.recv(4096)
        if not piece:
            break  # the client is done: take what it sent
        request += piece
    if len(request) > limit:
        raise ValueError("too long")
    return request


def deadline_and_the_articles_loop(conn, seconds, limit=65536):
    deadline = time.monotonic() + seconds
    request = b""
    while b"\n\n" not in request and b"\n\r\n" not in request:
        if time.monotonic() > deadline:
            raise TimeoutError("too slow")
        if len(request) > limit:
            raise ValueError("too long")
        conn.settimeout(max(deadline - time.monotonic(), 0.001))
        request += conn.recv(1024)
    return request


def deadline_looks_at_each_piece_alone(conn, seconds, limit=65536):
    deadline = time.monotonic() + seconds
    request = b""
    while True:
        conn.settimeout(max(deadline - time.monotonic(), 0.001))
        piece = conn.recv(4096)
        if not piece:
            raise ConnectionError("closed")
        request += piece
        if len(request) > limit:
            raise ValueError("too long")
        if b"\r\n\r\n" in piece or b"\n\n" in piece:
            return request


# -- receive_request_by: right, written differently ------------------------------------


def waits_in_select(conn, seconds, limit=65536):
    give_up_at = time.time() + seconds
    received = bytearray()
    while not re.search(rb"\r?\n\r?\n", received):
        if len(received) > limit:
            raise ValueError(f"more than {limit} bytes and no blank line")
        readable, _, _ = select.select([conn], [], [], max(0.0, give_up_at - time.time()))
        if not readable:
            raise TimeoutError(f"no complete request within {seconds} s")
        chunk = conn.recv(2048)
        if chunk == b"":
            raise ConnectionResetError("the client left before the end of its request")
        received += chunk
    return bytes(received)


class Deadline:
    def __init__(self, seconds):
        self.end = time.perf_counter() + seconds

    def left(self):
        remaining = self.end - time.perf_counter()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        return remaining


def a_deadline_object(conn, seconds, limit=65536):
    deadline, pieces, size = Deadline(seconds), [], 0
    while True:
        conn.settimeout(deadline.left())
        try:
            piece = conn.recv(1024)
        except TimeoutError:
            raise TimeoutError("the request took too long") from None
        if not piece:
            raise ConnectionError("EOF before the blank line")
        pieces.append(piece)
        size += len(piece)
        whole = b"".join(pieces)
        if b"\r\n\r\n" in whole or b"\n\n" in whole:
            return whole
        if size > limit:
            raise ValueError("request too large")


# -- serve_with_threads and serve_at_most: pieces the answers share ------------------


def _read(connection, limit=65536):
    request = b""
    while not _complete(request):
        if len(request) > limit:
            raise ValueError("too long")
        piece = connection.recv(4096)
        if not piece:
            raise ConnectionError("closed early")
        request += piece
    return request


def _serve(connection, timeout=5.0):
    with connection:
        try:  # the check may have closed the connection already, as it cleans up after a wrong answer
            connection.settimeout(timeout)
            _read(connection)
            connection.sendall(RESPONSE)
        except (OSError, ValueError):
            pass


def _accept(serversocket):
    """The next connection, or None once the listening socket is shut down."""
    while True:
        try:
            connection, _ = serversocket.accept()
            return connection
        except OSError as error:
            if error.errno == errno.EINVAL:
                return None
            time.sleep(0.05)


# -- serve_with_threads: wrong ----------------------------------------------------------


def chapter_2s_server(serversocket):
    while (connection := _accept(serversocket)) is not None:
        _serve(connection, timeout=1.0)


def one_at_a_time_without_timeout(serversocket):
    while (connection := _accept(serversocket)) is not None:
        _serve(connection, timeout=None)


def waits_for_each_thread(serversocket):
    while (connection := _accept(serversocket)) is not None:
        thread = threading.Thread(target=_serve, args=(connection,))
        thread.start()
        thread.join()  # and so serves one at a time, in a thread


def threads_that_never_close(serversocket):
    def answer(connection):
        try:
            _read(connection)
            connection.sendall(RESPONSE)
        except (OSError, ValueError):
            pass

    while (connection := _accept(serversocket)) is not None:
        threading.Thread(target=answer, args=(connection,), daemon=True).start()


def threads_with_the_articles_loop(serversocket):
    def answer(connection):
        try:
            request = b""
            while b"\n\n" not in request and b"\n\r\n" not in request:
                request += connection.recv(1024)
            connection.sendall(RESPONSE)
            connection.close()
        except OSError:
            pass

    while (connection := _accept(serversocket)) is not None:
        threading.Thread(target=answer, args=(connection,), daemon=True).start()


def threads_that_answer_after_one_recv(serversocket):
    def answer(connection):
        with connection:
            connection.settimeout(5.0)
            try:
                if connection.recv(65536):  # one recv() taken for one request
                    connection.sendall(RESPONSE)
            except OSError:
                pass

    while (connection := _accept(serversocket)) is not None:
        threading.Thread(target=answer, args=(connection,), daemon=True).start()


def threads_but_never_returns(serversocket):
    while True:
        try:
            connection, _ = serversocket.accept()
        except OSError:
            time.sleep(0.05)
            continue
        threading.Thread(target=_serve, args=(connection,), daemon=True).start()


# -- serve_with_threads: right, written differently ----------------------------------


def a_pool_of_many_workers(serversocket):
    with concurrent.futures.ThreadPoolExecutor(max_workers=64) as pool:
        while True:
            try:
                connection, _ = serversocket.accept()
            except OSError:
                if serversocket.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    time.sleep(0.1)
                    continue
                pool.shutdown(wait=False)
                return
            pool.submit(_serve, connection)


class Conversation(threading.Thread):
    def __init__(self, connection):
        super().__init__(daemon=True)
        self.connection = connection

    def run(self):
        try:
            self.connection.settimeout(10)
            with self.connection.makefile("rb") as lines:
                size = 0
                while (line := lines.readline(65537)) not in (b"\r\n", b"\n"):
                    size += len(line)
                    if not line or size > 65536:
                        return
            self.connection.sendall(RESPONSE)
        except OSError:
            pass
        finally:
            self.connection.close()


def a_thread_class(serversocket):
    while True:
        try:
            connection, _ = serversocket.accept()
        except OSError as error:
            if error.errno in (errno.EINVAL, errno.EBADF):
                break
            time.sleep(0.1)
        else:
            Conversation(connection).start()


# -- serve_at_most: wrong ----------------------------------------------------------------


def no_cap_at_all(serversocket, most):
    while (connection := _accept(serversocket)) is not None:
        threading.Thread(target=_serve, args=(connection,), daemon=True).start()


def waits_for_a_place(serversocket, most):
    places = threading.Semaphore(most)

    def answer(connection):
        try:
            _serve(connection)
        finally:
            places.release()

    while (connection := _accept(serversocket)) is not None:
        places.acquire()  # the next client waits here, unanswered, until a thread ends
        threading.Thread(target=answer, args=(connection,), daemon=True).start()


def a_pool_of_most_workers(serversocket, most):
    with concurrent.futures.ThreadPoolExecutor(max_workers=most) as pool:
        while (connection := _accept(serversocket)) is not None:
            pool.submit(_serve, connection)  # queued, not refused
        pool.shutdown(wait=False)


def never_gives_places_back(serversocket, most):
    busy = 0
    while (connection := _accept(serversocket)) is not None:
        if busy >= most:
            with connection:
                connection.sendall(BUSY)
            continue
        busy += 1
        threading.Thread(target=_serve, args=(connection,), daemon=True).start()


def gives_back_only_after_answering(serversocket, most):
    places = threading.Semaphore(most)

    def answer(connection):
        with connection:
            connection.settimeout(5.0)
            try:
                _read(connection)
                connection.sendall(RESPONSE)
                places.release()
            except (OSError, ValueError):
                pass

    while (connection := _accept(serversocket)) is not None:
        if places.acquire(blocking=False):
            threading.Thread(target=answer, args=(connection,), daemon=True).start()
        else:
            with connection:
                connection.sendall(BUSY)


def reads_before_refusing(serversocket, most):
    places = threading.Semaphore(most)

    def answer(connection):
        try:
            _serve(connection)
        finally:
            places.release()

    while (connection := _accept(serversocket)) is not None:
        if places.acquire(blocking=False):
            threading.Thread(target=answer, args=(connection,), daemon=True).start()
            continue
        with connection:
            connection.settimeout(5.0)
            try:
                _read(connection)  # polite, but a client that sends nothing keeps the whole server waiting
                connection.sendall(BUSY)
            except (OSError, ValueError):
                pass


# -- serve_at_most: right, written differently ------------------------------------------


def counts_live_threads(serversocket, most):
    threads = []
    while True:
        try:
            connection, _ = serversocket.accept()
        except OSError as error:
            if error.errno == errno.EINVAL:
                return
            time.sleep(0.1)
            continue
        threads = [thread for thread in threads if thread.is_alive()]
        if len(threads) < most:
            thread = threading.Thread(target=_serve, args=(connection,), daemon=True)
            threads.append(thread)
            thread.start()
        else:
            with contextlib.suppress(OSError):
                connection.send(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\nBusy, try later.\n")
            connection.close()


class Places:
    def __init__(self, most):
        self.lock = threading.Lock()
        self.free = most

    def take(self):
        with self.lock:
            if self.free == 0:
                return False
            self.free -= 1
            return True

    def give_back(self):
        with self.lock:
            self.free += 1


def a_counter_under_a_lock(serversocket, most):
    places = Places(most)

    def serve_and_give_back(connection):
        try:
            _serve(connection, timeout=8.0)
        finally:
            places.give_back()

    while True:
        try:
            connection, _ = serversocket.accept()
        except OSError:
            if not serversocket.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                break
            time.sleep(0.1)
            continue
        if places.take():
            threading.Thread(target=serve_and_give_back, args=(connection,), daemon=True).start()
            continue
        try:
            connection.sendall(BUSY)
        except OSError:
            pass
        finally:
            connection.close()


C = checks
WRONG = [
    (C.check_receive_request_by, timeout_per_recv, {}, "keep one deadline for the whole request"),
    (C.check_receive_request_by, clock_between_recvs, {}, "a timeout of what is left of the deadline"),
    (C.check_receive_request_by, short_timeouts_to_watch_the_clock, {}, "only once the deadline of 0.5 s had passed"),
    (C.check_receive_request_by, deadline_without_limit, {}, "limit=1000"),
    (C.check_receive_request_by, deadline_but_returns_on_close, {}, "expected ConnectionError"),
    (C.check_receive_request_by, deadline_and_the_articles_loop, {}, "loops forever"),
    (C.check_receive_request_by, deadline_looks_at_each_piece_alone, {"hidden": True}, "all the bytes received"),
    (C.check_serve_with_threads, chapter_2s_server, {}, "still serves one at a time"),
    (C.check_serve_with_threads, one_at_a_time_without_timeout, {}, "in a thread of its own"),
    (C.check_serve_with_threads, waits_for_each_thread, {}, "in a thread of its own"),
    (C.check_serve_with_threads, threads_that_never_close, {}, "kept the connection open"),
    (C.check_serve_with_threads, threads_with_the_articles_loop, {}, "still open"),
    (C.check_serve_with_threads, threads_that_answer_after_one_recv, {}, "read until the blank line"),
    (C.check_serve_with_threads, threads_but_never_returns, {}, "errno EINVAL, return"),
    (C.check_serve_at_most, no_cap_at_all, {}, "most=2"),
    (C.check_serve_at_most, waits_for_a_place, {}, "answer 503 at once"),
    (C.check_serve_at_most, a_pool_of_most_workers, {}, "answer 503 at once"),
    (C.check_serve_at_most, never_gives_places_back, {}, "give its place back"),
    (C.check_serve_at_most, gives_back_only_after_answering, {}, "reset their connections"),
    (C.check_serve_at_most, reads_before_refusing, {"hidden": True}, "without reading the request"),
]

RIGHT = [
    (C.check_receive_request_by, waits_in_select),
    (C.check_receive_request_by, a_deadline_object),
    (C.check_serve_with_threads, a_pool_of_many_workers),
    (C.check_serve_with_threads, a_thread_class),
    (C.check_serve_at_most, counts_live_threads),
    (C.check_serve_at_most, a_counter_under_a_lock),
]
