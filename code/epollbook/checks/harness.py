"""The harness every exercise check runs on.

Some facts about checking a reader's code against live sockets
---------------------------------------------------------------

A check calls the reader's function with real sockets it made itself (a
connected pair, a listening socket), drives real clients at them, and judges
what came back. Four facts shape how.

The reader's code runs in a thread of this process, not in a subprocess, so
that it can be handed sockets and its results inspected. A Python thread
cannot be killed. An answer that hangs is given up on after a time limit, and
the check then *shuts down* the sockets it handed over: ``shutdown()`` wakes a
thread blocked on a socket, while ``close()`` from another thread does not on
Linux (close(2)). A thread spinning in pure Python keeps spinning; the message
then says to restart the kernel.

Time limits catch code that hangs; they never judge speed. No verdict depends
on how fast a right answer is: each limit is many times what the book's
solutions need on a machine whose cores are all busy with something else (the
test suite grades the solutions under such a load).

Some verdicts need to know that the reader's code has done everything it is
going to do in response to something: "the server answered before the request
was complete" is only true once the server has had its chance to answer. A
fixed pause is a guess that a loaded machine proves wrong. ``Running.settle()``
waits instead until every thread the reader's code runs in is blocked in the
kernel, in a call of its own (``recv()``, ``accept()``, a sleep) and not in a
wait for a lock, which in Python is mostly the wait for the GIL, on the way back
to running. Then whatever that code sent has already reached our end of a
loopback connection. Threads that were there before (a notebook kernel has
several, waiting on locks for ever) are not the reader's and do not count.

Every check says what went wrong in one sentence, as ``CheckFailed`` (an
``AssertionError``), and prints one line per case that passed. An unsolved
stub (``raise NotImplementedError()``) fails with "not written yet".
"""

import contextlib
import fcntl
import os
import resource
import socket
import struct
import termios
import time

from epollbook import clients, probes

SECONDS = 2.0
"""How long the reader's code may take for one case before the check calls it stuck."""

ANSWER_SECONDS = 3.0
"""How long a polite client waits for a server's answer."""

PIECE_SECONDS = 0.25
"""How long a client sending in pieces waits for the reader's code to take one before it sends the next anyway."""

ENDINGS = {None: "and kept the connection open", "close": "then closed the connection",
           "reset": "then reset the connection"}
"""How a client that sent pieces ended, for a message; the keys are ``Running.feed``'s *end*."""


class CheckFailed(AssertionError):
    """An exercise's check failed; the message says what was expected and what happened."""


def passed(message):
    """Print one case that passed."""
    print(f"\N{HEAVY CHECK MARK} {message}")


def short(data, limit=60):
    """*data* as a literal of at most about *limit* characters, for a message."""
    text = repr(data)
    if len(text) <= limit:
        return text
    quote = text[-1] if text[-1] in "'\"" else ""
    return text[:limit - 4] + "..." + quote


# -- running the reader's code ----------------------------------------------


class Running(clients.Background):
    """The reader's *function* running in a thread (a ``clients.Background``), with what a check needs to judge it.

    ``finished``, ``value`` and ``error`` say how the call ended; ``thread_id``
    is the thread's id in the kernel, for watching where it waits.
    """

    def __init__(self, function, *args):
        if not callable(function):
            raise CheckFailed(f"expected your function, to run it; the check was given {type(function).__name__}: "
                              f"{short(function)} (pass the function itself, without calling it)")
        self.function = function
        self._threads_before = _threads()  # so that the threads the reader's code starts can be told apart
        super().__init__(function, *args, name=f"exercise {_name(function)}")
        self.thread_id = self.thread.native_id

    def settle(self, timeout=0.5):
        """Wait until the reader's code, in every thread it runs in, is blocked in the kernel, twice in a row.

        Then it has done all it will with what it was sent, and what it sent
        back has reached our end of the loopback connection. Returns False if
        that does not happen within *timeout* seconds (code that spins never
        blocks, a thread pool's idle workers wait on a lock): the caller goes
        on with what it has.
        """
        return _wait_until(lambda: all(_blocked(thread) for thread in _threads() - self._threads_before), timeout)

    def wait_until_taken(self, sock, timeout=1.0):
        """Wait until the reader's code has read every byte waiting on *sock* and blocks again, or has ended.

        Then the next piece a client sends arrives on its own, not glued to
        this one, however slow the machine. Returns False after *timeout*
        seconds if that does not happen.
        """
        return _wait_until(lambda: self.finished.is_set() or (unread_bytes(sock) == 0 and _blocked(self.thread_id)),
                           timeout)

    def feed(self, client, sock, pieces, *, end=None):
        """Send *pieces* from *client*, in a thread of its own, to the reader's code reading *sock*.

        Each piece goes out once the reader's code has read the one before and
        blocks again, so the pieces arrive one by one however busy the machine
        is. Then the client ends as *end* says: None (it stays connected),
        'close' or 'reset'. Returns the sender, a ``clients.Background``.
        """
        def send():
            with contextlib.suppress(OSError):  # the reader's code may have given up on the connection already
                for number, piece in enumerate(pieces):
                    if number:
                        self.wait_until_taken(sock, timeout=PIECE_SECONDS)
                    client.sendall(piece)
                if end == "close":
                    client.close()
                elif end == "reset":
                    clients.reset(client)

        return clients.Background(send, name="client")

    def describe(self):
        """What the call did, as the end of a sentence: "it returned ..." or "it raised ..."."""
        if not self.finished.is_set():
            return "it was still running"
        if self.error is None:
            return f"it returned {short(self.value)}"
        return f"it raised {type(self.error).__name__}: {' '.join(str(self.error).split())}"


def _name(function):
    return getattr(function, "__name__", "your function")


def fail_if_not_written(function, error):
    """Raise the stub's one-line ``CheckFailed`` if *error* is the stub's ``NotImplementedError``."""
    if isinstance(error, NotImplementedError):
        raise CheckFailed(f"{_name(function)} is not written yet (it raises NotImplementedError): "
                          "replace the stub with your code, run its cell, then this one") from None


def finish(running, stuck, *, seconds=SECONDS, unblock=()):
    """Wait for *running* to end; return it.

    If it is still running after *seconds*, wake it through the sockets in
    *unblock* and raise ``CheckFailed`` with the sentence *stuck*. A stub fails
    with "not written yet".
    """
    if not running.finished.wait(seconds):
        for sock in unblock:
            clients.wake_and_close(sock)
        running.finished.wait(1.0)
        raise CheckFailed(stuck + ("" if running.finished.is_set() else
                                   " (it is still running in the background: restart the kernel to stop it)"))
    if running.error is not None:
        fail_if_not_written(running.function, running.error)
    return running


def call(function, *args, letting_through=(OSError,)):
    """Call the reader's *function* under the time limit; return its value.

    Exceptions in *letting_through* are raised for the check to judge; any
    other becomes a ``CheckFailed`` that names it.
    """
    running = Running(function, *args)
    shown = f"{_name(function)}({', '.join(short(arg) for arg in args)})"
    running = finish(running, f"{shown} did not return within {SECONDS:g} s")
    if isinstance(running.error, letting_through):
        raise running.error
    if running.error is not None:
        raise CheckFailed(f"expected {shown} to return; it raised "
                          f"{type(running.error).__name__}: {' '.join(str(running.error).split())}"
                          ) from running.error
    return running.value


# -- waiting for the reader's code to be done ---------------------------------


def _wait_until(condition, timeout):
    """Poll *condition* every 2 ms until it holds twice in a row; return True, or False after *timeout* s."""
    deadline = time.monotonic() + timeout
    held_before = False
    while time.monotonic() < deadline:
        held = condition()
        if held and held_before:
            return True
        held_before = held
        time.sleep(0.002)
    return False


def unread_bytes(sock):
    """How many bytes wait on *sock* for a recv() (0 if it is closed)."""
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
    except (OSError, ValueError):
        return 0


class ThreadWatcher:
    """One thread of this process, watched through its /proc files, opened once.

    Opened once, they are read again with ``pread()``, which needs no new file
    descriptor: the watcher keeps working while ``no_file_descriptors_left()``
    holds. Close it when done (or use it in a ``with`` block).
    """

    def __init__(self, thread_id):
        directory = f"/proc/self/task/{thread_id}"
        self._stat = os.open(f"{directory}/stat", os.O_RDONLY)
        try:
            self._syscall = os.open(f"{directory}/syscall", os.O_RDONLY)
        except OSError:  # hidden by this kernel's rules: the state letter alone decides
            self._syscall = None

    def blocked(self):
        """True if the thread sleeps in a system call, and not for a lock (Python's GIL is one), or has ended."""
        try:
            state = probes.parse_stat(os.pread(self._stat, 4096, 0).decode()).state
            if state not in "SD":
                return state in "ZX"
            if self._syscall is None:
                return True
            number = probes.parse_syscall(os.pread(self._syscall, 4096, 0).decode())
        except (OSError, ValueError):  # ESRCH: the thread has ended
            return True
        return number is None or not probes.waiting_for_a_lock(probes.system_call_name(number))

    def wait_until_blocked(self, timeout):
        """Wait until ``blocked()`` holds twice in a row, 2 ms apart; return False if it does not within *timeout* s."""
        return _wait_until(self.blocked, timeout)

    def close(self):
        for fd in (self._stat, self._syscall):
            if fd is not None:
                os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _threads():
    """The ids of this process's threads."""
    return {int(task) for task in os.listdir("/proc/self/task")}


def _blocked(thread_id):
    try:
        with ThreadWatcher(thread_id) as watcher:
            return watcher.blocked()
    except OSError:  # the thread ended before its files could be opened
        return True


# -- a listening socket for the reader's server ----------------------------------------------


class RememberingListener(socket.socket):
    """A listening socket that remembers the connections it accepts, so the check can close them."""

    def accept(self):
        connection, address = super().accept()
        self.accepted.append(connection)
        return connection, address


def open_listener(backlog=16):
    """A ``RememberingListener`` on a free port of 127.0.0.1, for the reader's server to accept from.

    Its receive buffer is small (accepted sockets inherit it), so a client
    streaming without end is held back within a few hundred KiB.
    """
    listener = RememberingListener(socket.AF_INET, socket.SOCK_STREAM)
    listener.accepted = []
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    listener.bind(("127.0.0.1", 0))
    listener.listen(backlog)
    return listener


class ServerUnderCheck:
    """The reader's server *function* running in a thread on an ``open_listener()``, and what clients see of it.

    *name* is the function's name in the exercise, for messages; *arguments*
    follow the listening socket in the call, which is *listener* if given.
    Chapters subclass it with the clients their exercise needs. ``clients``
    holds the check's own client sockets, closed by ``close()`` whatever
    happens.
    """

    def __init__(self, name, function, *arguments, listener=None):
        self.name = name
        self.listener = open_listener() if listener is None else listener
        self.address = self.listener.getsockname()
        try:
            self.running = Running(function, self.listener, *arguments)
        except CheckFailed:  # not a function: nothing runs, and nothing may stay open
            self.listener.close()
            raise
        self.clients = []

    def fail_if_ended(self, after):
        """Raise ``CheckFailed`` if the server has returned or raised (after *after*)."""
        running = self.running
        if running.finished.is_set():
            if running.error is not None:
                fail_if_not_written(running.function, running.error)
            raise CheckFailed(f"expected {self.name} to go on serving after {after}; {running.describe()}"
                              ) from running.error

    def open_connections(self):
        """The connections the server accepted that are still open."""
        return [connection for connection in self.listener.accepted if connection.fileno() != -1]

    def returns_once_shut_down(self):
        """Close every client, shut the listener down: the reader's function must return."""
        for client in self.clients:
            client.close()
        self.running.settle()  # each connection's handler has seen its client go
        with contextlib.suppress(OSError):  # closed already, by the reader's code
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept(), which raises OSError (EINVAL); close() would not
        if not self.running.finished.wait(SECONDS):
            raise CheckFailed(f"expected {self.name} to return once its listening socket was shut down; it was still "
                              f"running {SECONDS:g} s later: when accept() raises OSError with errno EINVAL, return")
        if self.running.error is not None:
            raise CheckFailed(f"expected {self.name} to return once its listening socket was shut down; "
                              f"{self.running.describe()}") from self.running.error
        passed(f"{self.name} returned once its listening socket was shut down")

    def closed_every_connection(self, how):
        """Every connection the server accepted must be closed by now; *how* ends the message if not."""
        self.running.settle()
        accepted, still_open = self.listener.accepted, self.open_connections()
        if still_open:
            raise CheckFailed(f"expected every connection to be closed once its client was served or gone; "
                              f"{len(still_open)} of the {len(accepted)} it accepted are still open: {how}")
        passed(f"closed every one of the {len(accepted)} connections it accepted")

    def close(self):
        """Close everything the check opened and everything the reader's code accepted, whatever it kept open."""
        for client in self.clients:
            client.close()
        stop_listening(self.listener, self.running)
        for connection in getattr(self.listener, "accepted", ()):
            clients.wake_and_close(connection)


def stop_listening(listener, running):
    """Shut *listener* down, give the code in *running* ``SECONDS`` to return, then close *listener*.

    The shutdown wakes an ``accept()`` (it raises EINVAL) and an epoll that
    watches the listener (``EPOLLIN|EPOLLHUP``). Closing it at once could take
    that event with it, before the epoll's thread has woken for it, and leave
    that thread asleep for ever; so the close waits for the return.
    """
    with contextlib.suppress(OSError):  # closed already, by the reader's code
        listener.shutdown(socket.SHUT_RDWR)
    running.finished.wait(SECONDS)
    listener.close()


# -- a shortage of file descriptors -----------------------------------------------


@contextlib.contextmanager
def no_file_descriptors_left():
    """Within the block, any new file descriptor in this process fails with EMFILE ("Too many open files").

    The soft ``RLIMIT_NOFILE`` is lowered below every descriptor already open,
    as if the process had opened its fill, and put back when the block ends.
    Descriptors that are open stay usable. Keep the block short: it holds for
    every thread of the process.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (3, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
