"""The corrected servers (level, edge, fast, fast-reuseport, threaded) against rude clients, load and signals.

Each rude client is followed by a polite one that must be answered: a server
that died, hung or spun on the rude one fails there. Shapes, not timings:
CPU is compared with a fifth of a core (a spin takes most of one), memory
with 20 MB (an endless request unbounded takes all it is sent).
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from epollbook import catalog, clients, probes
from epollbook.launch import serve
from epollbook.servers import reuseport
from epollbook.servers.reuseport import worker_pids
from tools import need_tool, no_server_left_running, wait_until

EPOLL_SERVERS = ["level", "edge", "fast", "fast-reuseport"]
ALL_SERVERS = [*EPOLL_SERVERS, "threaded"]
HELLO = b"Hello, world!"


@pytest.fixture(autouse=True)
def no_server_outlives_its_test():
    with no_server_left_running():
        yield


@pytest.fixture(scope="module", params=ALL_SERVERS)
def shared(request):
    """One server of each kind, shared by the tests that leave it as they found it."""
    with serve(request.param) as server:
        yield server


def assert_alive(server):
    """Fail unless *server* runs, answers a polite client, and has printed no traceback."""
    assert server.running, f"{server.name} exited with {server.returncode}; it printed:\n{server.output}"
    reply = clients.http_get(server)
    assert (reply.status, reply.body) == (200, HELLO), f"{server.name} then answered {reply.status} {reply.body!r}"
    assert "Traceback" not in server.output, f"{server.name} printed a traceback:\n{server.output}"


def server_pids(server):
    """The server's process and its workers' (fast-reuseport forks one per core, and they do the serving)."""
    return [server.pid, *worker_pids(server)]


def busy_fraction(server, seconds=0.5):
    """How much of a core the server's processes, together, keep busy over the next *seconds*."""
    pids = server_pids(server)
    before, started = sum(map(probes.cpu_seconds, pids)), time.monotonic()
    time.sleep(seconds)
    return (sum(map(probes.cpu_seconds, pids)) - before) / (time.monotonic() - started)


def open_fds(server):
    """``{(pid, fd): what it is}`` for each of the server's processes."""
    return {(pid, fd): what for pid in server_pids(server) for fd, what in probes.open_fds(pid).items()}


def rss_kib(server):
    """Resident memory of the server's processes in KiB, from /proc/PID/status."""
    return sum(int(probes.parse_status(probes.raw_proc(pid, "status"))["VmRSS"].split()[0])
               for pid in server_pids(server))


def limit_leaving(pid, free):
    """The ``RLIMIT_NOFILE`` that leaves *pid* exactly *free* more descriptors.

    The limit is on descriptor numbers, not on how many are open: a new one
    takes the lowest free number, and fails with EMFILE if that is not below
    the limit. (An inherited descriptor, such as the launcher's lifeline, can
    have a high number and leave gaps below it.)
    """
    used, limit = set(probes.open_fds(pid)), 0
    while free:
        free -= limit not in used
        limit += 1
    return limit


def half_closed_unfinished(target):
    """Send part of a request, then shutdown(SHUT_WR) and stay connected without reading: return the socket."""
    sock = socket.create_connection(clients.address_of(target), timeout=5.0)
    sock.sendall(clients.FIRST_LINE)
    sock.shutdown(socket.SHUT_WR)
    return sock


# -- every rude client, then a polite one ------------------------------------


def test_a_client_that_closes_mid_request_is_forgotten(shared):
    clients.early_close_client(shared)
    assert_alive(shared)


def test_a_client_that_resets_mid_request_is_forgotten(shared):
    clients.reset_client(shared)
    clients.reset_client(shared, sent=clients.REQUEST)  # a reset with its answer on the way
    assert_alive(shared)


def test_a_client_that_half_closes_after_its_request_still_gets_the_answer(shared):
    answer = clients.half_close_client(shared)
    assert answer.startswith(b"HTTP/1.0 200 OK\r\n") and answer.endswith(HELLO), \
        f"{shared.name} answered a half-closed request with {answer!r}"
    assert_alive(shared)


def test_a_request_whose_bytes_are_not_utf8_is_answered(shared):
    answer = clients.exchange(shared, clients.non_utf8_request)
    assert answer.endswith(HELLO), f"{shared.name} answered {clients.non_utf8_request!r} with {answer!r}"
    assert_alive(shared)


def test_what_is_not_http_gets_400_and_a_close(shared):
    answer = clients.exchange(shared, b"\x16\x03\x01\x00\xff\xfe\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 400 Bad Request\r\n"), f"{shared.name} answered {answer!r}"
    assert_alive(shared)


def test_an_oversized_head_gets_431_and_a_close(shared):
    answer = clients.oversized_client(shared, 100_000)
    assert answer.startswith(b"HTTP/1.0 431 "), f"{shared.name} answered a 100 kB head with {answer[:80]!r}"
    assert_alive(shared)


def test_an_endless_request_is_cut_off(shared):
    stream = clients.streaming_client(shared, most=20 << 20)
    assert stream.ended == "cut", f"{shared.name} let an endless request go on: {stream.ended} after {stream.sent} B"
    assert stream.sent < 1 << 20, f"{shared.name} read {stream.sent} bytes of a request before cutting it off"
    assert_alive(shared)


def test_the_answer_survives_bytes_the_client_sent_beyond_its_request(shared):
    # 35 kB of requests, one answered, the rest unread when the answer is done. (On loopback the
    # answer is in the client's buffer before any reset comes, so this passes without a lingering
    # close too; the next test is the one that tells.)
    answer = clients.pipelined_client(shared, count=1000)
    assert answer.startswith(b"HTTP/1.0 200 OK\r\n") and answer.endswith(HELLO), \
        f"{shared.name} answered pipelined requests with {answer[:80]!r}"
    assert_alive(shared)


def test_after_its_answer_the_server_lingers_reading_instead_of_resetting_the_client(shared):
    # The server's FIN says "answer complete"; a server that then closes outright answers the
    # client's next bytes with a reset, and a reset can destroy an answer still on its way.
    with socket.create_connection(shared.address, timeout=5.0) as sock:
        sock.sendall(clients.REQUEST)
        answer = clients.read_until_closed(sock)
        try:
            sock.sendall(b"x" * 100)
            time.sleep(0.2)  # time for a reset to come back, if one comes
            sock.sendall(b"y" * 100)
        except OSError as error:
            pytest.fail(f"{shared.name} reset the connection after its answer {answer[:15]!r}: {error}")
    assert_alive(shared)


def test_a_request_in_pieces_is_answered(shared):
    answer = clients.exchange(shared, piece_size=7, pause=0.005)
    assert answer.endswith(HELLO), f"{shared.name} answered a request in pieces with {answer!r}"


@pytest.mark.parametrize("name", ALL_SERVERS)
def test_show_requests_prints_each_head_with_bytes_that_are_not_ascii_escaped(name):
    with serve(name, options=["--show-requests"]) as server:
        clients.exchange(server, clients.non_utf8_request)
        printed = server.wait_for_output("User-Agent: caf\\xe9 \\xff\\xfe")
        assert "Traceback" not in printed, f"{name} printed a traceback:\n{printed}"


def test_an_option_the_server_does_not_know_gets_one_line_and_status_2():
    refused = subprocess.run([sys.executable, "-m", "epollbook", "serve", "level", "--idle-timeout", "soon"],
                             capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    errors = [line for line in refused.stderr.splitlines() if "error:" in line]
    assert refused.returncode == 2 and len(errors) == 1 and "'soon' is not a time" in errors[0], \
        f"`serve level --idle-timeout soon` exited with {refused.returncode}:\n{refused.stderr}"


@pytest.mark.parametrize("name", ALL_SERVERS)
def test_a_port_that_is_taken_gets_one_line_and_status_1(name):
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        refused = subprocess.run([sys.executable, "-m", catalog.module_of(name), "--port", str(port)],
                                 capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    expected = f"cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert (refused.returncode, refused.stderr) == (1, expected), \
        f"{name} on a taken port exited with {refused.returncode}:\n{refused.stderr}"


# -- no spin, no leak, bounded memory -----------------------------------------


@pytest.mark.parametrize("name", ALL_SERVERS)
def test_no_cpu_spin_while_connections_are_early_closed_half_closed_stalled_or_idle(name):
    # Fewer for threaded: each idle client holds one of its 128 threads, and a polite client beyond
    # them would wait in the listen queue until the idle ones time out (chapter 3's point).
    idle = 50 if name == "threaded" else 300
    with serve(name) as server, clients.idle_clients(server, idle), \
            clients.stalled_client(server), half_closed_unfinished(server):
        clients.early_close_client(server)
        clients.reset_client(server)
        clients.http_get(server)  # everything before it has been seen by now
        busy = busy_fraction(server, 0.5)
        assert busy < 0.2, f"{name} kept {busy:.0%} of a core busy while its clients said nothing"
        assert_alive(server)


@pytest.mark.parametrize("name", ALL_SERVERS)
def test_no_file_descriptor_outlives_its_connection(name):
    with serve(name) as server:  # no connection yet
        before = open_fds(server)
        with clients.idle_clients(server, 20), clients.stalled_client(server):
            for _ in range(10):
                clients.early_close_client(server)
                clients.reset_client(server)
                clients.half_close_client(server)
                clients.exchange(server, clients.non_utf8_request)
                clients.oversized_client(server, 20_000)
                clients.pipelined_client(server, count=200)
        settled = wait_until(lambda: len(open_fds(server)) <= len(before))
        after = open_fds(server)
        assert settled, f"{name} had {len(before)} descriptors before the rude clients, {len(after)} after they " \
                        f"closed: {sorted(set(after.items()) - set(before.items()))[:10]}"
        # Its table of connections is clean too: stopping, it says how many it still had.
        os.kill(server.pid, signal.SIGTERM)
        assert server.wait(5) == 0, f"{name} exited with {server.returncode}:\n{server.output}"
        last_line = server.output.strip().splitlines()[-1]
        assert re.fullmatch(r"Stopped by SIGTERM; (\d+ workers )?closed 0 open connections\.", last_line), \
            f"{name} still held connections after every client had gone: {last_line!r}"


@pytest.mark.parametrize("name", ALL_SERVERS)
def test_memory_stays_bounded_under_an_endless_request(name):
    with serve(name) as server:
        clients.http_get(server)
        before = rss_kib(server)
        streams = [clients.streaming_client(server, most=30 << 20) for _ in range(3)]
        grown = rss_kib(server) - before
        assert grown < 20 * 1024, f"{name} grew by {grown} KiB while clients sent {[s.sent for s in streams]} B"
        assert_alive(server)


def test_level_watches_epollout_only_while_an_answer_waits():
    with serve("level") as server, clients.idle_clients(server, 5), clients.stalled_client(server):
        clients.http_get(server)
        watched = [str(interest) for interest in probes.epoll_interest_list(server.pid)
                   if interest.events & probes.EPOLL_EVENTS["EPOLLOUT"]]
        assert not watched, f"level watches EPOLLOUT with nothing to write: {watched}"


# -- timeouts ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_SERVERS)
def test_idle_and_trickling_clients_are_closed_by_their_deadlines(name):
    with serve(name, options=["--idle-timeout", "1", "--request-timeout", "2.5"]) as server, \
            clients.idle_clients(server, 20) as idle, clients.stalled_client(server) as trickling:
        started = time.monotonic()
        # One byte every 0.2 s is never idle for 1 s: only the whole-request deadline ends it.
        while time.monotonic() - started < 8 and clients.peek(trickling) is None:
            trickling.send(b"x")
            time.sleep(0.2)
        trickled = time.monotonic() - started
        ended = [clients.read_until_closed(sock) for sock in idle]
        assert all(answer.startswith(b"HTTP/1.0 408 ") for answer in ended), \
            f"{name}'s idle clients were ended with {set(ended)}"
        assert 2.0 < trickled < 7.0, f"{name} ended a trickling request after {trickled:.1f} s, its deadline 2.5 s"
        assert clients.read_until_closed(trickling).startswith(b"HTTP/1.0 408 ")
        assert_alive(server)


# -- what differs between the variants ------------------------------------------


@pytest.mark.parametrize("name", ["edge", "fast", "fast-reuseport"])
def test_edge_reads_the_rest_of_a_capped_drain_without_a_new_edge(name):
    # One recv() of 4096 bytes per turn: a 6000-byte head needs a second read, and no new
    # bytes will come to make a new edge. Without the revisit it would wait for its deadline.
    with serve(name, options=["--reads-per-event", "1", "--request-timeout", "3"]) as server:
        answer = clients.oversized_client(server, 6000)
        assert answer.endswith(HELLO), f"{name} with one read per event answered a 6000-byte head with {answer!r}"


def test_threaded_makes_new_clients_wait_in_the_listen_queue_when_every_thread_is_taken():
    with serve("threaded", options=["--max-threads", "4"]) as server:
        with clients.idle_clients(server, 4):
            pending = clients.start_request(server)
            queued = wait_until(lambda: probes.listen_queue(server.port).waiting == 1)
            assert queued, f"the fifth client is not in the listen queue: {probes.listen_queue(server.port)}"
            time.sleep(0.3)
            assert not pending.answered, "threaded answered a fifth client while its 4 threads were all taken"
        answer = pending.wait(5)
        assert answer.endswith(HELLO), f"once its threads were free, threaded answered {answer!r}"


# Not fast-reuseport: its parent, whose descriptors this would limit, accepts nothing; each worker is a FastServer.
@pytest.mark.parametrize("name", [name for name in ALL_SERVERS if name != "fast-reuseport"])
def test_out_of_file_descriptors_the_server_neither_dies_nor_spins_and_the_waiting_clients_are_not_forgotten(name):
    with serve(name) as server:  # no connection yet: what is open now stays open
        process = psutil.Process(server.pid)
        soft, hard = process.rlimit(psutil.RLIMIT_NOFILE)
        limit = limit_leaving(server.pid, 4)
        process.rlimit(psutil.RLIMIT_NOFILE, (limit, hard))
        try:
            with clients.idle_clients(server, 4):  # they take the last 4 descriptors
                assert wait_until(lambda: set(range(limit)) <= set(probes.open_fds(server.pid))), \
                    f"the 4 idle clients did not take the last descriptors below {limit}"
                waiting = [clients.start_request(server) for _ in range(3)]  # accept() fails: EMFILE
                busy = probes.busy_fraction(server.pid, 0.5)
                assert busy < 0.2, f"{name} kept {busy:.0%} of a core busy out of descriptors"
                if name in ("edge", "fast"):
                    # The reserve descriptor: each waiting client is accepted and closed at once,
                    # rather than left in a queue no edge would report again.
                    ended = [request.finished.wait(5) and request.value in (None, b"") for request in waiting]
                    assert all(ended), f"edge out of descriptors left clients waiting: {waiting}"
                else:
                    assert not any(request.answered for request in waiting), \
                        f"{name} answered beyond its limit: {[(r.value, r.error) for r in waiting]}"
        finally:
            process.rlimit(psutil.RLIMIT_NOFILE, (soft, hard))
        if name not in ("edge", "fast"):  # the idle 4 have closed: their descriptors are free for the waiting 3
            answers = [request.wait(5) for request in waiting]
            assert all(answer.endswith(HELLO) for answer in answers), f"{name} then answered {answers}"
        assert_alive(server)


# -- load generators ---------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_SERVERS)
def test_ab_with_100_concurrent_clients_has_no_failed_request(name):
    need_tool("ab")
    with serve(name) as server:
        result = clients.ab(server, requests=5000, concurrency=100)
        assert (result.complete, result.failed) == (5000, 0), f"ab -n 5000 -c 100 against {name}: {result}"
        assert_alive(server)


@pytest.mark.parametrize("name", ALL_SERVERS)
def test_wrk_with_100_connections_has_no_socket_error(name):
    need_tool("wrk")
    with serve(name) as server:
        result = clients.wrk(server, connections=100, seconds=2)
        assert result.requests > 0 and result.socket_errors == 0, f"wrk -c 100 -d 2s against {name}:\n{result.report}"
        assert result.non_2xx == 0, f"wrk got answers other than 200 from {name}:\n{result.report}"
        assert_alive(server)


# -- stopping ----------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("name", ALL_SERVERS)
def test_a_signal_ends_the_server_cleanly_with_status_0_and_every_connection_closed(name, signum):
    with serve(name) as server, clients.idle_clients(server, 3) as idle:
        clients.http_get(server)  # answered: a single loop has accepted the 3 before it
        if name == "fast-reuseport":  # each worker accepts in its own time: wait until they hold all 3
            reuseport.connections_per_worker(server, total=3)
        os.kill(server.pid, signum)
        status = server.wait(5)
        last_line = server.output.strip().splitlines()[-1]
        assert status == 0, f"{name} exited with {status} after {signum.name}; it printed:\n{server.output}"
        assert "Traceback" not in server.output, f"{name} printed a traceback on {signum.name}:\n{server.output}"
        # The 3 idle ones, and perhaps http_get's, if its close has not reached the server yet.
        said = re.fullmatch(rf"Stopped by {signum.name}; (?:\d+ workers )?closed (\d+) open connections\.", last_line)
        assert said and int(said[1]) in (3, 4), f"{name}'s last line after {signum.name}: {last_line!r}"
        assert all(clients.read_until_closed(sock) == b"" for sock in idle), "a connection was left open"
