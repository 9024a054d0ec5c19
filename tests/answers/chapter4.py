"""Answers to chapter 4's exercises, as students write them: wrong ones, and right ones written differently."""

import contextlib
import errno
import heapq
import select
import selectors

from epollbook import checks

RESPONSE = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!"


def _complete(request):
    return b"\r\n\r\n" in request or b"\n\n" in request


# -- echo: wrong ---------------------------------------------------------------------------------------


def _echo(connection, *, wants, sending):
    """An echo loop over one epoll; *wants(reading, pending)* is the mask asked for, *sending* how it sends."""
    connection.setblocking(False)
    pending, reading = bytearray(), True
    with select.epoll() as epoll:
        epoll.register(connection, wants(True, pending))
        while reading or pending:
            for _, event in epoll.poll():
                if event & select.EPOLLIN and reading:
                    data = connection.recv(65536)
                    if data:
                        pending += data
                    else:
                        reading = False
                if event & select.EPOLLOUT and pending:
                    sending(connection, pending)
                epoll.modify(connection, wants(reading, pending))


def _send_what_it_takes(connection, pending):
    with contextlib.suppress(BlockingIOError):
        del pending[:connection.send(pending)]


def always_in_and_out(connection):
    _echo(connection, wants=lambda reading, pending: select.EPOLLIN | select.EPOLLOUT, sending=_send_what_it_takes)


def keeps_epollout_once_asked(connection, asked=[False]):
    def wants(reading, pending):
        asked[0] = asked[0] or bool(pending)
        return select.EPOLLIN | (select.EPOLLOUT if asked[0] else 0)
    asked[0] = False
    _echo(connection, wants=wants, sending=_send_what_it_takes)


def keeps_epollin_after_the_end(connection):
    _echo(connection, wants=lambda reading, pending: select.EPOLLIN | (select.EPOLLOUT if pending else 0),
          sending=_send_what_it_takes)


def forgets_what_send_did_not_take(connection):
    def send_and_forget(connection, pending):
        with contextlib.suppress(BlockingIOError):
            connection.send(pending)
        pending.clear()
    _echo(connection, wants=lambda reading, pending: (select.EPOLLIN if reading else 0)
          | (select.EPOLLOUT if pending else 0), sending=send_and_forget)


def retries_send_at_once(connection):
    """Never asks for EPOLLOUT: loops on send() until the client has read everything."""
    connection.setblocking(False)
    with select.epoll() as epoll:
        epoll.register(connection, select.EPOLLIN)
        while True:
            epoll.poll()
            data = connection.recv(65536)
            if not data:
                return
            while data:
                try:
                    data = data[connection.send(data):]
                except BlockingIOError:
                    continue


def blocks_in_sendall(connection):
    with select.epoll() as epoll:
        epoll.register(connection, select.EPOLLIN)
        while True:
            epoll.poll()
            data = connection.recv(65536)
            if not data:
                return
            connection.sendall(data)


# -- echo: right, written differently ----------------------------------------------------------------


def echo_with_selectors(connection):
    connection.setblocking(False)
    outgoing = []  # chunks still to send, oldest first
    open_for_reading = True
    with selectors.DefaultSelector() as selector:
        selector.register(connection, selectors.EVENT_READ)
        while open_for_reading or outgoing:
            for _, mask in selector.select():
                if mask & selectors.EVENT_READ:
                    chunk = connection.recv(1 << 18)
                    if chunk:
                        outgoing.append(memoryview(chunk))
                    else:
                        open_for_reading = False
                if mask & selectors.EVENT_WRITE:
                    try:
                        while outgoing:
                            sent = connection.send(outgoing[0])
                            outgoing[0] = outgoing[0][sent:]
                            if len(outgoing[0]):
                                break
                            outgoing.pop(0)
                    except BlockingIOError:
                        pass
            events = (selectors.EVENT_READ if open_for_reading else 0) | (selectors.EVENT_WRITE if outgoing else 0)
            if events:
                selector.modify(connection, events)


def echo_with_poll(connection):
    """select.poll(), epoll's level-triggered elder: the same rule for POLLOUT."""
    connection.setblocking(False)
    backlog = bytearray()
    eof = False
    poller = select.poll()
    poller.register(connection, select.POLLIN)
    while not (eof and not backlog):
        for _, flags in poller.poll():
            if flags & (select.POLLIN | select.POLLHUP) and not eof:
                data = connection.recv(32768)
                backlog.extend(data)
                eof = not data
            if flags & select.POLLOUT and backlog:
                try:
                    n = connection.send(backlog)
                except BlockingIOError:
                    n = 0
                del backlog[:n]
        poller.modify(connection, (0 if eof else select.POLLIN) | (select.POLLOUT if backlog else 0))


# -- serve_without_leaks: wrong ------------------------------------------------------------------------


def _server_leaking(*, on_end, on_reset, on_send_error, at_stop, kept=None, name):
    """The exercise's server, with each place a connection can end handled as the flags say.

    'close' closes and forgets it; 'unregister only' is the given code's leak;
    'nothing' leaves it registered. *kept*: where the connections and the epoll
    live, a dict that outlives the call (a module-level global, say).
    """
    def serve(listener):
        state = {} if kept is None else kept
        listener.setblocking(False)
        epoll = state["epoll"] = select.epoll()
        epoll.register(listener, select.EPOLLIN)
        connections, received = state.setdefault("connections", {}), {}

        def end(fd, how):
            if how == "close":
                epoll.unregister(fd)
                connections.pop(fd).close()
                del received[fd]
            elif how == "unregister only":
                epoll.unregister(fd)

        while True:
            for fd, _ in epoll.poll():
                if fd == listener.fileno():
                    try:
                        connection, _ = listener.accept()
                    except BlockingIOError:
                        continue
                    except OSError:
                        if at_stop == "close":
                            for connection in connections.values():
                                connection.close()
                            epoll.close()
                        return
                    connection.setblocking(False)
                    epoll.register(connection, select.EPOLLIN)
                    connections[connection.fileno()], received[connection.fileno()] = connection, b""
                    continue
                connection = connections[fd]
                try:
                    piece = connection.recv(4096)
                except ConnectionError:
                    end(fd, on_reset)
                    continue
                if not piece:
                    end(fd, on_end)
                    continue
                received[fd] += piece
                if _complete(received[fd]):
                    try:
                        connection.send(RESPONSE)
                    except ConnectionError:
                        end(fd, on_send_error)
                        continue
                    end(fd, "close")
    serve.__name__ = name
    return serve


LEAKY = {"on_end": "unregister only", "on_reset": "unregister only", "on_send_error": "unregister only",
         "at_stop": "leak"}
FIXED = {"on_end": "close", "on_reset": "close", "on_send_error": "close", "at_stop": "close"}

the_given_server = _server_leaking(**LEAKY, name="the_given_server")
fixes_only_the_early_close = _server_leaking(**{**LEAKY, "on_end": "close"}, name="fixes_only_the_early_close")
fixes_only_the_reset = _server_leaking(**{**LEAKY, "on_reset": "close"}, name="fixes_only_the_reset")
spins_on_the_early_close = _server_leaking(**{**FIXED, "on_end": "nothing"}, name="spins_on_the_early_close")
# Kept in a global, what is not closed at the stop outlives the call (a local would be closed by the garbage collector).
GLOBALS = {}
keeps_the_epoll_in_a_global = _server_leaking(**{**FIXED, "at_stop": "leak"}, kept=GLOBALS,
                                              name="keeps_the_epoll_in_a_global")


# -- serve_without_leaks: right, written differently ---------------------------------------------------


def with_selectors(listener):
    """The portable layer over epoll (chapter 12), with the state in each registration's data."""
    listener.setblocking(False)
    with selectors.DefaultSelector() as selector:
        selector.register(listener, selectors.EVENT_READ, data=None)
        while True:
            for key, _ in selector.select():
                if key.data is None:
                    try:
                        connection, _ = listener.accept()
                    except BlockingIOError:
                        continue
                    except OSError as error:
                        if error.errno != errno.EINVAL:
                            continue
                        for other in list(selector.get_map().values()):
                            if other.data is not None:
                                other.fileobj.close()
                        return
                    connection.setblocking(False)
                    selector.register(connection, selectors.EVENT_READ, data=bytearray())
                    continue
                connection, received = key.fileobj, key.data
                try:
                    chunk = connection.recv(1 << 16)
                except ConnectionError:
                    chunk = None
                if chunk:
                    received += chunk
                    if not _complete(bytes(received)):
                        continue
                    with contextlib.suppress(OSError):
                        connection.sendall(RESPONSE)
                selector.unregister(connection)
                connection.close()


def closes_in_one_place(listener):
    """Every way a connection ends goes through one `finally`; an ExitStack closes whatever is left."""
    listener.setblocking(False)
    with contextlib.ExitStack() as everything, select.epoll() as epoll:
        epoll.register(listener, select.EPOLLIN)
        open_connections = {}
        while True:
            for fd, _ in epoll.poll():
                if fd == listener.fileno():
                    try:
                        connection, _ = listener.accept()
                    except BlockingIOError:
                        continue
                    except OSError:
                        return
                    everything.enter_context(connection)  # closed at the stop, if still open
                    connection.setblocking(False)
                    epoll.register(connection, select.EPOLLIN)
                    open_connections[connection.fileno()] = [connection, b""]
                    continue
                connection, request = open_connections[fd]
                done = True
                try:
                    piece = connection.recv(4096)
                    if piece:
                        request += piece
                        open_connections[fd][1] = request
                        done = _complete(request)
                        if done:
                            connection.send(RESPONSE)
                except OSError:
                    done = True
                finally:
                    if done:
                        del open_connections[fd]
                        connection.close()  # also takes it out of the epoll's interest list




# -- poll_timeout: wrong -------------------------------------------------------------------------------


def always_zero(deadlines, now):
    return 0


def unclipped(deadlines, now):
    if not deadlines:
        return None
    return min(deadlines.values()) - now


def the_latest_deadline(deadlines, now):
    if not deadlines:
        return None
    return max(0.0, max(deadlines.values()) - now)


def every_five_seconds(deadlines, now):
    return 5


def every_second(deadlines, now):
    return 1.0


def in_milliseconds(deadlines, now):
    """As select.poll() wants it."""
    if not deadlines:
        return -1
    return max(0, round((min(deadlines.values()) - now) * 1000))


def always_none(deadlines, now):
    return None


def zero_when_nothing_is_open(deadlines, now):
    if not deadlines:
        return 0
    return max(0.0, min(deadlines.values()) - now)


def whole_seconds(deadlines, now):
    if not deadlines:
        return None
    return max(0, int(min(deadlines.values()) - now))


def breaks_on_no_deadline(deadlines, now):
    return max(0.0, min(deadlines.values()) - now)


def as_text(deadlines, now):
    return f"{max(0.0, min(deadlines.values()) - now):.3f}" if deadlines else None


# -- poll_timeout: right, written differently ------------------------------------------------------------


def with_a_heap(deadlines, now):
    heap = list(deadlines.values())
    heapq.heapify(heap)
    if heap:
        wait = heap[0] - now
        return wait if wait > 0 else 0
    return -1


def with_sorted(deadlines, now):
    for earliest in sorted(deadlines.values()):
        return max(earliest - now, 0)
    return None


def with_a_default(deadlines, now):
    earliest = min((deadline for deadline in deadlines.values()), default=None)
    return None if earliest is None else max(0.0, earliest - now)


def in_milliseconds_then_seconds(deadlines, now):
    """Counted in whole milliseconds, rounded up, then handed over in seconds, as epoll.poll() wants them."""
    if not deadlines:
        return -1.0
    milliseconds = -(-(min(deadlines.values()) - now) * 1000 // 1)
    return max(milliseconds, 0) / 1000



C = checks
WRONG = [
    (C.check_echo, always_in_and_out, {}, "while there was nothing to send"),
    (C.check_echo, keeps_epollout_once_asked, {}, "while there was nothing to send"),
    (C.check_echo, retries_send_at_once, {}, "when send() raises BlockingIOError"),
    (C.check_echo, blocks_in_sendall, {}, "blocked in sendall()"),
    (C.check_echo, forgets_what_send_did_not_take, {}, "bytes echoed back"),
    (C.check_echo, keeps_epollin_after_the_end, {"hidden": True}, "stop asking for EPOLLIN"),
    (C.check_serve_without_leaks, the_given_server, {}, "CLOSE_WAIT"),
    (C.check_serve_without_leaks, fixes_only_the_early_close, {}, "ConnectionError"),
    (C.check_serve_without_leaks, fixes_only_the_reset, {}, "CLOSE_WAIT"),
    (C.check_serve_without_leaks, spins_on_the_early_close, {}, "never went back to sleep"),
    (C.check_serve_without_leaks, keeps_the_epoll_in_a_global, {}, "1 epoll instance open"),
    (C.check_serve_without_leaks, keeps_the_epoll_in_a_global, {"hidden": True}, "and the epoll object too"),
    (C.check_poll_timeout, always_zero, {}, "its thread never slept"),
    (C.check_poll_timeout, zero_when_nothing_is_open, {}, "while no connection was open; its thread never slept"),
    (C.check_poll_timeout, unclipped, {}, "waits for ever"),
    (C.check_poll_timeout, unclipped, {"hidden": True}, "never return a negative number"),
    (C.check_poll_timeout, every_five_seconds, {}, "was still open 1.2 s after its deadline"),
    (C.check_poll_timeout, in_milliseconds, {}, "that is milliseconds"),
    (C.check_poll_timeout, always_none, {}, "waits for the next event only"),
    (C.check_poll_timeout, the_latest_deadline, {"hidden": True}, "the time until the latest deadline"),
    (C.check_poll_timeout, every_second, {"hidden": True}, "epoll.poll(1.0) woke it after"),
    (C.check_poll_timeout, whole_seconds, {}, "with nothing to do"),
    (C.check_poll_timeout, breaks_on_no_deadline, {}, "raised ValueError"),
    (C.check_poll_timeout, as_text, {}, "epoll.poll() refused it"),
]

RIGHT = [
    (C.check_echo, echo_with_selectors),
    (C.check_echo, echo_with_poll),
    (C.check_serve_without_leaks, closes_in_one_place),
    (C.check_serve_without_leaks, with_selectors),
    (C.check_poll_timeout, with_a_heap),
    (C.check_poll_timeout, with_sorted),
    (C.check_poll_timeout, with_a_default),
    (C.check_poll_timeout, in_milliseconds_then_seconds),
]
