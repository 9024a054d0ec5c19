"""The launcher, epollbook.launch: a server starts on a free port, says when it listens, and never outlives its owner.

Re-running a notebook cell, and a kernel killed with SIGKILL, need a real
kernel: test_launch_in_a_kernel.py covers them.
"""

import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from epollbook import catalog
from epollbook.probes import open_fds
from epollbook.clients import http_get
from epollbook.launch import ServerDidNotStart, serve
from tools import accepts_connections, is_gone, listening_socket, no_server_left_running, wait_for_printed

HELLO = b"Hello, world!"


@pytest.fixture(autouse=True)
def no_server_outlives_its_test():
    with no_server_left_running():
        yield


def wait_until_gone(process, timeout=5.0):
    """Poll until *process* has exited; return True if it did within *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not is_gone(process):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- starting ---------------------------------------------------------------


def test_two_servers_of_the_same_name_get_different_free_ports_and_both_answer():
    with serve("example2") as first, serve("example2") as second:
        assert first.host == second.host == "127.0.0.1", f"they listen on {first.host} and {second.host}"
        assert first.port != second.port, f"both listen on port {first.port}"
        for server in (first, second):
            reply = http_get(server)
            assert (reply.status, reply.body) == (200, HELLO), f"{server} answered {reply.status} {reply.body!r}"


def test_serve_returns_once_listening_without_spending_example1s_only_connection():
    with serve("example1") as server:
        reply = http_get(server)
        assert (reply.status, reply.body) == (200, HELLO), \
            f"the one request example 1 serves got {reply.status} {reply.body!r}; it printed:\n{server.output}"
        status = server.wait()
        assert status == 0, f"example 1 exited with status {status} after its one request; it printed:\n{server.output}"


def test_output_holds_the_announcement_and_the_request_the_server_printed():
    with serve("example2") as server:
        assert f"Listening on http://127.0.0.1:{server.port}/" in server.output, \
            f"no announcement of port {server.port} in: {server.output!r}"
        http_get(server)
        output = server.wait_for_output("Host:")
        assert "GET / HTTP/1.1" in output, f"the request line is not in what the server printed: {output!r}"


def test_waiting_for_output_that_never_comes_raises_timeout_error_with_what_was_printed():
    with serve("example2") as server:
        with pytest.raises(TimeoutError) as raised:
            server.wait_for_output("never printed", timeout=0.2)
        assert "Listening on" in str(raised.value), f"the error does not show what it printed: {raised.value}"


# -- stopping ----------------------------------------------------------------


def test_nothing_is_left_running_after_a_with_block_ends_normally():
    with serve("example2") as server:
        process, port = psutil.Process(server.pid), server.port
        assert accepts_connections(port), f"{server} does not accept connections inside the block"
    assert is_gone(process), f"pid {process.pid} is still {process.status()} after the with block"
    assert not accepts_connections(port), f"port {port} still accepts connections after the with block"


def test_nothing_is_left_running_after_an_exception_inside_a_with_block():
    with pytest.raises(RuntimeError, match="raised inside the block"):
        with serve("example2") as server:
            process, port = psutil.Process(server.pid), server.port
            raise RuntimeError("raised inside the block")
    assert is_gone(process), f"pid {process.pid} is still {process.status()} after the exception"
    assert not accepts_connections(port), f"port {port} still accepts connections after the exception"


def test_a_server_dies_with_the_process_that_started_it_even_after_kill_9():
    owner_code = textwrap.dedent("""
        import time
        from epollbook.launch import serve
        server = serve("example2")
        print("server", server.pid, server.port, flush=True)
        time.sleep(60)
    """)
    owner = subprocess.Popen([sys.executable, "-c", owner_code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    server_process = None
    try:
        started = wait_for_printed(owner, r"^server (\d+) (\d+)$")
        server_process, port = psutil.Process(int(started[1])), int(started[2])
        assert accepts_connections(port), f"the owner's server does not accept connections on port {port}"
        owner.kill()  # SIGKILL: no atexit, no finally, nothing of the owner's own runs
        owner.wait(5)
        assert wait_until_gone(server_process), \
            f"the server (pid {server_process.pid}) is still {server_process.status()} 5 s after its owner was killed"
        assert not accepts_connections(port), f"port {port} still accepts connections after the owner was killed"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        owner.stdout.close()
        if server_process is not None and not is_gone(server_process):
            server_process.kill()  # the behaviour under test failed: still clean up


def test_stop_all_stops_every_server_the_process_started():
    # In a process of its own: here, stop_all() would also stop servers other tests share.
    owner_code = textwrap.dedent("""
        from epollbook.launch import running_servers, serve, stop_all
        servers = [serve("example2"), serve("example3")]
        print("before", len(running_servers()))
        stop_all()
        print("after", len(running_servers()), *(server.returncode for server in servers))
    """)
    owner = subprocess.run([sys.executable, "-c", owner_code], capture_output=True, text=True, timeout=20)
    expected = f"before 2\nafter 0 {-signal.SIGTERM} {-signal.SIGTERM}\n"
    assert owner.stdout == expected, f"expected {expected!r}, the owner printed {owner.stdout!r} {owner.stderr}"


def test_stop_can_be_called_again_and_returns_the_exit_status_each_time():
    server = serve("example2")
    try:
        first = server.stop()
        second = server.stop()
    finally:
        server.stop()
    assert first == second == -signal.SIGTERM, \
        f"stop() returned {first}, then {second}; expected {-signal.SIGTERM} (ended by SIGTERM) both times"
    assert not server.running, f"{server} is still running after stop()"


def test_interrupt_sends_sigint_and_the_traceback_starts_in_the_examples_own_file():
    with serve("example2") as server:
        http_get(server)
        server.wait_for_output("Host:")  # it has served a request and is back in accept()
        assert server.traceback == "", f"a traceback before anything went wrong: {server.traceback}"
        status = server.interrupt()
        output = server.output
        assert server.traceback.startswith("Traceback (most recent call last):") and \
            server.traceback.rstrip().endswith("KeyboardInterrupt"), f"traceback: {server.traceback!r}"
    assert status == 130, f"after SIGINT the server exited with status {status}; it printed:\n{output}"
    assert "KeyboardInterrupt" in output, f"no KeyboardInterrupt in what it printed:\n{output}"
    assert "<frozen runpy>" not in output and "runpy.py" not in output, f"runpy's frames are in the traceback:\n{output}"
    assert "Traceback (most recent call last):" in output, f"no traceback in what it printed:\n{output}"
    first_frame = output.split("Traceback (most recent call last):", 1)[1].strip().splitlines()[0]
    assert f'File "{catalog.source_path("example2")}"' in first_frame, \
        f"the traceback starts at {first_frame!r}, not at example2.py"


# -- failing to start ----------------------------------------------------------


def test_a_server_that_cannot_listen_raises_server_did_not_start_with_what_it_printed():
    with listening_socket() as holder:
        taken_port = holder.getsockname()[1]
        with pytest.raises(ServerDidNotStart) as raised:
            serve("example2", port=taken_port)
    message = str(raised.value)
    assert "Address already in use" in message, f"the error does not say why: {message!r}"
    assert f"cannot listen on 127.0.0.1:{taken_port}" in message, f"the error does not say where: {message!r}"


def test_an_unknown_server_name_raises_unknown_server_naming_the_known_ones():
    with pytest.raises(catalog.UnknownServer) as raised:
        serve("nope")
    message = str(raised.value)
    assert "'nope'" in message, f"the error does not repeat the unknown name: {message!r}"
    missing = [name for name in catalog.SERVERS if name not in message]
    assert not missing, f"the error does not name {missing}: {message!r}"


def test_starting_and_stopping_servers_leaks_no_file_descriptor():
    before = open_fds("self")
    for _ in range(5):
        with serve("example2") as server:
            http_get(server)
    leaked = {fd: target for fd, target in open_fds("self").items() if fd not in before}
    assert not leaked, f"file descriptors left open after five servers came and went: {leaked}"
