"""The launcher, epollbook.launch: a server starts on a free port, says when it listens, and never outlives its owner.

Also its two parts: epollbook.output (what a server prints, bounded) and
epollbook.lifeline (a child that dies with its owner). Re-running a notebook
cell, and a kernel killed with SIGKILL, need a real kernel:
test_launch_in_a_kernel.py covers them.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from epollbook import catalog
from epollbook.clients import http_get
from epollbook.launch import ServerDidNotStart, serve
from epollbook.lifeline import Lifeline
from epollbook.output import READ_SIZE, Output
from epollbook.probes import open_fds
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
    with pytest.raises(RuntimeError, match="raised inside the block"), serve("example2") as server:
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
    assert "<frozen runpy>" not in output and "runpy.py" not in output, \
        f"runpy's frames are in the traceback:\n{output}"
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


def pipe_ends_held(pid, inode):
    """The ways *pid* holds pipe *inode* open: a list of 'read' and 'write', one per descriptor."""
    held = []
    for fd, target in open_fds(pid).items():
        if target == f"pipe:[{inode}]":
            with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                flags = int(next(line for line in info if line.startswith("flags:")).split()[1], 8)
            held.append("write" if flags & os.O_ACCMODE == os.O_WRONLY else "read")
    return held


def test_only_the_owner_holds_a_servers_lifeline_not_the_server_nor_a_later_server():
    before = open_fds("self")
    with serve("example2") as first:
        first_pipes = {int(target[6:-1]) for fd, target in open_fds("self").items()
                       if fd not in before and target.startswith("pipe:")}
        with serve("example2") as second:
            for inode in first_pipes:
                assert pipe_ends_held(second.pid, inode) == [], \
                    f"the second server holds pipe {inode} of the first: {pipe_ends_held(second.pid, inode)}"
            lifelines = [inode for inode in first_pipes if "write" in pipe_ends_held(os.getpid(), inode)]
            assert len(lifelines) == 1, f"the owner holds write ends of {len(lifelines)} of the first's pipes, not 1"
            held = pipe_ends_held(first.pid, lifelines[0])
            assert held == ["read"], f"the first server holds its own lifeline as {held}, not once for reading"


# -- the lifeline, alone -------------------------------------------------------


WATCHING_CHILD = ("import time\nfrom epollbook.lifeline import exit_with_owner\n"
                  "exit_with_owner()\nprint('watching', flush=True)\ntime.sleep(60)")


def test_a_child_on_a_lifeline_exits_when_its_owner_cuts_it():
    lifeline = Lifeline()
    child = lifeline.popen([sys.executable, "-c", WATCHING_CHILD], stdout=subprocess.PIPE)
    try:
        wait_for_printed(child, "^watching$")
        lifeline.cut()
        lifeline.cut()  # harmless the second time
        assert child.wait(5) == 0, f"the child exited with status {child.returncode} once the line was cut"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()


def test_a_lifeline_holds_one_child_only():
    lifeline = Lifeline()
    child = lifeline.popen([sys.executable, "-c", "pass"])
    try:
        with pytest.raises(RuntimeError, match="already holds a child"):
            lifeline.popen([sys.executable, "-c", "pass"])
    finally:
        lifeline.cut()
        child.wait()


def test_a_child_given_a_lifeline_variable_that_is_no_descriptor_says_so_in_one_line():
    refused = subprocess.run([sys.executable, "-c", WATCHING_CHILD], capture_output=True, text=True, timeout=10,
                             env={**os.environ, "EPOLLBOOK_LIFELINE_FD": "nope"})
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, \
        f"exit status {refused.returncode}, stderr {refused.stderr!r}"
    assert "does not name an open file descriptor" in refused.stderr, f"it said {refused.stderr!r}"


# -- what a server prints, alone ---------------------------------------------------


@pytest.fixture
def pipe():
    """A real pipe, as binary files: (its read end, for an Output to read; its write end, unbuffered)."""
    read_end, write_end = os.pipe()
    with open(read_end, "rb") as reader, open(write_end, "wb", buffering=0) as writer:
        yield reader, writer


def test_output_keeps_the_newest_lines_within_its_limit_and_on_line_sees_every_line(pipe):
    reader, writer = pipe
    seen = []
    output = Output(reader, limit=100, on_line=seen.append)
    lines = [f"line {n:03}\n".encode() for n in range(50)]  # 9 bytes each, 450 in all
    writer.write(b"".join(lines))
    writer.close()
    assert output.wait_closed(5), "the output was not closed 5 s after the writer closed"
    kept = output.text
    assert len(kept) <= 100 and kept.endswith("line 049\n"), f"it kept {len(kept)} characters: {kept!r}"
    assert kept == "".join(line.decode() for line in lines[-len(kept.splitlines()):]), f"not whole lines: {kept!r}"
    assert seen == lines, f"on_line saw {len(seen)} lines of {len(lines)}"


def test_output_reads_a_line_without_end_in_pieces_so_it_cannot_grow_without_end(pipe):
    reader, writer = pipe
    output = Output(reader, limit=READ_SIZE)
    writer.write(b"x" * (3 * READ_SIZE + 5))
    writer.close()
    assert output.wait_closed(5), "the output was not closed 5 s after the writer closed"
    assert output.text == "x" * 5, f"kept {len(output.text)} characters, not the last 5-byte piece"


def test_output_wait_for_returns_false_at_once_when_the_process_closes_without_printing_it(pipe):
    reader, writer = pipe
    output = Output(reader)
    writer.write(b"something else\n")
    writer.close()
    start = time.monotonic()
    found = output.wait_for("never printed", timeout=10)
    waited = time.monotonic() - start
    assert found is False and waited < 5, f"wait_for returned {found} after {waited:.1f} s"
    assert output.wait_for("something", timeout=0) is True, f"it does not find what was printed: {output.text!r}"
