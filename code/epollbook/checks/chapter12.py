"""Chapter 12's checks: ``serve_with_selectors``, ``echo_back`` and ``CountUntilEnd``.

``serve_with_selectors`` is chapter 4's server ported to ``selectors``: it
runs in a thread on the check's listening socket, as chapter 4's did, and is
judged the same way (every rude client, no socket left behind, a return once
the listener is shut down, nothing left open), plus two things the port is
about: it serves clients at once with one thread, and a client that is slow
to finish its request holds up nobody.

``echo_back`` is a coroutine for the tiny loop's third step: the check runs the
book's loop (``epollbook.tinyloop.coroutines``) with the reader's
``echo_back`` for each connection, and judges what clients see. It must be a
coroutine function (``async def``): what calling it returns is checked before
the loop runs it, so a generator or an async generator is named as such.

``CountUntilEnd`` is an ``asyncio.Protocol`` class. The check serves it on a
fresh loop in a thread of its own (a notebook's kernel runs a loop already),
and each client sends bytes, half-closes (``shutdown(SHUT_WR)``), and reads
until the connection closes: the answer must be the number of bytes sent.
"""

import asyncio
import contextlib
import inspect
import socket
import threading

from epollbook import clients
from epollbook.checks.chapter4 import _ServerUnderCheck
from epollbook.checks.harness import (
    ANSWER_SECONDS,
    PIECE_SECONDS,
    SECONDS,
    CheckFailed,
    Running,
    _blocked,
    _threads,
    _wait_until,
    fail_if_not_written,
    open_listener,
    passed,
    short,
)
from epollbook.tinyloop import coroutines

# -- serve_with_selectors ---------------------------------------------------------------------------


class _SelectorsServer(_ServerUnderCheck):
    """Chapter 4's server under check, with the cases a port to selectors adds."""

    def one_thread(self):
        """The reader's code must serve in the thread it was called in: a selector, not a thread per client.

        Call it while clients are connected: a thread per client may end with its client.
        """
        started = _threads() - self.running._threads_before - {self.running.thread_id}
        if started:
            raise CheckFailed(f"expected {self.name} to serve every client from its own thread, with a selector; "
                              f"it started {len(started)} more thread{'s' if len(started) > 1 else ''}: register "
                              "each connection with the selector instead")
        passed(f"{self.name} served from one thread")

    def serves_beside_a_slow_client(self, count):
        """*count* clients hold half a request each; a polite client must still be answered."""
        for _ in range(count):
            self.connect().sendall(clients.FIRST_LINE)
        self.running.settle()
        self.still_serving(f"{count} client{'s' if count > 1 else ''} sent half a request and waited", report=False)
        passed(f"answered a polite client while {count} other{'s' if count > 1 else ''} had sent half a request")
        self.one_thread()  # while those clients are held: a thread per client is alive now
        for client in self.held:
            client.close()
        self.held.clear()


def check_serve_with_selectors(serve_with_selectors, *, hidden=False):
    """Check ``serve_with_selectors(listener)``: chapter 4's server on ``selectors.DefaultSelector``.

    It must answer a polite client, answer one while others hold half a
    request, close the connection of a client that hangs up early or resets,
    serve from its own thread, return once the listening socket is shut down
    and leave no socket and no selector open. *hidden* runs the cases graders
    keep hidden: a reset after a complete request, ten early hang-ups in a
    row, twenty half requests at once, and a client still connected when the
    server is stopped.
    """
    server = _SelectorsServer(serve_with_selectors)
    server.name = getattr(serve_with_selectors, "__name__", "your server")
    try:
        server.still_serving("starting")
        server.serves_beside_a_slow_client(20 if hidden else 1)
        server.leaks_nothing(hidden)  # judged exactly as chapter 4's serve_without_leaks
    finally:
        server.close()


# -- echo_back: a coroutine on the tiny loop -------------------------------------------------------


def _handle_server(handle, problems):
    """A server function of a listener: the book's coroutine loop, running the reader's *handle* per connection.

    What calling *handle* returns is checked first; if it is not a coroutine,
    *problems* gets the sentence, the connection is closed and the loop goes on.
    """
    async def nothing():
        pass

    accepted = []

    def checked(sock):
        accepted.append(sock)
        made = handle(sock)
        if inspect.iscoroutine(made):
            return made
        if inspect.isasyncgen(made):
            problems.append("it returned an async generator (an async def with yield in it): wait with "
                            "await readable(sock) or await writable(sock), never yield")
        elif inspect.isgenerator(made):
            problems.append("it returned a generator, step 2's kind: write it with async def, and await "
                            "readable(sock) where a generator of step 2 yields")
        else:
            problems.append(f"it returned {short(made)}, not a coroutine: write it with async def")
        with contextlib.suppress(AttributeError):
            made.close()
        sock.close()
        return nothing()

    def serve(listener):
        try:
            coroutines.serve(listener, checked)
        except BaseException:  # handle raised, which stops the loop: its clients see the close at once
            for sock in accepted:
                sock.close()
            raise

    serve.__name__ = getattr(handle, "__name__", "echo_back")
    return serve


class _LoopUnderCheck(_ServerUnderCheck):
    """The book's coroutine loop with the reader's ``echo_back``; failures name ``echo_back``, not the loop.

    A polite client here sends two pieces, reads each echoed back, half-closes
    and must then see the connection closed.
    """

    def __init__(self, handle):
        self.problems = []
        super().__init__(_handle_server(handle, self.problems))
        # Accepted sockets inherit a small send buffer, so a send() of much takes part of it, or raises.
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        self.name = getattr(handle, "__name__", "echo_back")
        self.handle = handle

    def fail_if_ended(self, after):
        self.fail_if_wrong_kind()
        running = self.running
        if running.finished.is_set() and running.error is not None:
            fail_if_not_written(self.handle, running.error)
            advice = ""
            if isinstance(running.error, BlockingIOError):
                advice = (": the loop's sockets do not block, so a recv() or send() the socket is not ready for "
                          "raises (sendall() too, once the buffer is full); await readable(sock) before recv(), "
                          "await writable(sock) before send(), and send the rest of what send() did not take")
            raise CheckFailed(f"expected the loop to go on serving after {after}; {self.name} raised "
                              f"{type(running.error).__name__}: {' '.join(str(running.error).split())}, which "
                              f"stopped the loop{advice}") from running.error
        super().fail_if_ended(after)

    def still_serving(self, after, report=True):
        try:
            self.echoes([b"Hello, ", b"world!"], after)
        except (CheckFailed, OSError) as error:
            self.running.settle()  # an echo_back that raised has stopped the loop: name that cause, not its symptom
            self.fail_if_ended(after)
            if isinstance(error, CheckFailed):
                raise
            raise CheckFailed(f"expected a client to be echoed after {after}; it got {type(error).__name__}: "
                              f"{error}") from None
        if report:
            passed(f"echoed a client's two pieces, then closed on its half-close, after {after}")

    def echoes(self, pieces, after, *, receive_buffer=None):
        """Send each piece and read it back, then half-close: the connection must close, nothing more sent."""
        client = socket.socket()
        if receive_buffer:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        client.settimeout(ANSWER_SECONDS)
        with client:
            client.connect(self.address)
            for piece in pieces:
                client.sendall(piece)
                echoed = _receive_exactly(client, len(piece))
                if echoed != piece:
                    self.running.settle()
                    self.fail_if_ended(after)
                    raise CheckFailed(f"expected {short(piece)} echoed back after {after}; "
                                      + (f"{short(echoed)} came within {ANSWER_SECONDS:g} s" if echoed else
                                         f"nothing came within {ANSWER_SECONDS:g} s"))
            client.shutdown(socket.SHUT_WR)
            try:
                more = clients.read_until_closed(client)
            except clients.NoEndOfAnswer:
                raise CheckFailed(f"expected {self.name} to close the connection once its client half-closed "
                                  f"(recv() returned b''), after {after}; it stayed open for {ANSWER_SECONDS:g} s: "
                                  "when recv() returns b'', return (with sock: closes it)") from None
            if more:
                raise CheckFailed(f"expected nothing more than the echo after {after}; {short(more)} came too")

    def echoes_while_the_client_is_slow_to_read(self, size):
        """*size* bytes sent at once by a client that reads only once echo_back has had to wait for room."""
        data = bytes(range(256)) * (size // 256)
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # full soon: echo_back's send() must wait
        client.settimeout(ANSWER_SECONDS)
        with client:
            client.connect(self.address)
            sender = clients.Background(client.sendall, data, name="client")
            self.running.settle()  # until echo_back's loop sleeps, its send() refused
            self.fail_if_ended(f"a client sent {size:,} bytes without reading yet")
            echoed = _receive_exactly(client, len(data))
            sender.finished.wait(SECONDS)
            if echoed != data:
                self.fail_if_ended(f"a client sent {size:,} bytes without reading yet")
                raise CheckFailed(f"expected all {size:,} bytes echoed back, in order, to a client slow to read; "
                                  f"{len(echoed):,} came within {ANSWER_SECONDS:g} s"
                                  + (" and they differ from what was sent" if echoed != data[:len(echoed)] else
                                     ": keep what send() did not take, and send it when the socket is writable"))
        passed(f"echoed {size:,} bytes to a client that read only once echo_back had to wait for room")

    def returns_once_shut_down(self):
        self.name, handle = "the loop", self.name  # it is the book's loop that returns, once echo_back is done
        try:
            super().returns_once_shut_down()
        finally:
            self.name = handle

    def fail_if_wrong_kind(self):
        if self.problems:
            raise CheckFailed(f"expected {self.name}(sock) to return a coroutine for the loop to run; "
                              f"{self.problems[0]}")


def _receive_exactly(sock, size):
    """Up to *size* bytes from *sock*: fewer if it closes or nothing comes for ``ANSWER_SECONDS``."""
    received = bytearray()
    with contextlib.suppress(OSError):  # a timeout, a reset: judged by what came
        while len(received) < size:
            chunk = sock.recv(min(size - len(received), 1 << 20))
            if not chunk:
                break
            received += chunk
    return bytes(received)


def check_echo_back(echo_back, *, hidden=False):
    """Check ``echo_back(sock)``: a coroutine for the tiny loop's third step that echoes until the client is done.

    The book's loop (``tinyloop.coroutines.serve``) accepts and calls
    ``echo_back(sock)`` for each connection, with *sock* non-blocking. Every
    byte received must be sent back, in order, and the connection closed once
    the client half-closes (``recv()`` returns ``b''``), hangs up or resets;
    a client must be served while another sits idle, and the loop must return
    once the listener is shut down. *hidden* runs the cases graders keep
    hidden: 1 MiB sent at once by a client slow to read (``send()`` takes part
    of it, or nothing), twenty idle clients, and a reset in the middle.
    """
    if not callable(echo_back):
        Running(echo_back)  # raises the harness's own message: pass the function itself
    server = _LoopUnderCheck(echo_back)
    try:
        server.still_serving("starting")
        idle = 20 if hidden else 1
        for _ in range(idle):
            server.connect()
        server.running.settle()
        server.still_serving(f"{idle} other client{'s' if idle > 1 else ''} connected and sent nothing")
        for client in server.held:
            client.close()
        server.held.clear()
        if hidden:
            server.echoes_while_the_client_is_slow_to_read(1 << 20)
            server.fd_left_by(lambda address: clients.reset_client(address, b"x" * 1000),
                              "a client reset the connection after sending 1,000 bytes")
        server.fd_left_by(clients.early_close_client, "its client sent a line and closed")
        server.fd_left_by(clients.reset_client, "its client reset it")
        server.returns_once_shut_down()
        server.fail_if_wrong_kind()
    finally:
        server.close()


# -- CountUntilEnd: an asyncio Protocol and a half-close ----------------------------------------------


class _ProtocolServer:
    """The reader's Protocol class served on a fresh asyncio loop in a thread; stopped and closed by ``close()``."""

    def __init__(self, protocol_class):
        self.name = getattr(protocol_class, "__name__", "your protocol")
        if not callable(protocol_class):
            raise CheckFailed(f"expected your Protocol class itself, to serve it; the check was given "
                              f"{type(protocol_class).__name__}: {short(protocol_class)} (pass the function itself: "
                              "the class, not an instance of it)")
        self.protocol_class = protocol_class
        self.listener = open_listener()
        self.address = self.listener.getsockname()
        self.errors = []
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(lambda loop, context: self.errors.append(context))
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(self._checked,), name=f"exercise {self.name}",
                                       daemon=True)
        self.thread.start()
        if not self.ready.wait(SECONDS):
            self.close()
            raise CheckFailed(f"expected the loop to serve {self.name}; it did not start within {SECONDS:g} s")

    def _checked(self):
        """A protocol from the reader's class (asyncio calls a factory per connection); a wrong kind is noted."""
        protocol = self.protocol_class()
        if not isinstance(protocol, asyncio.BaseProtocol):
            self.errors.insert(0, {"message": f"{self.name}() made {short(protocol)}, not an asyncio.Protocol: "
                                              "subclass asyncio.Protocol"})
        return protocol

    def _run(self, factory):
        async def serve():
            self.server = await self.loop.create_server(factory, sock=self.listener)
            self.ready.set()
            await self.server.serve_forever()

        with contextlib.suppress(asyncio.CancelledError, RuntimeError):
            self.loop.run_until_complete(serve())

    def ask(self, data, description):
        """Send *data* in two pieces, half-close, read until closed; return what came. Fail if it never ends.

        The second piece goes once the loop's thread has taken the first and
        sleeps again, so the protocol sees two ``data_received()`` calls.
        """
        with socket.create_connection(self.address, timeout=ANSWER_SECONDS) as client:
            middle = len(data) // 2
            with contextlib.suppress(OSError):  # the protocol may have closed already: judged by the answer
                for piece in (data[:middle], data[middle:]):
                    if piece:
                        client.sendall(piece)
                        _wait_until(lambda: _blocked(self.thread.native_id), PIECE_SECONDS)
                    if clients.wait_readable(client, 0):  # answered (or closed) already: sending more would reset
                        break
                else:
                    client.shutdown(socket.SHUT_WR)
            try:
                return clients.read_until_closed(client)
            except clients.NoEndOfAnswer as error:
                self.fail_if_erred(description)
                got = f"it got {short(error.received)}" if error.received else "it got nothing"
                raise CheckFailed(f"expected the count, then the connection closed, after {description}; {got} "
                                  f"and the connection stayed open for {ANSWER_SECONDS:g} s: after writing the "
                                  "count, close the transport (or return a false value from eof_received)"
                                  ) from None

    def fail_if_erred(self, after):
        if self.errors:
            context = self.errors[0]
            error = context.get("exception")
            fail_if_not_written(self.protocol_class, error)
            said = f"{type(error).__name__}: {error}" if error else context.get("message", "an error")
            raise CheckFailed(f"expected {self.name} to serve without an error after {after}; the loop reported "
                              f"{' '.join(str(said).split())}")

    def counts(self, data, description):
        reply = self.ask(data, description)
        self.fail_if_erred(description)
        expected = str(len(data)).encode()
        if reply.strip() != expected:
            hint = ""
            if reply == b"":
                hint = (": the count goes out in eof_received(), while the transport can still write "
                        "(in connection_lost() it is closed already)")
            elif reply.strip().isdigit():
                hint = ": count every byte of every data_received() call, and answer in eof_received(), once all "\
                       "has come"
            raise CheckFailed(f"expected {expected.decode()} after {description}, then the connection closed; "
                              f"it got {short(reply)}{hint}")
        passed(f"answered {expected.decode()} after {description}")

    def close(self):
        """Stop the server and the loop, close every connection it accepted and the listener."""
        server = getattr(self, "server", None)
        if server is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                self.loop.call_soon_threadsafe(server.close)  # ends serve_forever()
        self.thread.join(SECONDS)
        for connection in self.listener.accepted:  # those the reader's protocol left open, too
            clients.wake_and_close(connection)
        if not self.thread.is_alive():
            self.loop.close()
        self.listener.close()


def check_CountUntilEnd(CountUntilEnd, *, hidden=False):
    """Check ``CountUntilEnd``: an ``asyncio.Protocol`` that answers the bytes received once the client half-closes.

    Each client sends some bytes, then ``shutdown(SHUT_WR)``, and reads until
    the connection closes: it must read the count in decimal (a newline after
    it allowed), then see the close. *hidden* runs the cases graders keep
    hidden: nothing sent, 1 MiB sent, and a client that resets, after which
    the next client is answered.
    """
    server = _ProtocolServer(CountUntilEnd)
    try:
        server.counts(b"Hello, world!", "13 bytes in two pieces and a half-close")
        server.counts(clients.REQUEST * 3, f"{len(clients.REQUEST) * 3} bytes in two pieces and a half-close")
        if hidden:
            server.counts(b"", "no byte at all and a half-close")
            server.counts(bytes(1 << 20), "1 MiB and a half-close")
            clients.reset_client(server.address, b"x" * 100)
            server.counts(b"after a reset", "a client reset its connection, then 13 bytes and a half-close")
    finally:
        server.close()
