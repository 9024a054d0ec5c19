"""The contenders of chapter 11 (selectors, asyncio, uvloop) and the book's `fast` server: a right answer, a clean
stop, a load with no socket error; and the throughput measurement's parts that need no load generator.

Shapes, not timings: how fast a server is, is a measurement (``python -m epollbook.bench throughput``), not a test.
"""

import os
import signal

import pytest

from epollbook import clients
from epollbook.launch import serve
from epollbook.servers import framing
from tools import need_tool, no_server_left_running

CONTENDERS = ["selectors", "asyncio-protocol", "asyncio-streams", "uvloop"]


@pytest.fixture(autouse=True)
def no_server_outlives_its_test():
    with no_server_left_running():
        yield


@pytest.mark.parametrize("name", CONTENDERS)
def test_a_contender_answers_the_articles_request_with_the_articles_bytes_and_closes(name):
    with serve(name) as server:
        answer = clients.exchange(server)  # returns once the server has closed the connection
        assert answer == framing.RESPONSE, f"{name} answered {answer!r}"
        in_pieces = clients.exchange(server, piece_size=7, pause=0.002)
        assert in_pieces == framing.RESPONSE, f"{name} answered a request in pieces with {in_pieces!r}"
        refused = clients.exchange(server, b"\x16\x03\x01\x00\xff\xfe\r\n\r\n")
        assert refused == framing.NOT_HTTP, f"{name} answered what is not HTTP with {refused!r}"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("name", CONTENDERS)
def test_a_signal_stops_a_contender_with_status_0_and_no_traceback(name, signum):
    with serve(name) as server, clients.idle_clients(server, 3) as idle:
        clients.http_get(server)
        os.kill(server.pid, signum)
        status = server.wait(5)
        assert status == 0 and "Traceback" not in server.output, \
            f"{name} exited with {status} after {signum.name}; it printed:\n{server.output}"
        assert server.output.strip().splitlines()[-1] == f"Stopped by {signum.name}.", server.output
        assert all(clients.read_until_closed(sock) == b"" for sock in idle), f"{name} left a connection open"


@pytest.mark.parametrize("name", CONTENDERS)
def test_wrk_with_100_connections_has_no_socket_error_against_a_contender(name):
    need_tool("wrk")
    with serve(name) as server:
        result = clients.wrk(server, connections=100, seconds=1, threads=1)
        assert result.requests > 0 and result.socket_errors == 0, f"wrk -c 100 -d 1s against {name}:\n{result.report}"
        assert result.non_2xx == 0, f"wrk got answers other than 200 from {name}:\n{result.report}"
