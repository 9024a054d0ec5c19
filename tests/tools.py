"""Helpers the test modules share (a plain module: conftest.py belongs to the suite as a whole).

Test modules import it as ``from tools import need_tool``: pytest's default
import mode puts this directory on ``sys.path``.
"""

import contextlib
import os
import re
import selectors
import shutil
import socket
import time

import psutil
import pytest

from epollbook.clients import DEBIAN_PACKAGES
from epollbook.launch import running_servers


def running_under_ci():
    """True when the environment variable ``CI`` is ``true`` (as CI services set it)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def need_tool(name):
    """Return the path of program *name* (curl, ab, wrk, chromium).

    If it is not installed, skip the calling test with a reason that says what
    to install; under ``CI=true`` fail it instead, because there ``.ci/run`` has
    installed every tool and a missing one means the setup is broken.
    """
    path = shutil.which(name)
    if path is not None:
        return path
    package = DEBIAN_PACKAGES.get(name, name)
    reason = f"{name} is not installed (on Debian or Ubuntu: `sudo apt-get install {package}`)"
    if running_under_ci():
        pytest.fail(f"{reason}; under CI=true every tool must be there, so this is a failure, not a skip",
                    pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def no_server_left_running():
    """Fail if a server started inside the block is still running when it ends (and stop it).

    Servers that were running before the block (say, a fixture's shared server)
    are left alone.
    """
    before = set(running_servers())
    yield
    left_running = [server for server in running_servers() if server not in before]
    for server in left_running:
        server.stop()  # so one failure does not leak into the next test
    assert not left_running, f"servers still running after the test: {left_running}"


def is_gone(process):
    """True if *process* (a ``psutil.Process``) has exited: reaped, or a zombie nobody reaped yet.

    ``psutil.Process`` remembers the process's start time, so a new process that
    got the same pid does not count as the old one still running.
    """
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def accepts_connections(port, host="127.0.0.1"):
    """True if something accepts a TCP connection on *host*:*port*."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:  # refused (nothing listens), or no answer in time
        return False


def listening_socket():
    """Return a socket listening on a free port of 127.0.0.1, without ``SO_REUSEADDR``.

    While it listens nobody else can listen on that port: ``SO_REUSEADDR``,
    which the article's servers set, lets a server bind next to connections in
    TIME_WAIT, never next to another listener.
    """
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
    except BaseException:
        holder.close()
        raise
    return holder


def wait_until(condition, timeout=5.0):
    """Call *condition* until it returns something true or *timeout* seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


def wait_for_printed(process, pattern, timeout=10.0):
    """Read *process*'s stdout (a pipe) until a line matches *pattern* (a regex); return the match.

    Raises ``TimeoutError`` saying what it printed if no line matches within
    *timeout* seconds or the process closes its stdout first.
    """
    pattern = re.compile(pattern)
    deadline = time.monotonic() + timeout
    printed = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                continue
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            printed += chunk
            for line in printed.decode("utf-8", "replace").splitlines():
                if match := pattern.search(line):
                    return match
    raise TimeoutError(f"no line matching {pattern.pattern!r} within {timeout:g} s "
                       f"(exit status {process.poll()}); it printed: {printed.decode('utf-8', 'replace')!r}")


def processes_with_environment(**variables):
    """Live processes whose environment holds every NAME=value in *variables* (a value of None: any value).

    Processes inherit their environment, so a variable set for one run marks
    everything that run started, even after their parent is gone.
    """
    found = []
    for process in psutil.process_iter():
        try:
            environment = process.environ()
            if process.status() != psutil.STATUS_ZOMBIE and all(
                    name in environment and value in (None, environment[name]) for name, value in variables.items()):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found
