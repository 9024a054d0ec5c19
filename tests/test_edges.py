"""Chapter 5's experiments (epollbook.edges) against the real kernel: what each shows, and that each cleans up."""

import contextlib
import errno
import os
import socket
import threading
import time

import pytest

from epollbook import edges
from epollbook.clients import connected_pair


def open_numbers():
    return set(map(int, os.listdir("/proc/self/fd")))


@contextlib.contextmanager
def leaves_nothing_open():
    """The block must close every descriptor it opens and end every thread it starts (allowing a moment)."""
    numbers, threads = open_numbers(), threading.active_count()
    yield
    deadline = time.monotonic() + 2.0
    while (open_numbers() - numbers or threading.active_count() > threads) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not open_numbers() - numbers, f"descriptors left open: {sorted(open_numbers() - numbers)}"
    assert threading.active_count() <= threads, f"threads left running: {threading.enumerate()}"


def test_the_articles_drain_loop_never_ends_on_a_closed_connection():
    with connected_pair() as (client, conn):
        conn.setblocking(False)
        client.sendall(b"GET / HTTP/1.0\r\n")
        client.close()
        time.sleep(0.05)
        calls, cpu = edges.empty_reads(conn, seconds=0.1)
    assert calls > 2, f"recv() was called {calls} times in 0.1 s: the loop ended instead of spinning on b''"
    assert cpu > 0, "the spinning loop used no CPU time at all"


def test_the_articles_drain_loop_ends_on_blocking_io_error_while_the_client_is_connected():
    with connected_pair() as (client, conn):
        conn.setblocking(False)
        client.sendall(b"x" * 3000)
        time.sleep(0.05)
        calls, _ = edges.empty_reads(conn, seconds=5.0)
    assert calls == 3, f"expected three recv(1024) calls for 3,000 bytes, then BlockingIOError; got {calls} calls"


def test_epollexclusive_wakes_fewer_epoll_instances_than_there_are():
    with leaves_nothing_open():
        everyone = edges.wakeups(4)
        exclusive = edges.wakeups(4, exclusive=True)
    assert everyone == 4, f"without EPOLLEXCLUSIVE one connection woke {everyone} of 4 epoll instances"
    assert 1 <= exclusive < 4, f"with EPOLLEXCLUSIVE one connection woke {exclusive} of 4 epoll instances"


def test_epolloneshot_never_lets_two_threads_hold_one_connection():
    with leaves_nothing_open():
        race = edges.two_threads(oneshot=True)
    assert race.handled_by, "no thread was woken for the connection at all"
    assert race.at_once == 0, f"with EPOLLONESHOT a thread woke while the other held the connection: {race}"


def test_two_threads_without_oneshot_run_and_clean_up():
    with leaves_nothing_open():
        race = edges.two_threads(oneshot=False)
    assert race.handled_by, "no thread was woken for the connection at all"


def test_a_cap_on_reads_per_event_serves_the_quiet_client_in_the_first_round():
    with leaves_nothing_open():
        capped = edges.fairness(16, seconds=1.0)
    assert capped.quiet_wait is not None, "the quiet client was never served"
    assert capped.busy_bytes <= 16 * 65536, \
        f"{capped.busy_bytes:,} bytes were read from the busy client before the quiet one, more than 16 reads"


def test_draining_still_serves_the_quiet_client_once_the_busy_one_stops():
    with leaves_nothing_open():
        drained = edges.fairness(None, seconds=0.3)
    assert drained.busy_bytes > 0, "nothing was read from the busy client"


def test_a_process_with_descriptors_limited_gets_emfile_after_its_spare_ones():
    with leaves_nothing_open():
        with edges.descriptors_limited(os.getpid(), free=1):
            first = os.open(os.devnull, os.O_RDONLY)
            try:
                with pytest.raises(OSError) as shortage:
                    os.close(os.open(os.devnull, os.O_RDONLY))
            finally:
                os.close(first)
        assert shortage.value.errno == errno.EMFILE, f"the second open failed otherwise: {shortage.value}"
        os.close(os.open(os.devnull, os.O_RDONLY))  # the limit is back


def test_a_full_table_gives_back_exactly_the_descriptor_that_is_closed():
    spare = os.open(os.devnull, os.O_RDONLY)
    with leaves_nothing_open():
        with edges.descriptor_table_full():
            with pytest.raises(OSError) as shortage:
                socket.socket()
            assert shortage.value.errno == errno.EMFILE, f"socket() failed otherwise: {shortage.value}"
            os.close(spare)
            spare = os.open(os.devnull, os.O_RDONLY)  # the freed number, and nothing more
            with pytest.raises(OSError):
                os.close(os.open(os.devnull, os.O_RDONLY))
        os.close(os.open(os.devnull, os.O_RDONLY))  # the limit is back, and the fillers are closed
    os.close(spare)


@pytest.mark.quick
def test_the_lowest_free_numbers_skip_the_ones_in_use():
    assert edges._lowest_free({0, 1, 2, 4, 7}, 2) == [3, 5, 6]
    assert edges._lowest_free(set(), 0) == [0]
