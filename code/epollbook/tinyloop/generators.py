"""Step 2 of the tiny loop: generators. A connection yields what it waits for; the loop resumes it then."""

import selectors

from epollbook.servers import framing


class Loop:
    """Run generators that yield ``(socket, event)``: each is resumed when its socket is ready."""

    def __init__(self):
        self.selector = selectors.DefaultSelector()

    def start(self, generator):
        """Run *generator* to its first wait."""
        self.resume(generator)

    def resume(self, generator):
        try:
            sock, event = next(generator)
        except StopIteration:  # it has finished
            return
        self.selector.register(sock, event, generator)

    def run(self):
        """Until nothing is waited for; then, or if one raises, close the selector."""
        try:
            while self.selector.get_map():
                for key, _ in self.selector.select():
                    self.selector.unregister(key.fileobj)
                    self.resume(key.data)
        finally:
            self.selector.close()


def accept_forever(loop, listener):
    while True:
        yield listener, selectors.EVENT_READ
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            continue
        except OSError:  # the listener was shut down
            return
        sock.setblocking(False)
        loop.start(handle(sock))


def handle(sock):
    """Read a request, answer, close: one generator, its state in local variables."""
    with sock:
        received = bytearray()
        while (verdict := framing.judge(received)) is None:
            yield sock, selectors.EVENT_READ
            try:
                chunk = sock.recv(4096)
            except ConnectionError:
                return
            if not chunk:
                return
            received += chunk
        answer = memoryview(verdict.answer)
        while answer:
            yield sock, selectors.EVENT_WRITE
            try:
                answer = answer[sock.send(answer):]
            except ConnectionError:
                return


def serve(listener):
    """Serve the article's answer on *listener* until it is shut down; finish what is in flight; return."""
    listener.setblocking(False)
    loop = Loop()
    loop.start(accept_forever(loop, listener))
    loop.run()
