"""Chapter 6's checks: ``how_it_ended``, ``on_readable``, ``close_gracefully``.

Each case ends a real connection one of the ways chapter 6's truth table
shows, waits until the server's end shows it to epoll, and then hands the
server's end to the reader's code.
"""

import contextlib
import errno
import select
import socket
import threading
import time

from epollbook import clients
from epollbook.checks.harness import (
    ANSWER_SECONDS,
    SECONDS,
    CheckFailed,
    Running,
    call,
    finish,
    passed,
    short,
    unread_bytes,
)
from epollbook.probes import epoll_event_names

READING = select.EPOLLIN | select.EPOLLRDHUP
"""How the checks register a connection, as the chapter's servers do."""

SHOWS = {"open": select.EPOLLIN, "eof": select.EPOLLRDHUP, "reset": select.EPOLLERR}
"""The bit a connection shows once the kernel has taken in how it ended."""


def _events(sock, waiting_for, timeout=SECONDS):
    """The mask *sock* shows, registered ``READING``, once it holds all of *waiting_for* (or after *timeout* s)."""
    with select.epoll() as epoll:
        epoll.register(sock.fileno(), READING)
        deadline = time.monotonic() + timeout
        events = 0
        while events & waiting_for != waiting_for and time.monotonic() < deadline:
            events = sum(mask for _, mask in epoll.poll(max(0.0, deadline - time.monotonic())))
            if events & waiting_for != waiting_for:
                time.sleep(0.002)  # level-triggered: what is there already comes back at once
        return events


def _end(client, how):
    """End the client's side of a connection: 'close', 'shut_wr', 'reset' or None (it stays)."""
    if how == "close":
        client.close()
    elif how == "shut_wr":
        client.shutdown(socket.SHUT_WR)
    elif how == "reset":
        clients.reset(client)


# -- how_it_ended -------------------------------------------------------------------------------------

ANSWERS = tuple(SHOWS)


def _unread_server_bytes(client, server_side):
    """The server sends bytes the client never reads, so that the client's close() becomes a reset."""
    server_side.sendall(b"HTTP/1.0 200 OK\r\n\r\nunread")
    clients.wait_readable(client, SECONDS)


def check_how_it_ended(how_it_ended, *, hidden=False):
    """Check ``how_it_ended(conn, events) -> 'open' | 'eof' | 'reset'`` on connections ended each way.

    *conn* is the server's end, non-blocking; *events* the mask epoll showed,
    registered ``EPOLLIN|EPOLLRDHUP``. 'open': the client may still send;
    'eof': it will send nothing more (it closed, or shut down its writing side:
    the server cannot tell which); 'reset': the connection is gone. Bytes
    waiting in *conn* must still be there afterwards. *hidden* runs the cases
    graders keep hidden instead.
    """
    request = clients.REQUEST
    if hidden:
        cases = [
            ("a client that sent its request and shut down its writing side", request, ["shut_wr"], "eof", None),
            ("a client that connected and has sent nothing yet (no event)", b"", [], "open", None),
            ("a client that closed without sending anything", b"", ["close"], "eof", None),
            ("a client that closed without reading what the server had sent it", request, ["close"], "reset",
             _unread_server_bytes),
            ("a client that shut down its writing side, then reset the connection", b"", ["shut_wr", "reset"],
             "reset", None),
        ]
    else:
        cases = [
            ("a client that sent its request and is still connected", request, [], "open", None),
            ("a client that sent its request and closed", request, ["close"], "eof", None),
            ("a client that reset the connection", b"", ["reset"], "reset", None),
        ]
    for description, sent, steps, expected, before in cases:
        with clients.connected_pair() as (client, server_side):
            server_side.setblocking(False)
            if sent:
                client.sendall(sent)
            if before is not None:
                before(client, server_side)
            for step in steps:
                _end(client, step)
            # A client that has done nothing yet shows nothing: the check does not wait for what cannot come.
            events = 0 if not (sent or steps) else _events(server_side, SHOWS[expected] | (
                select.EPOLLIN if sent else 0))
            waiting = unread_bytes(server_side)
            answer = call(how_it_ended, server_side, events, letting_through=())
            shown = f"{description} (events {epoll_event_names(events)})"
            if answer not in ANSWERS:
                raise CheckFailed(f"expected one of {', '.join(map(repr, ANSWERS))} for {shown}; "
                                  f"how_it_ended returned {short(answer)}")
            if answer != expected:
                raise CheckFailed(f"expected {expected!r} for {shown}; how_it_ended returned {answer!r}")
            left = unread_bytes(server_side) if server_side.fileno() != -1 else 0
            if left < waiting:
                raise CheckFailed(f"expected the {waiting} bytes waiting from {description} to be left for the "
                                  f"server to read; how_it_ended took {waiting - left} of them: look with "
                                  "recv(n, socket.MSG_PEEK), or from the event mask alone")
        passed(f"how_it_ended said {expected!r} for {description}")


# -- on_readable ---------------------------------------------------------------------------------------

CALLS_PER_EVENT = 20
"""How often the check calls ``on_readable`` for one connection while epoll keeps reporting it, before it calls
that a spin (level-triggered epoll reports a client that has finished sending again and again)."""


def _looks_like_an_answer(reply):
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0] + b" "


class _Conversation:
    """One connection, the check's epoll loop around the reader's ``on_readable``, and what its client saw."""

    def __init__(self, on_readable, client, server_side, description):
        self.on_readable, self.client, self.server_side = on_readable, client, server_side
        self.description = description
        self.request = bytearray()
        self.done = False

    def handle(self, waiting_for):
        """Poll as an epoll loop would and call ``on_readable`` until it is done or has nothing left to handle."""
        with select.epoll() as epoll:
            epoll.register(self.server_side.fileno(), READING)
            events = _events(self.server_side, waiting_for)
            calls = 0
            while events and not self.done:
                calls += 1
                if calls > CALLS_PER_EVENT:
                    raise CheckFailed(f"expected on_readable to be done with {self.description} (return False); it "
                                      f"returned True {CALLS_PER_EVENT} times in a row while epoll kept reporting "
                                      f"{epoll_event_names(events)}: a level-triggered loop around it would spin")
                try:
                    keep = call(self.on_readable, self.server_side, events, self.request)
                except OSError:  # the loop closes the connection, as a real one would
                    keep = False
                if keep not in (True, False):
                    raise CheckFailed(f"expected on_readable to return True (keep watching) or False (done); "
                                      f"it returned {short(keep)} for {self.description}")
                self.done = not keep
                events = 0 if self.done else sum(mask for _, mask in epoll.poll(0))
        if self.done:
            clients.wake_and_close(self.server_side)

    def answered_early(self, sent):
        early = clients.peek(self.client)
        if early:
            raise CheckFailed(f"expected no answer before the blank line that ends the request; after only "
                              f"{short(sent)} on_readable sent {short(early)}: keep what arrives in request until "
                              "the blank line is there")


def check_on_readable(on_readable, *, hidden=False):
    """Check ``on_readable(conn, events, request) -> bool``, called by an epoll loop (level-triggered).

    It must answer a complete request with a 200 response even when the
    client's EPOLLRDHUP came with it (a half-close after the request), answer
    nothing before the blank line, and return False (done: the loop closes the
    connection) after answering and when the client ends before its request is
    complete; an ``OSError`` it lets out also ends the connection. *hidden*
    runs the cases graders keep hidden instead.
    """
    request = clients.REQUEST
    if hidden:
        answered = [
            ("a request whose last piece came with the client's half-close",
             [(request[:20], None), (request[20:], "shut_wr")]),
            ("a request with bare LFs, then a half-close", [(b"GET / HTTP/1.0\n\n", "shut_wr")]),
        ]
        dropped = [("a client that sent its whole request and closed at once", request, "close"),
                   ("a client that reset the connection mid-request", clients.FIRST_LINE, "reset")]
    else:
        answered = [
            ("a request that came in three pieces", [(request[:9], None), (request[9:20], None), (request[20:], None)]),
            ("a request followed at once by the client's half-close (EPOLLIN|EPOLLRDHUP together)",
             [(request, "shut_wr")]),
        ]
        dropped = [("a client that closed before its request was complete", clients.FIRST_LINE, "close")]

    for description, pieces in answered:
        with clients.connected_pair() as (client, server_side):
            server_side.setblocking(False)
            conversation = _Conversation(on_readable, client, server_side, description)
            sent = b""
            for piece, how in pieces:
                if conversation.done:
                    break
                client.sendall(piece)
                sent += piece
                _end(client, how)
                conversation.handle(select.EPOLLRDHUP if how else select.EPOLLIN)
                if b"\r\n\r\n" not in sent and b"\n\n" not in sent:
                    conversation.answered_early(sent)
            if not conversation.done:
                raise CheckFailed(f"expected on_readable to return False once it had answered {description}; it "
                                  "returned True, so the connection would stay open for ever")
            client.settimeout(ANSWER_SECONDS)
            try:
                reply = clients.read_until_closed(client)
            except clients.NoEndOfAnswer as error:
                reply = error.received
            if not _looks_like_an_answer(reply):
                why = (": EPOLLRDHUP (or recv() == b'') means the client will send nothing more, not that it stopped "
                       "listening; answer the request it sent" if pieces[-1][1] == "shut_wr" else "")
                raise CheckFailed(f"expected a 200 answer to {description}; the client got "
                                  f"{short(reply) if reply else 'no answer before the connection closed'}{why}")
        passed(f"on_readable answered {description}")

    for description, sent, how in dropped:
        with clients.connected_pair() as (client, server_side):
            server_side.setblocking(False)
            conversation = _Conversation(on_readable, client, server_side, description)
            client.sendall(sent)
            _end(client, how)
            conversation.handle(SHOWS["reset" if how == "reset" else "eof"])
            if not conversation.done:
                raise CheckFailed(f"expected on_readable to be done with {description} (return False); it returned "
                                  "True and epoll stopped reporting it, so the connection would stay open for ever")
        passed(f"on_readable was done with {description}")


# -- close_gracefully -------------------------------------------------------------------------------------

ANSWER_SIZE = 1_000_000
"""The answer the check sends before calling ``close_gracefully``: big enough that most of it is still on its way
when ``close_gracefully`` is called, so a reset destroys some."""

GIVE_UP = 1.0
"""How long the exercise lets ``close_gracefully`` wait for a client that does not close."""


class _PipeliningClient:
    """A client that sends its request and more behind it, reads the answer to its end, then shuts down its side.

    Its sending and reading run in threads of their own, as they do in a real
    client, so neither waits for the other. After the answer it stays
    connected (``shutdown(SHUT_WR)``, not ``close()``), so a reset the server
    sends later still reaches a socket the check can ask. With *stays* it does
    not even shut down; with *endless* it sends its pieces again and again
    until the connection fails, never closing.
    """

    def __init__(self, client, pieces, *, pause=0.0, endless=False, stays=False):
        self.client, self.endless = client, endless
        self.received, self.end, self.send_error = 0, None, None
        self.writer = threading.Thread(target=self._send, args=(pieces, pause), daemon=True,
                                       name="pipelining client: send")
        self.reader = threading.Thread(target=self._read, args=(stays or endless,), daemon=True,
                                       name="pipelining client: read")
        self.writer.start()
        self.reader.start()

    def _send(self, pieces, pause):
        try:
            while True:
                for piece in pieces:
                    self.client.sendall(piece)
                    if pause:
                        time.sleep(pause)
                if not self.endless:
                    return
        except OSError as error:
            self.send_error = errno.errorcode.get(error.errno, str(error))

    def _read(self, stays):
        try:
            while piece := self.client.recv(65536):
                self.received += len(piece)
            self.end = "b''"
        except OSError as error:
            self.end = errno.errorcode.get(error.errno, str(error))
        if not stays:
            self.writer.join(SECONDS)  # all sent: then a reset the late bytes cause has come before the judging
            with contextlib.suppress(OSError):
                self.client.shutdown(socket.SHUT_WR)

    def reset_seen(self):
        """The reset this client's socket was sent, by name, or None: a reset after the answer sets an error."""
        with select.epoll() as epoll:
            epoll.register(self.client.fileno(), 0)
            epoll.poll(0.05)  # on loopback a reset has landed by now; this is for a machine that lags
        pending = self.client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return self.send_error or (errno.errorcode.get(pending, str(pending)) if pending else None)


def _answer_then_close_gracefully(close_gracefully, pieces, description, *, stuck, seconds=SECONDS, **client):
    with clients.connected_pair() as (client_socket, server_side):
        server_side.settimeout(SECONDS)
        pipelining = _PipeliningClient(client_socket, pieces, **client)
        request = b""
        while b"\r\n\r\n" not in request:
            request += server_side.recv(len(clients.REQUEST) - len(request))
        server_side.sendall(b"x" * ANSWER_SIZE)
        server_side.settimeout(None)  # blocking, as the exercise says: the time limits are the reader's to set
        running = finish(Running(close_gracefully, server_side), f"close_gracefully was still running {seconds:g} s "
                         f"after it was called for {description}: {stuck}", seconds=seconds, unblock=[server_side])
        if running.error is not None:
            raise CheckFailed(f"expected close_gracefully to close the connection of {description}; "
                              f"{running.describe()}") from running.error
        if server_side.fileno() != -1:
            raise CheckFailed(f"expected close_gracefully to close the connection of {description}; it returned "
                              "with the socket still open (call conn.close() at the end)")
        pipelining.reader.join(ANSWER_SECONDS)
        if pipelining.reader.is_alive():
            raise CheckFailed(f"expected the answer to {description} to end once close_gracefully returned; the "
                              f"client was still waiting for more {ANSWER_SECONDS:g} s later")
        # A client that never stops sending is reset in the end, whatever the server does; its answer must be whole.
        reset = None if pipelining.endless else pipelining.reset_seen()
        if pipelining.received < ANSWER_SIZE or pipelining.end != "b''" or reset:
            what = f"its recv() raised {pipelining.end}" if pipelining.end != "b''" else \
                f"then a reset reached its socket (reported as {reset})" if reset else "recv() returned b''"
            raise CheckFailed(f"expected {description} to receive the whole answer and then b'' (no reset); it "
                              f"received {pipelining.received:,} of {ANSWER_SIZE:,} bytes and {what}: close() with "
                              "unread bytes sends a reset, so shut down writing, read until the client closes, "
                              "then close")
    passed(f"close_gracefully delivered the whole answer to {description}")


def check_close_gracefully(close_gracefully, *, hidden=False):
    """Check ``close_gracefully(conn)``: after an answer, close so that the client gets all of it, never a reset.

    The client pipelines bytes behind its request that no one reads; the
    check sends a 1 MB answer, then calls ``close_gracefully`` on the server's
    (blocking) end. The client must receive the whole answer, then ``b''``,
    and its socket no reset; a client that does not close must not keep
    ``close_gracefully`` more than about a second. *hidden* runs the cases
    graders keep hidden instead.
    """
    request = clients.REQUEST
    limit = SECONDS + GIVE_UP
    if hidden:
        _answer_then_close_gracefully(
            close_gracefully, [request, b"x" * 4096], "a client that keeps sending and never closes",
            pause=0.01, endless=True, seconds=limit,
            stuck=f"this client never stops sending, so give up after {GIVE_UP:g} s in all, not per recv()")
        _answer_then_close_gracefully(
            close_gracefully, [request], "a client that stays connected, silent, after its answer", stays=True,
            seconds=limit, stuck=f"a client that never closes must not hold it: give up after {GIVE_UP:g} s")
        _answer_then_close_gracefully(
            close_gracefully, [request + b"GET /a HTTP/1.0\r\n\r\n", b"GET /b HTTP/1.0\r\n\r\n"],
            "a client that pipelined two more requests, one a moment later", pause=0.05, seconds=limit,
            stuck="read until recv() returns b'' (or the time is up)")
    else:
        # The bigger case first: an answer that reads once and closes fails it for what it left unread, on any
        # machine. The small one it may pass, unless the kernel's TIME_WAIT table is full: then an end closed
        # before the client's FIN is forgotten at once, and the FIN is answered with a reset.
        _answer_then_close_gracefully(
            close_gracefully, [request + b"y" * 200_000], "a client that sent 200,000 bytes behind its request",
            seconds=limit, stuck="read until recv() returns b'' (or the time is up)")
        _answer_then_close_gracefully(
            close_gracefully, [request + b"GET /next HTTP/1.0\r\n\r\n"], "a client that pipelined a second request",
            seconds=limit, stuck="read until recv() returns b'' (or the time is up)")
