"""Step 3 of the tiny loop: coroutines. ``async def`` and ``await`` on a tiny awaitable, ``Ready``."""

import selectors

from epollbook.servers import framing


class Ready:
    """``await Ready(sock, event)`` suspends a coroutine until *sock* is ready for *event*."""

    def __init__(self, sock, event):
        self.sock, self.event = sock, event

    def __await__(self):
        yield self.sock, self.event  # up through every await, to the loop's send()


def readable(sock):
    return Ready(sock, selectors.EVENT_READ)


def writable(sock):
    return Ready(sock, selectors.EVENT_WRITE)


class Loop:
    """Run coroutines that await ``Ready``: each is resumed when its socket is ready."""

    def __init__(self):
        self.selector = selectors.DefaultSelector()

    def start(self, coroutine):
        """Run *coroutine* to its first wait."""
        self.resume(coroutine)

    def resume(self, coroutine):
        try:
            sock, event = coroutine.send(None)
        except StopIteration:  # it has returned
            return
        self.selector.register(sock, event, coroutine)

    def run(self):
        """Until nothing is waited for; then, or if one raises, close the selector."""
        try:
            while self.selector.get_map():
                for key, _ in self.selector.select():
                    self.selector.unregister(key.fileobj)
                    self.resume(key.data)
        finally:
            self.selector.close()


async def accept_forever(loop, listener, handle):
    while True:
        await readable(listener)
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            continue
        except OSError:  # the listener was shut down
            return
        sock.setblocking(False)
        loop.start(handle(sock))


async def handle(sock):
    """Read a request, answer, close: the generator of step 2, with await for yield."""
    with sock:
        received = bytearray()
        while (verdict := framing.judge(received)) is None:
            await readable(sock)
            try:
                chunk = sock.recv(4096)
            except ConnectionError:
                return
            if not chunk:
                return
            received += chunk
        answer = memoryview(verdict.answer)
        while answer:
            await writable(sock)
            try:
                answer = answer[sock.send(answer):]
            except ConnectionError:
                return


def serve(listener, handle=handle):
    """Serve *handle* (a coroutine function of one socket) on *listener* until it is shut down; return."""
    listener.setblocking(False)
    loop = Loop()
    loop.start(accept_forever(loop, listener, handle))
    loop.run()
