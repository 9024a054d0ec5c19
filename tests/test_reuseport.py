"""fast-reuseport: one fast loop per worker process, each on its own listener of one SO_REUSEPORT group.

Real sockets, real processes. What every server does (rude clients, limits,
signals) test_servers.py tests for it too; here is what a group of workers
under a supervisor adds: the kernel spreads the connections over the
workers, each worker holds its own listener and no other, and no worker
outlives the server, however the server ends.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap

import psutil
import pytest

from epollbook import clients, probes
from epollbook.launch import serve
from epollbook.servers.reuseport import connections_per_worker, cpu_per_worker, listeners_of, try_to_bind, worker_pids
from tools import is_gone, listening_socket, need_tool, no_server_left_running, wait_until

TWO = ["--processes", "2"]


@pytest.fixture(autouse=True)
def no_server_outlives_its_test():
    with no_server_left_running():
        yield


def workers_of(server):
    """The server's workers as ``psutil.Process`` objects, which know a pid that is reused is not theirs."""
    return [psutil.Process(pid) for pid in worker_pids(server)]


def left_running(workers):
    return [worker.pid for worker in workers if not is_gone(worker)]


def run_serve(*options):
    """Run ``python -m epollbook serve fast-reuseport OPTIONS`` to its end; return the ``CompletedProcess``."""
    return subprocess.run([sys.executable, "-m", "epollbook", "serve", "fast-reuseport", *options],
                          capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)


# -- the group: who holds which listener, who gets which connection -----------------------------------------


def test_each_worker_holds_one_listener_of_the_port_and_the_parent_holds_none():
    with serve("fast-reuseport", options=TWO) as server:
        pids = worker_pids(server)
        listeners = listeners_of(server)
        holders = sorted(holder for listener in listeners for holder in listener.holders)
        assert len(pids) == 2 and len(listeners) == 2 and holders == sorted(pids), \
            f"workers {pids}; the listeners on port {server.port}: {[str(listener) for listener in listeners]}"


def test_the_workers_default_to_one_per_cpu_this_process_may_use():
    with serve("fast-reuseport") as server:
        cpus = len(os.sched_getaffinity(0))
        assert len(worker_pids(server)) == cpus, f"{len(worker_pids(server))} workers for {cpus} CPUs"


def test_the_kernel_spreads_held_connections_over_both_workers_and_each_holds_only_its_own():
    with serve("fast-reuseport", options=TWO) as server, clients.idle_clients(server, 40):
        split = connections_per_worker(server, total=40, timeout=5)
        assert sum(split.values()) == 40, f"the workers hold {split} of 40 open connections"
        # One in 2**39 that a fair hash puts all 40 on one worker.
        assert all(count > 0 for count in split.values()), f"one worker took every connection: {split}"


def test_ab_gets_every_request_answered_and_each_worker_spends_a_share_of_the_cpu():
    need_tool("ab")
    with serve("fast-reuseport", options=TWO) as server:
        # 10,000 rather than 2,000 requests: each worker then spends about ten clock ticks (10 ms each) of CPU,
        # enough for a share to be read; a worker that is never woken spends none.
        with cpu_per_worker(server) as used:
            result = clients.ab(server, requests=10_000, concurrency=50)
        assert (result.complete, result.failed) == (10_000, 0), f"ab -n 10000 -c 50 against fast-reuseport: {result}"
        assert len(used.shares) == 2 and min(used.shares.values()) > 0.2, \
            f"the work was not shared between the two workers:\n{used}"


def test_a_second_bind_needs_so_reuseport_and_then_joins_the_group():
    with serve("fast-reuseport", options=TWO) as server:
        assert try_to_bind(server.port, reuse_port=False) == os.strerror(98), \
            "a socket without SO_REUSEPORT could bind beside the group"  # 98: EADDRINUSE
        assert try_to_bind(server.port, reuse_port=True) == "bound", "a socket with SO_REUSEPORT could not bind"
        # The price of SO_REUSEPORT: a second server of the same user on the same port joins the group.
        with serve("fast-reuseport", port=server.port, options=TWO) as second:
            listeners = listeners_of(server)
            assert second.port == server.port and len(listeners) == 4, \
                f"a second fast-reuseport on port {server.port}: {[str(listener) for listener in listeners]}"


# -- how it ends -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_the_parent_stops_every_worker_and_it_exits_0_with_one_line(signum):
    with serve("fast-reuseport", options=TWO) as server, clients.idle_clients(server, 6) as idle:
        workers = workers_of(server)
        connections_per_worker(server, total=6)  # all accepted, so that each worker knows of its own
        os.kill(server.pid, signum)  # the parent alone, not its process group: it must pass the signal on
        status = server.wait(5)
        assert status == 0, f"fast-reuseport exited with {status} after {signum.name}:\n{server.output}"
        assert server.output.strip().splitlines()[-1] == f"Stopped by {signum.name}; 2 workers closed 6 open " \
                                                         "connections.", server.output
        assert wait_until(lambda: not left_running(workers)), f"workers left running: {left_running(workers)}"
        assert all(clients.read_until_closed(sock) == b"" for sock in idle), "a connection was left open"


@pytest.mark.parametrize("to", ["the process group", "one worker"])
def test_sigterm_to_the_process_group_or_to_one_worker_stops_them_all_with_status_0(to):
    # To the group, as a terminal's Ctrl-C or launch's stop() sends it: the workers get it as soon as the parent,
    # and may end before the parent has seen its own. To one worker: the others must not go on as half a server.
    with serve("fast-reuseport", options=TWO) as server:
        workers = workers_of(server)
        if to == "one worker":
            os.kill(workers[0].pid, signal.SIGTERM)
        else:
            os.killpg(server.pid, signal.SIGTERM)
        status = server.wait(5)
        last_line = server.output.strip().splitlines()[-1]
        assert (status, last_line) == (0, "Stopped by SIGTERM; 2 workers closed 0 open connections."), \
            f"after SIGTERM to {to} fast-reuseport exited with {status}:\n{server.output}"
        assert wait_until(lambda: not left_running(workers)), f"workers left running: {left_running(workers)}"


def test_sigkill_of_the_parent_leaves_no_worker_behind():
    with serve("fast-reuseport", options=TWO) as server:
        workers = workers_of(server)
        os.kill(server.pid, signal.SIGKILL)
        assert wait_until(lambda: not left_running(workers), timeout=3), \
            f"the workers of a killed parent still run: {left_running(workers)}"


def test_a_worker_that_dies_stops_the_others_and_the_parent_says_which_and_exits_1():
    with serve("fast-reuseport", options=TWO) as server:
        workers = workers_of(server)
        os.kill(workers[1].pid, signal.SIGKILL)
        status = server.wait(5)
        said = f"worker 2 of 2 (pid {workers[1].pid}) was killed by SIGKILL; the other workers were stopped."
        assert (status, server.output.strip().splitlines()[-1]) == (1, said), \
            f"after a worker was killed fast-reuseport exited with {status}:\n{server.output}"
        assert wait_until(lambda: not left_running(workers)), f"workers left running: {left_running(workers)}"


def migrates_queues():
    """True if this kernel moves a closed listener's queue to another listener of its group (Linux 5.14 and later)."""
    try:
        return probes.sysctl_int("net.ipv4.tcp_migrate_req") == 1
    except LookupError:  # older kernels have no such setting, and reset the queue
        return False


def test_the_connections_queued_on_a_worker_that_dies_are_reset():
    if migrates_queues():
        pytest.skip("net.ipv4.tcp_migrate_req is 1: the kernel moves a closed listener's queue to another one")
    with serve("fast-reuseport", options=TWO) as server:
        stopped, _ = workers_of(server)
        (its_listener,) = [listener.inode for listener in listeners_of(server) if listener.holders == (stopped.pid,)]

        def queued():
            return next(listener.waiting for listener in listeners_of(server) if listener.inode == its_listener)

        stopped.suspend()  # SIGSTOP: it accepts nothing more, so its share of the connections waits in its queue
        socks = []
        try:
            for _ in range(12):
                socks.append(socket.create_connection(server.address, timeout=5))
                socks[-1].sendall(clients.REQUEST)
            # Each connection is answered by the other worker, or waits in the stopped one's queue.
            settled = wait_until(lambda: sum(clients.wait_readable(sock, 0) for sock in socks) + queued() == 12)
            waiting = [sock for sock in socks if not clients.wait_readable(sock, 0)]
            assert settled and 0 < len(waiting) < 12, \
                f"of 12 connections {12 - len(waiting)} were answered and {queued()} wait in the stopped worker's " \
                "queue (one in 2**11 that a fair hash sends all 12 to one worker)"
            stopped.kill()
            assert server.wait(5) == 1, f"fast-reuseport went on without a worker:\n{server.output}"
            for sock in waiting:
                with pytest.raises(ConnectionResetError):
                    sock.recv(4096)
        finally:
            for sock in socks:
                sock.close()
            with contextlib.suppress(psutil.NoSuchProcess):
                stopped.resume()  # if the test failed before killing it, so that it can be stopped


def test_a_worker_that_cannot_start_is_reported_and_the_address_never_announced():
    program = textwrap.dedent("""
        import sys
        from epollbook.servers.reuseport import open_listeners, serve_in_workers
        from epollbook.servers.fast import FastServer

        def make_server(listener):
            if listener is listeners[1]:
                raise MemoryError("no room for worker 2")
            return FastServer(listener=listener)

        listeners = open_listeners(("127.0.0.1", 0), 2)
        sys.exit(serve_in_workers(listeners, make_server))
    """)
    finished = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=20,
                              stdin=subprocess.DEVNULL)
    last_line = finished.stderr.strip().splitlines()[-1]
    assert finished.returncode == 1 and "http://" not in finished.stdout, \
        f"exited with {finished.returncode}, printed:\n{finished.stdout}{finished.stderr}"
    assert "MemoryError: no room for worker 2" in finished.stderr, finished.stderr
    assert last_line.startswith("worker 2 of 2 (pid ") and last_line.endswith(
        ") exited with status 1; the other workers were stopped."), finished.stderr


# -- bad options --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("processes", ["0", "x"])
def test_processes_must_be_a_whole_number_above_0(processes):
    refused = run_serve("--processes", processes)
    errors = [line for line in refused.stderr.splitlines() if "error:" in line]
    said = f"'{processes}' is not a whole number above 0"
    assert refused.returncode == 2 and len(errors) == 1 and said in errors[0], \
        f"--processes {processes} exited with {refused.returncode}:\n{refused.stderr}"


def test_a_port_held_by_a_listener_without_so_reuseport_gets_one_line_and_status_1():
    with listening_socket() as holder:
        port = holder.getsockname()[1]
        refused = run_serve("--port", str(port))
    assert (refused.returncode, refused.stderr, refused.stdout) == (
        1, f"cannot listen on 127.0.0.1:{port}: Address already in use\n", ""), \
        f"fast-reuseport on a taken port exited with {refused.returncode}:\n{refused.stdout}{refused.stderr}"

