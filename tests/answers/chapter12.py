"""Answers to chapter 12's exercises, as students write them: wrong ones, and right ones written differently."""

import asyncio
import contextlib
import selectors
import threading

from epollbook import checks as C
from epollbook.servers import framing
from epollbook.tinyloop.coroutines import readable, writable

# -- serve_with_selectors: wrong -------------------------------------------------------------------


def one_client_at_a_time(listener):
    with selectors.DefaultSelector() as selector:
        selector.register(listener, selectors.EVENT_READ)
        while True:
            selector.select()
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            with sock:  # "the selector told me it's ready": read the whole request here, blocking
                received = b""
                while framing.judge(received) is None:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    received += chunk
                else:
                    sock.sendall(framing.RESPONSE)


def _serve(listener, selector, close_on_empty=True):
    listener.setblocking(False)
    selector.register(listener, selectors.EVENT_READ)
    received = {}
    while True:
        for key, _ in selector.select():
            if key.fileobj is listener:
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    continue
                except OSError:
                    for sock in list(received):
                        selector.unregister(sock)
                        sock.close()
                    return
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ)
                received[sock] = b""
                continue
            sock = key.fileobj
            try:
                chunk = sock.recv(4096)
            except ConnectionError:
                chunk = b""
            if not chunk:
                if close_on_empty:
                    selector.unregister(sock)
                    del received[sock]
                    sock.close()
                else:
                    selector.unregister(sock)  # "unregistered, so it is gone"
                continue
            received[sock] += chunk
            if framing.judge(received[sock]) is not None:
                selector.unregister(sock)
                del received[sock]
                with contextlib.suppress(ConnectionError):
                    sock.sendall(framing.RESPONSE)
                sock.close()


def unregisters_but_never_closes(listener):
    with selectors.DefaultSelector() as selector:
        _serve(listener, selector, close_on_empty=False)


def selector_never_closed(listener):
    _serve(listener, selectors.DefaultSelector())


def a_thread_per_client(listener):
    def answer(sock):
        with sock:
            received = b""
            while framing.judge(received) is None:
                try:
                    chunk = sock.recv(4096)
                except OSError:
                    return
                if not chunk:
                    return
                received += chunk
            with contextlib.suppress(OSError):
                sock.sendall(framing.RESPONSE)

    with selectors.DefaultSelector() as selector:
        selector.register(listener, selectors.EVENT_READ)
        while True:
            selector.select()
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(sock,), daemon=True).start()


# -- serve_with_selectors: right, written differently ---------------------------------------------------


def with_poll_selector_and_data(listener):
    """selectors.PollSelector, state in each key's data, EVENT_WRITE for what send() could not take."""
    listener.setblocking(False)
    selector = selectors.PollSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    try:
        while True:
            for key, mask in selector.select():
                if key.data is None:
                    try:
                        sock, _ = listener.accept()
                    except BlockingIOError:
                        continue
                    except OSError:
                        return
                    sock.setblocking(False)
                    selector.register(sock, selectors.EVENT_READ, {"in": bytearray(), "out": b""})
                    continue
                sock, state = key.fileobj, key.data
                try:
                    if mask & selectors.EVENT_READ:
                        chunk = sock.recv(4096)
                        if not chunk:
                            raise ConnectionResetError
                        state["in"] += chunk
                        verdict = framing.judge(state["in"])
                        if verdict is None:
                            continue
                        state["out"] = verdict.answer
                        selector.modify(sock, selectors.EVENT_WRITE, state)
                        continue
                    else:
                        state["out"] = state["out"][sock.send(state["out"]):]
                        if state["out"]:
                            continue
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                selector.unregister(sock)
                sock.close()
    finally:
        for key in list(selector.get_map().values()):
            if key.fileobj is not listener:
                key.fileobj.close()
        selector.close()


def with_a_selector_subclass_and_sets(listener):
    """The listener ends the loop by a flag; connections kept in a set, closed in finally."""
    open_sockets = set()
    with selectors.DefaultSelector() as selector:
        listener.setblocking(False)
        selector.register(listener, selectors.EVENT_READ)
        serving = True
        try:
            while serving:
                for key, _ in selector.select(timeout=1.0):
                    sock = key.fileobj
                    if sock is listener:
                        try:
                            conn, _ = listener.accept()
                        except BlockingIOError:
                            continue
                        except OSError:
                            serving = False
                            break
                        conn.setblocking(False)
                        open_sockets.add(conn)
                        selector.register(conn, selectors.EVENT_READ, bytearray())
                        continue
                    try:
                        chunk = sock.recv(1024)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        chunk = b""
                    key.data.extend(chunk)
                    if chunk and framing.judge(key.data) is None:
                        continue
                    if chunk:
                        with contextlib.suppress(OSError):
                            sock.send(framing.RESPONSE)  # 100-odd bytes: the buffer takes them whole
                    selector.unregister(sock)
                    open_sockets.discard(sock)
                    sock.close()
        finally:
            for sock in open_sockets:
                sock.close()


# -- echo_back: wrong -------------------------------------------------------------------------------


async def recv_without_waiting(sock):
    with sock:
        while chunk := sock.recv(4096):  # the loop's sockets do not block: BlockingIOError
            await writable(sock)
            sock.send(chunk)


async def sendall_once_readable(sock):
    with sock:
        while True:
            await readable(sock)
            try:
                chunk = sock.recv(65536)
            except ConnectionError:
                return
            if not chunk:
                return
            sock.sendall(chunk)  # fine while the buffer has room; BlockingIOError once it has not


async def echoes_the_first_chunk_only(sock):
    with sock:
        await readable(sock)
        chunk = sock.recv(4096)
        await writable(sock)
        sock.send(chunk)


def still_a_generator(sock):
    with sock:
        while True:
            yield sock, selectors.EVENT_READ
            chunk = sock.recv(4096)
            if not chunk:
                return
            yield sock, selectors.EVENT_WRITE
            sock.send(chunk)


async def yields_inside_async_def(sock):
    with sock:
        while True:
            yield sock, selectors.EVENT_READ
            chunk = sock.recv(4096)
            if not chunk:
                return
            await writable(sock)
            sock.send(chunk)


# -- echo_back: right, written differently -------------------------------------------------------------------


async def _send_all(sock, data):
    while data:
        await writable(sock)
        data = data[sock.send(data):]


async def with_a_helper_coroutine(sock):
    try:
        while True:
            await readable(sock)
            chunk = sock.recv(1024)
            if chunk == b"":
                break
            await _send_all(sock, memoryview(chunk))
    except OSError:
        pass
    finally:
        sock.close()


class _Awaitable:
    def __init__(self, sock, event):
        self.pair = (sock, event)

    def __await__(self):
        return iter([self.pair])  # any iterator will do: the loop gets its one item


async def with_an_awaitable_of_its_own(sock):
    pending = bytearray()
    with sock:
        while True:
            await _Awaitable(sock, selectors.EVENT_READ)
            try:
                chunk = sock.recv(100_000)
            except BlockingIOError:
                continue
            except ConnectionError:
                return
            if not chunk:
                return
            pending += chunk
            while pending:
                await _Awaitable(sock, selectors.EVENT_WRITE)
                try:
                    del pending[:sock.send(pending)]
                except BlockingIOError:
                    continue
                except ConnectionError:
                    return


# -- CountUntilEnd: wrong --------------------------------------------------------------------------------


class AnswersInConnectionLost(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.count = transport, 0

    def data_received(self, data):
        self.count += len(data)

    def connection_lost(self, exc):
        self.transport.write(b"%d\n" % self.count)  # too late: the transport is closed


class CountsTheLastChunkOnly(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.count = transport, 0

    def data_received(self, data):
        self.count = len(data)

    def eof_received(self):
        self.transport.write(b"%d" % self.count)


class KeepsItOpen(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.count = transport, 0

    def data_received(self, data):
        self.count += len(data)

    def eof_received(self):
        self.transport.write(b"%d\n" % self.count)
        return True  # "keep the connection open so the answer gets out": and nothing closes it


class AnswersEachChunk(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(b"%d\n" % len(data))
        self.transport.close()


# -- CountUntilEnd: right, written differently ---------------------------------------------------------------


class ReturnsFalseAndLetsAsyncioClose(asyncio.Protocol):
    def __init__(self):
        self.chunks = []

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.chunks.append(data)

    def eof_received(self):
        self.transport.write(str(sum(map(len, self.chunks))).encode())
        return False  # asyncio closes the transport, after what is buffered has gone out


class KeepsOpenThenClosesWhenFlushed(asyncio.BufferedProtocol):
    def connection_made(self, transport):
        self.transport, self.count, self.buffer = transport, 0, bytearray(1 << 16)

    def get_buffer(self, sizehint):
        return self.buffer

    def buffer_updated(self, nbytes):
        self.count += nbytes

    def eof_received(self):
        self.transport.write(f"{self.count}\n".encode())
        self.transport.get_extra_info("socket")  # still open here
        asyncio.get_running_loop().call_soon(self.transport.close)
        return True


WRONG = [
    (C.check_serve_with_selectors, one_client_at_a_time, {}, "expected an answer to a polite client after 1 client"),
    (C.check_serve_with_selectors, unregisters_but_never_closes, {}, "in CLOSE_WAIT"),
    (C.check_serve_with_selectors, selector_never_closed, {}, "1 epoll instance"),
    (C.check_serve_with_selectors, a_thread_per_client, {}, "more thread"),
    (C.check_echo_back, recv_without_waiting, {}, "await readable(sock) before recv()"),
    (C.check_echo_back, sendall_once_readable, {"hidden": True}, "(sendall() too, once the buffer is full)"),
    (C.check_echo_back, echoes_the_first_chunk_only, {}, "expected b'world!' echoed back after starting"),
    (C.check_echo_back, still_a_generator, {}, "it returned a generator, step 2's kind"),
    (C.check_echo_back, yields_inside_async_def, {}, "it returned an async generator"),
    (C.check_CountUntilEnd, AnswersInConnectionLost, {}, "in connection_lost() it is closed already"),
    (C.check_CountUntilEnd, CountsTheLastChunkOnly, {}, "count every byte"),
    (C.check_CountUntilEnd, KeepsItOpen, {}, "the connection stayed open"),
    (C.check_CountUntilEnd, AnswersEachChunk, {}, "expected 13 after 13 bytes in two pieces"),
]

RIGHT = [
    (C.check_serve_with_selectors, with_poll_selector_and_data),
    (C.check_serve_with_selectors, with_a_selector_subclass_and_sets),
    (C.check_echo_back, with_a_helper_coroutine),
    (C.check_echo_back, with_an_awaitable_of_its_own),
    (C.check_CountUntilEnd, ReturnsFalseAndLetsAsyncioClose),
    (C.check_CountUntilEnd, KeepsOpenThenClosesWhenFlushed),
]
