"""The contenders of chapter 11 (selectors, asyncio, uvloop) and the book's `fast` server: a right answer, a clean
stop, a load with no socket error; and the throughput measurement's parts that need no load generator.

Shapes, not timings: how fast a server is, is a measurement (``python -m epollbook.bench throughput``), not a test.
"""

import os
import signal

import pytest

from epollbook import bench, clients, probes, throughput
from epollbook.launch import serve
from epollbook.servers import framing
from tools import need_tool, no_server_left_running, wait_until

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


# -- fast: what its steps change, as the kernel sees it (test_servers.py holds everything it shares with edge) --


def test_fast_watches_epollout_for_no_connection_and_its_listener_level_triggered():
    with serve("fast") as server, clients.idle_clients(server, 5), clients.stalled_client(server):
        clients.http_get(server)
        interests = probes.epoll_interest_list(server.pid)
        writing = [str(interest) for interest in interests if interest.events & probes.EPOLL_EVENTS["EPOLLOUT"]]
        assert not writing, f"fast watches EPOLLOUT with nothing to write: {writing}"
        edge_triggered = probes.EPOLL_EVENTS["EPOLLET"]
        level = [interest for interest in interests if not interest.events & edge_triggered]
        connections = [interest for interest in interests if interest.events & edge_triggered]
        # Level-triggered: the listener and the wake-up pair; edge-triggered: the 6 clients (perhaps http_get's too).
        assert len(level) == 2 and len(connections) in (6, 7), \
            f"fast's interest list: {[str(interest) for interest in interests]}"


# -- the throughput measurement ---------------------------------------------------------------------------


def test_throughput_gives_a_connection_per_request_and_the_servers_cpu_for_each_run():
    need_tool("wrk")
    rows = bench.throughput(("uvloop",), seconds=1, rounds=1)
    assert [row.server for row in rows] == ["uvloop"], rows
    row = rows[0]
    assert row.requests > 0 and row.socket_errors == 0 and row.non_2xx == 0, row
    # Each request had a connection of its own: the machine accepted at least as many as wrk completed.
    assert row.accepted >= row.requests, f"{row.accepted} connections accepted for {row.requests} requests"
    assert row.cpu_seconds > 0 and row.cpu_us_per_request > 0, f"the server spent no CPU: {row}"
    # wrk's own CPU: some, and no more than the one CPU it was pinned to can give in its second (plus a tick or two),
    # so not the servers' too; and the server slept and was woken again and again, whatever its batching.
    wrk_seconds = row.wrk_cpu_us_per_request * row.requests / 1e6
    assert 0 < wrk_seconds <= 1.1 if row.wrk_cpu is not None else wrk_seconds > 0, f"wrk's CPU: {wrk_seconds} s"
    assert row.wakeups_per_request > 1e-3, f"the server was woken {row.wakeups_per_request} times a request"


def test_fast_pauses_before_its_waits_with_many_connections_open_and_never_with_one_client_at_a_time():
    # Step 7, as the kernel sees it: a clock_nanosleep between two epoll_waits, once 32 connections are open.
    need_tool("strace")
    need_tool("ab")
    with serve("fast") as server:
        alone = throughput.system_calls_of(server, requests=100, concurrency=1)
        with clients.idle_clients(server, 40):
            held = wait_until(lambda: len(probes.open_fds(server.pid)) >= 40 + 5)  # 40 accepted, and its own fds
            assert held, f"fast did not accept 40 idle clients: {probes.open_fds(server.pid)}"
            crowded = throughput.system_calls_of(server, requests=300, concurrency=10)
    assert "clock_nanosleep" not in alone.counts, f"fast paused with one client at a time: {alone.per_request()}"
    assert crowded.counts.get("clock_nanosleep", 0) > 0, \
        f"fast never paused with 40 idle and 10 busy clients: {crowded.per_request()}"


@pytest.mark.quick
def test_throughput_summary_takes_medians_per_server_and_sums_errors():
    def row(server, round_number, per_second, cost, errors=0, wrk_cost=None, wakeups=None):
        return bench.ThroughputRow(server, round_number, 1, 100, 1000, per_second, errors, 0, cost * 1e-3, cost,
                                   1000, 0, 1, wrk_cost, wakeups)

    # uvloop's rows as saved before wrk's CPU and the wake-ups were measured; fast's with them, one round without.
    rows = [row("uvloop", 1, 100.0, 30.0), row("fast", 1, 110.0, 29.0, 2, 40.0, 0.2), row("fast", 2, 90.0, 31.0),
            row("uvloop", 2, 120.0, 20.0), row("fast", 3, 130.0, 40.0, 0, 50.0, 0.6), row("uvloop", 3, 80.0, 25.0)]
    summaries = bench.throughput_summary(rows)
    assert list(summaries) == ["uvloop", "fast"]
    assert summaries["fast"] == ("fast", 3, 110.0, 31.0, 2, 0, 45.0, 0.4)
    assert summaries["uvloop"] == ("uvloop", 3, 100.0, 25.0, 0, 0, None, None)
    text = bench._summary_throughput(rows)
    assert "fast against uvloop: 1.10× the requests/s, 1.24× the CPU per request" in text, text


def test_throughput_refuses_runs_shorter_than_a_second():
    with pytest.raises(ValueError, match="whole seconds"):
        bench.throughput(("edge",), seconds=0.5)
