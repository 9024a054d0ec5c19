"""Chapter 11's mechanics besides ``bench.throughput``: system calls per request, example 3 under load, the steps.

    count_calls(trace)                                   strace's lines -> {system call: how many}
    system_calls(name, requests=400, concurrency=20)     a server traced by strace while ab loads it -> SystemCalls
    system_calls_of(server, requests=400, concurrency=20)    the same, on a server already running
    example3_under_load(seconds=1)                       wrk against the article's example 3, then the reset it dies of
    step_server(step)                                    one step from edge to fast (servers/steps.py), started
    saved_throughput(), saved_steps()                    the results saved with the package, as dicts

    python -m epollbook.throughput steps [--rounds N] [--seconds S] [--out DIR]   measure the steps, save steps.json

strace stops the server at every system call to report it, so a traced
server is many times slower; what it counts is still each call the server
makes, and a load of ``concurrency`` connections keeps several requests in
each ``epoll_wait`` as wrk's 100 do (a server answering one client at a time
waits once or twice per request instead).
"""

import argparse
import collections
import dataclasses
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

from epollbook import clients
from epollbook.launch import Server, serve

SAVED = pathlib.Path(__file__).parent / "saved" / "throughput.json"
"""``python -m epollbook.bench throughput`` as measured by the book's authors (date and machine inside)."""

SAVED_STEPS = SAVED.with_name("steps.json")
"""``python -m epollbook.throughput steps`` as measured by the book's authors."""

FEW_CONNECTIONS = 4
FEW_CONNECTIONS_SERVERS = ("step6", "fast", "fast-gathering-always")
"""``steps`` measures these with wrk's connections this few too: what step 7's pause costs where it does not pay."""

# "123 " (strace -f's thread id), then the call's name and its opening parenthesis. A call another thread
# interrupted is split in two lines, "name(... <unfinished ...>" and "<... name resumed>...": one call, counted
# on its first line. Lines that are not calls ("--- SIGTERM ...", "+++ exited with 0 +++") have no "name(".
_CALL = re.compile(r"^(?:\[pid\s+)?(?:\d+\]?\s+)?([a-z_][a-z0-9_]*)\(")


def count_calls(trace):
    """Count the system calls in *trace*, strace's output (text, with or without ``-f``'s thread ids).

    Returns a ``collections.Counter``: call name -> how many times it was
    made. A call strace split in two lines (``<unfinished ...>``, then
    ``<... resumed>``) counts once; a call that failed (``= -1 EAGAIN``)
    counts as any other: it was made. Never raises on text.
    """
    counts = collections.Counter()
    for line in trace.splitlines():
        match = _CALL.match(line.strip())
        if match:
            counts[match[1]] += 1
    return counts


class SystemCalls(NamedTuple):
    """What one server's trace counted: ``requests`` answered, ``counts`` (call -> how many), ``trace`` (the text)."""

    server: str
    requests: int
    counts: dict
    trace: str

    def per_request(self):
        """``{call: calls per request}``, the most frequent first."""
        return {call: count / self.requests for call, count in sorted(self.counts.items(), key=lambda item: -item[1])}

    def total(self):
        """All system calls per request."""
        return sum(self.counts.values()) / self.requests


def system_calls(name, requests=400, concurrency=20, timeout=30.0):
    """Start server *name*, trace it with ``strace -f`` while ``ab`` sends *requests*; return ``SystemCalls``.

    Every thread is traced (``-f``: a thread-per-connection server's too), so
    each line starts with the thread's id. The trace starts after a first
    request (the server's start-up is not counted) and ends once ab has its
    answers and the server has closed them. Raises ``ToolMissing`` without
    strace or ab, ``RuntimeError`` if strace cannot attach (a kernel that
    forbids ptrace) or ab fails.
    """
    with serve(name) as server:
        return system_calls_of(server, requests, concurrency, timeout)


def system_calls_of(server, requests=400, concurrency=20, timeout=30.0):
    """``system_calls`` on a running *server* (``launch.Server``), as it is: idle clients it holds stay held."""
    strace = clients.require_tool("strace")
    with tempfile.TemporaryDirectory(prefix="epollbook-strace-") as directory:
        clients.http_get(server)
        path = pathlib.Path(directory, "trace.txt")
        tracer = subprocess.Popen([strace, "-f", "-qq", "-o", str(path), "-p", str(server.pid)],
                                  stderr=subprocess.PIPE, text=True)
        try:
            if not _attached(path, tracer, server):
                raise RuntimeError(f"strace could not attach to {server.name}: {tracer.stderr.read().strip()}")
            start = path.read_text().rfind("\n") + 1  # the calls before the load (the attach) are not the requests'
            result = clients.ab(server, requests=requests, concurrency=concurrency, timeout=timeout)
            time.sleep(0.05)  # the last connections' FIN and close, after ab has its answers
        finally:
            tracer.terminate()
            tracer.communicate(timeout=10)
        if result.failed:
            raise RuntimeError(f"{result.failed} of ab's requests to {server.name} failed under strace")
        text = path.read_text()[start:]
    return SystemCalls(server.name, requests, dict(count_calls(text)), text)


def _attached(path, tracer, server, within=5.0):
    """Wait until strace has written its first line (it is attached) or ended; True if attached."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and tracer.poll() is None:
        clients.http_get(server)  # a request makes a line of the trace at once
        if path.exists() and path.stat().st_size:
            return True
        time.sleep(0.02)
    return False


class UnderLoad(NamedTuple):
    """Example 3 under ``wrk``: how it ended, and then under clients that reset as the answer arrives.

    Without wrk, ``requests``, ``socket_errors`` and ``survived_wrk`` are None.
    """

    requests: int | None       # wrk's completed requests
    socket_errors: int | None
    survived_wrk: bool | None
    resets_to_die: int | None  # how many resetting clients it took (None: it served them all, or died under wrk)
    last_words: str            # the last line it printed


def example3_under_load(seconds=1, attempts=3000):
    """Load the article's example 3 with ``wrk -t1 -c 100``; if it survives, send ``clients.reset_as_answered``.

    Without wrk, only the resetting clients. Returns ``UnderLoad``.
    """
    with serve("example3") as server:
        requests = errors = survived = None
        if shutil.which("wrk"):
            result = clients.wrk(server, connections=100, seconds=seconds, threads=1)
            requests, errors = result.requests, result.socket_errors
            time.sleep(0.1)  # time to meet the resets of wrk's last connections
            survived = server.running
        took = clients.reset_as_answered(server, attempts) if server.running else None
        output = server.output.strip().splitlines()
    return UnderLoad(requests, errors, survived, took, output[-1] if output else "")


def saved_throughput():
    """The saved result of ``bench throughput`` (``bench.read_result``'s dict). Raises OSError if it is missing."""
    return json.loads(SAVED.read_text())


def saved_steps():
    """The saved result of ``python -m epollbook.throughput steps``, as a dict. Raises OSError if it is missing."""
    return json.loads(SAVED_STEPS.read_text())


# -- the steps from edge to fast --------------------------------------------------------------------------------


def step_server(step, ready_timeout=10.0):
    """Start *step* of ``servers/steps.py`` (or ``uvloop``, the yardstick) on a free port; return a ``launch.Server``.

    Raises ``KeyError`` for an unknown step, ``ServerDidNotStart`` if it fails to.
    """
    from epollbook.servers.steps import STEPS

    if step == "uvloop":
        return serve("uvloop", ready_timeout=ready_timeout)
    if step not in STEPS:
        raise KeyError(f"there is no step {step!r}: the steps are {', '.join(STEPS)}")
    return Server(step, [sys.executable, "-m", "epollbook.servers.steps", step, "--port", "0"],
                  ready_timeout=ready_timeout)


def main(argv=None):
    """``python -m epollbook.throughput steps``: the steps and uvloop under wrk, then their system calls; save JSON."""
    from epollbook import bench
    from epollbook.servers.steps import STEPS

    parser = argparse.ArgumentParser(prog="python -m epollbook.throughput", description=main.__doc__)
    parser.add_argument("measurement", choices=["steps"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--out", type=pathlib.Path, default=bench.DEFAULT_OUT)
    arguments = parser.parse_args(argv)
    names = ["uvloop", *(name for name in STEPS if name != "fast-gathering-always")]
    started = bench.environment(("wrk", "strace"))
    rows = bench.throughput(names, seconds=arguments.seconds, rounds=arguments.rounds, start=step_server)
    # Step 7's pause with few clients: fast (which does not pause then) against fast pausing all the same.
    few = bench.throughput(FEW_CONNECTIONS_SERVERS, seconds=arguments.seconds, rounds=arguments.rounds,
                           connections=FEW_CONNECTIONS, start=step_server)
    calls = {}
    for name in names:
        with step_server(name) as server:
            calls[name] = system_calls_of(server).per_request()
    parameters = {"servers": names, "seconds": arguments.seconds, "rounds": arguments.rounds, "connections": 100,
                  "system_calls_per_request": calls,
                  "few_connections": {"connections": FEW_CONNECTIONS, "rows": [dataclasses.asdict(row) for row in few]}}
    written = bench.write_result("steps", parameters, rows, out=arguments.out, started=started)
    print(bench._summary_throughput(rows))
    print(f"\nwith {FEW_CONNECTIONS} connections:\n" + bench._summary_throughput(few))
    print("\n".join(f"wrote {path}" for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
