"""Chapter 4's checks: ``serve_level``, ``echo`` and ``serve_without_leaks``.

``serve_level`` and ``serve_without_leaks`` are servers: each runs in a thread
on a listening socket the check made, and is stopped the way chapter 2's was,
by ``shutdown()`` of that socket (its event reports ``EPOLLIN|EPOLLHUP`` and
``accept()`` then raises ``OSError``, errno ``EINVAL``). ``echo`` serves one
connection the check holds the other end of.

A loop that spins is told from one that sleeps by watching its thread: a loop
that waits in ``poll()`` is asleep in the kernel nearly every time we look; one
whose ``poll()`` returns at once, again and again, never is. We look every
2 ms for a few tenths of a second and judge by the share of looks, never by
a time, so a loaded machine does not change the verdict.
"""

import contextlib
import os
import socket
import time

from epollbook import clients, probes
from epollbook.checks.harness import (
    ANSWER_SECONDS,
    SECONDS,
    CheckFailed,
    Running,
    ThreadWatcher,
    fail_if_not_written,
    finish,
    passed,
    short,
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


class _ServerUnderCheck:
    """The reader's server in a thread on the check's listening socket, and what clients see of it."""

    def __init__(self, function):
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.address = self.listener.getsockname()
        self.port = self.address[1]
        self.held = []  # the check's own client sockets, closed at the end whatever happens
        self.open_before = _sockets_open()
        try:
            self.running = Running(function, self.listener)
        except CheckFailed:  # not a function
            self.listener.close()
            raise
        self.name = getattr(function, "__name__", "your server")

    def connect(self):
        client = _connect(self.address)
        self.held.append(client)
        return client

    def fail_if_ended(self, after):
        running = self.running
        if running.finished.is_set():
            if running.error is not None:
                fail_if_not_written(running.function, running.error)
            raise CheckFailed(f"expected {self.name} to go on serving after {after}; {running.describe()}"
                              ) from running.error

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

    def answer_of(self, client, description):
        """Read *client*'s answer to the end: it must be a 200 answer, then the connection closed."""
        try:
            reply = clients.read_until_closed(client)
        except clients.NoEndOfAnswer as error:
            self.fail_if_ended(description)
            raise CheckFailed(f"expected an answer to {description}, then the connection closed; "
                              + ("none came" if not error.received else "the connection stayed open")
                              + f" within {ANSWER_SECONDS:g} s: never wait for one client while others are "
                              "ready, and look for the empty line in all the bytes each connection has sent so far"
                              ) from None
        if not _is_ok(reply):
            raise CheckFailed(f"expected a 200 answer to {description}; it got {short(reply)}")

    def nothing_yet(self, client, sent):
        """After settling, *client*, which sent only *sent*, must have no answer and an open connection."""
        self.running.settle()
        early = clients.peek(client)
        if early is not None:
            what = f"answered {short(early)}" if early else "closed the connection"
            raise CheckFailed(f"expected no answer before the empty line that ends a request; after only "
                              f"{short(sent)} on one connection {self.name} {what}: keep what each connection has "
                              "sent so far, and answer once it holds the empty line")

    def serves_interleaved(self, pieces_by_client, description):
        """Clients send their requests' pieces in turn; each is answered once its own request is complete.

        *pieces_by_client*: for each client, its request's pieces; the
        clients take turns, one piece each, so every request is cut up by the
        others' pieces, and those that finish first are answered while the
        others are still incomplete.
        """
        connections = [self.connect() for _ in pieces_by_client]
        sent = [b""] * len(connections)
        turns = max(map(len, pieces_by_client))
        for turn in range(turns):
            for number, (client, pieces) in enumerate(zip(connections, pieces_by_client, strict=True)):
                if turn < len(pieces):
                    client.sendall(pieces[turn])
                    sent[number] += pieces[turn]
                    if turn < len(pieces) - 1:
                        self.nothing_yet(client, sent[number])
                    else:
                        others = sum(len(p) > turn + 1 for p in pieces_by_client)
                        self.answer_of(client, f"a complete request ({description}) while "
                                       + ("no other was incomplete" if not others else "another client's was still "
                                          "incomplete" if others == 1 else f"{others} others were still incomplete"))
        passed(f"answered {description}, each once complete")

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
        passed(f"{self.name} left no socket and no epoll instance open")

    def close(self):
        # Shut down first and close only once the server has returned: a listening socket closed at once leaves
        # the epoll of the reader's code with no event to wake it, and its thread asleep for ever.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.running.finished.wait(SECONDS)
        self.listener.close()
        for client in self.held:
            client.close()


# -- serve_level ---------------------------------------------------------------------------------


def check_serve_level(serve_level, *, hidden=False):
    """Check ``serve_level(listener)``: one thread serving many clients at once, with level-triggered epoll.

    It must answer every complete request (its empty line ``\\r\\n\\r\\n``, or
    ``\\n\\n``) with a 200 answer and close that connection; keep each
    connection's bytes apart, so that requests arriving in pieces,
    interleaved with other clients' pieces, are each answered once complete
    and not before; go on serving after clients that hang up early or reset;
    and return once the listening socket is shut down. *hidden* runs the
    cases graders keep hidden instead.
    """
    request = clients.REQUEST
    server = _ServerUnderCheck(serve_level)
    try:
        server.still_serving("starting")
        if hidden:
            server.serves_interleaved([[b"GET / HTTP/1.0\n", b"Host: a\n", b"\n"],
                                       [b"GET / HTTP/1.0\r\n", b"\r", b"\n"],
                                       [request[:5], request[5:-2], request[-2:-1], request[-1:]]],
                                      "requests with bare LFs, and empty lines split across pieces")
            server.serves_interleaved([[request[i:i + 7] for i in range(0, len(request), 7)] for _ in range(8)],
                                      "eight clients sending 7 bytes at a time in turn")
            for served in range(20):
                server.still_serving(f"{served} requests in a row", report=False)
            passed("answered 20 polite clients in a row")
        else:
            # The second client finishes first, and each empty line comes in two pieces.
            server.serves_interleaved([[request[:16], request[16:-1], request[-1:]], [request[:-2], request[-2:]]],
                                      "two clients sending their requests in pieces, in turn")
            with clients.stalled_client(server.address):
                server.still_serving("a client that connected, sent one line and went quiet")
            for rude, after in [(clients.early_close_client, "a client that hung up before finishing its request"),
                                (clients.reset_client, "a client that reset the connection")]:
                with contextlib.suppress(OSError):
                    rude(server.address)
                server.still_serving(after)
        server.returns_once_shut_down()
    finally:
        server.close()


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
        if hidden:
            server.fd_left_by(lambda address: clients.reset_client(address, clients.REQUEST),
                              "a client reset the connection right after a complete request")
            for _ in range(10):
                with contextlib.suppress(OSError):
                    clients.early_close_client(server.address)
            server.fd_left_by(clients.early_close_client, "eleven clients in a row hung up early")
            server.connect().sendall(clients.FIRST_LINE)  # still connected, mid-request, when the server stops
            server.running.settle()
        else:
            server.fd_left_by(clients.early_close_client, "its client hung up before finishing its request")
            server.fd_left_by(clients.reset_client, "its client reset it")
        server.returns_once_shut_down()
        server.left_nothing_open()
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
