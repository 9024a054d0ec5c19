"""throughput.count_calls reads strace's text: one count per call, however strace splits or prefixes its lines."""

import pytest

from epollbook.checks.chapter11 import MADE_UP_TRACE
from epollbook.throughput import count_calls

pytestmark = pytest.mark.quick


def test_a_call_split_by_another_thread_counts_once_and_signals_and_exits_not_at_all():
    counts = count_calls(MADE_UP_TRACE)
    assert counts == {"epoll_wait": 5, "accept4": 2, "epoll_ctl": 2, "recvfrom": 5, "sendto": 2, "shutdown": 2,
                      "close": 2, "read": 1}, f"counted {dict(counts)}"


def test_lines_without_a_thread_id_or_with_strace_s_pid_brackets_count_the_same():
    plain = 'accept4(4, NULL, NULL, SOCK_CLOEXEC) = 7\nclose(7) = 0\n'
    bracketed = '[pid  4100] accept4(4, NULL, NULL, SOCK_CLOEXEC) = 7\n[pid  4100] close(7) = 0\n'
    assert count_calls(plain) == count_calls(bracketed) == {"accept4": 1, "close": 1}, \
        f"plain: {dict(count_calls(plain))}, bracketed: {dict(count_calls(bracketed))}"


def test_text_that_is_no_trace_counts_nothing_and_never_raises():
    assert count_calls("strace: Process 12 attached\n\n+++ killed by SIGTERM +++\n(\n") == {}
