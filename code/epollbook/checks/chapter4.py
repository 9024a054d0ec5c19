"""Chapter 4's checks: ``echo``, ``serve_without_leaks`` and ``poll_timeout``.

``serve_without_leaks`` is a server: it runs in a thread on a listening
socket the check made, and is stopped the way chapter 2's was, by
``shutdown()`` of that socket (its event reports ``EPOLLIN|EPOLLHUP`` and
``accept()`` then raises ``OSError``, errno ``EINVAL``). ``echo`` serves one
connection the check holds the other end of. ``poll_timeout`` is one step of
a loop: the check runs a server of its own that asks it, at every turn, how
long to wait in ``poll()``, and judges the answers by what the clients see.

A loop that spins is told from one that sleeps by watching its thread: a loop
that waits in ``poll()`` is asleep in the kernel nearly every time we look; one
whose ``poll()`` returns at once, again and again, never is. We look every
2 ms for a few tenths of a second and judge by the share of looks, never by
a time, so a loaded machine does not change the verdict.
"""

import contextlib
import os
import select
import socket
import threading
import time
from typing import NamedTuple

from epollbook import clients, probes
from epollbook.checks.harness import (
    ANSWER_SECONDS,
    SECONDS,
    CheckFailed,
    Running,
    ServerUnderCheck,
    ThreadWatcher,
    fail_if_not_written,
    finish,
    passed,
    short,
    stop_listening,
)

LOOK_SECONDS = 0.2
"""How long the check watches a thread to tell sleeping from spinning."""


def _spinning(running, seconds=LOOK_SECONDS):
    """Watch *running*'s thread for *seconds*; return None if it slept, else the share of a core it used.

    It slept if it was blocked in a system call (not a lock) in at least half
    the looks, taken every 2 ms.
    """
    cpu_before = probes.cpu_seconds(os.getpid(), running.thread_id)
    started, looks, asleep = time.monotonic(), 0, 0
    with ThreadWatcher(running.thread_id) as watcher:
        while time.monotonic() - started < seconds and not running.finished.is_set():
            looks += 1
            asleep += watcher.blocked()
            time.sleep(0.002)
    if running.finished.is_set() or asleep * 2 >= looks:
        return None
    with contextlib.suppress(OSError):  # the thread has ended since
        return (probes.cpu_seconds(os.getpid(), running.thread_id) - cpu_before) / (time.monotonic() - started)
    return 0.0


def _tcp_state(fd):
    """The TCP state of socket *fd* of this process, as the kernel's tables name it ('CLOSE_WAIT'), or None.

    From ``TCP_INFO``, whose first byte is the state: the socket's own view,
    without reading the machine's whole table of sockets.
    """
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            return probes.TCP_STATES.get(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0])
    except OSError:
        return None


def _connect(address):
    client = socket.create_connection(address, timeout=ANSWER_SECONDS)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def _is_ok(reply):
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0] + b" "


# -- a server on the check's listening socket ----------------------------------------------------


def _sockets_open():
    """``{what: fd}`` of this process's sockets (``'socket:[inode]'``), and its epoll instances' fds, as a set.

    Sockets are told apart by their inode; epoll instances all show the same
    name, so they are counted.
    """
    fds = probes.open_fds(os.getpid())
    return ({what: fd for fd, what in fds.items() if what.startswith("socket:")},
            {fd for fd, what in fds.items() if what == "anon_inode:[eventpoll]"})


class _ServerUnderCheck(ServerUnderCheck):
    """The reader's level-triggered server on the check's listening socket, and what clients see of it."""

    def __init__(self, function):
        listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.open_before = _sockets_open()  # before the reader's code can open anything
        super().__init__(getattr(function, "__name__", "your server"), function, listener=listener)
        self.port = self.address[1]
        self.held = self.clients

    def connect(self):
        client = _connect(self.address)
        self.held.append(client)
        return client

    def still_serving(self, after, report=True):
        """A polite client must get a 200 answer and the connection closed after it."""
        self.fail_if_ended(after)
        try:
            reply = clients.exchange(self.address, clients.REQUEST, timeout=ANSWER_SECONDS)
        except clients.NoEndOfAnswer as error:
            self.fail_if_ended(after)
            raise CheckFailed(f"expected an answer to a polite client after {after}, then the connection closed; "
                              + ("it got nothing" if not error.received else
                                 f"it got {short(error.received)} and the connection stayed open")
                              + f" within {ANSWER_SECONDS:g} s") from None
        except OSError as error:
            self.fail_if_ended(after)
            raise CheckFailed(f"expected an answer to a polite client after {after}; it got "
                              f"{type(error).__name__}: {error}") from None
        if not _is_ok(reply):
            raise CheckFailed(f"expected a 200 answer to a polite client after {after}; it got {short(reply)}")
        if report:
            passed(f"answered a polite client after {after}")

    def fd_left_by(self, rude_client, description):
        """Let *rude_client* do its worst; the connection's socket must be closed once the server is done with it."""
        with contextlib.suppress(OSError):  # what the rude client itself sees does not matter
            rude_client(self.address)
        slept = self.running.settle()
        self.fail_if_ended(description)
        left = self.sockets_left()
        spin = "" if slept else " (and its loop never went back to sleep in poll())"
        if any(_tcp_state(fd) == "CLOSE_WAIT" for fd in left):
            raise CheckFailed(f"expected the connection closed once {description}; {self.name} left it open, in "
                              f"CLOSE_WAIT{spin}: when recv() returns b'', unregister it and close() it")
        if left:
            raise CheckFailed(f"expected the connection closed once {description}; {self.name} still holds "
                              f"{len(left)} socket{'s' if len(left) > 1 else ''} of it open (fd "
                              f"{', '.join(map(str, sorted(left)))}){spin}: when recv() or send() raises "
                              "ConnectionError, unregister the connection and close() it")
        self.still_serving(description, report=False)
        passed(f"closed the connection after {description}, and answered the next client")

    def sockets_left(self):
        """fds of sockets opened since the check began that are still open, not counting its epoll and clients."""
        sockets, _ = _sockets_open()
        return {fd for what, fd in sockets.items() if what not in self.open_before[0] and what not in self._held()}

    def _held(self):
        return {f"socket:[{os.fstat(client.fileno()).st_ino}]" for client in self.held if client.fileno() != -1}

    def returns_once_shut_down(self):
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # its event: EPOLLIN|EPOLLHUP; accept(): OSError, EINVAL
        if not self.running.finished.wait(SECONDS):
            raise CheckFailed(f"expected {self.name} to return once its listening socket was shut down; it was "
                              f"still running {SECONDS:g} s later: when accept() raises OSError, close everything "
                              "and return")
        if self.running.error is not None:
            fail_if_not_written(self.running.function, self.running.error)
            raise CheckFailed(f"expected {self.name} to return once its listening socket was shut down; "
                              f"{self.running.describe()}") from self.running.error
        passed(f"{self.name} returned once its listening socket was shut down")

    def left_nothing_open(self):
        """Once returned, every connection and the epoll instance must be closed."""
        epolls_before = self.open_before[1]
        sockets_left = self.sockets_left()
        _, epolls = _sockets_open()
        epolls_left = sorted(epolls - epolls_before)[:max(0, len(epolls) - len(epolls_before))]
        if sockets_left or epolls_left:
            kinds = [f"{len(epolls_left)} epoll instance{'s' if len(epolls_left) > 1 else ''}"] if epolls_left else []
            kinds += [f"{len(sockets_left)} socket{'s' if len(sockets_left) > 1 else ''}"] if sockets_left else []
            raise CheckFailed(f"expected everything closed once {self.name} returned; it left {' and '.join(kinds)} "
                              f"open (fd {', '.join(map(str, sorted([*epolls_left, *sockets_left])))}): close every "
                              "connection, and the epoll object too")

    def leaks_nothing(self, hidden):
        """The rude clients of ``serve_without_leaks`` (the hidden ones if *hidden*), then the stop: nothing left."""
        if hidden:
            self.fd_left_by(lambda address: clients.reset_client(address, clients.REQUEST),
                            "a client reset the connection right after a complete request")
            for _ in range(10):
                with contextlib.suppress(OSError):
                    clients.early_close_client(self.address)
            self.fd_left_by(clients.early_close_client, "eleven clients in a row hung up early")
            self.connect().sendall(clients.FIRST_LINE)  # still connected, mid-request, when the server stops
            self.running.settle()
        else:
            self.fd_left_by(clients.early_close_client, "its client hung up before finishing its request")
            self.fd_left_by(clients.reset_client, "its client reset it")
        self.returns_once_shut_down()
        self.left_nothing_open()
        passed(f"{self.name} left no socket and no epoll instance open")


# -- serve_without_leaks -------------------------------------------------------------------------


def check_serve_without_leaks(serve_without_leaks, *, hidden=False):
    """Check ``serve_without_leaks(listener)``: a level-triggered server that leaves no connection open.

    After a client that hangs up early (``recv()`` returns ``b''``) and one
    that resets (``recv()`` raises ``ConnectionResetError``), no socket of
    that connection may stay open in this process (nor in ``CLOSE_WAIT`` in
    the kernel's table), and a polite client must still be answered. Once the
    listening socket is shut down it must return, leaving no socket and no
    epoll instance open. *hidden* runs the cases graders keep hidden instead:
    a client that resets right after a complete request (the answer's
    ``send()`` fails), ten early hang-ups in a row, and a client still
    connected when the server is stopped.
    """
    server = _ServerUnderCheck(serve_without_leaks)
    try:
        server.still_serving("starting")
        server.leaks_nothing(hidden)
    finally:
        server.close()


# -- echo --------------------------------------------------------------------------------------------


def _receive(running, client, size, description):
    """Read exactly *size* bytes from *client*, or fail saying what came (and how the reader's echo ended)."""
    received = bytearray()
    try:
        while len(received) < size:
            piece = client.recv(min(size - len(received), 1 << 20))
            if not piece:
                break
            received += piece
    except TimeoutError:
        pass
    if len(received) < size:
        ended = ""
        if running.finished.is_set():
            fail_if_not_written(running.function, running.error)
            ended = f", and {running.describe()}"
        raise CheckFailed(f"expected {size:,} bytes echoed back after {description}; "
                          f"{len(received):,} came within {ANSWER_SECONDS:g} s{ended}") from running.error
    return bytes(received)


def _send_everything(running, client, data, description):
    """Send *data* from *client* while the reader's echo reads it, nothing read back yet; fail if it cannot."""
    sender = clients.Background(client.sendall, data)
    if sender.finished.wait(SECONDS * 2) and sender.error is None:
        return
    if running.finished.is_set():
        fail_if_not_written(running.function, running.error)
        raise CheckFailed(f"expected echo to go on while the client sent {description}; {running.describe()}"
                          ) from running.error
    used = _spinning(running)
    if used is not None:
        raise CheckFailed(f"expected echo to keep reading while the client sent {description} without reading yet; "
                          f"the client could not send it all, and echo's thread never slept (it used {used:.0%} of a "
                          "core): when send() raises BlockingIOError, keep the rest, read on, and wait for EPOLLOUT")
    raise CheckFailed(f"expected echo to keep reading while the client sent {description} without reading yet; the "
                      "client could not send it all (is echo blocked in sendall()?): send what the socket takes, "
                      "keep the rest, and wait for EPOLLOUT")


def _sleeps(running, while_, advice):
    used = _spinning(running)
    if used is not None:
        raise CheckFailed(f"expected echo to sleep in poll() while {while_}; its thread never slept (it used "
                          f"{used:.0%} of a core): {advice}")


def check_echo(echo, *, hidden=False):
    """Check ``echo(connection)``: send back every byte the client sends, with a level-triggered epoll.

    It must echo bytes in order, however many and however fast; sleep in
    ``poll()``, not spin, while there is nothing to send (asking for
    ``EPOLLOUT`` only while bytes wait to be sent) and while the client does
    not read (its buffer is full, so the socket is not writable); and return
    once the client has closed its side (``recv()`` returns ``b''``) and every
    byte has been sent back. *hidden* runs the cases graders keep hidden
    instead.
    """
    with clients.connected_pair() as (client, server_side):
        client.settimeout(ANSWER_SECONDS)
        # Small send buffers at both ends: 1 MiB cannot hide in the kernel's buffers while the client does not read.
        for end in (client, server_side):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        running = Running(echo, server_side)
        try:
            if hidden:
                pieces = [bytes([65 + n]) * (n + 1) for n in range(12)]
                sender = running.feed(client, server_side, pieces)
                sender.result(SECONDS)
                data = b"".join(pieces)
                if _receive(running, client, len(data), "twelve small pieces") != data:
                    raise CheckFailed("expected twelve small pieces echoed back in order; they came back changed")
                passed("echoed twelve small pieces, in order")
                big = os.urandom(1 << 20)
                _send_everything(running, client, big, "1 MiB, then a half-close,")
                client.shutdown(socket.SHUT_WR)  # all sent, nothing read back yet
                running.settle()
                _sleeps(running, "the client had closed its side and was not reading",
                        "once recv() has returned b'', stop asking for EPOLLIN: it is reported at every poll from "
                        "then on")
                if _receive(running, client, len(big), "1 MiB and a half-close") != big:
                    raise CheckFailed("expected 1 MiB echoed back byte for byte; they came back changed")
                passed("echoed 1 MiB sent before a half-close while the client did not read, without spinning")
            else:
                client.sendall(b"hello")
                if _receive(running, client, 5, "b'hello'") != b"hello":
                    raise CheckFailed("expected b'hello' echoed back; something else came")
                passed("echoed b'hello'")
                running.settle()
                _sleeps(running, "there was nothing to send",
                        "ask for EPOLLOUT only while there are bytes waiting to be sent")
                passed("slept in poll() while there was nothing to send")
                big = os.urandom(1 << 20)
                _send_everything(running, client, big, "1 MiB")
                running.settle()
                _sleeps(running, "the client was not reading (the socket was not writable)",
                        "when send() raises BlockingIOError, keep the rest and wait for EPOLLOUT")
                if _receive(running, client, len(big), "1 MiB sent while the client did not read") != big:
                    raise CheckFailed("expected 1 MiB echoed back byte for byte; they came back changed")
                running.settle()
                _sleeps(running, "everything had been sent back",
                        "once every byte is sent, modify() the registration back to EPOLLIN alone")
                passed("echoed 1 MiB while the client was not reading, without spinning")
                client.shutdown(socket.SHUT_WR)
            finish(running, "expected echo to return once the client had closed its side and every byte was sent "
                   f"back; it was still running {SECONDS:g} s later", unblock=[server_side])
            if running.error is not None:
                raise CheckFailed(f"expected echo to return once the client closed its side; {running.describe()}"
                                  ) from running.error
            passed("echo returned once the client had closed its side")
        finally:
            clients.wake_and_close(server_side)
            running.finished.wait(SECONDS)


# -- poll_timeout ------------------------------------------------------------------------------------

DEADLINE_SECONDS = 0.3
"""How long after it is accepted the check's server closes a connection that has not been answered."""

LATE_SECONDS = 1.2
"""How long after its deadline a connection may still be open: many times a loaded machine's delay, and less than a
wrong answer's (a constant 5 s, milliseconds taken for seconds, the latest deadline taken for the earliest)."""

SLOW_SECONDS = 0.5
"""How long the check's server works on a request for ``/slow``: longer than a deadline, so one passes meanwhile."""

QUIET_SECONDS = 1.3
"""How long the hidden cases watch the server with no connection for a wake-up with nothing to do."""

EARLY_SECONDS = 0.02
"""A wake-up with no event this long before the earliest deadline had nothing to do. ``epoll.poll()`` rounds its
timeout up to a whole millisecond and does not return before it, so a right answer never wakes early; the margin
lets an answer rounded to the hundredth of a second pass."""

SLOW_REQUEST = b"GET /slow HTTP/1.0\r\n\r\n"

ANSWER = b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n"
"""What the check's server answers every complete request with."""


class _Call(NamedTuple):
    """One call of the reader's ``poll_timeout`` by the check's server."""

    now: float
    deadlines: dict  # {fd: deadline}, as handed over
    returned: object = None

    def shown(self):
        """The call as the reader would write it, deadlines relative to *now*: ``poll_timeout({7: now + 0.3}, now)``."""
        deadlines = ", ".join(f"{fd}: now {'+' if at >= self.now else '-'} {abs(at - self.now):.2f}"
                              for fd, at in self.deadlines.items())
        return f"poll_timeout({{{deadlines}}}, now)"

    def earliest(self):
        """Seconds from *now* to the earliest deadline (negative once it has passed), or None if there is none."""
        return min(self.deadlines.values()) - self.now if self.deadlines else None


class _DeadlineServer:
    """The check's own level-triggered server, which asks the reader's ``poll_timeout`` how long to wait.

    Each connection it accepts gets a deadline, ``seconds`` (an attribute the
    check sets) after it was accepted. Each turn, the loop calls
    ``poll_timeout(deadlines, time.monotonic())`` with a copy of
    ``{fd: deadline}``, passes what it returns to ``epoll.poll()``, closes every
    connection whose deadline has passed, then serves what is ready: a
    complete request is answered and its connection closed (a request for
    ``/slow`` keeps the loop busy ``SLOW_SECONDS`` first), and ``b''`` or an
    error closes the connection. Since only a passed deadline closes a
    connection, none is closed early: the reader's function decides how late.

    The loop stops once the listening socket is shut down, or as soon as the
    reader's function raises or returns what ``epoll.poll()`` refuses
    (``failure`` says which), and closes everything it opened either way. It
    records the first time ``poll()`` woke it with nothing to do (no event, no
    deadline passed) in ``woke_for_nothing``.
    """

    def __init__(self, poll_timeout):
        self.poll_timeout = poll_timeout
        self.seconds = DEADLINE_SECONDS
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.address = self.listener.getsockname()
        self.held = []  # the check's own client sockets, closed at the end whatever happens
        self.changed = threading.Condition()  # notified at every turn of the loop
        self.deadline_of = {}  # a client's port -> the deadline its connection got
        self.last_call = None  # the latest _Call
        self.calling_since = None  # when the reader's function was called, while it runs
        self.failure = None  # (_Call, the error) that stopped the loop
        self.woke_for_nothing = None  # (_Call, when poll() returned)
        self.slow_done = None  # when the last request for /slow was answered
        self.running = Running(self._serve)

    # -- the loop, in its own thread

    def _serve(self):
        conversations = {}  # fd -> (socket, bytes it sent so far)
        deadlines = {}  # fd -> when to close it
        try:
            with select.epoll() as epoll:
                epoll.register(self.listener, select.EPOLLIN)

                def end(fd):
                    epoll.unregister(fd)
                    conversations.pop(fd)[0].close()
                    deadlines.pop(fd, None)

                while self._turn(epoll, conversations, deadlines, end):
                    with self.changed:
                        self.changed.notify_all()
        finally:
            for sock, _ in conversations.values():
                sock.close()
            with self.changed:
                self.changed.notify_all()

    def _turn(self, epoll, conversations, deadlines, end):
        """One turn of the loop; False once it must stop."""
        call = _Call(time.monotonic(), dict(deadlines))
        self.calling_since = call.now
        try:
            returned = self.poll_timeout(dict(deadlines), call.now)  # a copy: what it does to it stays with it
        except Exception as error:
            self.failure = (call, error)
            return False
        finally:
            self.calling_since = None
        self.last_call = call = call._replace(returned=returned)
        try:
            ready = epoll.poll(returned)
        except (TypeError, ValueError, OverflowError) as error:  # not a number, NaN, too large
            self.failure = (call, error)
            return False
        woke = time.monotonic()
        passed_deadlines = [fd for fd, deadline in deadlines.items() if deadline <= woke]
        earliest = min(deadlines.values(), default=None)
        if not ready and self.woke_for_nothing is None and (earliest is None or earliest - woke > EARLY_SECONDS):
            self.woke_for_nothing = (call, woke)
        for fd in passed_deadlines:
            end(fd)
        for fd, _ in ready:
            if fd == self.listener.fileno():
                try:
                    sock, (_, port) = self.listener.accept()
                except BlockingIOError:
                    continue
                except OSError:  # EINVAL: the check shut the listening socket down
                    return False
                sock.setblocking(False)
                epoll.register(sock, select.EPOLLIN)
                conversations[sock.fileno()] = (sock, bytearray())
                deadlines[sock.fileno()] = self.deadline_of[port] = time.monotonic() + self.seconds
            elif fd in conversations:  # not closed at its deadline a moment ago
                self._serve_one(fd, *conversations[fd], end)
        return True

    def _serve_one(self, fd, sock, received, end):
        try:
            piece = sock.recv(4096)
        except BlockingIOError:  # the fd of a connection closed above, already reused
            return
        except OSError:
            piece = b""
        received += piece
        if piece and b"\r\n\r\n" not in received and b"\n\n" not in received:
            return
        if piece:
            if received.startswith(SLOW_REQUEST.split(b"\r\n")[0]):
                time.sleep(SLOW_SECONDS)  # a request that takes work: deadlines pass meanwhile
                self.slow_done = time.monotonic()
            with contextlib.suppress(OSError):
                sock.sendall(ANSWER)
        end(fd)

    # -- what the check asks

    def verify(self):
        """Raise ``CheckFailed`` if the loop stopped on the reader's function, or woke up with nothing to do."""
        if self.failure is not None:
            call, error = self.failure
            if call.returned is None:
                fail_if_not_written(self.poll_timeout, error)
                raise CheckFailed(f"expected {call.shown()} to return a timeout; it raised {type(error).__name__}: "
                                  f"{' '.join(str(error).split())}") from error
            raise CheckFailed(f"expected a number of seconds, or None; {call.shown()} returned {short(call.returned)}, "
                              f"and epoll.poll() refused it: {type(error).__name__}: {error}") from error
        if self.woke_for_nothing is not None:
            call, woke = self.woke_for_nothing
            returned = _number(call.returned)
            waited = f"epoll.poll({returned}) woke it after {woke - call.now:.2f} s with nothing to do"
            if call.earliest() is None:
                raise CheckFailed(f"expected the loop to sleep until the next event while no connection was open; "
                                  f"{waited}: with no deadline, return None (wait for the next event, however long)")
            raise CheckFailed(f"expected the loop to wake up at the earliest deadline or for an event; {waited}, "
                              f"{call.earliest() - (woke - call.now):.2f} s before that deadline: {call.shown()} "
                              f"returned {returned}; return the seconds until the earliest deadline")

    def _fail_if_stuck(self, what):
        since = self.calling_since
        if since is not None and time.monotonic() - since >= SECONDS:
            raise CheckFailed(f"expected poll_timeout to return at once; it had not after {SECONDS:g} s, and {what} "
                              "(it is still running in the background: restart the kernel to stop it)")

    def connect(self, sent=b"", seconds=DEADLINE_SECONDS):
        """A client that sends *sent*, then nothing; returns (its socket, its deadline) once the loop accepted it."""
        self.seconds = seconds
        client = _connect(self.address)
        self.held.append(client)
        client.sendall(sent)
        port = client.getsockname()[1]
        with self.changed:
            self.changed.wait_for(lambda: port in self.deadline_of or self.running.finished.is_set(), SECONDS)
        self.seconds = DEADLINE_SECONDS
        self.verify()
        self._fail_if_stuck("no connection was accepted meanwhile")
        if port not in self.deadline_of:
            raise CheckFailed(f"expected the loop to accept a client within {SECONDS:g} s; it did not, and "
                              f"{self.running.describe()}")
        return client, self.deadline_of[port]

    def still_serving(self, after, request=clients.REQUEST):
        """A polite client must get a 200 answer and the connection closed after it."""
        try:
            reply = clients.exchange(self.address, request, timeout=ANSWER_SECONDS + SLOW_SECONDS)
        except OSError as error:
            self.verify()
            self._fail_if_stuck("a polite client got no answer")
            raise CheckFailed(f"expected an answer to a polite client {after}; it got {type(error).__name__}: "
                              f"{error}") from None
        self.verify()
        if not _is_ok(reply):
            raise CheckFailed(f"expected a 200 answer to a polite client {after}; it got {short(reply)}")
        passed(f"answered a polite client {after}")

    def asleep(self, while_, advice):
        """The loop's thread must be found asleep in ``poll()`` while *while_*."""
        self.running.settle()
        used = None
        with contextlib.suppress(OSError):  # the loop has ended: verify() says why
            used = _spinning(self.running)
        if used is not None:  # said before any wake-up with nothing to do: a spin is the bigger news
            call = self.last_call
            raise CheckFailed(f"expected the loop to sleep in epoll.poll() while {while_}; its thread never slept "
                              f"(it used {used:.0%} of a core): {call.shown()} returned {_number(call.returned)}, "
                              f"and epoll.poll({_number(call.returned)}) returns at once; {advice}")
        self.verify()
        passed(f"the loop slept in epoll.poll() while {while_}")

    def quiet_until(self, until):
        """The loop must not wake up with nothing to do before monotonic time *until* (no connection open)."""
        with self.changed:
            self.changed.wait_for(lambda: self.woke_for_nothing or self.failure or self.running.finished.is_set(),
                                  max(0.0, until - time.monotonic()))
        self.verify()
        passed(f"the loop did not wake up for {QUIET_SECONDS:g} s while no connection was open")

    def closed_in_time(self, client, deadline, description, *, busy=False):
        """*client* must see its connection closed within ``LATE_SECONDS`` of *deadline*.

        *busy*: the deadline passed while the loop worked on a slow request;
        the time then counts from the end of that work.
        """
        start = max(deadline, self.slow_done or deadline) if busy else deadline
        closed = _closed_by(client, start + LATE_SECONDS)
        self.verify()
        self._fail_if_stuck(f"{description} was not closed")
        if not closed:
            after = "the slow request was answered" if busy else "its deadline"
            raise CheckFailed(f"expected {description} to be closed once its deadline had passed; it was still open "
                              f"{LATE_SECONDS:g} s after {after}: {_why_late(self.last_call)}")
        passed(f"closed {description} soon after its deadline")

    def stop(self):
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # its event: EPOLLIN|EPOLLHUP; accept(): OSError, EINVAL
        finish(self.running, f"expected the loop to stop once its listening socket was shut down; it was still "
               f"running {SECONDS:g} s later: does poll_timeout return?")
        self.verify()
        if self.running.error is not None:
            raise self.running.error  # the check's own loop failed: not the reader's doing

    def close(self):
        for client in self.held:
            client.close()
        stop_listening(self.listener, self.running)


def _closed_by(client, limit):
    """Wait until monotonic time *limit* for the other end of *client* to close; return True if it did."""
    while (left := limit - time.monotonic()) > 0:
        client.settimeout(left)
        try:
            if not client.recv(4096):
                return True
        except TimeoutError:
            return False
        except OSError:  # reset: closed too
            return True
    return False


def _number(value):
    """*value* for a message: a float to the millisecond, anything else as Python shows it."""
    return repr(round(value, 3)) if isinstance(value, float) else short(value)


def _why_late(call):
    """Why the loop slept past a deadline, from the last call of ``poll_timeout``, as the end of a sentence."""
    if call is None or call.earliest() is None:
        return "poll_timeout was never asked with that deadline"
    returned, earliest = call.returned, call.earliest()
    said, waits = f"{call.shown()} returned {_number(returned)}", f"epoll.poll({_number(returned)}) waits"
    due = f"{earliest:.2f} s away" if earliest >= 0 else f"passed {-earliest:.2f} s before"
    if returned is None or returned < 0:
        if earliest < 0 and returned is not None:
            return (f"{said} once that deadline had passed, and {waits} for ever (only the next event can wake "
                    "the loop then): never return a negative number; return 0 once a deadline has passed")
        return (f"{said} while a deadline was {due}, and {waits} for the next event only: return the seconds "
                "until the earliest deadline")
    latest = max(call.deadlines.values()) - call.now
    if earliest > 0 and 500 * earliest <= returned <= 2000 * earliest:
        return (f"{said} for a deadline {due}: that is milliseconds, and epoll.poll() takes seconds "
                "(select.poll()'s poll() takes milliseconds)")
    if latest > earliest + 0.1 and abs(returned - latest) < 0.05:
        return (f"{said}, the time until the latest deadline; the earliest was {due}: wait for the earliest one "
                "(min, not max)")
    return (f"{said} when the earliest deadline was {due}: return the seconds until the earliest deadline, 0 if "
            "it has passed")


def check_poll_timeout(poll_timeout, *, hidden=False):
    """Check ``poll_timeout(deadlines, now)``: how long a loop's ``epoll.poll()`` waits for its earliest deadline.

    *deadlines* is ``{fd: a time.monotonic() deadline}``, *now* the current
    monotonic time. The check runs a level-triggered server of its own that
    asks ``poll_timeout`` at every turn (see ``_DeadlineServer``), with real
    clients. The loop must sleep, not spin, while no connection is open
    (None, or a negative number, waits for the next event); clients that send
    nothing, or half a request, must be closed soon after their deadline,
    also when it passed while the loop was busy (0, never a negative number,
    once a deadline has passed: ``epoll.poll(-0.2)`` waits for ever); polite
    clients are answered meanwhile; and the loop must never wake up with
    nothing to do. *hidden* runs the cases graders keep hidden instead: no
    wake-up at all for over a second with no connection, a deadline 5 s away
    beside one 0.3 s away, and one that passes while the loop is busy beside
    it.
    """
    if not callable(poll_timeout):
        Running(poll_timeout)  # raises the harness's one sentence: pass the function itself
    server = _DeadlineServer(poll_timeout)
    started = time.monotonic()
    nothing_open = "with no connection open, return None (wait for the next event)"
    try:
        server.asleep("no connection was open", nothing_open)
        if hidden:
            server.quiet_until(started + QUIET_SECONDS)
            server.connect(seconds=5.0)  # a far deadline, which must not hide the near one
            near, deadline = server.connect(clients.FIRST_LINE)
            server.asleep("two connections waited for their deadlines, 5 s and 0.3 s away",
                          "return the seconds until the earliest deadline")
            server.closed_in_time(near, deadline, "a client that sent half a request (beside one whose deadline was "
                                  "5 s away)")
            idle, deadline = server.connect()
            server.still_serving("that needed half a second of work", SLOW_REQUEST)
            server.closed_in_time(idle, deadline, "a client that sent nothing (its deadline passed while the loop "
                                  "was busy)", busy=True)
            server.still_serving("while a connection waited for a deadline 5 s away")
        else:
            server.still_serving("first")
            idle, idle_deadline = server.connect()
            half, half_deadline = server.connect(clients.FIRST_LINE)
            server.still_serving("while two clients waited for their deadlines")
            server.closed_in_time(idle, idle_deadline, "a client that sent nothing")
            server.closed_in_time(half, half_deadline, "a client that sent half a request")
            idle, deadline = server.connect()
            server.still_serving("that needed half a second of work", SLOW_REQUEST)
            server.closed_in_time(idle, deadline, "a client that sent nothing (its deadline passed while the loop was "
                                  "busy)", busy=True)
        server.stop()
    finally:
        server.close()
