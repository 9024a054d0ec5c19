"""The launcher inside a real Jupyter kernel.

A re-run cell replaces its server, and a killed kernel takes its servers along.
"""

import os
import signal
import time

import psutil
import pytest
from jupyter_client.manager import start_new_kernel

from tools import is_gone

START_A_SERVER = 'from epollbook.launch import serve\nserver = serve("example2")\nprint(server.pid)'


def run(client, code):
    """Execute *code* in the kernel; return what it printed (fails on an error)."""
    printed = []
    reply = client.execute_interactive(code, timeout=30, output_hook=lambda message: printed.append(message))
    assert reply["content"]["status"] == "ok", f"the cell failed: {reply['content']}"
    return "".join(m["content"].get("text", "") for m in printed if m["msg_type"] == "stream")


def gone_within(pid, seconds):
    deadline = time.monotonic() + seconds
    try:
        process = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    while time.monotonic() < deadline:
        if is_gone(process):
            return True
        time.sleep(0.05)
    return is_gone(process)


@pytest.fixture
def kernel():
    manager, client = start_new_kernel(kernel_name="python3")
    try:
        yield manager, client
    finally:
        client.stop_channels()
        if manager.is_alive():
            manager.shutdown_kernel(now=True)


def test_running_the_same_cell_again_leaves_one_server_not_two(kernel):
    _, client = kernel
    first = int(run(client, START_A_SERVER))
    second = int(run(client, START_A_SERVER))
    assert first != second
    assert gone_within(first, 5), f"the server of the first run (pid {first}) still runs after the cell ran again"
    assert psutil.Process(second).is_running()
    run(client, "from epollbook.launch import stop_all\nstop_all()")
    assert gone_within(second, 5)


def test_a_loop_in_one_cell_keeps_every_server_it_starts(kernel):
    _, client = kernel
    pids = run(client, 'from epollbook.launch import serve\nservers = [serve("example2") for _ in range(3)]\n'
                       'print(" ".join(str(s.pid) for s in servers))').split()
    assert all(psutil.Process(int(pid)).is_running() for pid in pids), "a server started by the same run was stopped"
    run(client, "from epollbook.launch import stop_all\nstop_all()")
    assert all(gone_within(int(pid), 5) for pid in pids)


def test_servers_die_with_a_kernel_killed_with_sigkill(kernel):
    manager, client = kernel
    pid = int(run(client, START_A_SERVER))
    os.kill(manager.provisioner.process.pid, signal.SIGKILL)  # no atexit, no handler: only the lifeline is left
    assert gone_within(pid, 5), f"server pid {pid} outlived its kernel killed with SIGKILL"


def test_servers_stop_when_the_kernel_shuts_down(kernel):
    manager, client = kernel
    pid = int(run(client, START_A_SERVER))
    manager.shutdown_kernel(now=False)
    assert gone_within(pid, 5), f"server pid {pid} outlived its kernel's shutdown"
