"""Chapter 7's checks: ``completed_before_accept``, ``how_connect_ended`` and ``accept_queue_length``.

Each case opens a listening socket that never accepts, with a backlog the
check chooses, and fills its accept queue with connections of its own where
the case needs it full. On Linux ``listen(n)`` lets n + 1 connections
complete; the next client's SYN is dropped, not refused, so its ``connect()``
hears nothing and would retry after about 1 s, then 3 s. The checks never
wait for those retries: they pass the reader's code a deadline of a few
tenths of a second, and a time limit (``SECONDS`` beyond it) only catches code
that ignores it. A ``connect()`` stuck past that limit is woken the way the
harness wakes a blocked ``recv()``: by ``shutdown()`` of its socket, found
among this process's descriptors through the kernel's table of sockets.
How many connections wait in a queue the check reads from its listener's
own ``TCP_INFO``, not from that table, which a machine that has just run a
load test fills with tens of thousands of sockets in TIME-WAIT.

Nothing may leak: the reader's code must close every socket it opened, the
one still in SYN-SENT too. A socket still open when the call returns is
found among this process's descriptors; one the reader dropped without
closing is closed by the garbage collector, which says so with a
``ResourceWarning`` ("unclosed socket") in the reader's thread, which the
check listens for. Every listener is drained (its waiting connections
accepted and closed) and closed whatever happens.
"""

import contextlib
import os
import socket
import threading
import time
import warnings

from epollbook import clients, probes
from epollbook.checks.harness import (
    ANSWER_SECONDS,
    SECONDS,
    CheckFailed,
    Running,
    fail_if_not_written,
    finish,
    passed,
    short,
)

DEADLINE = 0.3
"""The deadline the checks pass for one handshake: far above a loopback handshake on a busy machine (which completes
within the ``connect()`` call), far below the SYN's first retransmission (1 s)."""


# -- the kernel's view of our sockets ---------------------------------------------------------------


def _inode(sock):
    return f"socket:[{os.fstat(sock.fileno()).st_ino}]"


def _sockets_open():
    """``{'socket:[inode]': fd}`` of this process's sockets."""
    return {what: fd for fd, what in probes.open_fds(os.getpid()).items() if what.startswith("socket:")}


def _waiting(listener):
    """How many connections wait in the accept queue of *listener*, a listening socket.

    For a listening socket the kernel's ``TCP_INFO`` gives the queue's length
    in the field that otherwise counts unacknowledged segments (and the
    backlog in the next one): the socket's own view, without reading the
    machine's table of sockets, which holds tens of thousands of lines after
    a load test.
    """
    return probes.tcp_info(listener).unacked


def _wait_for_queue(listener, expected, timeout=SECONDS):
    """Wait until *expected* connections wait in *listener*'s accept queue; return how many do."""
    deadline = time.monotonic() + timeout
    while (waiting := _waiting(listener)) != expected and time.monotonic() < deadline:
        time.sleep(0.002)
    return waiting


def _wake_connects(address, own):
    """Shut down every socket of this process connected, or connecting, to *address* but those in *own*.

    ``shutdown()`` of a socket in SYN-SENT wakes a ``connect()`` blocked on it
    in another thread (it raises ``ConnectionResetError``); ``close()`` would
    not. It is done on a duplicate of the descriptor, which the reader's
    code never sees.
    """
    inodes = {f"socket:[{found.inode}]" for found in probes.tcp_sockets(address[1])
              if found.remote == address and found.inode}
    for what, fd in _sockets_open().items():
        if what in inodes and what not in own:
            with contextlib.suppress(OSError):  # closed by its owner meanwhile
                clients.wake_and_close(socket.socket(fileno=os.dup(fd)))


class _Listener:
    """A listening socket on 127.0.0.1 (or *host*) that never accepts, and the check's own clients of it."""

    def __init__(self, backlog, host="127.0.0.1", port=0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.clients = []
        try:
            self.sock.bind((host, port))
            self.sock.listen(backlog)
        except OSError:
            self.sock.close()
            raise
        self.address = self.sock.getsockname()

    def fill(self, count):
        """Connect *count* clients of the check's own, and wait until the kernel shows them all in the queue."""
        for _ in range(count):
            self.clients.append(socket.create_connection(self.address, timeout=ANSWER_SECONDS))
        waiting = _wait_for_queue(self.sock, len(self.clients))
        if waiting != len(self.clients):  # the check's own setup, not the reader's code, went wrong
            raise RuntimeError(f"the listener at {self.address} holds {waiting} connections, not "
                               f"{len(self.clients)}, after the check's clients connected")
        return self

    def own(self):
        return {_inode(self.sock)} | {_inode(client) for client in self.clients}

    def close(self):
        """Accept and close every connection waiting, close the check's clients, close the listener."""
        self.sock.setblocking(False)
        with contextlib.suppress(OSError):  # BlockingIOError: the queue is empty
            while True:
                connection, _ = self.sock.accept()
                connection.close()
        for client in self.clients:
            client.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


@contextlib.contextmanager
def _closed_port():
    """A port of 127.0.0.1 where nothing listens, held by a socket bound to it (so no one else takes it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()


# -- running the reader's code and what it leaves behind -------------------------------------------


class _Connecting:
    """The reader's *function* called with (*address*, *deadline*), watched for what it leaves open.

    It runs in a ``Running`` thread. ``left_open`` holds the sockets it left
    open once it returned; ``collected`` counts the sockets it dropped without
    closing, which the garbage collector closed (a ``ResourceWarning`` raised
    in its thread).
    """

    def __init__(self, function, address, deadline, own):
        self.shown = f"{getattr(function, '__name__', 'your function')}({short(address)}, {deadline:g})"
        before = set(_sockets_open())
        self.collected = 0
        with warnings.catch_warnings():
            warnings.simplefilter("always", ResourceWarning)
            self._show = warnings.showwarning
            warnings.showwarning = self._heard
            self.running = running = Running(function, address, deadline)
            if not running.finished.wait(deadline + SECONDS):
                _wake_connects(address, own)
                running.finished.wait(1.0)
                raise CheckFailed(f"{self.shown} did not return within {deadline + SECONDS:g} s: a blocking "
                                  "connect() whose SYN is dropped waits for ever (the SYN is sent again after 1 s, "
                                  "3 s, ...): give each handshake the deadline and no more"
                                  + ("" if running.finished.is_set() else
                                     " (it is still running in the background: restart the kernel to stop it)"))
        if running.error is not None:
            fail_if_not_written(function, running.error)
        self.left_open = set(_sockets_open()) - before - own

    def _heard(self, message, category, *args, **kwargs):
        # The garbage collector closes a dropped socket in the thread that dropped it: the reader's, named by Running.
        if issubclass(category, ResourceWarning) and threading.current_thread().name.startswith("exercise "):
            self.collected += "socket" in str(message)
        else:
            self._show(message, category, *args, **kwargs)

    def closed_everything(self, after):
        """Fail if the reader's code left a socket open, or to the garbage collector, *after* what it did."""
        if self.left_open:
            many = len(self.left_open)
            raise CheckFailed(f"expected every socket closed once {self.shown} returned, {after}; {many} "
                              f"{'is' if many == 1 else 'are'} still open: close each socket you open, the one "
                              "that never connected too")
        if self.collected:
            raise CheckFailed(f"expected every socket closed by your code once {self.shown} returned, {after}; "
                              f"{self.collected} {'was' if self.collected == 1 else 'were'} left for the garbage "
                              "collector to close (Python warned 'unclosed socket'): close each one, the one that "
                              "never connected too")


# -- completed_before_accept ---------------------------------------------------------------------------


def check_completed_before_accept(completed_before_accept, *, hidden=False):
    """Check ``completed_before_accept(address, deadline) -> int`` against listeners that never accept.

    The reader's code connects clients to *address* one at a time until one
    does not complete within *deadline* seconds, and returns how many did:
    the listener's backlog + 1 on Linux. Then every socket it opened must be
    closed, the one in SYN-SENT too, and the accept queue must still hold
    what it counted. *hidden* runs the cases graders keep hidden instead.
    """
    for backlog in (2, 7, 12) if hidden else (1, 4):
        with _Listener(backlog) as listener:
            expected = backlog + 1
            connecting = _Connecting(completed_before_accept, listener.address, DEADLINE, listener.own())
            running = connecting.running
            if running.error is not None:
                raise CheckFailed(f"expected {connecting.shown} to return how many connections completed; "
                                  f"{running.describe()}")
            answer, waiting = running.value, _waiting(listener.sock)
            about = f"for a listener with backlog {backlog} that never accepts"
            if isinstance(answer, bool) or not isinstance(answer, int):
                raise CheckFailed(f"expected a number {about}; completed_before_accept returned {short(answer)}")
            if answer != expected:
                hint = {
                    0: ": a non-blocking connect() raises BlockingIOError (EINPROGRESS), which means the handshake "
                       "is under way, not that it failed; wait until the socket is writable",
                    expected + 1: ": the last client, whose SYN was dropped, never completed; do not count it",
                }.get(answer, "")
                raise CheckFailed(f"expected {expected} {about} (its accept queue held {waiting} once your code "
                                  f"returned); completed_before_accept returned {answer}{hint}")
            if waiting != expected:
                raise CheckFailed(f"expected {expected} connections completed {about}; completed_before_accept "
                                  f"returned {answer}, but the accept queue held {waiting}: connect until one does "
                                  "not complete, and count")
            connecting.closed_everything(f"{about}")
        passed(f"completed_before_accept counted {expected} completed connections for backlog {backlog}, "
               "and closed every socket")


# -- how_connect_ended ------------------------------------------------------------------------------------

ENDINGS = ("connected", "refused", "no answer")

HINTS = {
    ("refused", "connected"): ": a socket that becomes writable has finished connecting, well or not; read SO_ERROR "
                              "to know which",
    ("no answer", "refused"): ": a timeout is not a refusal; a full queue drops the SYN, and the client hears nothing",
    ("no answer", "connected"): ": the handshake never completed; wait until the socket is writable, and read "
                                "SO_ERROR",
    ("refused", "no answer"): ": a refused connection ends at once, with ECONNREFUSED",
    ("connected", "no answer"): ": a non-blocking connect() raises BlockingIOError (EINPROGRESS) while the handshake "
                                "is under way; wait for it",
    ("connected", "refused"): ": a non-blocking connect() raises BlockingIOError (connect_ex() returns EINPROGRESS) "
                              "while the handshake is under way, which is no refusal; wait for it",
}


def _ask(how_connect_ended, address, deadline, own, expected, description):
    connecting = _Connecting(how_connect_ended, address, deadline, own)
    running = connecting.running
    if running.error is not None:
        raise CheckFailed(f"expected {expected!r} for {description}; {running.describe()}")
    answer = running.value
    if answer not in ENDINGS:
        raise CheckFailed(f"expected one of {', '.join(map(repr, ENDINGS))} for {description}; how_connect_ended "
                          f"returned {short(answer)}")
    if answer != expected:
        raise CheckFailed(f"expected {expected!r} for {description}; how_connect_ended returned {answer!r}"
                          + HINTS.get((expected, answer), ""))
    connecting.closed_everything(f"for {description}")
    passed(f"how_connect_ended said {expected!r} for {description}, and closed its socket")


def check_how_connect_ended(how_connect_ended, *, hidden=False):
    """Check ``how_connect_ended(address, deadline) -> 'connected' | 'refused' | 'no answer'``.

    'connected': the handshake completed within *deadline* seconds; 'refused':
    nothing listens there, and the kernel answered the SYN with a reset;
    'no answer': nothing came back within the deadline (a full accept queue
    drops the SYN). It must return within the deadline and a margin, and
    close its socket. *hidden* runs the cases graders keep hidden instead.
    """
    if hidden:
        with _Listener(2) as listener:
            listener.fill(2)
            _ask(how_connect_ended, listener.address, DEADLINE, listener.own(), "connected",
                 "a listener with backlog 2 and 2 connections waiting (one more fits)")
        with _Listener(3) as listener:
            listener.fill(4)
            _ask(how_connect_ended, listener.address, DEADLINE / 2, listener.own(), "no answer",
                 f"a listener with backlog 3 and 4 connections waiting, with a deadline of {DEADLINE / 2:g} s")
        with _Listener(1) as listener:
            listener.sock.shutdown(socket.SHUT_RDWR)  # still bound, no longer listening
            _ask(how_connect_ended, listener.address, DEADLINE, listener.own(), "refused",
                 "a listening socket that was shut down")
    else:
        with _Listener(4) as listener:
            _ask(how_connect_ended, listener.address, DEADLINE, listener.own(), "connected",
                 "a listener with room in its queue")
        with _closed_port() as address:
            _ask(how_connect_ended, address, DEADLINE, set(), "refused", "a port where nothing listens")
        with _Listener(1) as listener:
            listener.fill(2)
            _ask(how_connect_ended, listener.address, DEADLINE, listener.own(), "no answer",
                 "a listener with backlog 1 and 2 connections waiting")


# -- accept_queue_length ---------------------------------------------------------------------------------


READ_SECONDS = 15.0
"""How long ``accept_queue_length`` may take: reading /proc/net/tcp cannot hang, but on a machine that has just run
a load test it lists tens of thousands of sockets in TIME-WAIT, which take a busy core seconds to go through."""


def _length(accept_queue_length, address, expected, description):
    running = finish(Running(accept_queue_length, address),
                     f"accept_queue_length({short(address)}) did not return within {READ_SECONDS:g} s",
                     seconds=READ_SECONDS)
    answer, error = running.value, running.error
    if error is not None and not isinstance(error, LookupError):
        raise CheckFailed(f"expected {'LookupError' if expected is None else expected} for {description}; "
                          f"{running.describe()}")
    if error is not None:
        if expected is None:
            passed(f"accept_queue_length raised LookupError for {description}")
            return
        raise CheckFailed(f"expected {expected} for {description}; {running.describe()}")
    if expected is None:
        raise CheckFailed(f"expected LookupError for {description}; accept_queue_length returned {short(answer)}"
                          + (": only a socket in the LISTEN state (0A) has an accept queue" if answer else ""))
    if answer != expected or isinstance(answer, bool):
        hint = ""
        if f"{expected:x}".isdigit() and answer == int(f"{expected:x}") != expected:
            hint = ": /proc/net/tcp writes its numbers in hexadecimal"
        elif answer == 0:
            hint = ": rx_queue is the second number of tx_queue:rx_queue"
        raise CheckFailed(f"expected {expected} for {description}; accept_queue_length returned {short(answer)}{hint}")
    passed(f"accept_queue_length said {expected} for {description}")


def _twin_listeners(first_backlog, second_backlog):
    """Two ``_Listener``s on one port, on 127.0.0.1 and on 127.0.0.2; tries a few ports if the second is taken."""
    for _ in range(20):
        first = _Listener(first_backlog)
        try:
            return first, _Listener(second_backlog, host="127.0.0.2", port=first.address[1])
        except OSError:  # someone holds that port on 127.0.0.2: try another
            first.close()
    raise RuntimeError("could not listen on one port on both 127.0.0.1 and 127.0.0.2")


def check_accept_queue_length(accept_queue_length, *, hidden=False):
    """Check ``accept_queue_length(address) -> int``: the connections waiting for ``accept()``, from /proc/net/tcp.

    *address* is (host, port) of an IPv4 socket; the answer is the rx_queue of
    the socket in the LISTEN state at exactly that address. ``LookupError`` if
    no socket listens there (a connected socket's rx_queue counts bytes, not
    connections). *hidden* runs the cases graders keep hidden instead.
    """
    if hidden:
        with _Listener(32) as listener:
            listener.fill(16)
            _length(accept_queue_length, listener.address, 16, "a listener with 16 connections waiting")
        first, second = _twin_listeners(8, 8)
        with first, second:
            first.fill(2)
            second.fill(5)
            _length(accept_queue_length, first.address, 2,
                    f"the listener on {first.address[0]}:{first.address[1]}, with 2 waiting (another on "
                    f"{second.address[0]} of the same port has 5)")
            _length(accept_queue_length, second.address, 5,
                    f"the listener on {second.address[0]}:{second.address[1]}, with 5 waiting (another on "
                    f"{first.address[0]} of the same port has 2)")
        with clients.connected_pair() as (client, server_side):
            server_side.sendall(b"7 bytes")
            clients.wait_readable(client, SECONDS)
            _length(accept_queue_length, client.getsockname(), None,
                    "the address of a connected client holding 7 unread bytes")
    else:
        with _Listener(8) as listener:
            listener.fill(3)
            _length(accept_queue_length, listener.address, 3, "a listener with 3 connections waiting")
        with _Listener(8) as listener:
            _length(accept_queue_length, listener.address, 0, "a listener with none waiting")
        with _closed_port() as address:
            _length(accept_queue_length, address, None, "a port where nothing listens")
