"""Chapter 11's pieces against real servers: the keep-alive yardstick, the steps from edge to fast, the traces."""

import socket

import pytest

from epollbook import clients, throughput
from epollbook.contenders.keep_alive import KEEP_ALIVE
from epollbook.launch import serve
from epollbook.servers import framing
from epollbook.servers.steps import STEPS
from tools import need_tool


def test_uvloop_keep_alive_answers_three_requests_on_one_connection():
    with serve("uvloop-keep-alive") as server, socket.create_connection((server.host, server.port), timeout=5) as sock:
        for number in range(3):
            sock.sendall(clients.REQUEST)
            received = b""
            while len(received) < len(KEEP_ALIVE):
                chunk = sock.recv(4096)
                assert chunk, f"the server closed the connection after {number} answers and {received!r}"
                received += chunk
            assert received == KEEP_ALIVE, f"answer {number + 1} was {received!r}"


def test_uvloop_keep_alive_closes_after_a_request_that_is_not_http():
    with serve("uvloop-keep-alive") as server:
        assert clients.exchange(server, b"HELLO\r\n\r\n") == framing.NOT_HTTP


@pytest.mark.parametrize("step", list(STEPS))
def test_every_step_answers_as_edge_does(step):
    with throughput.step_server(step) as server:
        assert clients.exchange(server) == framing.RESPONSE, f"{step} answered otherwise"


def test_a_trace_of_fast_counts_about_nine_calls_a_request_and_no_ioctl():
    need_tool("strace")
    need_tool("ab")
    traced = throughput.system_calls("fast", requests=200)
    per_request = traced.per_request()
    assert 7 <= traced.total() <= 12, f"fast made {traced.total():.2f} calls a request: {per_request}"
    assert per_request.get("accept4", 0) == pytest.approx(1, abs=0.2), f"accepts per request: {per_request}"
    assert "ioctl" not in per_request, f"fast made ioctl calls (setblocking): {per_request}"


def test_example3_dies_of_a_reset_between_send_and_shutdown():
    under = throughput.example3_under_load(seconds=1)
    assert not under.survived_wrk or under.resets_to_die is not None, f"example 3 survived everything: {under}"
    assert "Errno 107" in under.last_words, f"example 3's last words: {under.last_words!r}"
