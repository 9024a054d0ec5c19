"""Chapter 3's checks: ``receive_request_by``, ``serve_with_threads`` and ``serve_at_most``.

The first judges a deadline against a slow-loris: a client that keeps a
connection busy by sending one byte now and then, so that no per-``recv()``
timeout ever expires. The other two run the reader's thread-per-connection
server on a listening socket of the check's own and judge it by the order of
what clients see: a polite client answered while a slow one is still sending,
an extra client refused while the server's threads are all taken. No verdict
depends on how fast anything is; the one time a verdict reads (TimeoutError
raised *before* the deadline) is a lower bound, which a loaded machine only
makes easier to meet.
"""

import contextlib
import socket
import threading

from epollbook import clients
from epollbook.checks.harness import (
    ANSWER_SECONDS,
    ENDINGS,
    PIECE_SECONDS,
    SECONDS,
    CheckFailed,
    Running,
    ServerUnderCheck,
    finish,
    passed,
    short,
)

# -- receive_request_by ------------------------------------------------------------

FAR_OFF = 10.0
"""A deadline no case that ends by itself comes near."""


@contextlib.contextmanager
def slow_loris(client, interval):
    """From a thread, send a request line on *client*, then one header byte every *interval* seconds, never its end.

    Sends until the block ends or the connection fails: each byte arrives
    long before any per-``recv()`` timeout longer than *interval* expires.
    """
    stop = threading.Event()

    def trickle():
        with contextlib.suppress(OSError):  # the reader's code has given up on the connection
            client.sendall(clients.FIRST_LINE + b"X-Loris: ")
            while not stop.wait(interval):
                client.sendall(b"z")

    sender = clients.Background(trickle, name="slow loris")
    try:
        yield sender
    finally:
        stop.set()
        sender.finished.wait(1.0)


def _receive_by(receive_request_by, seconds, pieces=(), *, limit=None, end=None, loris=None, stuck=""):
    """Run ``receive_request_by(conn, seconds[, limit])`` on a real connection; return the finished ``Running``.

    The client sends *pieces* one by one (each once the reader's code has
    taken the one before) and ends as *end* says, or, with *loris*, trickles a
    byte every *loris* seconds. *stuck* says what code still running after the
    time limit has most likely got wrong.
    """
    with clients.connected_pair() as (client, server_side):
        arguments = (server_side, seconds) if limit is None else (server_side, seconds, limit)
        running = Running(receive_request_by, *arguments)
        sent = b"".join(pieces)
        what = (f"sent {short(sent)} ({len(sent):,} bytes) {ENDINGS[end]}" if loris is None else
                f"kept sending one byte every {loris:g} s")
        with slow_loris(client, loris) if loris is not None else contextlib.nullcontext():
            if loris is None:
                running.feed(client, server_side, pieces, end=end)
            limit_seconds = (seconds if seconds < FAR_OFF else 0) + SECONDS + PIECE_SECONDS * len(pieces)
            return finish(running, f"receive_request_by was still running {limit_seconds:g} s after it started "
                          f"(deadline: {seconds:g} s), while the client {what}" + (f": {stuck}" if stuck else ""),
                          seconds=limit_seconds, unblock=[server_side])


def _expect_request(receive_request_by, description, pieces, seconds=FAR_OFF, **options):
    expected = b"".join(pieces)
    running = _receive_by(receive_request_by, seconds, pieces, **options)
    if running.error is not None or running.value != expected:
        raise CheckFailed(f"expected receive_request_by to return all {len(expected)} bytes of {description}; "
                          f"{running.describe()}") from running.error
    passed(f"receive_request_by returned {description}")


def _expect_timeout(receive_request_by, description, seconds, **options):
    running = _receive_by(receive_request_by, seconds, **options)
    if not isinstance(running.error, TimeoutError):
        raise CheckFailed(f"expected TimeoutError once {seconds:g} s had passed, from {description}; "
                          f"{running.describe()}") from running.error
    # A lower bound only: a busy machine makes a right answer later, never earlier.
    if running.seconds < seconds * 0.9:
        raise CheckFailed(f"expected TimeoutError only once the deadline of {seconds:g} s had passed, from "
                          f"{description}; it raised it after {running.seconds:.2f} s")
    passed(f"receive_request_by raised TimeoutError after {seconds:g} s from {description}")


def _expect_error(receive_request_by, error_type, why, pieces, **options):
    running = _receive_by(receive_request_by, FAR_OFF, pieces, **options)
    if not isinstance(running.error, error_type):
        raise CheckFailed(f"expected {error_type.__name__} {why}; {running.describe()}") from running.error
    passed(f"receive_request_by raised {type(running.error).__name__} {why}")


def check_receive_request_by(receive_request_by, *, hidden=False):
    """Check ``receive_request_by(conn, seconds, limit=65536) -> bytes`` on live connections.

    Like chapter 2's ``receive_request`` (all the bytes once they hold the blank
    line; ``ConnectionError`` if the client closes or resets before it;
    ``ValueError`` past *limit* bytes without it), with one deadline for the
    whole request: ``TimeoutError`` once *seconds* have passed since the call
    began, whether the client is silent or keeps sending a byte at a time,
    and not before. *hidden* runs the cases graders keep hidden instead.
    """
    request = clients.REQUEST
    if hidden:
        _expect_request(receive_request_by, "a request whose blank line is split between two pieces",
                        [request[:-1], request[-1:]],
                        stuck="look for the blank line in all the bytes received so far")
        _expect_request(receive_request_by, "a request ending its lines with a bare LF",
                        [b"GET / HTTP/1.0\n", b"Host: localhost\n\n"])
        _expect_timeout(receive_request_by, "a client that sent a byte every 0.05 s", 1.0, loris=0.05,
                        stuck="a timeout per recv() starts again with every byte: keep one deadline for the whole "
                        "request")
        _expect_error(receive_request_by, ConnectionError, "when the client reset the connection mid-request",
                      [clients.FIRST_LINE], end="reset", stuck="after a reset, recv() raises; let that end it")
        return

    _expect_request(receive_request_by, "a request sent 5 bytes at a time",
                    [request[i:i + 5] for i in range(0, len(request), 5)])
    _expect_timeout(receive_request_by, "a slow-loris client that sent a byte every 0.1 s", 0.5, loris=0.1,
                    stuck="a timeout per recv() starts again with every byte, so a client that keeps sending never "
                    "lets it expire: keep one deadline for the whole request and check it between recv() calls")
    _expect_timeout(receive_request_by, "a client that sent one line and then nothing", 0.3,
                    pieces=[clients.FIRST_LINE],
                    stuck="it waits in recv() for a client that sends nothing, so checking the clock between "
                    "recv() calls is not enough: give each recv() a timeout of what is left of the deadline")
    _expect_error(receive_request_by, ConnectionError, "when the client closed before the blank line",
                  [clients.FIRST_LINE], end="close",
                  stuck="it loops forever because recv() returns b'' once the client has closed")
    limit = 1000
    flood = [b"GET / HTTP/1.0\r\n"] + [b"X-Flood: " + b"y" * 990 + b"\r\n"] * 4  # 4 KB, no blank line
    _expect_error(receive_request_by, ValueError, f"past limit={limit} bytes without a blank line", flood,
                  limit=limit, stuck=f"stop reading once more than limit={limit} bytes have arrived")


# -- thread-per-connection servers ----------------------------------------------------


class _ThreadedServerUnderCheck(ServerUnderCheck):
    """The reader's thread-per-connection server on the check's listening socket, and the clients its checks send."""

    def connect(self, sent):
        """A client that connects and sends *sent*, then waits; the server's threads settle on it."""
        client = socket.create_connection(self.address, timeout=ANSWER_SECONDS)
        self.clients.append(client)
        client.sendall(sent)
        self.running.settle()  # the server has taken the connection and done all it will with what came
        return client

    def answer(self, client, after, *, hint=""):
        """Read what the server sends *client* until it closes; return it, or raise ``CheckFailed``.

        *hint* ends the message if nothing came: what a server that answers nothing has most likely got wrong.
        """
        client.settimeout(ANSWER_SECONDS)
        try:
            return clients.read_until_closed(client)
        except clients.NoEndOfAnswer as error:
            self.fail_if_ended(after)
            if not error.received:
                raise CheckFailed(f"expected an answer to a client {after}; it waited {ANSWER_SECONDS:g} s and got "
                                  "nothing" + (f": {hint}" if hint else "")) from None
            raise CheckFailed(f"expected the server to close the connection after its answer (that is how an HTTP/1.0 "
                              f"answer ends) to a client {after}; it sent {short(error.received)} and kept the "
                              "connection open") from None

    def polite(self, after, *, hint=""):
        """A polite client's request; return the status line of the answer."""
        self.fail_if_ended(after)
        with socket.create_connection(self.address, timeout=ANSWER_SECONDS) as client:
            client.sendall(clients.REQUEST)
            return status_of(self.answer(client, after, hint=hint))

    def expect_status(self, status, code, after, why=""):
        if f" {code} " not in status + " ":
            raise CheckFailed(f"expected {code} to a client {after}; it got {short(status)}" + (f": {why}" if why
                                                                                                else ""))

    def returns_once_shut_down(self):
        """Close every client, shut the listener down: the reader's function must return, every connection closed."""
        super().returns_once_shut_down()
        self.closed_every_connection("close each one in its thread however its client ends (a `with connection:` "
                                     "block does)")


def status_of(reply):
    """The status line of an HTTP answer, as text ('' for no answer)."""
    return reply.split(b"\r\n", 1)[0].decode("latin-1")


# -- serve_with_threads ----------------------------------------------------------------


def check_serve_with_threads(serve_with_threads, *, hidden=False):
    """Check ``serve_with_threads(serversocket)``: a thread per connection, so a slow client stalls no one else.

    The check gives it a listening socket on 127.0.0.1. A polite client must
    be answered 200; then, while slow clients sit in the middle of their
    requests, a polite client must be answered 200 with their connections still
    open, and each slow client answered once it finishes. Clients that close
    early or reset must not stop it. Once every client is gone and the
    listening socket is shut down, it must return, every connection closed.
    *hidden* runs harder cases instead: twenty slow clients at once, ten
    polite ones at once, and a request's blank line sent in two pieces.
    """
    server = _ThreadedServerUnderCheck("serve_with_threads", serve_with_threads)
    try:
        server.expect_status(server.polite("first of all"), 200, "first of all")
        passed("answered a polite client")
        slow_count = 20 if hidden else 1
        slow = [server.connect(clients.FIRST_LINE) for _ in range(slow_count)]
        who = "a slow client" if slow_count == 1 else f"{slow_count} slow clients"
        while_slow = f"while {who} had sent only the first line of a request"
        status = server.polite(while_slow, hint="serve each connection in a thread of its own, so that a "
                               "slow client holds up only its own thread")
        server.expect_status(status, 200, while_slow)
        seen = [early for client in slow if (early := clients.peek(client)) is not None]
        if any(seen):
            raise CheckFailed(f"expected no answer to a slow client before the blank line that ends its request; "
                              f"after only its first line it got {short(next(filter(None, seen)))}: read until the "
                              "blank line")
        if seen:
            raise CheckFailed(f"expected the slow clients' connections to stay open while a polite client was served; "
                              f"{len(seen)} of {slow_count} had been closed: a server that drops a slow client to "
                              "serve the next one still serves one at a time")
        passed(f"answered a polite client {while_slow}")
        for client in slow:
            client.sendall(b"Host: localhost\r\n\r\n")
        for client in slow:
            server.expect_status(status_of(server.answer(client, "that finished its request slowly")), 200,
                                 "that finished its request slowly")
        passed(f"answered {who} once {'it' if slow_count == 1 else 'they'} finished")
        if hidden:
            pending = [clients.start_request(server.address, timeout=ANSWER_SECONDS) for _ in range(10)]
            for request in pending:
                try:
                    reply = request.wait(ANSWER_SECONDS + 1.0)
                except OSError as error:
                    raise CheckFailed(f"expected ten polite clients at once all to be answered; one got "
                                      f"{type(error).__name__}: {error}") from None
                server.expect_status(status_of(reply), 200, "one of ten at once")
            passed("answered ten polite clients at once")
            split = server.connect(clients.REQUEST[:-1])
            if clients.peek(split) is not None:
                raise CheckFailed("expected no answer before the blank line that ends the request; the server "
                                  "answered or closed while its last byte was still missing: read until the blank line")
            split.sendall(clients.REQUEST[-1:])
            server.expect_status(status_of(server.answer(split, "whose blank line came in two pieces")), 200,
                                 "whose blank line came in two pieces")
            passed("answered a request whose blank line came in two pieces, and not before")
        else:
            for rude_client in (clients.early_close_client, clients.reset_client):
                with contextlib.suppress(OSError):  # what the rude client itself sees does not matter
                    rude_client(server.address)
            server.running.settle()
            server.expect_status(server.polite("after a client closed early and one reset"), 200,
                                 "after a client closed early and one reset")
            passed("answered a polite client after a client closed early and one reset")
        server.returns_once_shut_down()
    finally:
        server.close()


# -- serve_at_most ---------------------------------------------------------------------


def check_serve_at_most(serve_at_most, *, hidden=False):
    """Check ``serve_at_most(serversocket, most)``: a thread per connection, never more than *most* at once.

    With *most* = 2 (1 when *hidden*), the check fills every thread with a slow
    client; then a client that connects must be answered ``503`` at once (its
    request sent, or, hidden, not even sent) and its connection closed, while
    the slow ones wait. A slow client that finishes is answered 200, and its
    thread's place goes to the next client; a client that resets gives its
    place back too. Once every client is gone and the listening socket is shut
    down, it must return, every connection closed.
    """
    most = 1 if hidden else 2
    server = _ThreadedServerUnderCheck("serve_at_most", serve_at_most, most)
    try:
        server.expect_status(server.polite("first of all"), 200, "first of all")
        passed("answered a polite client")

        def fill(when):
            """*most* slow clients, one per thread; each must be taken, not refused."""
            server.running.settle()  # a client sees its answer's end a moment before its thread ends
            slow = [server.connect(clients.FIRST_LINE) for _ in range(most)]
            refused = [early for client in slow if (early := clients.peek(client)) is not None]
            if refused:
                said = f"answered {short(status_of(refused[0]))}" if refused[0] else "closed"
                who = "a slow client" if most == 1 else f"{most} slow clients at once"
                raise CheckFailed(f"expected {who} to be taken, a thread each, {when}; one was {said}: a thread "
                                  "that ends must give its place back, however it ends")
            return slow

        def refuses(sent, description):
            full = f"{description}, while all {most} of its threads served slow clients"
            client = server.connect(sent)
            reply = server.answer(client, full, hint="answer 503 at once from the accepting loop, without reading "
                                  "the request, instead of making the client wait for a thread")
            server.expect_status(status_of(reply), 503, full,
                                 f"no more than most={most} clients may be served at once; answer the others "
                                 "'503 Service Unavailable' and close")
            passed(f"answered 503 to a client {full}")

        slow = fill("at first")
        refuses(clients.REQUEST, "that sent its request")
        if hidden:
            refuses(b"", "that sent nothing yet")
        first = slow.pop(0)
        first.sendall(b"Host: localhost\r\n\r\n")
        server.expect_status(status_of(server.answer(first, "that finished its request slowly")), 200,
                             "that finished its request slowly")
        server.running.settle()  # that client's thread has ended
        freed = "once a slow client had been answered and its thread had ended"
        server.expect_status(server.polite(freed), 200, freed,
                             "a thread that ends must give its place back, however it ends")
        passed(f"answered a polite client {freed}")
        for client in slow:
            clients.reset(client)
        server.running.settle()
        reset = "once every slow client had reset its connection"
        server.expect_status(server.polite(reset), 200, reset,
                             "a thread that ends must give its place back, however it ends")
        passed(f"answered a polite client {reset}")
        slow = fill("after one had been answered and the others had reset their connections")
        refuses(clients.REQUEST, "that sent its request after every place was given back and taken again")
        server.returns_once_shut_down()
    finally:
        server.close()
