"""Chapter 2's checks: ``receive_request`` and ``serve_forever``."""

import contextlib
import itertools
import socket

from epollbook import clients
from epollbook.checks.harness import (
    ANSWER_SECONDS,
    ENDINGS,
    PIECE_SECONDS,
    SECONDS,
    CheckFailed,
    Running,
    ServerUnderCheck,
    ThreadWatcher,
    finish,
    no_file_descriptors_left,
    passed,
    short,
)

# -- receive_request -------------------------------------------------------------


def _receive(receive_request, pieces, *, limit=None, end=None, stuck=""):
    """Send *pieces* over a real connection while the reader's ``receive_request`` reads the other end.

    Each piece goes out once the reader's code has read the one before and
    waits for more, so that the pieces arrive one by one however busy the
    machine is. The client keeps the connection open, unless *end* is 'close'
    or 'reset'. Returns the finished ``Running``. *stuck* says what code that
    is still running after the time limit has most likely got wrong.
    """
    with clients.connected_pair() as (client, server_side):
        running = Running(receive_request, *((server_side,) if limit is None else (server_side, limit)))
        running.feed(client, server_side, pieces, end=end)
        sent = b"".join(pieces)
        return finish(running, f"receive_request was still running {SECONDS:g} s after the client sent "
                      f"{short(sent)} ({len(sent):,} bytes) {ENDINGS[end]}" + (f": {stuck}" if stuck else ""),
                      seconds=SECONDS + PIECE_SECONDS * len(pieces), unblock=[server_side])


def check_receive_request(receive_request, *, hidden=False):
    """Check ``receive_request(conn, limit=65536) -> bytes`` on live connections.

    It must return all the bytes of a request once they hold the blank line that
    ends it (``b"\\r\\n\\r\\n"``, or ``b"\\n\\n"`` from clients that end lines
    with a bare LF), however the request is cut into pieces; raise
    ``ConnectionError`` if the client closes before that blank line; and raise
    ``ValueError`` once more than *limit* bytes arrive without one.
    *hidden* runs the cases graders keep hidden instead.
    """
    request = clients.REQUEST
    if hidden:
        long_request = (b"GET / HTTP/1.0\r\n" + b"".join(b"X-Padding-%05d: %s\r\n" % (n, b"x" * 60) for n in range(300))
                        + b"\r\n")
        polite = [
            ("a request whose blank line is split between two pieces", [request[:-1], request[-1:]],
             {"stuck": "look for the blank line in all the bytes received so far, not in the last piece alone"}),
            ("a request ending its lines with a bare LF", [b"GET / HTTP/1.0\n", b"Host: localhost\n\n"], {}),
            (f"a request of {len(long_request):,} bytes in pieces of 1,000",
             [long_request[i:i + 1000] for i in range(0, len(long_request), 1000)], {}),
        ]
        rude = [("a client that resets the connection before the blank line",
                 {"end": "reset", "stuck": "after a reset, recv() raises; let that end it"})]
    else:
        polite = [("a request sent 5 bytes at a time", [request[i:i + 5] for i in range(0, len(request), 5)], {})]
        rude = [("a client that closes before the blank line",
                 {"end": "close", "stuck": "it loops forever because recv() returns b'' once the client has closed"})]

    for description, pieces, options in polite:
        expected = b"".join(pieces)
        running = _receive(receive_request, pieces, **options)
        if running.error is not None or running.value != expected:
            raise CheckFailed(f"expected receive_request to return all {len(expected)} bytes of {description}; "
                              f"{running.describe()}") from running.error
        passed(f"receive_request returned {description}")

    for description, options in rude:
        running = _receive(receive_request, [clients.FIRST_LINE], **options)
        if not isinstance(running.error, ConnectionError):
            raise CheckFailed(f"expected ConnectionError from {description}; {running.describe()}") from running.error
        passed(f"receive_request raised {type(running.error).__name__} for {description}")

    if not hidden:
        limit = 1000
        flood = [b"GET / HTTP/1.0\r\n"] + [b"X-Flood: " + b"y" * 90 + b"\r\n"] * 40  # 4 KB, no blank line
        running = _receive(receive_request, flood, limit=limit,
                           stuck=f"stop reading once more than limit={limit} bytes have arrived without a blank line")
        if not isinstance(running.error, ValueError):
            raise CheckFailed(f"expected ValueError once more than limit={limit} bytes arrived without a blank line; "
                              f"{running.describe()}") from running.error
        passed(f"receive_request raised ValueError past limit={limit} bytes")


# -- serve_forever ---------------------------------------------------------------

REQUEST_LIMIT = 65536
"""The exercise's limit on a request without its empty line."""

CUT_OFF_BY = 1 << 20
"""A client streaming a request without end must be cut off before it has sent this much.

The check's listening socket has a small receive buffer (accepted sockets
inherit it) and the client a small send buffer, so a server that stops at
64 KiB cuts the client off within a few hundred KiB.
"""


class _ServerUnderCheck(ServerUnderCheck):
    """The reader's ``serve_forever`` on the check's listening socket, with the clients its check sends."""

    def __init__(self, serve_forever):
        super().__init__("serve_forever", serve_forever)

    def still_serving(self, after, report=True):
        """A polite client must get a 200 answer, and the connection closed after it."""
        self.fail_if_ended(after)
        try:
            reply = clients.exchange(self.address, clients.REQUEST, timeout=ANSWER_SECONDS)
        except clients.NoEndOfAnswer as error:
            if not error.received:
                raise CheckFailed(f"expected an answer after {after}; a polite client waited {ANSWER_SECONDS:g} s and "
                                  "got nothing (is the server stuck on that client?)") from None
            raise CheckFailed(f"expected the server to close the connection after its answer (that is how an HTTP/1.0 "
                              f"answer ends) after {after}; it sent {short(error.received)} and kept the connection "
                              "open") from None
        except OSError as error:
            self.fail_if_ended(after)
            raise CheckFailed(f"expected an answer after {after}; a polite client got none (is it stuck on that "
                              f"client?): {type(error).__name__}: {error}") from None
        self.judge_answer(reply, after)
        if report:
            passed(f"answered a polite client after {after}")

    @staticmethod
    def judge_answer(reply, after):
        if not reply.startswith(b"HTTP/1.") or b" 200 " not in reply.split(b"\r\n", 1)[0] + b" ":
            raise CheckFailed(f"expected a 200 response after {after}; a polite client got {short(reply)}")

    def survives(self, rude_client, *args, after, **options):
        """Let *rude_client* do its worst, then see a polite client answered."""
        with contextlib.suppress(OSError):  # what the rude client itself sees does not matter
            rude_client(self.address, *args, **options)
        self.still_serving(after)

    def answers_only_once_complete(self, pieces, description):
        """Send *pieces* of one request; the server must say nothing before the last one, then answer it."""
        with clients.stalled_client(self.address, pieces[0]) as client:
            for sent, piece in itertools.pairwise(pieces):
                self.running.settle()  # the server has done all it will do with what it has
                early = clients.peek(client)
                if early is not None:
                    what = f"answered {short(early)}" if early else "closed the connection"
                    raise CheckFailed(f"expected no answer before the empty line that ends the request; after only "
                                      f"{short(sent)} the server {what}: one recv() is not one request, read until "
                                      "the empty line")
                try:
                    client.sendall(piece)
                except OSError as error:
                    raise CheckFailed(f"expected the server to read {description} to its end; after "
                                      f"{short(sent)} the connection failed: {error}") from None
            client.settimeout(ANSWER_SECONDS)
            try:
                reply = clients.read_until_closed(client)
            except clients.NoEndOfAnswer as error:
                raise CheckFailed(f"expected an answer to {description} once its empty line came; "
                                  f"{'none came' if not error.received else 'the connection stayed open'} "
                                  f"within {ANSWER_SECONDS:g} s") from None
        self.judge_answer(reply, description)
        passed(f"answered {description}, and not before its empty line")

    def cuts_off_a_request_without_end(self):
        stream = clients.streaming_client(self.address, most=CUT_OFF_BY, stall=SECONDS)
        status = stream.answer.split(b"\r\n", 1)[0]
        if b" 200 " in status + b" ":
            raise CheckFailed(f"expected no 200 answer to a request that never ended; after {stream.sent:,} bytes the "
                              f"server answered {short(stream.answer)}")
        if stream.ended == "sent all":
            raise CheckFailed(f"expected the server to drop a client that sent more than {REQUEST_LIMIT // 1024} KiB "
                              f"without ending its request; it read {stream.sent:,} bytes and was still reading: "
                              "count what you receive and stop at the limit")
        if stream.ended == "stalled":
            raise CheckFailed(f"expected the server to close the connection of a client that sent more than "
                              f"{REQUEST_LIMIT // 1024} KiB without ending its request; it stopped reading after about "
                              f"{stream.sent:,} bytes but kept the connection open")
        self.still_serving(f"a client that streamed {stream.sent:,} bytes without ending its request (cut off)")

    def survives_running_out_of_file_descriptors(self):
        """While no file descriptor is left, a client connects: accept() fails with EMFILE; the server must go on."""
        self.running.settle()  # back in accept(), which has already reserved the descriptor it will return
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            with ThreadWatcher(self.running.thread_id) as server_thread, no_file_descriptors_left():
                client.connect(self.address)
                client.sendall(clients.REQUEST)
                clients.wait_readable(client, SECONDS)  # served with the reserved descriptor
                server_thread.wait_until_blocked(1.0)   # then accept() again: EMFILE, with no descriptor left
                ended = self.running.finished.is_set()
            if ended:
                self.fail_if_ended("accept() failed with EMFILE ('Too many open files'), a shortage that passes as "
                                   "soon as a connection closes: only a shut-down listening socket ends the server")
            client.settimeout(ANSWER_SECONDS)
            with contextlib.suppress(OSError):
                clients.read_until_closed(client)
        finally:
            client.close()
        self.still_serving("accept() failed with EMFILE ('Too many open files') for a while")


def check_serve_forever(serve_forever, *, hidden=False):
    """Check ``serve_forever(serversocket)``: a blocking server that no client can stop or stall.

    The check gives it a listening socket on 127.0.0.1 and sends, one after
    another: a polite request; a request in pieces, which must get no answer
    before its empty line; non-UTF-8 bytes; a client that closes early; one
    that resets; one that connects and says nothing; one that streams a request
    without end, which must be cut off soon after 64 KiB; and a client that
    connects while the process has no file descriptor left, so that
    ``accept()`` fails with EMFILE. After each, a polite client must still be
    answered with status 200, and each answer must end with the server closing
    the connection. Finally the check shuts the listening socket down, and
    ``serve_forever`` must return. *hidden* runs the cases graders keep hidden
    instead: requests that end their lines with a bare LF, that split the empty
    line, that half-close after sending, and a run of clients in a row.
    """
    server = _ServerUnderCheck(serve_forever)
    try:
        server.still_serving("starting")
        if hidden:
            server.answers_only_once_complete([b"GET / HTTP/1.0\n", b"Host: localhost\n", b"\n"],
                                              "a request whose lines end in a bare LF")
            server.answers_only_once_complete([clients.REQUEST[:-1], clients.REQUEST[-1:]],
                                              "a request whose empty line came in two pieces")
            with clients.stalled_client(server.address, clients.REQUEST) as client:
                client.shutdown(socket.SHUT_WR)  # a half-close: it still reads the answer
                client.settimeout(ANSWER_SECONDS)
                server.judge_answer(clients.read_until_closed(client), "a client that half-closed after its request")
            passed("answered a client that half-closed after sending its request")
            for served in range(20):
                server.still_serving(f"{served} requests in a row", report=False)
            passed("answered 20 polite clients in a row")
        else:
            request = clients.REQUEST
            server.answers_only_once_complete([request[:16], request[16:33], request[33:]],
                                              "a request sent in three pieces")
            server.survives(clients.exchange, b"GET /\xff\xfe HTTP/1.0\r\n\r\n", timeout=SECONDS,
                            after="a request holding bytes that are not UTF-8")
            server.survives(clients.early_close_client, after="a client that closed before finishing its request")
            server.survives(clients.reset_client, after="a client that reset the connection")
            with clients.stalled_client(server.address, b""):
                server.still_serving("a client that connected and said nothing (drop it after 1 s)")
            server.cuts_off_a_request_without_end()
            server.survives_running_out_of_file_descriptors()
        server.returns_once_shut_down()
        server.closed_every_connection(
            "close each one however its client ends (a `with connection:` block does)")
    finally:
        server.close()
