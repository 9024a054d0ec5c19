"""Step 1 of the tiny loop: callbacks. The loop calls a function when its socket is ready."""

import selectors

from epollbook.servers import framing


class Loop:
    """Call each callback once, when its socket is ready; run until no callback waits."""

    def __init__(self):
        self.selector = selectors.DefaultSelector()

    def call_when(self, sock, event, callback):
        """Call ``callback()`` once, when *sock* is ready for *event* (``EVENT_READ`` or ``EVENT_WRITE``)."""
        self.selector.register(sock, event, callback)

    def run(self):
        """Until nothing is waited for; then, or if a callback raises, close the selector."""
        try:
            while self.selector.get_map():
                for key, _ in self.selector.select():
                    self.selector.unregister(key.fileobj)  # one-shot: the callback asks again if it must
                    key.data()
        finally:
            self.selector.close()


def accept(loop, listener):
    try:
        sock, _ = listener.accept()
    except BlockingIOError:  # another accept() took it
        pass
    except OSError:  # the listener was shut down: accept no more
        return
    else:
        sock.setblocking(False)
        handle(loop, sock)
    loop.call_when(listener, selectors.EVENT_READ, lambda: accept(loop, listener))


def handle(loop, sock):
    """Read a request, answer, close: three callbacks that share the connection's state through closures."""
    received = bytearray()

    def readable():
        try:
            chunk = sock.recv(4096)
        except ConnectionError:
            chunk = b""
        if not chunk:  # the client left before its request was complete
            sock.close()
            return
        received.extend(chunk)
        verdict = framing.judge(received)
        if verdict is None:
            loop.call_when(sock, selectors.EVENT_READ, readable)
        else:
            writable(memoryview(verdict.answer))

    def writable(rest):
        try:
            rest = rest[sock.send(rest):]
        except BlockingIOError:
            pass
        except ConnectionError:
            rest = b""
        if rest:
            loop.call_when(sock, selectors.EVENT_WRITE, lambda: writable(rest))
        else:
            sock.close()

    loop.call_when(sock, selectors.EVENT_READ, readable)


def serve(listener):
    """Serve the article's answer on *listener* until it is shut down; finish what is in flight; return."""
    listener.setblocking(False)
    loop = Loop()
    loop.call_when(listener, selectors.EVENT_READ, lambda: accept(loop, listener))
    loop.run()
