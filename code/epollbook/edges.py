"""Chapter 5's experiments with edge-triggered epoll, each bounded in time and cleaned up.

    empty_reads(sock, seconds=0.2)              the article's drain loop on a closed peer, for *seconds* only
    fairness(reads_per_event=None)              how long a quiet client waits beside a busy one
    two_threads(oneshot)                        two threads on one epoll: do they handle one fd at once?
    wakeups(instances=4, exclusive=False)       how many epoll instances one new connection wakes
    descriptors_limited(pid, free=0)            a process (this one or a child) left *free* descriptors
    descriptor_table_full(free=0)               the same for this process, every number below the limit taken

Some facts about edge-triggered epoll that shape these
------------------------------------------------------

With ``EPOLLET`` the kernel reports a file descriptor when it *becomes* ready
(bytes arrive, a connection completes, the peer closes), once, and not again
until something new happens. So a program that stops before it has taken
everything (one ``recv()`` where two were needed, an ``accept()`` loop that
gives up on ``EMFILE``) gets no second reminder: what is left waits until the
next arrival, which may never come. The other side of the coin: a handler that
takes everything from a client that keeps sending keeps the others waiting
(``fairness``). ``EPOLLONESHOT`` reports an fd once and then *disarms* its
registration, which stays in the interest list until ``modify()`` re-arms it;
that is what keeps two threads waiting on one epoll from handling the same
connection at once (``two_threads``). ``EPOLLEXCLUSIVE`` wakes one (or a few)
of the epoll instances that watch one listener, instead of all (``wakeups``).

A limit on file descriptors is a limit on their *numbers*: a new descriptor
takes the lowest free number, and fails with ``EMFILE`` if that is not below
the soft ``RLIMIT_NOFILE``; descriptors already open above it stay usable.
``descriptors_limited`` sets the limit just past a process's *free* lowest
free numbers. ``descriptor_table_full`` sets it *free* above this process's
highest number and first takes every free number below, so that closing any
descriptor that was open before gives exactly one back (the spare descriptor
of an accept loop relies on that).
"""

import contextlib
import dataclasses
import os
import resource
import select
import socket
import subprocess
import sys
import threading
import time

__all__ = ["Fairness", "Race", "descriptor_table_full", "descriptors_limited", "empty_reads", "fairness",
           "two_threads", "wakeups"]


def empty_reads(sock, seconds=0.2):
    """Run the article's drain loop, ``request += sock.recv(1024)`` until it raises, for at most *seconds*.

    On a connection whose peer has closed, ``recv()`` returns ``b''`` at once,
    every time, and never raises: the article's loop would go on for ever.
    Returns ``(calls, cpu_seconds)``: how many times ``recv()`` returned in that
    time, and the CPU time this thread used meanwhile. Raises what ``recv()``
    raises, other than ``BlockingIOError`` (the article's end of the loop).
    """
    request, calls = b"", 0
    cpu, deadline = time.thread_time(), time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:  # the article's loop has no such deadline
            request += sock.recv(1024)
            calls += 1
    except BlockingIOError:
        pass
    return calls, time.thread_time() - cpu


# -- fairness ----------------------------------------------------------------------------

_SENDER = """
import socket, sys, time
connection = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
chunk = b"x" * 65536
deadline = time.monotonic() + float(sys.argv[2])
try:
    while time.monotonic() < deadline:
        connection.sendall(chunk)
except OSError:
    pass
"""


@dataclasses.dataclass
class Fairness:
    """What ``fairness()`` measured."""

    reads_per_event: int | None  # the cap on recv() calls per event (None: until BlockingIOError)
    quiet_wait: float | None     # seconds from the quiet client's request to its first byte read (None: never)
    busy_bytes: int              # bytes read from the busy client meanwhile


def fairness(reads_per_event=None, *, seconds=1.0, chunk=65536, work=None):
    """Serve a busy client and a quiet one on one edge-triggered epoll; measure how long the quiet one waits.

    The busy client is a separate process that sends as fast as it can for at
    most *seconds*. The quiet one sends a request once the busy one is going.
    The loop handles events in the order epoll reports them: the busy client,
    ready first, comes first. With *reads_per_event* None it reads each ready
    connection (``recv(chunk)``) until ``BlockingIOError``; with a number it
    stops after that many reads and comes back to the connection after the
    others had their turn (no new edge would remind it). *work*, if given, is
    called on each chunk read, as a server's handling of what it reads would
    be (``hashlib.sha256``, say). Returns ``Fairness``.
    """
    epoll = select.epoll()
    with socket.create_server(("127.0.0.1", 0)) as listener, contextlib.ExitStack() as cleanup:
        cleanup.callback(epoll.close)
        port = listener.getsockname()[1]
        sender = subprocess.Popen([sys.executable, "-c", _SENDER, str(port), str(seconds)])
        cleanup.callback(sender.wait)
        cleanup.callback(sender.kill)
        listener.settimeout(10.0)
        busy, _ = listener.accept()
        cleanup.enter_context(busy)
        busy.setblocking(False)
        _wait_for_bytes(busy, chunk)
        quiet_client = cleanup.enter_context(socket.create_connection(("127.0.0.1", port)))
        quiet, _ = listener.accept()
        cleanup.enter_context(quiet)
        quiet.setblocking(False)
        connections = {busy.fileno(): busy, quiet.fileno(): quiet}
        for fd in connections:
            epoll.register(fd, select.EPOLLIN | select.EPOLLET)
        quiet_client.sendall(b"GET / HTTP/1.0\r\n\r\n")
        _wait_for_bytes(quiet, 1)
        asked = time.monotonic()
        answered, busy_bytes, unfinished = None, 0, []
        while answered is None and time.monotonic() - asked < seconds:
            ready = unfinished + [fd for fd, _ in epoll.poll(0 if unfinished else seconds)]
            unfinished = []
            for fd in dict.fromkeys(ready):  # in order, each once
                reads = 0
                while reads_per_event is None or reads < reads_per_event:
                    try:
                        data = connections[fd].recv(chunk)
                    except BlockingIOError:
                        break
                    reads += 1
                    if not data:
                        break
                    if fd == quiet.fileno():
                        answered = answered or time.monotonic()
                    else:
                        busy_bytes += len(data)
                        if work is not None:
                            work(data)
                else:  # stopped at the cap: more may wait, and no edge will say so
                    unfinished.append(fd)
    return Fairness(reads_per_event, None if answered is None else answered - asked, busy_bytes)


def _wait_for_bytes(sock, count, timeout=5.0):
    """Wait until at least *count* bytes wait on *sock*, without reading them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(BlockingIOError):
            if len(sock.recv(count, socket.MSG_PEEK)) >= count:
                return
        time.sleep(0.001)
    raise TimeoutError(f"fewer than {count} bytes arrived within {timeout:g} s")


# -- two threads, one epoll ------------------------------------------------------------------


@dataclasses.dataclass
class Race:
    """What ``two_threads()`` saw."""

    oneshot: bool
    handled_by: list   # the thread that woke for each event, in order ('A' or 'B')
    at_once: int       # events that woke a thread while the other still handled the same connection


def two_threads(oneshot, *, pieces=3, handling=0.1):
    """Two threads wait on one edge-triggered epoll for one connection; a client sends *pieces* bytes one by one.

    Each thread, woken for the connection, takes *handling* seconds to handle
    it (a request's work), then reads what waits; with *oneshot* the
    registration has ``EPOLLONESHOT`` and the thread re-arms it with
    ``modify()`` when done. The pieces go out faster than one is handled.
    Returns a ``Race``.
    """
    flags = select.EPOLLIN | select.EPOLLET | (select.EPOLLONESHOT if oneshot else 0)
    handled_by, handling_now, at_once = [], set(), 0
    lock = threading.Lock()
    epoll = select.epoll()
    listener = socket.create_server(("127.0.0.1", 0))
    with epoll, listener, socket.create_connection(listener.getsockname()) as client:
        connection, _ = listener.accept()
        with connection:
            connection.setblocking(False)
            epoll.register(connection, flags)
            stop = threading.Event()

            def worker(name):
                nonlocal at_once
                while not stop.is_set():
                    for fd, _ in epoll.poll(0.02):
                        with lock:
                            at_once += fd in handling_now
                            handling_now.add(fd)
                            handled_by.append(name)
                        time.sleep(handling)
                        with contextlib.suppress(BlockingIOError):
                            while connection.recv(4096):
                                pass
                        with lock:
                            handling_now.discard(fd)
                        if oneshot:
                            epoll.modify(fd, flags)  # handled: report it again when something new arrives

            threads = [threading.Thread(target=worker, args=(name,), daemon=True) for name in "AB"]
            for thread in threads:
                thread.start()
            for _ in range(pieces):
                client.sendall(b"x")
                time.sleep(handling / 4)
            time.sleep(handling * 2)  # the last piece handled
            stop.set()
            for thread in threads:
                thread.join(5.0)
    return Race(oneshot, handled_by, at_once)


# -- EPOLLEXCLUSIVE ------------------------------------------------------------------------------


def wakeups(instances=4, *, exclusive=False, timeout=0.5):
    """How many of *instances* epoll instances, each waited on by a thread of its own, one new connection wakes.

    Every instance watches the same listening socket for ``EPOLLIN``, with
    ``EPOLLEXCLUSIVE`` if *exclusive*. Once every thread waits, one client
    connects. Returns the number of threads whose ``poll()`` reported the
    listener within *timeout* seconds.
    """
    flags = select.EPOLLIN | (select.EPOLLEXCLUSIVE if exclusive else 0)
    with socket.create_server(("127.0.0.1", 0)) as listener, contextlib.ExitStack() as cleanup:
        listener.setblocking(False)
        epolls = [cleanup.enter_context(select.epoll()) for _ in range(instances)]
        for epoll in epolls:
            epoll.register(listener, flags)
        woken = []
        waiting = threading.Barrier(instances + 1)

        def wait(epoll):
            waiting.wait()
            if epoll.poll(timeout):
                woken.append(epoll)

        threads = [threading.Thread(target=wait, args=(epoll,), daemon=True) for epoll in epolls]
        for thread in threads:
            thread.start()
        waiting.wait()
        time.sleep(0.05)  # every thread inside poll()
        with socket.create_connection(listener.getsockname()):
            for thread in threads:
                thread.join(timeout + 1.0)
    return len(woken)


# -- running out of descriptors ------------------------------------------------------------------


def _open_numbers(pid):
    numbers = [int(name) for name in os.listdir(f"/proc/{pid}/fd")]
    if pid in ("self", os.getpid()):  # the listing saw its own descriptor, closed since
        numbers = [number for number in numbers if _is_open(number)]
    return numbers


def _is_open(number):
    try:
        os.fstat(number)
    except OSError:
        return False
    return True


def _lowest_free(numbers, count):
    """The *count* + 1 lowest numbers from 0 up that are not in *numbers*."""
    free, number = [], 0
    while len(free) <= count:
        if number not in numbers:
            free.append(number)
        number += 1
    return free


@contextlib.contextmanager
def descriptors_limited(pid, free=0):
    """Within the block, process *pid* (this user's) can open *free* more descriptors, then gets EMFILE.

    Its soft ``RLIMIT_NOFILE`` is lowered to the number just past its *free*
    lowest free numbers (every descriptor it has stays usable), and put back
    when the block ends; a descriptor it closes meanwhile frees a number below
    the limit only if it was below it. Yields the limit. Raises
    ``PermissionError`` for another user's process.
    """
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    limit = _lowest_free(set(_open_numbers(pid)), free)[-1]
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield limit
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def descriptor_table_full(free=0):
    """Within the block, this process can open exactly *free* more descriptors, then gets EMFILE.

    Every free number below the new limit is taken by a descriptor of
    ``/dev/null`` first, so closing a descriptor that was open before the
    block gives back exactly one. Both are undone when the block ends. Keep
    the block short: it holds for every thread of the process.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = max(_open_numbers("self")) + 1
    fillers = []
    try:
        while (number := os.open(os.devnull, os.O_RDONLY)) < top:  # the lowest free number comes first
            fillers.append(number)
        os.close(number)
        resource.setrlimit(resource.RLIMIT_NOFILE, (top + free, hard))
        yield top + free
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for number in fillers:
            os.close(number)
