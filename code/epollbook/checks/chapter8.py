"""Chapter 8's checks: ``data_segments_sent``, ``send_corked``, ``answer_pipelined``.

Every case runs on a real connection of this process on 127.0.0.1 and asks
the kernel what happened: the sending end's ``TCP_INFO`` counts the data
segments and the bytes that have left (``probes.tcp_info``), and
``getsockopt(TCP_CORK)`` says whether the cork is still in. The checks' own
connections have ``TCP_NODELAY`` set, as many servers' have (asyncio sets it):
each ``send()`` then leaves at once unless it is corked, so the counts do not
depend on when acknowledgements come back.
"""

import contextlib
import itertools
import os
import socket
import struct
import time

from epollbook import clients, probes
from epollbook.checks.harness import (
    SECONDS,
    CheckFailed,
    Running,
    call,
    finish,
    passed,
    short,
)
from epollbook.cork import RESPONSE

OFFSET, END = 156, 160
"""Where ``tcpi_data_segs_out`` lies in ``struct tcp_info``: bytes 156 to 160 (include/uapi/linux/tcp.h)."""

OLDER_KERNEL_SIZE = 144
"""How many bytes of ``TCP_INFO`` a kernel before Linux 4.6 returns: its struct ends before tcpi_data_segs_out."""

PIECE_PAUSE = 0.015
"""Seconds between two pieces of the checks' slow producer: each piece would leave alone without the cork, and all
of them come well within the cork's 200 ms ceiling."""


def _nodelay(sock):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _corked(sock):
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK))


def _receive(sock, size, timeout=SECONDS):
    """Read until *size* bytes came from *sock* or *timeout* s passed; return them."""
    received = bytearray()
    deadline = time.monotonic() + timeout
    with contextlib.suppress(OSError):
        while len(received) < size and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            chunk = sock.recv(size - len(received))
            if not chunk:
                break
            received += chunk
    return bytes(received)


# -- data_segments_sent ------------------------------------------------------------------------------------------


class _OlderKernel(socket.socket):
    """A real socket (a duplicate of another) whose ``TCP_INFO`` comes back as a kernel before Linux 4.6 returns it:
    only ``OLDER_KERNEL_SIZE`` bytes, however many are asked for, because its struct tcp_info is that long."""

    def getsockopt(self, level, option, *size):
        value = super().getsockopt(level, option, *size)
        if (level, option) == (socket.IPPROTO_TCP, socket.TCP_INFO) and isinstance(value, bytes):
            return value[:OLDER_KERNEL_SIZE]
        return value


# Fields a wrong answer may have read instead, with what they count, for the message.
_OTHER_FIELDS = {
    "segs_out": "tcpi_segs_out: every segment sent, pure ACKs too",
    "data_segs_in": "tcpi_data_segs_in (offset 152): the data segments that came in",
    "segs_in": "tcpi_segs_in: every segment that came in",
    "bytes_sent": "tcpi_bytes_sent: bytes rather than segments",
}


@contextlib.contextmanager
def _connection_that_sent(pieces, request_pieces=1):
    """Yield ``(client, server_side)``: the server's end received a request in *request_pieces* segments, then sent
    *pieces* segments, each read by the client before the next went out."""
    with clients.connected_pair() as (client, server_side):
        _nodelay(server_side)
        request = clients.REQUEST
        cuts = [len(request) * number // request_pieces for number in range(request_pieces + 1)]
        for start, end in itertools.pairwise(cuts):
            client.sendall(request[start:end])
            _receive(server_side, end - start)
        for piece in range(pieces):
            server_side.sendall(b"%d" % (piece % 10) * 50)
            _receive(client, 50)
        yield client, server_side


def _counters(sock, function_name):
    """The kernel's counters of *sock*; a closed one means the reader's code closed it, which is said so."""
    try:
        return probes.tcp_info(sock)
    except (ValueError, OSError):
        if sock.fileno() == -1:
            raise CheckFailed(f"expected {function_name} to leave the connection open (the caller goes on using it "
                              "and closes it); it closed the socket") from None
        raise


def _judge_count(data_segments_sent, sock, description, *, older=False):
    expected = None if older else probes.tcp_info(sock).data_segs_out
    try:
        answer = call(data_segments_sent, sock, letting_through=(Exception,))
    except CheckFailed:
        raise
    except Exception as error:  # any error of the reader's code is judged here, in one sentence
        said = " ".join(str(error).split())
        hint = (f": a kernel may return fewer bytes than asked (this one returned {OLDER_KERNEL_SIZE}); check "
                f"len() of what getsockopt returned, and return None if it does not reach byte {END}") if older else (
            f": ask getsockopt for enough bytes (the field ends at byte {END}) and unpack 4 bytes at offset "
            f"{OFFSET}") if isinstance(error, (struct.error, TypeError, IndexError)) else ""
        raise CheckFailed(f"expected data_segments_sent to return a number for {description}; it raised "
                          f"{type(error).__name__}: {said}{hint}") from None
    if older:
        if answer is not None:
            raise CheckFailed(f"expected None for {description}, since the {OLDER_KERNEL_SIZE} bytes it returned end "
                              f"before tcpi_data_segs_out (bytes {OFFSET} to {END}); data_segments_sent returned "
                              f"{short(answer)}: check len() of what getsockopt returned before reading the field")
        return
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise CheckFailed(f"expected an int, the number of data segments sent, for {description}; data_segments_sent "
                          f"returned {short(answer)}")
    if answer != expected:
        info = _counters(sock, "data_segments_sent")
        instead = next((f", which is {meaning}" for name, meaning in _OTHER_FIELDS.items()
                        if getattr(info, name) == answer), "")
        raise CheckFailed(f"expected {expected} data segments for {description} (tcpi_data_segs_out, 4 bytes at "
                          f"offset {OFFSET}, native byte order); data_segments_sent returned {answer}{instead}")


def check_data_segments_sent(data_segments_sent, *, hidden=False):
    """Check ``data_segments_sent(sock) -> int | None``: ``tcpi_data_segs_out`` of a TCP socket, read by offset.

    The socket's kernel counted the data segments; the answer must be that
    count, read from the bytes ``getsockopt(IPPROTO_TCP, TCP_INFO, n)``
    returns, and None where those bytes end before the field (an older
    kernel). *hidden* runs the cases graders keep hidden instead.
    """
    if hidden:
        cases = [("the server's end of a connection that has sent nothing yet", 0, 1, "server", False),
                 ("a server's end that sent 20 segments after a request in 3 segments", 20, 3, "server", False),
                 ("a socket on a kernel older than Linux 4.6, which returns only "
                  f"{OLDER_KERNEL_SIZE} bytes of TCP_INFO", 3, 1, "server", True)]
    else:
        cases = [("a server's end that received a request and sent 3 segments", 3, 1, "server", False),
                 ("the client's end of the same kind of connection (it sent its request)", 3, 1, "client", False)]
    for description, pieces, request_pieces, end, older in cases:
        with _connection_that_sent(pieces, request_pieces) as (client, server_side):
            sock = server_side if end == "server" else client
            if older:
                with _OlderKernel(fileno=os.dup(sock.fileno())) as older_socket:
                    _judge_count(data_segments_sent, older_socket, description, older=True)
            else:
                _judge_count(data_segments_sent, sock, description)
        passed(f"data_segments_sent was right for {description}")


# -- send_corked --------------------------------------------------------------------------------------------------


class ProducerFailed(RuntimeError):
    """What the checks' producer raises when it fails midway, as a database or a file can."""


def _producer(pieces, pause, *, fails_after=None):
    for number, piece in enumerate(pieces):
        if number == fails_after:
            raise ProducerFailed("the producer of the pieces failed midway")
        if number:
            time.sleep(pause)
        yield piece


def _one_send_corked(send_corked, pieces, description, *, pause=PIECE_PAUSE, fails_after=None, as_list=False):
    sent = b"".join(pieces if fails_after is None else pieces[:fails_after])
    with clients.connected_pair() as (client, server_side):
        _nodelay(server_side)
        before = _counters(server_side, "send_corked")
        given = list(pieces) if as_list else _producer(pieces, pause, fails_after=fails_after)
        running = finish(Running(send_corked, server_side, given),
                         f"send_corked was still running {SECONDS:g} s after it was called with {description}",
                         unblock=[server_side])
        after = _counters(server_side, "send_corked")  # at once: what has left by the time it returned
        corked = _corked(server_side)
        if fails_after is not None:
            if not isinstance(running.error, ProducerFailed):
                raise CheckFailed(f"expected send_corked to let the producer's error out when {description}; "
                                  f"{running.describe()}")
        elif running.error is not None:
            raise CheckFailed(f"expected send_corked to send {description}; {running.describe()}") from running.error
        if corked:
            why = ("in a finally: clause, so that an error on the way does not leave it in"
                   if fails_after is not None else "when all pieces are sent")
            raise CheckFailed(f"expected the cork to be out once send_corked returned after {description}; TCP_CORK "
                              f"was still set, so its last bytes wait up to 200 ms and the next answer on the "
                              f"connection too: set it back to 0 {why}")
        left = after.bytes_sent - before.bytes_sent
        if fails_after is not None:
            # What it had handed to send() before the failure must not wait; whether it sends the pieces that
            # came before the failure at all is its choice (a response cut short is of little use).
            received = _receive(client, left, timeout=0.5)
            if after.notsent_bytes or not sent.startswith(received):
                raise CheckFailed(f"expected what send_corked had sent when {description} to have left at once; "
                                  f"{after.notsent_bytes} bytes were still waiting in the socket")
            passed(f"send_corked let the error out and uncorked when {description}")
            return
        if left < len(sent):
            raise CheckFailed(f"expected all {len(sent)} bytes of {description} to have left when send_corked "
                              f"returned; {left} had: send every piece, then uncork")
        received = _receive(client, len(sent))
        if received != sent:
            raise CheckFailed(f"expected the client to receive the pieces joined, {short(sent)}; it received "
                              f"{short(received)}")
        segments = after.data_segs_out - before.data_segs_out
        if sent and segments != 1:
            count = len(pieces) if fails_after is None else fails_after
            if segments >= count > 1:
                why = ("each piece left in a segment of its own: TCP_NODELAY sends at once, and the cork must be "
                       "set before the first send()")
            else:
                why = "set TCP_CORK before the first send() and take it out only after the last"
            raise CheckFailed(f"expected the {len(sent)} bytes of {description} to leave in 1 data segment; they "
                              f"left in {segments}: {why}")
    passed(f"send_corked sent {description} in one segment, and uncorked" if sent else
           f"send_corked sent nothing for {description}, and left the cork out")


def check_send_corked(send_corked, *, hidden=False):
    """Check ``send_corked(sock, pieces)``: pieces that come slowly, sent as one segment, and the cork out at the end.

    *pieces* is an iterable of bytes (a generator that takes its time over
    each); *sock* a blocking, connected TCP socket with ``TCP_NODELAY`` set.
    Counted by *sock*'s kernel: the pieces must leave in one data segment
    (they fit in one), all of them by the time it returns, with ``TCP_CORK``
    set back to 0; an error of the producer must come out, the cork out too.
    *hidden* runs the cases graders keep hidden instead.
    """
    lines = [line + b"\r\n" for line in RESPONSE.split(b"\r\n")]
    if hidden:
        _one_send_corked(send_corked, [b"%02d;" % number for number in range(12)],
                         "12 small pieces, 5 ms apart", pause=0.005)
        _one_send_corked(send_corked, [b"HTTP/1.0 200 OK\r\n\r\n", b"", b"body"],
                         "a list of pieces, one of them empty", as_list=True)
        _one_send_corked(send_corked, lines, "pieces whose producer fails after the second", fails_after=2)
        _one_send_corked(send_corked, [], "no pieces at all")
    else:
        _one_send_corked(send_corked, [RESPONSE[:17], RESPONSE[17:-13], RESPONSE[-13:]],
                         f"a response in 3 pieces, {PIECE_PAUSE * 1000:g} ms apart")
        _one_send_corked(send_corked, lines, f"a response line by line ({len(lines)} pieces)")


# -- answer_pipelined ------------------------------------------------------------------------------------------


def _counted(number, noun):
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _requests(*paths):
    return b"".join(b"GET /%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % path.encode() for path in paths)


def _answer_bursts(answer_pipelined, bursts, description):
    """Send each burst of bytes, judge the answers to it, then shut down the client's writing side."""
    with clients.connected_pair() as (client, server_side):
        _nodelay(server_side)
        running = Running(answer_pipelined, server_side)
        answered = 0
        sent = b""
        for burst in bursts:
            before = _counters(server_side, "answer_pipelined")
            client.sendall(burst)
            sent += burst
            complete = sent.count(b"\r\n\r\n")
            due = complete - answered
            running.settle(timeout=SECONDS)  # it has done all it will with this burst, and waits for more
            if running.finished.is_set():
                finish(running, "")
                raise CheckFailed(f"expected answer_pipelined to wait for more requests after {description} "
                                  f"(the client had not shut down its side); {running.describe()}")
            after = _counters(server_side, "answer_pipelined")
            received = _receive(client, due * len(RESPONSE), timeout=0.1)
            if after.notsent_bytes:
                raise CheckFailed(f"expected the answers to {_counted(due, 'request')} that came together to have left "
                                  f"while answer_pipelined waited for the next; {after.notsent_bytes} bytes of them "
                                  "were still held by the cork: uncork once you have answered every complete "
                                  "request you have")
            if received != RESPONSE * due:
                got = received.count(RESPONSE) if received == RESPONSE * received.count(RESPONSE) else None
                what = (f"answers to {got} of them" if got is not None else short(received))
                raise CheckFailed(f"expected {_counted(due, 'answer')} after {_counted(due, 'complete request')} came "
                                  f"in together; the client got {what}: answer every complete request in what you "
                                  "have read, and keep an incomplete one until its end comes")
            segments = after.data_segs_out - before.data_segs_out
            if due and segments != 1:
                raise CheckFailed(f"expected the {due} answers to requests that came in together to leave in 1 data "
                                  f"segment; they left in {segments}: cork while you answer them, and uncork after "
                                  "the last")
            answered = complete
        client.shutdown(socket.SHUT_WR)
        finish(running, f"answer_pipelined was still running {SECONDS:g} s after the client shut down its writing "
                        "side: return when recv() returns b''", unblock=[server_side])
        if running.error is not None:
            raise CheckFailed(f"expected answer_pipelined to return once the client had sent everything; "
                              f"{running.describe()}") from running.error
    passed(f"answer_pipelined answered {description}, each burst in one segment")


def check_answer_pipelined(answer_pipelined, *, hidden=False):
    """Check ``answer_pipelined(conn)``: answer every pipelined request with ``RESPONSE``, a burst in one segment.

    *conn* is blocking, with ``TCP_NODELAY`` set. The client sends bursts of
    requests and waits for the answers to each burst; the answers to
    requests that came together must leave in one data segment, and none may
    stay corked while the function waits for more. It returns once the
    client has shut down its writing side. *hidden* runs the cases graders
    keep hidden instead.
    """
    if hidden:
        cut = _requests("c")
        _answer_bursts(answer_pipelined, [_requests("a", "b") + cut[:-1], cut[-1:] + _requests("d")],
                       "2 requests and a third but for its last byte, then that byte and one more")
        _answer_bursts(answer_pipelined, [_requests(*"abcde"), _requests("f")], "5 requests, then 1")
    else:
        _answer_bursts(answer_pipelined, [_requests("a", "b", "c")], "3 requests sent together")
        _answer_bursts(answer_pipelined, [_requests("a", "b"), _requests("c", "d", "e")],
                       "2 requests together, then 3 more together")
