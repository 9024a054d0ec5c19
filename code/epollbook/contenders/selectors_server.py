"""selectors.DefaultSelector (epoll on Linux, level-triggered): the portable loop of CPython's own docs.

    python -m epollbook serve selectors
"""

import selectors
import socket
import sys

from epollbook.contenders.common import Stopped, listen, stop_on_signals
from epollbook.examples.command_line import announce
from epollbook.servers import framing


class Connection:
    """One client's socket, the bytes of its request so far, and what is left of its answer."""

    __slots__ = ("outgoing", "received", "sock")

    def __init__(self, sock):
        self.sock = sock
        self.received = bytearray()
        self.outgoing = b""


def serve(listener, selector):
    """Accept, read, answer and close on *selector* until a signal raises ``Stopped``."""
    listener.setblocking(False)
    selector.register(listener, selectors.EVENT_READ)
    while True:
        for key, events in selector.select():
            if key.fileobj is listener:
                accept(listener, selector)
            elif events & selectors.EVENT_READ:
                read(key.data, selector)
            else:
                write(key.data, selector)


def accept(listener, selector):
    try:
        sock, _ = listener.accept()
    except (BlockingIOError, ConnectionAbortedError):  # taken already, or its client gave up
        return
    sock.setblocking(False)
    selector.register(sock, selectors.EVENT_READ, Connection(sock))


def read(connection, selector):
    try:
        chunk = connection.sock.recv(4096)
    except BlockingIOError:
        return
    except OSError:  # ECONNRESET: the client has gone
        chunk = b""
    if not chunk:
        close(connection, selector)
        return
    connection.received += chunk
    verdict = framing.judge(connection.received)
    if verdict is not None:
        connection.outgoing = memoryview(verdict.answer)
        write(connection, selector)  # most answers fit the socket's buffer at once: no wait for EVENT_WRITE


def write(connection, selector):
    try:
        sent = connection.sock.send(connection.outgoing)
    except BlockingIOError:
        sent = 0
    except OSError:  # EPIPE, ECONNRESET: the client has gone
        close(connection, selector)
        return
    connection.outgoing = connection.outgoing[sent:]
    if not connection.outgoing:
        close(connection, selector)
    elif selector.get_key(connection.sock).events != selectors.EVENT_WRITE:  # the rest when the buffer has room
        selector.modify(connection.sock, selectors.EVENT_WRITE, connection)


def close(connection, selector):
    selector.unregister(connection.sock)
    connection.sock.close()


def main():
    """Serve until SIGINT or SIGTERM; close every connection; return 0."""
    listener = listen(__doc__.split("\n", 1)[0])
    stop_on_signals()
    with listener, selectors.DefaultSelector() as selector:
        announce(listener)
        try:
            serve(listener, selector)
        except Stopped as stopped:
            stopped_by = stopped.args[0]
        for key in list(selector.get_map().values()):
            if isinstance(key.fileobj, socket.socket) and key.fileobj is not listener:
                key.fileobj.close()
    print(f"Stopped by {stopped_by}.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
