"""Chapter 10's checks: ``ready_to_read``, ``seconds_per_wait`` and ``select_can_watch``.

The sockets the checks hand over are ends of ``socket.socketpair()``
connections; some are moved to descriptor numbers of 1024 and more
(``fcntl(F_DUPFD)``), with few descriptors open, because select()'s limit is
on the number. The descriptor limit is raised for the check, within the hard
limit, and put back after (``scale.fd_limit``); no check needs more than
about 4,000 descriptors, so a hard limit of 4,096 will do.

``seconds_per_wait`` is a measurement, and its check judges it by shape and
side by side, never by a time: the reader's figure for one wait must come
within ``MARGIN`` times the check's own, measured between the reader's calls
(timing the set-up too, or the wrong unit, lands hundreds of times away), and
poll's wait must grow with the sockets (watching only some of them does not).
"""

import contextlib
import fcntl
import numbers
import os
import resource
import select
import socket
import threading
import time

from epollbook import scale
from epollbook.checks.harness import CheckFailed, Running, call, finish, passed, short

MARGIN = 5
"""How many times the check's own figure for one wait the reader's may be, either way."""

MEASURE_SECONDS = 15.0
"""How long one call of seconds_per_wait may take before the check calls it stuck."""


# -- sockets at chosen descriptor numbers -------------------------------------------------------------------


def _epolls():
    """How many epoll descriptors this process has open now."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[eventpoll]"
    return count


def _moved(sock, number):
    """*sock* moved to descriptor *number* or the next free one above (the low one closed); a new socket object."""
    high = fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, number)
    sock.close()
    return socket.socket(fileno=high)


class _Sockets:
    """Connections for a case: ``ours`` (what the reader's code gets) and ``theirs`` (the other ends), all closed after.

    *at* maps an index to the lowest descriptor number that end must have.
    """

    def __init__(self, count, at=None):
        self.ours, self.theirs = [], []
        try:
            for index in range(count):
                mine, other = socket.socketpair()
                if at and index in at:
                    mine = _moved(mine, at[index])
                self.ours.append(mine)
                self.theirs.append(other)
        except BaseException:
            self.close()
            raise

    def close(self):
        for sock in self.ours + self.theirs:
            sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _described(socks, readable):
    fds = [sock.fileno() for sock in socks]
    numbers_shown = ", ".join(str(fd) for fd in fds) if len(fds) <= 6 else f"{min(fds)} to {max(fds)}"
    return f"{len(socks)} sockets (descriptors {numbers_shown}), {readable}"


# -- ready_to_read ------------------------------------------------------------------------------------------


def _judge_ready(ready_to_read, case, socks, expected, timeout, late=None):
    """Run one case; *late* is a socket to write a byte to 0.1 s after the call starts."""
    before = _epolls()
    shown = f"ready_to_read(<{case}>, {timeout})"
    if late is not None:
        timer = threading.Timer(0.1, lambda: late.send(b"!"))
        timer.start()
    started = time.monotonic()
    try:
        running = finish(Running(ready_to_read, socks, timeout),
                         f"{shown} did not return within 2 s: a timeout is in seconds (epoll's is too; "
                         "poll's is in milliseconds)", unblock=socks)
    finally:
        if late is not None:
            timer.cancel()
    took = time.monotonic() - started
    if isinstance(running.error, ValueError) and "out of range" in str(running.error):
        raise CheckFailed(f"expected {shown} to watch every socket; it raised ValueError: {running.error}: select() "
                          "refuses descriptor numbers of 1024 and more, so use epoll (or poll)")
    if running.error is not None:
        raise CheckFailed(f"expected {shown} to return the sockets ready to read; {running.describe()}"
                          ) from running.error
    left = _epolls() - before
    if left > 0:
        raise CheckFailed(f"expected {shown} to close what it opened; it left {left} epoll descriptor(s) open: "
                          "close the epoll object (a with block does it)")
    answer = running.value
    if not isinstance(answer, (list, tuple, set, frozenset)):
        raise CheckFailed(f"expected {shown} to return a list of sockets; it returned {short(answer)}")
    if any(isinstance(item, numbers.Integral) for item in answer):
        raise CheckFailed(f"expected {shown} to return the socket objects it was given, as select() does; it returned "
                          f"descriptor numbers {short(list(answer))}: map each number back to its socket")
    got, wanted = {id(item) for item in answer}, {id(sock) for sock in expected}
    if got != wanted or len(answer) != len(expected):
        said = ", ".join(f"fd {sock.fileno()}" if isinstance(sock, socket.socket) else short(sock) for sock in answer)
        ready = ", ".join(f"fd {sock.fileno()}" for sock in expected) or "none"
        raise CheckFailed(f"expected {shown} to return the sockets with something to read ({ready}); it returned "
                          f"[{said}] after {took:.2f} s")
    passed(f"ready_to_read returned the {len(expected)} ready socket(s) of {case}")


def check_ready_to_read(ready_to_read, *, hidden=False):
    """Check ``ready_to_read(sockets, timeout) -> list``: the sockets of *sockets* with something to read.

    As ``select.select(sockets, [], [], timeout)[0]``, but right for any
    descriptor number: waits at most *timeout* seconds for one to be ready,
    returns the socket objects themselves, and closes whatever it opened.
    Cases: one ready among low numbers, one ready at descriptor 1024 and
    more, none ready within the timeout; hidden: a byte that arrives while
    it waits, a peer that hangs up, 1,500 sockets.
    """
    if not callable(ready_to_read):
        Running(ready_to_read)  # says: pass the function itself
    with scale.fd_limit(scale.open_fds() + 3200):
        if not hidden:
            with _Sockets(3) as pairs:
                pairs.theirs[1].send(b"!")
                _judge_ready(ready_to_read, _described(pairs.ours, "the second with a byte waiting"),
                             pairs.ours, [pairs.ours[1]], 1.0)
            with _Sockets(2, at={1: 1024}) as pairs:
                pairs.theirs[1].send(b"!")
                _judge_ready(ready_to_read, _described(pairs.ours, "the one at the high number with a byte waiting"),
                             pairs.ours, [pairs.ours[1]], 1.0)
            with _Sockets(3, at={2: 1100}) as pairs:
                _judge_ready(ready_to_read, _described(pairs.ours, "none with anything to read"),
                             pairs.ours, [], 0.2)
            return
        with _Sockets(2, at={0: 1030}) as pairs:
            _judge_ready(ready_to_read, _described(pairs.ours, "a byte arriving 0.1 s after the call"),
                         pairs.ours, [pairs.ours[0]], 1.5, late=pairs.theirs[0])
        with _Sockets(3, at={1: 2500}) as pairs:
            pairs.theirs[1].close()
            _judge_ready(ready_to_read, _described(pairs.ours, "the one at 2500 hung up by its peer (EOF to read)"),
                         pairs.ours, [pairs.ours[1]], 1.0)
        with _Sockets(1500) as pairs:
            for index in (0, 777, 1499):
                pairs.theirs[index].send(b"!")
            _judge_ready(ready_to_read, _described(pairs.ours, "three with a byte waiting"),
                         pairs.ours, [pairs.ours[0], pairs.ours[777], pairs.ours[1499]], 1.0)


# -- seconds_per_wait ------------------------------------------------------------------------------------------


def _reference(kind, socks):
    """The check's own figure: seconds of CPU per wait of *kind* on *socks*, registered beforehand (median of 3)."""
    poller = select.epoll() if kind == "epoll" else select.poll()
    try:
        for sock in socks:
            poller.register(sock, select.EPOLLIN if kind == "epoll" else select.POLLIN)
        wait = (lambda: poller.poll(1.0)) if kind == "epoll" else (lambda: poller.poll(1000))
        batches = []
        for _ in range(3):
            started = time.thread_time()
            for _ in range(50):
                wait()
            batches.append((time.thread_time() - started) / 50)
        return sorted(batches)[1]
    finally:
        if kind == "epoll":
            poller.close()


def _measured(seconds_per_wait, kind, pairs):
    """One call of the reader's function on *pairs*' sockets; its figure, or ``CheckFailed`` saying what went wrong."""
    socks = pairs.ours
    before = _epolls()
    shown = f"seconds_per_wait({kind!r}, <{len(socks)} sockets>)"
    running = finish(Running(seconds_per_wait, kind, socks),
                     f"{shown} did not return within {MEASURE_SECONDS:g} s: a few hundred waits are enough, and a "
                     "wait must not wait (the first socket is always ready)", seconds=MEASURE_SECONDS,
                     unblock=pairs.theirs)
    if isinstance(running.error, ValueError) and "out of range" in str(running.error):
        raise CheckFailed(f"expected {shown} to measure {kind}; it raised ValueError: {running.error}: select() "
                          "refuses descriptor numbers of 1024 and more, and these go beyond")
    if running.error is not None:
        raise CheckFailed(f"expected {shown} to return the seconds one wait takes; {running.describe()}"
                          ) from running.error
    if _epolls() > before:
        raise CheckFailed(f"expected {shown} to close what it opened; it left {_epolls() - before} epoll "
                          "descriptor(s) open: close the epoll object when the measurement is done")
    figure = running.value
    if isinstance(figure, bool) or not isinstance(figure, numbers.Real) or not figure > 0:
        raise CheckFailed(f"expected {shown} to return the seconds one wait takes, a positive number; it returned "
                          f"{short(figure)}")
    if not _still_waiting(socks[0]):
        raise CheckFailed(f"expected {shown} to leave the first socket's byte unread, so that every wait finds it "
                          "ready; the byte was gone afterwards: measure the wait only, do not read")
    return float(figure)


def _still_waiting(sock):
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"!"
    except BlockingIOError:
        return False


def check_seconds_per_wait(seconds_per_wait, *, hidden=False):
    """Check ``seconds_per_wait(kind, sockets) -> float``: the seconds one wait of *kind* ("poll" or "epoll") takes.

    The wait watches every socket of *sockets* for reading; the first has a
    byte waiting, never to be read, so every wait returns at once; the
    set-up (making the poller, registering the sockets) is not part of the
    figure. The check calls it on 10 sockets and on 1,500 (hidden: 2,000)
    for both kinds, twice each, between measurements of its own: the
    smaller figure of each must come within ``MARGIN`` times the check's
    own, and poll's must grow with the sockets.
    """
    if not callable(seconds_per_wait):
        Running(seconds_per_wait)
    large = 2000 if hidden else 1500
    figures, ours = {}, {}
    with scale.fd_limit(scale.open_fds() + 2 * large + 200), _Sockets(10) as few, _Sockets(large) as many:
        for pairs in (few, many):
            pairs.theirs[0].send(b"!")
        for kind in ("poll", "epoll"):
            for pairs in (few, many):
                size = len(pairs.ours)
                theirs, mine = [], []
                for _ in range(2):  # taking turns: a busy moment of the machine falls on both
                    mine.append(_reference(kind, pairs.ours))
                    theirs.append(_measured(seconds_per_wait, kind, pairs))
                figures[kind, size], ours[kind, size] = min(theirs), min(mine)
    for kind in ("poll", "epoll"):
        for size in (10, large):
            theirs, mine = figures[kind, size], ours[kind, size]
            if theirs > MARGIN * mine:
                hint = ("is the figure in seconds, for one wait?" if theirs > 300 * mine else
                        "did you time the set-up too (making the poller, registering the sockets)? Start the "
                        "clock after it")
                raise CheckFailed(f"expected seconds_per_wait({kind!r}, <{size} sockets>) to be about what one wait "
                                  f"takes, {mine * 1e6:.1f} µs measured by the check side by side; it said "
                                  f"{theirs * 1e6:,.1f} µs, {theirs / mine:,.0f} times as much: {hint}")
            if theirs * MARGIN < mine:
                raise CheckFailed(f"expected seconds_per_wait({kind!r}, <{size} sockets>) to be about what one wait "
                                  f"takes, {mine * 1e6:.1f} µs measured by the check side by side; it said "
                                  f"{theirs * 1e6:.3f} µs, {mine / theirs:,.0f} times less: does the poller watch "
                                  "every socket it is given, and is the figure the seconds of one wait?")
    grew = figures["poll", large] / figures["poll", 10]
    if grew < MARGIN:
        raise CheckFailed(f"expected poll's wait on {large} sockets to cost many times its wait on 10 (the check's "
                          f"own: {ours['poll', large] / ours['poll', 10]:.0f} times); seconds_per_wait said "
                          f"{grew:.1f} times: does the poller watch every socket it is given?")
    passed(f"seconds_per_wait: poll {figures['poll', 10] * 1e6:.2f} µs on 10 sockets, "
           f"{figures['poll', large] * 1e6:.1f} µs on {large:,}; epoll {figures['epoll', 10] * 1e6:.2f} µs and "
           f"{figures['epoll', large] * 1e6:.2f} µs (the check's own: poll {ours['poll', 10] * 1e6:.2f} and "
           f"{ours['poll', large] * 1e6:.1f} µs, epoll {ours['epoll', 10] * 1e6:.2f} and "
           f"{ours['epoll', large] * 1e6:.2f} µs)")


# -- select_can_watch ---------------------------------------------------------------------------------------


def check_select_can_watch(select_can_watch, *, hidden=False):
    """Check ``select_can_watch(sock) -> bool``: True if ``select()`` accepts *sock*, False if it would refuse it.

    Sockets at low numbers, at 1023 and at 1024 with few descriptors open,
    the descriptor limit raised above 1024; hidden: at 3000, and at a low
    number while more than 1,024 descriptors are open. The socket must be
    left as it was (open, its byte unread).
    """
    if not callable(select_can_watch):
        Running(select_can_watch)
    if hidden:
        cases = [("a socket at descriptor 3000 or above", 3000, 0, False),
                 ("a socket at a low number while more than 1,024 descriptors are open", None, 1100, True),
                 ("a socket at descriptor 1025 or above", 1025, 0, False)]
    else:
        cases = [("a socket at a low number", None, 0, True),
                 ("a socket at descriptor 1023 (few descriptors open)", 1023, 0, True),
                 ("a socket at descriptor 1024 (few descriptors open)", 1024, 0, False)]
    with scale.fd_limit(scale.open_fds() + 3200):
        for description, number, extra, expected in cases:
            with _Sockets(1) as pair, _Sockets(extra // 2 + 1):
                sock = pair.ours[0]
                if number is not None:
                    sock = pair.ours[0] = _moved(sock, number)
                    if number == 1023 and sock.fileno() != 1023:  # taken by something of this process
                        continue
                pair.theirs[0].send(b"!")
                answer = call(select_can_watch, sock, letting_through=())
                if sock.fileno() == -1:
                    raise CheckFailed(f"expected select_can_watch to leave {description} open; it closed it")
                if not _still_waiting(sock):
                    raise CheckFailed(f"expected select_can_watch to leave {description} as it was; its byte was "
                                      "read: ask, do not read")
                if answer is not True and answer is not False:
                    raise CheckFailed(f"expected True or False for {description}; select_can_watch returned "
                                      f"{short(answer)}")
                if answer != expected:
                    open_now = scale.open_fds()
                    raise CheckFailed(f"expected {expected} for {description} (descriptor {sock.fileno()}, "
                                      f"{open_now} open, a limit of {_soft_limit()}); select_can_watch returned "
                                      f"{answer}: select()'s limit is on the descriptor's number")
            passed(f"select_can_watch said {expected} for {description}")


def _soft_limit():
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]

