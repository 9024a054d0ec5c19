"""Chapter 9's checks: ``ask``, ``reply`` and ``nagle_is_on``.

``ask`` is a client and ``reply`` a server's answer, each on a persistent
connection where a request follows the last answer at once: the pattern that
Nagle's algorithm and delayed ACKs stall. The check runs the reader's code on
one connection and a reference of its own on another, taking turns round by
round, and compares them. It judges by a ratio, never by a time, and by each
side's *fastest* round, not its median: a stall delays every round (by some
40 ms, hundreds of times a round trip on loopback), while a busy machine
delays some rounds of either side at random, by a scheduler tick or more. With
every core busy, a handful of rounds of the very same code have been measured
with medians 78 times apart; their fastest rounds stay alike. A right answer
passes as soon as one of its rounds comes within ``MARGIN`` times the
reference's fastest; the check takes more rounds, up to ``BUDGET`` seconds,
before it calls the answer slow.

``nagle_is_on`` reads an option from the kernel; the check hands it sockets
set each way the chapter shows, accepted ones among them, and makes sure that
it reads the option without changing it.
"""

import contextlib
import socket
import time

from epollbook import nagle
from epollbook.checks.harness import (
    ANSWER_SECONDS,
    SECONDS,
    CheckFailed,
    Running,
    call,
    fail_if_not_written,
    finish,
    passed,
    short,
)

MARGIN = 10
"""How many times the reference's fastest round trip the reader's fastest may take: a stall takes hundreds."""

ROUNDS = 7
"""Rounds measured per case at least (after a first round, which a new connection's quick ACKs make fast)."""

BUDGET = 1.0
"""Seconds of rounds per case the check may take before it calls the reader's code slow."""

MOST_ROUNDS = 60

CORK_CEILING = 0.2
"""Seconds Linux holds a partial segment behind a cork that is never pulled."""


def _rounds(ours, theirs):
    """Call *ours* and *theirs* in turn; return their times in s (``{"ours": [...], "theirs": [...]}``).

    The first round, which a new connection's quick ACKs make fast, is left
    out. After ``ROUNDS`` rounds, stops as soon as the reader's fastest round
    is within ``MARGIN`` times ours, or after ``BUDGET`` seconds (or
    ``MOST_ROUNDS`` rounds) if it never is. *theirs* runs the reader's code;
    what it raises goes out as raised.
    """
    times = {"ours": [], "theirs": []}
    deadline = time.monotonic() + BUDGET
    for number in range(MOST_ROUNDS + 1):
        for name, contender in (("theirs", theirs), ("ours", ours)):
            started = time.perf_counter()
            contender()
            if number:
                times[name].append(time.perf_counter() - started)
        if number >= ROUNDS and (min(times["theirs"]) < MARGIN * min(times["ours"]) or time.monotonic() > deadline):
            break
    return times


def _as_named(function, loop):
    """*loop* under *function*'s name, so that the harness's messages ("ask is not written yet") name it."""
    if not callable(function):
        Running(function)  # raises the harness's own message: pass the function itself

    def named(*args):
        return loop(*args)

    named.__name__ = getattr(function, "__name__", "your function")
    return named


def _median(times):
    times = sorted(times)
    middle = len(times) // 2
    return times[middle] if len(times) % 2 else (times[middle - 1] + times[middle]) / 2


def _what_holds(sock):
    """Why a socket's second piece may wait, from what the kernel says of it: the end of a message."""
    if sock.fileno() == -1:
        return ""
    with contextlib.suppress(OSError):
        if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK):
            return ("; TCP_CORK is still set on the socket, and a cork never pulled holds a partial segment up to "
                    "200 ms: pull it (set it to 0) after the last piece")
        if not nagle.nodelay(sock):
            return ("; TCP_NODELAY is off on the socket, so Nagle's algorithm holds the second piece until the "
                    "first is acknowledged, and the other end delays its ACK: send the pieces as one, or set "
                    "TCP_NODELAY on this socket")
        return "; TCP_NODELAY is on, so something else waits between the pieces"
    return ""


def _judge(name, description, times, sock):
    """Raise ``CheckFailed`` if the reader's fastest round trip took ``MARGIN`` times the reference's or more."""
    theirs, ours = min(times["theirs"]), min(times["ours"])
    rounds = len(times["theirs"])
    if theirs >= MARGIN * ours:
        raise CheckFailed(
            f"expected round trips with {name} to take about as long as with the check's own code, side by side on "
            f"a persistent connection ({description}); over {rounds} rounds the fastest took {theirs * 1e3:.2f} ms "
            f"(median {_median(times['theirs']) * 1e3:.2f} ms) against {ours * 1e3:.3f} ms, {theirs / ours:,.0f} "
            f"times as long{_what_holds(sock)}")
    passed(f"{name}'s round trips took {_median(times['theirs']) * 1e3:.3f} ms (median of {rounds}), the check's "
           f"own {_median(times['ours']) * 1e3:.3f} ms, side by side ({description})")


def _bodies(hidden):
    if hidden:
        return [("a one-byte body", b"!"), ("a body of 1,000 bytes", bytes(range(250)) * 4)]
    return [("a five-byte body", nagle.BODY)]


# -- ask ----------------------------------------------------------------------------------------


def check_ask(ask, *, hidden=False):
    """Check ``ask(sock, head, body) -> answer``: a client that sends a request in two pieces and reads the answer.

    *sock* is a connected client socket as ``socket.create_connection`` makes
    it (Nagle's algorithm on); the server at its other end answers each whole
    request (head, then Content-Length bytes of body) by echoing the body, and
    ``ask`` returns that answer (``nagle.read_message``). Round trips must not
    stall: the fastest must come within ``MARGIN`` times the check's own
    client's, measured side by side. *hidden* runs the cases graders keep hidden.
    """
    for description, body in _bodies(hidden):
        with nagle.open_link(timeout=ANSWER_SECONDS) as reference, \
                nagle.open_link(timeout=ANSWER_SECONDS) as link:
            _ask_case(ask, description, body, reference, link)


class _WrongAnswer(Exception):
    def __init__(self, answer):
        super().__init__("wrong answer")
        self.answer = answer


def _ask_case(ask, description, body, reference, link):
    head = nagle.request_head(body)
    expected = nagle.answer_head(body) + body

    def theirs():
        answer = ask(link.client, head, body)
        if answer != expected:
            raise _WrongAnswer(answer)

    def ours():
        reference.round_trip(nagle.one_send, body)

    running = Running(_as_named(ask, _rounds), ours, theirs)
    shown = f"ask(sock, {short(head, 30)}, {short(body, 20)})"
    limit = BUDGET + SECONDS + (ROUNDS + 1) * CORK_CEILING  # a cork never pulled costs its ceiling per round
    finish(running, f"{shown} did not return within {limit:g} s: the server answers once it has "
                    "the whole request, head and body, and ask must then read its answer",
           seconds=limit, unblock=[link.client])
    if isinstance(running.error, TimeoutError):
        raise CheckFailed(f"expected {shown} to return the server's answer; no answer came within "
                          f"{ANSWER_SECONDS:g} s (the socket's timeout): the server answers once it has the whole "
                          "request, head and body") from running.error
    if isinstance(running.error, _WrongAnswer):
        raise CheckFailed(f"expected {shown} to return the server's answer, {short(expected)}; it returned "
                          f"{short(running.error.answer)}")
    if running.error is not None:
        raise CheckFailed(f"expected {shown} to return the server's answer; it raised "
                          f"{type(running.error).__name__}: {' '.join(str(running.error).split())}"
                          ) from running.error
    _judge("ask", description, running.value, link.client)


# -- reply --------------------------------------------------------------------------------------


def _serve_then_hang_up(conn, answer):
    """Answer requests on *conn* with *answer* until the client closes; shut *conn* down on the way out.

    The shutdown tells the check's client at once that no answer will come
    (the reader's code raised), rather than after its timeout.
    """
    try:
        return nagle.serve_requests(conn, answer)
    finally:
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)


def check_reply(reply, *, hidden=False):
    """Check ``reply(conn, head, body)``: a server's answer sent as a head, then a body, without stalling.

    *conn* is the server's end of a persistent connection, as ``accept()``
    returns it (Nagle's algorithm on); the check's client sends each request
    in one piece and waits for the answer, *head* followed by *body*, before
    it sends the next. The fastest round trip must come within ``MARGIN`` times
    that of a server of the check's own, measured side by side. *hidden* runs
    the cases graders keep hidden.
    """
    def runner(loop, conn, answer, quickack):
        conn.settimeout(ANSWER_SECONDS + SECONDS)  # the client gives up first, and says why
        return Running(_as_named(reply, _serve_then_hang_up), conn, answer)

    for description, body in _bodies(hidden):
        with nagle.open_link(timeout=ANSWER_SECONDS) as reference, \
                nagle.open_link(reply, timeout=ANSWER_SECONDS, runner=runner) as link:
            _reply_case(reply, description, body, reference, link)


def _reply_case(reply, description, body, reference, link):
    expected = nagle.answer_head(body) + body
    shown = f"reply(conn, {short(nagle.answer_head(body), 30)}, {short(body, 20)})"

    def theirs():
        nagle.one_send(link.client, nagle.request_head(body), body)
        try:
            answer = read_answer(link.client)
        except TimeoutError:
            raise CheckFailed(f"expected {shown} to send its answer; the client was still waiting "
                              f"{ANSWER_SECONDS:g} s later") from None
        if answer != expected:
            running = link.server
            if running.finished.wait(SECONDS) and running.error is not None:
                fail_if_not_written(reply, running.error)
                raise CheckFailed(f"expected {shown} to send the answer; {running.describe()}") from running.error
            raise CheckFailed(f"expected the client to receive {short(expected)}; it received "
                              f"{short(answer) if answer else 'nothing before the connection closed'}")

    def ours():
        reference.round_trip(nagle.one_send, body)

    _judge("reply", description, _rounds(ours, theirs), link.server_side)


def read_answer(sock):
    """One answer from *sock*, or ``b''`` if the connection closed before a whole one came."""
    try:
        return nagle.read_message(sock)
    except nagle.MessageError:
        return b""


# -- nagle_is_on ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _connection(how):
    """Yield a socket set as *how* says; close everything after."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        if how == "accepted, listener with it":
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if how == "listener":
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            yield listener
            return
        with socket.create_connection(listener.getsockname(), timeout=SECONDS) as client:
            if how == "accepted, listener set late":
                listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # the handshake is done already
            accepted, _ = listener.accept()
            with accepted:
                if how == "client with it":
                    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                elif how == "client set then cleared":
                    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
                elif how == "client corked":
                    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
                yield accepted if how.startswith("accepted") else client


def check_nagle_is_on(nagle_is_on, *, hidden=False):
    """Check ``nagle_is_on(sock) -> bool``: True if Nagle's algorithm is on for *sock* (TCP_NODELAY off).

    The sockets: client connections with and without TCP_NODELAY, accepted
    connections whose listener had it or not, and (hidden) one whose option
    was set and cleared, one corked, one accepted after the listener got it
    too late, a listening socket. The option must be the same afterwards.
    """
    if hidden:
        cases = [("a connection accepted from a listener without TCP_NODELAY", "accepted, plain listener", True),
                 ("a client connection whose TCP_NODELAY was set, then cleared", "client set then cleared", True),
                 ("a corked client connection (TCP_CORK set, TCP_NODELAY not)", "client corked", True),
                 ("a connection whose handshake completed before its listener got TCP_NODELAY",
                  "accepted, listener set late", True),
                 ("a listening socket with TCP_NODELAY", "listener", False)]
    else:
        cases = [("a new client connection", "client", True),
                 ("a client connection with TCP_NODELAY set", "client with it", False),
                 ("a connection accepted from a listener with TCP_NODELAY", "accepted, listener with it", False)]
    for description, how, expected in cases:
        with _connection(how) as sock:
            before = nagle.nodelay(sock)
            answer = call(nagle_is_on, sock, letting_through=())
            after = nagle.nodelay(sock) if sock.fileno() != -1 else None
            if after is None:
                raise CheckFailed(f"expected nagle_is_on to leave {description} open; it closed the socket")
            if after != before:
                raise CheckFailed(f"expected nagle_is_on to read TCP_NODELAY without changing it; for {description} "
                                  f"it was {before} before the call and {after} after: read it with getsockopt(), "
                                  "never set it")
            if answer is not True and answer is not False:
                raise CheckFailed(f"expected True or False for {description}; nagle_is_on returned {short(answer)}")
            if answer != expected:
                raise CheckFailed(f"expected {expected} for {description} (TCP_NODELAY is {before}); "
                                  f"nagle_is_on returned {answer}")
        passed(f"nagle_is_on said {expected} for {description}")

