"""Chapter 11's pieces against real servers: the keep-alive yardstick, the steps from edge to fast, the traces."""

import concurrent.futures
import contextlib
import socket
import time

import pytest

from epollbook import clients, probes, throughput
from epollbook.launch import serve
from epollbook.servers import framing
from epollbook.servers.steps import STEPS
from tools import need_tool


def test_uvloop_keep_alive_answers_three_requests_on_one_connection():
    with serve("uvloop-keep-alive") as server, socket.create_connection((server.host, server.port), timeout=5) as sock:
        for number in range(3):
            sock.sendall(clients.REQUEST)
            received = b""
            while len(received) < len(framing.KEEP_ALIVE):
                chunk = sock.recv(4096)
                assert chunk, f"the server closed the connection after {number} answers and {received!r}"
                received += chunk
            assert received == framing.KEEP_ALIVE, f"answer {number + 1} was {received!r}"


def test_uvloop_keep_alive_closes_after_a_request_that_is_not_http():
    with serve("uvloop-keep-alive") as server:
        assert clients.exchange(server, b"HELLO\r\n\r\n") == framing.NOT_HTTP


def read_answers(sock, count, answer=framing.KEEP_ALIVE):
    """Read *count* answers of *answer*'s length from *sock*; fail if the server closes first or sends otherwise."""
    received = b""
    while len(received) < count * len(answer):
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection after {len(received) // len(answer)} answers"
        received += chunk
    assert received == answer * count, f"the answers were {received[:300]!r}..."


def test_fast_keep_alive_answers_requests_one_by_one_and_pipelined_on_one_connection():
    with serve("fast-keep-alive") as server, socket.create_connection(server.address, timeout=5) as sock:
        for _ in range(3):
            sock.sendall(clients.REQUEST)
            read_answers(sock, 1)
        sock.sendall(clients.REQUEST * 1000)  # 35 kB at once: more than one read, and no new edge for the rest
        read_answers(sock, 1000)
        half = len(clients.REQUEST) // 2
        sock.sendall(clients.REQUEST + clients.REQUEST[:half])  # one whole request and the beginning of the next
        read_answers(sock, 1)
        sock.sendall(clients.REQUEST[half:])
        read_answers(sock, 1)
        sock.sendall(b"HELLO\r\n\r\n")  # not HTTP: answered, and the connection closed
        assert clients.read_until_closed(sock) == framing.NOT_HTTP
        assert "Traceback" not in server.output, server.output


def test_fast_keep_alive_closes_an_idle_connection_without_a_word_and_a_late_request_with_408():
    with serve("fast-keep-alive", options=["--idle-timeout", "0.3"]) as server:
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.sendall(clients.REQUEST)
            read_answers(sock, 1)
            assert clients.read_until_closed(sock) == b"", "an idle kept connection got more than its close"
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.sendall(clients.REQUEST)
            read_answers(sock, 1)
            sock.sendall(clients.REQUEST[:10])  # the next request begins, and stops
            assert clients.read_until_closed(sock) == framing.TIMED_OUT


def test_fast_keep_alive_refuses_an_endless_head_with_431():
    with serve("fast-keep-alive") as server, socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(clients.REQUEST)
        read_answers(sock, 1)
        with contextlib.suppress(OSError):  # the server may close while we still send
            sock.sendall(b"GET / HTTP/1.0\r\nX: " + b"y" * 20_000)
        assert clients.read_until_closed(sock).startswith(b"HTTP/1.0 431 ")


def connections_that_stay(name):
    """Under wrk -c 100 for 2 s, the connections *name* serves at 0.5 s and those of them still there at 1 s.

    Returns (wrk's result, {client ports at 0.5 s}, {those still connected at 1 s}), read with ss on the
    server's own port: nothing else the machine runs counts.
    """
    def client_ports(port):
        return {line.split()[4].rpartition(":")[2] for line in probes.ss(port).splitlines()
                if line.startswith("ESTAB") and line.split()[3].endswith(f":{port}")}

    with serve(name) as server, concurrent.futures.ThreadPoolExecutor(1) as pool:
        load = pool.submit(clients.wrk, server, connections=100, seconds=2, threads=1)
        time.sleep(0.5)
        first = client_ports(server.port)
        time.sleep(0.5)
        still = first & client_ports(server.port)
        return load.result(), first, still


def test_wrk_keeps_its_connections_with_fast_keep_alive_and_has_no_socket_error():
    need_tool("wrk")
    need_tool("ss")
    kept, kept_first, kept_still = connections_that_stay("fast-keep-alive")
    _, closed_first, closed_still = connections_that_stay("fast")
    assert kept.requests > 1000 and kept.socket_errors == 0 and kept.non_2xx == 0, kept.report
    # fast's connections last a request each: half a second later, almost none of them is left.
    assert len(closed_still) < len(closed_first) / 2, f"fast kept {len(closed_still)} of {len(closed_first)}"
    assert len(kept_first) >= 50 and len(kept_still) >= len(kept_first) * 0.9, \
        f"fast-keep-alive served {len(kept_first)} connections, and {len(kept_still)} of them half a second later"


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
