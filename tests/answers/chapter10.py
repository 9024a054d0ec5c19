"""Answers to chapter 10's exercises, as students write them: wrong ones, and right ones written differently."""

import os
import resource
import select
import selectors
import time

from epollbook import checks

# -- ready_to_read: wrong -----------------------------------------------------------------------


def still_select(sockets, timeout):
    return select.select(sockets, [], [], timeout)[0]


_KEPT = []


def one_epoll_kept_for_every_call(sockets, timeout):
    if not _KEPT:
        _KEPT.append(select.epoll())  # "made once, reused": and never closed
    epoll = _KEPT[0]
    for sock in sockets:
        epoll.register(sock, select.EPOLLIN)
    by_fd = {sock.fileno(): sock for sock in sockets}
    ready = [by_fd[fd] for fd, _ in epoll.poll(timeout)]
    for sock in sockets:
        epoll.unregister(sock)
    return ready


def returns_the_numbers(sockets, timeout):
    with select.epoll() as epoll:
        for sock in sockets:
            epoll.register(sock, select.EPOLLIN)
        return [fd for fd, _ in epoll.poll(timeout)]


def poll_timeout_in_seconds(sockets, timeout):
    poller = select.poll()
    for sock in sockets:
        poller.register(sock, select.POLLIN)
    by_fd = {sock.fileno(): sock for sock in sockets}
    return [by_fd[fd] for fd, _ in poller.poll(timeout)]  # poll takes milliseconds: 1.5 means 1.5 ms


def epoll_timeout_in_milliseconds(sockets, timeout):
    with select.epoll() as epoll:
        for sock in sockets:
            epoll.register(sock, select.EPOLLIN)
        by_fd = {sock.fileno(): sock for sock in sockets}
        return [by_fd[fd] for fd, _ in epoll.poll(timeout * 1000)]


def every_socket_it_was_given(sockets, timeout):
    with select.epoll() as epoll:
        for sock in sockets:
            epoll.register(sock, select.EPOLLIN)
        epoll.poll(timeout)
        return list(sockets)


# -- ready_to_read: right, written differently --------------------------------------------------


def with_poll(sockets, timeout):
    poller = select.poll()
    by_fd = {}
    for sock in sockets:
        poller.register(sock, select.POLLIN)
        by_fd[sock.fileno()] = sock
    return [by_fd[fd] for fd, _ in poller.poll(timeout * 1000)]


def with_selectors(sockets, timeout):
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        return [key.fileobj for key, _ in selector.select(timeout)]


def epoll_closed_in_finally(sockets, timeout):
    epoll = select.epoll(sizehint=len(sockets))
    try:
        for sock in sockets:
            epoll.register(sock.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
        ready = {fd for fd, _ in epoll.poll(timeout, maxevents=len(sockets))}
    finally:
        epoll.close()
    return [sock for sock in sockets if sock.fileno() in ready]


# -- seconds_per_wait: wrong --------------------------------------------------------------------


def _poller(kind, sockets):
    poller = select.epoll() if kind == "epoll" else select.poll()
    for sock in sockets:
        poller.register(sock, select.POLLIN)
    return poller


def _wait(poller, kind):
    return poller.poll(1.0) if kind == "epoll" else poller.poll(1000)


def times_the_set_up_too(kind, sockets):
    started = time.perf_counter()
    poller = _poller(kind, sockets)
    for _ in range(20):
        _wait(poller, kind)
    took = time.perf_counter() - started
    if kind == "epoll":
        poller.close()
    return took / 20


def in_microseconds(kind, sockets):
    poller = _poller(kind, sockets)
    started = time.perf_counter()
    for _ in range(200):
        _wait(poller, kind)
    took = time.perf_counter() - started
    if kind == "epoll":
        poller.close()
    return took / 200 * 1e6


def watches_only_the_ready_one(kind, sockets):
    poller = _poller(kind, sockets[:1])
    started = time.perf_counter()
    for _ in range(200):
        _wait(poller, kind)
    took = time.perf_counter() - started
    if kind == "epoll":
        poller.close()
    return took / 200


def reads_the_byte(kind, sockets):
    poller = _poller(kind, sockets)
    started = time.perf_counter()
    for _ in range(5):
        for fd, _ in _wait(poller, kind):
            os.read(fd, 1)
    took = time.perf_counter() - started
    if kind == "epoll":
        poller.close()
    return took / 5


def total_not_per_wait(kind, sockets):
    poller = _poller(kind, sockets)
    started = time.perf_counter()
    for _ in range(500):
        _wait(poller, kind)
    took = time.perf_counter() - started
    if kind == "epoll":
        poller.close()
    return took


# -- seconds_per_wait: right, written differently ------------------------------------------------


def cpu_time_median(kind, sockets):
    poller = _poller(kind, sockets)
    try:
        batches = []
        for _ in range(5):
            started = time.process_time()
            for _ in range(100):
                _wait(poller, kind)
            batches.append((time.process_time() - started) / 100)
        return sorted(batches)[2]
    finally:
        if kind == "epoll":
            poller.close()


def fastest_single_wait(kind, sockets):
    with selectors.EpollSelector() if kind == "epoll" else selectors.PollSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        best = float("inf")
        for _ in range(300):
            started = time.perf_counter_ns()
            selector.select(1.0)
            best = min(best, time.perf_counter_ns() - started)
        return best / 1e9


def set_up_amortised_over_many(kind, sockets):
    started = time.monotonic()
    poller = _poller(kind, sockets)
    waits = 0
    while waits < 20_000 and (waits < 50 or time.monotonic() - started < 0.3):
        _wait(poller, kind)
        waits += 1
    took = time.monotonic() - started
    if kind == "epoll":
        poller.close()
    return took / waits


# -- select_can_watch: wrong ----------------------------------------------------------------------


def counts_open_descriptors(sock):
    return len(os.listdir("/proc/self/fd")) < 1024


def off_by_one(sock):
    return sock.fileno() <= 1024


def below_the_soft_limit(sock):
    return sock.fileno() < resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def asks_select_without_catching(sock):
    select.select([sock], [], [], 0)
    return True


def always_true(sock):
    return True


def reads_to_find_out(sock):
    try:
        select.select([sock], [], [], 0)
    except ValueError:
        return False
    sock.recv(1)
    return True


# -- select_can_watch: right, written differently -------------------------------------------------


def below_1024(sock):
    return sock.fileno() < 1024


def asks_select(sock):
    try:
        select.select([sock], [], [], 0)
    except ValueError:
        return False
    return True


def fits_in_ten_bits(sock):
    return sock.fileno().bit_length() <= 10


C = checks

WRONG = [
    (C.check_ready_to_read, still_select, {}, "select() refuses descriptor numbers of 1024 and more"),
    (C.check_ready_to_read, one_epoll_kept_for_every_call, {}, "epoll descriptor(s) open"),
    (C.check_ready_to_read, returns_the_numbers, {}, "it returned descriptor numbers"),
    (C.check_ready_to_read, poll_timeout_in_seconds, {"hidden": True}, "it returned [] after"),
    (C.check_ready_to_read, epoll_timeout_in_milliseconds, {}, "did not return within 2 s"),
    (C.check_ready_to_read, every_socket_it_was_given, {}, "expected ready_to_read(<3 sockets"),
    (C.check_seconds_per_wait, times_the_set_up_too, {}, "did you time the set-up too"),
    (C.check_seconds_per_wait, in_microseconds, {}, "is the figure in seconds"),
    (C.check_seconds_per_wait, watches_only_the_ready_one, {}, "does the poller watch every socket"),
    (C.check_seconds_per_wait, reads_the_byte, {}, "do not read"),
    (C.check_seconds_per_wait, total_not_per_wait, {}, "is the figure in seconds, for one wait"),
    (C.check_select_can_watch, counts_open_descriptors, {}, "expected False for a socket at descriptor 1024"),
    (C.check_select_can_watch, off_by_one, {}, "expected False for a socket at descriptor 1024"),
    (C.check_select_can_watch, below_the_soft_limit, {}, "expected False for a socket at descriptor 1024"),
    (C.check_select_can_watch, asks_select_without_catching, {}, "it raised ValueError"),
    (C.check_select_can_watch, always_true, {}, "select()'s limit is on the descriptor's number"),
    (C.check_select_can_watch, reads_to_find_out, {}, "do not read"),
]

RIGHT = [
    (C.check_ready_to_read, with_poll),
    (C.check_ready_to_read, with_selectors),
    (C.check_ready_to_read, epoll_closed_in_finally),
    (C.check_seconds_per_wait, cpu_time_median),
    (C.check_seconds_per_wait, fastest_single_wait),
    (C.check_seconds_per_wait, set_up_amortised_over_many),
    (C.check_select_can_watch, below_1024),
    (C.check_select_can_watch, asks_select),
    (C.check_select_can_watch, fits_in_ten_bits),
]
