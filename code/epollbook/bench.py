"""Measurements that take a load generator and a while: run live by the chapters (short) or by ``make bench`` (full).

    backlog_sweep(backlogs, server=..., seconds=..., rounds=...)    ab -c 100 against one listen backlog after another
    write_result(name, parameters, rows, figure=None, out=...)     the shared writer: NAME.json and NAME.png
    read_result(path)                                              what write_result wrote, as a dict
    scale_preset(preset)                                           chapter 10's waits and epoll_ctl costs

    python -m epollbook.bench backlog [--full] [--out DIR] [--server NAME ...]
    python -m epollbook.bench scale [--full] [--out DIR]

One function per measurement returns rows (frozen dataclasses); one writer
saves any of them with what makes a number worth keeping: the date, the
machine, the kernel, Python, the tools' versions and the parameters. A new
measurement adds its function, its presets and a line to ``MEASUREMENTS``.

What ab shows of a listen backlog, and what it hides
----------------------------------------------------

``ab -c 100`` opens 100 connections at once. The kernel completes handshakes
without the server, until backlog + 1 connections wait for ``accept()``; it
drops the SYNs beyond that (``ListenOverflows`` counts them), and each client
whose SYN was dropped sends it again 1 s, 3 s, 7 s, ... after the first.
A dropped SYN therefore costs its client a second: in ab's numbers it shows
as a connect time of 1000 ms or more, and only if the run lasts long enough
for the SYN to be sent again. A run shorter than a second never sees it: ab
finishes its requests on the connections that got in and leaves the others
unfinished, unreported. So each run here lasts a fixed time (``ab -t``), the
same for every backlog, counts the connections that took a second, and
samples how many of ab's clients wait for an answer to their SYN meanwhile.

A connection can also be dropped later: the client's last ACK of the handshake
finds the queue full. The client then believes it is connected and sends its
request into a connection the server has not got; it is completed when a
retransmission finds room, if one does before the client gives up. When every one of ab's connections waits
like that, or for a SYN sent again, ab sees nothing happen: after
``gave_up_after`` seconds it stops the run and reports only how many requests
it completed. Such a row says so (``gave_up``) rather than disappear.
"""

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import NamedTuple

from epollbook import catalog, clients, probes
from epollbook.launch import serve

DEFAULT_OUT = pathlib.Path("_build/bench")

SLOW_CONNECT_MS = 1000
"""A connect that took this long had its SYN dropped and sent again (Linux resends a SYN after 1 s)."""


# -- the rows ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Latency:
    """How long the requests of one run took, in whole milliseconds (ab's resolution): median, 99th percentile, most.

    All three are None when no request completed.
    """

    p50: int | None
    p99: int | None
    max: int | None

    @classmethod
    def of(cls, milliseconds):
        """The median, 99th percentile (nearest rank) and maximum of *milliseconds*, a list of numbers."""
        ordered = sorted(milliseconds)
        if not ordered:
            return cls(None, None, None)
        return cls(_nearest_rank(ordered, 0.50), _nearest_rank(ordered, 0.99), ordered[-1])


def _nearest_rank(ordered, fraction):
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


@dataclasses.dataclass(frozen=True)
class BacklogRow:
    """One ab run of *concurrency* connections at a time against one server listening with one backlog.

    ``mode`` is "time" for a run of a fixed time (``ab -t``), "count" for a
    run until a number of requests is done (``ab -n``, the article's way);
    ``seconds`` is how long the run took. ``requests`` ab completed;
    ``slow_connects`` of them took ``SLOW_CONNECT_MS`` or more to connect.
    ``failed`` is what ab counted as failures: connections refused or reset,
    answers cut short or of another length (ab goes on after each, so a
    server that stopped can have more failures than requests).
    ``most_waiting`` is the most of ab's connections seen waiting for an
    answer to their SYN (``SYN-SENT``), sampled every quarter of a second
    (None without ``ss``): ab's numbers leave them out until they get in.
    ``listen_overflows`` is how much the kernel's ``ListenOverflows`` counter
    rose during the run; it counts for the whole machine, so another program's
    full queue would add to it. ``gave_up`` is True when ab stopped the run
    because nothing happened on any of its connections for a while: then ab
    reported only ``requests``, and ``failed``, ``requests_per_second``, the
    latencies and ``slow_connects`` are None.
    """

    server: str
    backlog: int
    concurrency: int
    round: int
    mode: str
    requests: int
    failed: int | None
    requests_per_second: float | None
    connect_ms: Latency
    total_ms: Latency
    slow_connects: int | None
    most_waiting: int | None
    listen_overflows: int
    seconds: float
    gave_up: bool

    @classmethod
    def from_dict(cls, fields):
        """Rebuild a row from ``dataclasses.asdict(row)``, as read back from JSON."""
        return cls(**{**fields, "connect_ms": Latency(**fields["connect_ms"]),
                      "total_ms": Latency(**fields["total_ms"])})


# -- ab, run and read ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AbRun:
    """What one ab run gave: its report's numbers and each request's timings (``ab -g``)."""

    requests: int
    failed: int | None
    requests_per_second: float | None
    connect_ms: list   # per request, ms
    total_ms: list     # per request, ms
    gave_up: bool
    report: str


def parse_ab_report(report):
    """Read ab's report (its stdout); return ``(complete, failed, requests per second)``.

    When ab gave up before the end it prints only "Total of N requests
    completed": then ``(N, None, None)``. Raises ``ValueError`` if the text
    has neither.
    """
    complete = re.search(r"^Complete requests:\s+(\d+)", report, re.MULTILINE)
    if complete:
        failed = re.search(r"^Failed requests:\s+(\d+)", report, re.MULTILINE)
        per_second = re.search(r"^Requests per second:\s+([\d.]+)", report, re.MULTILINE)
        return int(complete[1]), int(failed[1]) if failed else None, float(per_second[1]) if per_second else None
    total = re.search(r"Total of (\d+) requests completed", report)
    if total:
        return int(total[1]), None, None
    raise ValueError(f"this is not a report of ab's: it says neither 'Complete requests' nor 'Total of':\n{report}")


def parse_ab_timings(text):
    """Read the file ``ab -g`` writes (a header, then one tab-separated line per request); return ``(connect, total)``.

    Both are lists of milliseconds, one per completed request: the ``ctime``
    and ``ttime`` columns. Raises ``ValueError`` if the header lacks them.
    """
    header, *lines = text.splitlines() or [""]
    names = header.split("\t")
    if "ctime" not in names or "ttime" not in names:
        raise ValueError(f"not a file of ab -g: its header {header!r} has no ctime and ttime columns")
    connect_column, total_column = names.index("ctime"), names.index("ttime")
    connect, total = [], []
    for line in lines:
        fields = line.split("\t")
        if len(fields) == len(names):
            connect.append(int(fields[connect_column]))
            total.append(int(fields[total_column]))
    return connect, total


def run_ab(target, *, seconds=None, requests=1_000_000, concurrency=100, gave_up_after=5, deadline=None):
    """Run ab on *target*, *concurrency* connections at a time; return an ``AbRun``.

    With *seconds* (whole), ``ab -t``: the run lasts that long, or until
    *requests* are done. Without, ``ab -n requests`` as the article runs it:
    until ab has completed *requests*, however long the last ones take. Either
    way ab stops by itself if nothing at all happens on its connections for
    *gave_up_after* seconds (its ``-s``); the run is then ``gave_up``. Resets
    count as failed requests (``-r``) rather than end the run. The run is
    killed after *deadline* seconds (default: *seconds* + *gave_up_after* +
    30, or 120 without *seconds*). Raises ``ToolMissing`` without ab,
    ``RuntimeError`` with ab's own words if it fails otherwise, and
    ``subprocess.TimeoutExpired`` after the deadline.
    """
    program = clients.require_tool("ab")
    if deadline is None:
        deadline = 120 if seconds is None else seconds + gave_up_after + 30
    with tempfile.TemporaryDirectory(prefix="epollbook-ab-") as directory:
        timings = pathlib.Path(directory, "timings.tsv")
        # -t first: it sets -n to 50000, which the -n after it overrides.
        limit = [] if seconds is None else ["-t", str(seconds)]
        command = [program, "-r", *limit, "-n", str(requests), "-c", str(concurrency),
                   "-s", str(gave_up_after), "-g", str(timings), clients.url_of(target)]
        finished = subprocess.run(command, capture_output=True, text=True, timeout=deadline)
        gave_up = finished.returncode != 0 and "timeout specified has expired" in finished.stderr
        if finished.returncode != 0 and not gave_up:
            said = finished.stderr.strip() or finished.stdout.strip()
            raise RuntimeError(f"ab failed (exit {finished.returncode}): {said}")
        complete, failed, per_second = parse_ab_report(finished.stdout)
        connect, total = parse_ab_timings(timings.read_text()) if timings.exists() else ([], [])
    return AbRun(complete, failed, per_second, connect, total, gave_up, finished.stdout)


# -- the backlog sweep ---------------------------------------------------------------------------------------


class WaitingToConnect:
    """While the ``with`` block runs, count the sockets of this machine connecting to *port* (``SYN-SENT``).

    A thread asks ``ss`` (which filters in the kernel: reading all of
    ``/proc/net/tcp`` after a load test takes a tenth of a second and more)
    every *every* seconds; ``most`` is the largest count seen, or None if ss
    is missing or failed.
    """

    def __init__(self, port, every=0.25):
        self.port, self.every = port, every
        self.most = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True, name=f"SYN-SENT to port {port}")

    def __enter__(self):
        if shutil.which("ss"):
            self._thread.start()
        return self

    def __exit__(self, *exception):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _sample(self):
        command = ["ss", "-Htn", "state", "syn-sent", f"( dport = :{self.port} )"]
        while not self._stop.wait(self.every):
            try:
                finished = subprocess.run(command, capture_output=True, text=True, timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                return
            if finished.returncode != 0:
                return
            count = sum(1 for line in finished.stdout.splitlines() if line.strip())
            self.most = max(self.most or 0, count)


BACKLOG_PRESETS = {
    # The chapter's, at build time, about 7 s: runs of 2 s, since in 1 s the SYNs sent again after 1 s come too late
    # to be seen. 1 is the article's listen(1); 64 is over its 50 and still under ab's 100; 128 holds all of ab's
    # connections. (32, under 50, behaves as 64 does: make bench runs it.)
    "short": {
        "backlog": {"backlogs": (1, 64, 128), "servers": ("example2",), "seconds": 2, "rounds": 1},
    },
    # make bench, about two minutes. Timed: both sides of 99 (a queue of backlog + 1 = 100 holds all of ab's
    # connections), the blocking example 2 and the corrected epoll server, runs of 3 s (long enough for a SYN sent
    # again a second time, 3 s after the first), two rounds. Counted: ab -n as the article runs it, where the last
    # requests wait for SYNs sent again, and ab may give up.
    "full": {
        "backlog": {"backlogs": (1, 8, 32, 64, 99, 128), "servers": ("example2", "level"), "seconds": 3,
                    "rounds": 2},
        "backlog-count": {"backlogs": (1, 32, 48, 64, 128), "servers": ("example2",), "seconds": None,
                          "requests": 20_000, "rounds": 2},
    },
}


def backlog_sweep(backlogs=BACKLOG_PRESETS["short"]["backlog"]["backlogs"], *, server="example2", seconds=2,
                  requests=1_000_000, concurrency=100, rounds=1, gave_up_after=5, options=()):
    """Load *server* with ``ab -c concurrency`` once per backlog in *backlogs*; return ``[BacklogRow]``.

    Each run starts the server afresh, listening with that backlog (options
    *options* go to its command line), runs ab for *seconds* whole seconds
    (at most *requests* requests) or, with *seconds* None, until ab has
    completed *requests* (``ab -n``, the article's way), and stops the server,
    whatever happened. With *rounds* above 1 the whole sweep runs that many
    times, one backlog after another each round, so that a slow moment of the
    machine falls on all of them; rows come in the order they were measured.
    The kernel's ``ListenOverflows`` counter is read before and after each
    run. Raises ``clients.ToolMissing`` if ab is not installed, ``ValueError``
    for a backlog below 0, seconds that are not whole and at least 1, or
    fewer requests than connections.
    """
    if any(backlog < 0 for backlog in backlogs) or not backlogs:
        raise ValueError(f"backlogs must be whole numbers of 0 or more, at least one; got {backlogs!r}")
    if seconds is not None and (seconds < 1 or int(seconds) != seconds):
        raise ValueError(f"ab runs for whole seconds, at least 1 (or None: until the requests are done); "
                         f"got {seconds!r}")
    if requests < concurrency:
        raise ValueError(f"ab needs at least as many requests as connections; got {requests} for {concurrency}")
    clients.require_tool("ab")
    rows = []
    for round_number in range(1, rounds + 1):
        for backlog in backlogs:
            with serve(server, backlog=backlog, options=options) as running:
                before = probes.netstat_counters()["ListenOverflows"]
                started = time.monotonic()
                with WaitingToConnect(running.port) as waiting:
                    run = run_ab(running, seconds=None if seconds is None else int(seconds), requests=requests,
                                 concurrency=concurrency, gave_up_after=gave_up_after)
                elapsed = time.monotonic() - started
                overflows = probes.netstat_counters()["ListenOverflows"] - before
            rows.append(BacklogRow(
                server=server, backlog=backlog, concurrency=concurrency, round=round_number,
                mode="count" if seconds is None else "time",
                requests=run.requests, failed=run.failed, requests_per_second=run.requests_per_second,
                connect_ms=Latency.of(run.connect_ms), total_ms=Latency.of(run.total_ms),
                slow_connects=None if run.gave_up else sum(ms >= SLOW_CONNECT_MS for ms in run.connect_ms),
                most_waiting=waiting.most,
                listen_overflows=overflows, seconds=round(elapsed, 3), gave_up=run.gave_up))
    return rows


def backlog_sweep_preset(preset="short", servers=None):
    """Run the sweeps of *preset* ("short" or "full"), on their servers or on *servers*.

    Returns ``[(name, parameters, rows)]``, one per sweep of the preset: the
    timed sweep ``backlog`` and, in the full preset, ``backlog-count``. The
    servers take turns within each round. Raises ``ValueError`` for an
    unknown preset.
    """
    try:
        sweeps = BACKLOG_PRESETS[preset]
    except KeyError:
        raise ValueError(f"there is no preset {preset!r}: the presets are {', '.join(BACKLOG_PRESETS)}") from None
    results = []
    for name, chosen in sweeps.items():
        parameters = {"requests": 1_000_000, **chosen, "preset": preset, "concurrency": 100}
        if servers:
            parameters["servers"] = tuple(servers)
        rows = []
        for round_number in range(1, parameters["rounds"] + 1):
            for server in parameters["servers"]:
                measured = backlog_sweep(parameters["backlogs"], server=server, seconds=parameters["seconds"],
                                         requests=parameters["requests"], concurrency=parameters["concurrency"])
                rows += [dataclasses.replace(row, round=round_number) for row in measured]
        results.append((name, parameters, rows))
    return results


# -- throughput: requests per second and the server's CPU per request (chapter 11) -------------------------------


@dataclasses.dataclass(frozen=True)
class ThroughputRow:
    """One ``wrk -t1 -c connections -d seconds`` run against one server, a new connection per request.

    The book's servers answer HTTP/1.0 and close, so wrk opens a new
    connection for each request (its parser sees no keep-alive; only
    ``uvloop-keep-alive`` says keep-alive, and keeps wrk's connections); ``accepted``
    checks it: how much the kernel's count of accepted connections
    (``Tcp.PassiveOpens``) rose during the run, for the whole machine, so about
    ``requests`` plus wrk's last unfinished ones plus anything else connecting.
    ``requests`` wrk completed (``requests_per_second`` is wrk's figure);
    ``socket_errors`` (connect, read, write, timeout) and ``non_2xx`` what it
    counted wrong. ``cpu_seconds`` is the server's CPU time during the run
    (user + system, every thread, from ``/proc``, to a clock tick), and
    ``cpu_us_per_request`` that per request, in microseconds (None without
    requests). ``wrk_cpu`` is the CPU wrk was pinned to, and the server was
    pinned to every other CPU this process may use, ``server_cpu`` the first
    of them (both None: the process may use only one CPU, so neither was
    pinned). On two cores that is one each; on more, a server of several
    processes (``fast-reuseport``) has the rest.
    ``wrk_cpu_us_per_request`` is wrk's own CPU time per request, and
    ``wakeups_per_request`` how often the server's threads were woken
    (voluntary context switches) per request (both None in results saved
    before they were measured): when wrk runs out of CPU first, it sets the
    rate, and a server changes it by what it makes wrk's side do, waking the
    server among it.
    A server that forks workers is measured whole: pinned and counted over
    every process it started.
    """

    server: str
    round: int
    seconds: int
    connections: int
    requests: int
    requests_per_second: float
    socket_errors: int
    non_2xx: int
    cpu_seconds: float
    cpu_us_per_request: float | None
    accepted: int
    server_cpu: int | None
    wrk_cpu: int | None
    wrk_cpu_us_per_request: float | None = None
    wakeups_per_request: float | None = None


class ThroughputSummary(NamedTuple):
    """One server's medians over its rounds, and its errors over all of them."""

    server: str
    rounds: int
    requests_per_second: float
    cpu_us_per_request: float | None
    socket_errors: int
    non_2xx: int
    wrk_cpu_us_per_request: float | None = None
    wakeups_per_request: float | None = None


THROUGHPUT_PRESETS = {
    # The chapter's, at build time, about 12 s: edge and fast between asyncio and uvloop, 1 s a run.
    "short": {"servers": ("edge", "fast", "asyncio-protocol", "uvloop"), "seconds": 1, "rounds": 3},
    # make bench, about four minutes: every server that survives wrk -c 100, 5 s a run, five rounds; and fast and
    # uvloop keeping their connections (wrk then connects 100 times in all), for what a connection costs.
    "full": {"servers": ("level", "edge", "fast", "threaded", "selectors", "asyncio-protocol", "asyncio-streams",
                         "uvloop", "fast-reuseport", "fast-keep-alive", "uvloop-keep-alive"),
             "seconds": 5, "rounds": 5},
}


def _pin(pid, cpus):
    """Pin every thread of process *pid* and of its descendants to the set *cpus* (an affinity set on a pid holds
    for that one thread)."""
    for process in probes.process_tree(pid):
        with contextlib.suppress(FileNotFoundError):  # a process that has just ended
            for thread in os.listdir(f"/proc/{process}/task"):
                with contextlib.suppress(ProcessLookupError):  # a thread that has just ended
                    os.sched_setaffinity(int(thread), cpus)


def _tree_usage(pid):
    """(CPU seconds, wake-ups) so far of *pid* and every process it started that still runs.

    A wake-up is a voluntary context switch: a thread went to sleep (in
    ``epoll_wait``, mostly) and something woke it. Counted thread by thread:
    ``/proc/PID/status`` counts the main thread only.
    """
    cpu = wakeups = 0
    for process in probes.process_tree(pid):
        with contextlib.suppress(ProcessLookupError):  # a worker that has just ended
            cpu += probes.cpu_seconds(process)
            for thread in os.listdir(f"/proc/{process}/task"):
                with contextlib.suppress(ProcessLookupError):
                    wakeups += probes.context_switches(process, int(thread)).voluntary
    return cpu, wakeups


def throughput(servers=THROUGHPUT_PRESETS["short"]["servers"], *, seconds=1, rounds=3, connections=100, start=serve):
    """Load each of *servers* with ``wrk -t1 -c connections -d seconds``, *rounds* times; return ``[ThroughputRow]``.

    The servers are started once, each on a free port, and take turns: one
    run each per round, in the given order in odd rounds and the reverse in
    even ones, so that neither a slow moment of the machine nor going first
    favours one of them. ``start(name)`` starts each (default ``launch.serve``;
    ``throughput.step_server`` starts chapter 11's steps). wrk runs on the
    last CPU this process may use and the servers on the others, so a server
    never competes with its load generator. Each server is warmed up with a
    few requests first. Raises ``clients.ToolMissing`` without wrk,
    ``RuntimeError`` if wrk fails, and ``ValueError`` for *seconds* or
    *rounds* below 1.
    """
    if seconds < 1 or int(seconds) != seconds or rounds < 1:
        raise ValueError(f"wrk runs for whole seconds, at least 1, and at least one round; "
                         f"got seconds={seconds!r}, rounds={rounds!r}")
    clients.require_tool("wrk")
    cpus = sorted(os.sched_getaffinity(0))
    wrk_cpu = cpus[-1] if len(cpus) > 1 else None
    server_cpus = set(cpus[:-1]) if len(cpus) > 1 else None
    server_cpu = cpus[0] if len(cpus) > 1 else None
    rows = []
    with contextlib.ExitStack() as stack:
        running = {name: stack.enter_context(start(name)) for name in servers}
        for server in running.values():
            if server_cpus is not None:
                _pin(server.pid, server_cpus)
            for _ in range(20):
                clients.http_get(server)
        for round_number in range(1, rounds + 1):
            for name in servers if round_number % 2 else reversed(servers):
                server = running[name]
                (before_cpu, before_wakeups), before_opens = (_tree_usage(server.pid),
                                                              probes.netstat_counters()["Tcp.PassiveOpens"])
                result = clients.wrk(server, connections=connections, seconds=int(seconds), threads=1, cpu=wrk_cpu)
                after_cpu, after_wakeups = _tree_usage(server.pid)
                cpu = after_cpu - before_cpu
                accepted = probes.netstat_counters()["Tcp.PassiveOpens"] - before_opens
                if not server.running:
                    raise RuntimeError(f"{name} died under wrk -c {connections}; it printed:\n{server.output}")
                rows.append(ThroughputRow(
                    server=name, round=round_number, seconds=int(seconds), connections=connections,
                    requests=result.requests, requests_per_second=result.requests_per_second,
                    socket_errors=result.socket_errors, non_2xx=result.non_2xx, cpu_seconds=round(cpu, 3),
                    cpu_us_per_request=round(cpu / result.requests * 1e6, 2) if result.requests else None,
                    accepted=accepted, server_cpu=server_cpu, wrk_cpu=wrk_cpu,
                    wrk_cpu_us_per_request=round(result.cpu_seconds / result.requests * 1e6, 2)
                    if result.requests else None,
                    wakeups_per_request=round((after_wakeups - before_wakeups) / result.requests, 3)
                    if result.requests else None))
    return rows


def _median_of(rows, field):
    """The median of *field* over *rows* where it was measured, or None where it never was."""
    import statistics

    values = [getattr(row, field) for row in rows if getattr(row, field) is not None]
    return statistics.median(values) if values else None


def throughput_summary(rows):
    """Each server's medians over its rounds: ``{name: ThroughputSummary}``, in the order the rows name them."""
    import statistics

    summaries = {}
    for name in dict.fromkeys(row.server for row in rows):
        own = [row for row in rows if row.server == name]
        summaries[name] = ThroughputSummary(
            name, len(own), statistics.median(row.requests_per_second for row in own),
            _median_of(own, "cpu_us_per_request"),
            sum(row.socket_errors for row in own), sum(row.non_2xx for row in own),
            _median_of(own, "wrk_cpu_us_per_request"), _median_of(own, "wakeups_per_request"))
    return summaries


# -- select, poll and epoll at scale (chapter 10) --------------------------------------------------------------

SCALE_PRESETS = {
    # The chapter's, at build time, well under a second: the waits cost microseconds, the 10,000 connections a few
    # hundredths of a second to open.
    "short": {"sizes": (10, 30, 100, 300, 900, 1000, 3000, 10_000), "rounds": 5, "batch_seconds": 0.002,
              "change_sizes": (10, 10_000), "changes": 2000},
    # make bench, a few seconds: more sizes, three times the rounds, longer batches.
    "full": {"sizes": (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000), "rounds": 15, "batch_seconds": 0.005,
             "change_sizes": (10, 100, 1000, 10_000), "changes": 5000},
}


def scale_preset(preset="short"):
    """Run chapter 10's measurements with *preset*'s parameters; return ``(parameters, wait rows, change rows)``.

    The wait rows are ``scale.wait_costs``'s, the change rows
    ``scale.change_costs``'s, at the preset's sizes that this process's hard
    descriptor limit leaves room for. Raises ``ValueError`` for an unknown
    preset.
    """
    from epollbook import scale

    try:
        chosen = SCALE_PRESETS[preset]
    except KeyError:
        raise ValueError(f"there is no preset {preset!r}: the presets are {', '.join(SCALE_PRESETS)}") from None
    # As many connections as the hard descriptor limit leaves room for: the parameters say which sizes ran.
    parameters = {**chosen, "preset": preset, "calls": scale.CALLS, "sizes": scale.sizes_within_limit(chosen["sizes"]),
                  "change_sizes": scale.sizes_within_limit(chosen["change_sizes"])}
    waits = scale.wait_costs(parameters["sizes"], rounds=chosen["rounds"], batch_seconds=chosen["batch_seconds"])
    changes = scale.change_costs(parameters["change_sizes"], changes=chosen["changes"], rounds=chosen["rounds"])
    return parameters, waits, changes


def _run_scale(arguments):
    from epollbook import plots, scale

    started = environment(tools=())
    try:
        parameters, waits, changes = scale_preset("full" if arguments.full else "short")
    except scale.NotEnoughDescriptors as error:
        raise RuntimeError(str(error)) from None
    figure = plots.wait_costs(waits, reference=scale.tlpi_us_per_wait())
    written = write_result("scale", parameters, waits, figure=figure, out=arguments.out, started=started)
    written += write_result("scale-changes", parameters, changes, out=arguments.out, started=started)
    return (waits, changes), written


def _summary_scale(rows):
    waits, changes = rows
    lines = [f"{'call':<7} {'connections':>11} {'highest fd':>10} {'µs a wait (CPU)':>15} {'wall':>9}  refused"]
    for row in waits:
        cost = "-" if row.cpu_us is None else f"{row.cpu_us:.3f}"
        wall = "-" if row.wall_us is None else f"{row.wall_us:.3f}"
        lines.append(f"{row.call:<7} {row.connections:>11} {row.highest_fd:>10} {cost:>15} {wall:>9}  "
                     f"{row.error or ''}")
    lines.append(f"{'registered':>10} {'µs epoll_ctl MOD':>16} {'µs ADD + DEL':>12} {'µs a wait':>9}")
    lines += [f"{row.connections:>10} {row.modify_us:>16.3f} {row.register_us:>12.3f} {row.wait_us:>9.3f}"
              for row in changes]
    return "\n".join(lines)


def _scale_arguments(command):
    """The scale measurement has no options of its own."""


# -- the shared writer ---------------------------------------------------------------------------------------


def tool_version(program):
    """The version line a tool prints of itself (``ab -V``, ``wrk --version``), or None if it is not installed.

    Where dpkg knows the tool's package, its version follows in brackets: ab
    has said "Version 2.3" through many releases of apache2-utils.
    """
    flag = {"ab": "-V", "wrk": "--version"}.get(program, "--version")
    with contextlib.suppress(clients.ToolMissing, OSError, subprocess.TimeoutExpired):
        finished = subprocess.run([clients.require_tool(program), flag], capture_output=True, text=True, timeout=10)
        said = (finished.stdout + finished.stderr).strip()
        if not said:
            return None
        package = clients.DEBIAN_PACKAGES.get(program)
        if package and shutil.which("dpkg-query"):
            asked = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True,
                                   timeout=10)
            if asked.returncode == 0 and asked.stdout.strip():
                return f"{said.splitlines()[0]} ({package} {asked.stdout.strip()})"
        return said.splitlines()[0]
    return None


def _cpu_model():
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _setting(name):
    with contextlib.suppress(LookupError, ValueError, OSError):
        return probes.sysctl(name)
    return None


def environment(tools=("ab",), settings=()):
    """Where and when a measurement ran: date, machine, kernel, Python, *tools*' versions, kernel *settings*."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"architecture": platform.machine(), "cpu": _cpu_model(), "cpus": os.cpu_count(),
                    "load_average": [round(load, 2) for load in os.getloadavg()]},
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tools": {tool: tool_version(tool) for tool in tools},
        "settings": {name: _setting(name) for name in settings},
    }


def write_result(name, parameters, rows, *, figure=None, out=DEFAULT_OUT, tools=("ab",), settings=(),
                 started=None):
    """Save a measurement: ``out/NAME.json`` (``environment()``, *parameters*, the rows) and ``out/NAME.png``.

    *rows* are dataclasses; *figure* a matplotlib ``Figure`` (no PNG without
    it); *started* the environment read before the runs (default: now).
    Creates *out* if need be. Returns the paths written.
    """
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = {**(started or environment(tools, settings)), "measurement": name, "parameters": parameters,
              "rows": [dataclasses.asdict(row) for row in rows]}
    written = [out / f"{name}.json"]
    written[0].write_text(json.dumps(result, indent=1) + "\n")
    if figure is not None:
        written.append(out / f"{name}.png")
        figure.savefig(written[1], dpi=120)
    return written


def read_result(path):
    """Read what ``write_result`` wrote; return it as a dict (``rows`` as dicts). Raises OSError, ValueError."""
    return json.loads(pathlib.Path(path).read_text())


# -- the command line ----------------------------------------------------------------------------------------

BACKLOG_SETTINGS = ("net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog", "net.ipv4.tcp_syncookies",
                    "net.ipv4.tcp_abort_on_overflow", "net.ipv4.tcp_syn_retries")


def _run_backlog(arguments):
    from epollbook import plots

    started = environment(("ab",), BACKLOG_SETTINGS)
    every_row, written = [], []
    for name, parameters, rows in backlog_sweep_preset("full" if arguments.full else "short", arguments.server):
        title = f"ab -c {parameters['concurrency']}, " + (
            f"{parameters['seconds']} s a run" if parameters["seconds"] else f"-n {parameters['requests']}")
        written += write_result(name, parameters, rows, figure=plots.backlog_sweep(rows, title=title),
                                out=arguments.out, started=started)
        every_row += rows
    return every_row, written


def _summary_backlog(rows):
    lines = [f"{'mode':<5} {'server':<10} {'backlog':>7} {'requests':>8} {'failed':>6} "
             f"{'connect p50/p99/max ms':>23} {'>= 1 s':>6} {'waiting':>7} {'overflows':>9} {'seconds':>7}"]
    for row in rows:
        latency = "/".join("-" if value is None else str(value) for value in dataclasses.astuple(row.connect_ms))
        note = "  ab gave up" if row.gave_up else ""
        lines.append(f"{row.mode:<5} {row.server:<10} {row.backlog:>7} {row.requests:>8} {_dash(row.failed):>6} "
                     f"{latency:>23} {_dash(row.slow_connects):>6} {_dash(row.most_waiting):>7} "
                     f"{row.listen_overflows:>9} {row.seconds:>7.2f}{note}")
    return "\n".join(lines)


def _dash(value):
    return "-" if value is None else str(value)


def _backlog_arguments(command):
    command.add_argument("--server", action="append", choices=list(catalog.SERVERS), metavar="NAME",
                         help=f"a server to sweep, one of {', '.join(catalog.SERVERS)} (repeat for several; "
                              "default: the preset's)")


def _run_throughput(arguments):
    from epollbook import plots
    parameters = {**THROUGHPUT_PRESETS["full" if arguments.full else "short"], "connections": 100}
    parameters.update({key: value for key, value in (("servers", arguments.server and tuple(arguments.server)),
                                                      ("rounds", arguments.rounds), ("seconds", arguments.seconds))
                       if value})
    parameters["preset"] = "full" if arguments.full else "short"
    started = environment(("wrk",))
    rows = throughput(parameters["servers"], seconds=parameters["seconds"], rounds=parameters["rounds"],
                      connections=parameters["connections"])
    figure = plots.throughput(rows, title=f"wrk -t1 -c {parameters['connections']}, a connection per request")
    return rows, write_result("throughput", parameters, rows, figure=figure, out=arguments.out, started=started)


def _summary_throughput(rows):
    lines = [f"{'server':<17} {'round':>5} {'requests':>9} {'req/s':>8} {'CPU µs/req':>10} {'errors':>6} "
             f"{'not 2xx':>7} {'accepted':>8}"]
    for row in rows:
        lines.append(f"{row.server:<17} {row.round:>5} {row.requests:>9} {row.requests_per_second:>8.0f} "
                     f"{_dash(row.cpu_us_per_request):>10} {row.socket_errors:>6} {row.non_2xx:>7} {row.accepted:>8}")
    summaries = throughput_summary(rows)
    pinned = "none pinned" if rows[0].wrk_cpu is None else f"wrk on CPU {rows[0].wrk_cpu}, servers on the others"
    lines.append(f"\nmedians ({rows[0].seconds} s a run, {pinned}):")
    for summary in summaries.values():
        cost = "-" if summary.cpu_us_per_request is None else f"{summary.cpu_us_per_request:.1f}"
        wrk_cost = "-" if summary.wrk_cpu_us_per_request is None else f"{summary.wrk_cpu_us_per_request:.1f}"
        wakeups = "-" if summary.wakeups_per_request is None else f"{summary.wakeups_per_request:.2f}"
        lines.append(f"{summary.server:<17} {summary.requests_per_second:>8.0f} req/s  "
                     f"{cost:>7} µs CPU/req  {wakeups:>5} wake-ups/req  (wrk {wrk_cost:>5} µs/req)  "
                     f"{summary.socket_errors} socket errors over {summary.rounds} rounds")
    if "uvloop" in summaries:
        yardstick = summaries["uvloop"]
        for summary in summaries.values():
            if summary.server != "uvloop" and summary.cpu_us_per_request and yardstick.cpu_us_per_request:
                lines.append(f"{summary.server} against uvloop: "
                             f"{summary.requests_per_second / yardstick.requests_per_second:.2f}× the requests/s, "
                             f"{summary.cpu_us_per_request / yardstick.cpu_us_per_request:.2f}× the CPU per request")
    return "\n".join(lines)


def _throughput_arguments(command):
    command.add_argument("--server", action="append", choices=list(catalog.SERVERS), metavar="NAME",
                         help="a server to load (repeat for several; default: the preset's)")
    command.add_argument("--rounds", type=int, help="rounds (default: the preset's)")
    command.add_argument("--seconds", type=int, help="seconds a run (default: the preset's)")


class Measurement(NamedTuple):
    """What the command line needs of a measurement."""

    help: str
    add_arguments: object  # add_arguments(subparser): its own options, besides --full and --out
    run: object            # run(arguments) -> (rows, paths written)
    summary: object        # summary(rows) -> text to print


MEASUREMENTS = {
    "backlog": Measurement("ab -c 100 against a range of listen backlogs (chapter 7)", _backlog_arguments,
                           _run_backlog, _summary_backlog),
    "scale": Measurement("the cost of one wait of select, poll and epoll as idle connections grow (chapter 10)",
                         _scale_arguments, _run_scale, _summary_scale),
    "throughput": Measurement("wrk -t1 -c 100, a connection per request: requests/s and server CPU per request "
                              "(chapter 11)", _throughput_arguments, _run_throughput, _summary_throughput),
}


def main(argv=None):
    """``python -m epollbook.bench MEASUREMENT [--full] [--out DIR]``: run, write JSON and PNG, print a summary."""
    parser = argparse.ArgumentParser(prog="python -m epollbook.bench", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="measurement", required=True)
    for name, measurement in MEASUREMENTS.items():
        command = commands.add_parser(name, help=measurement.help, description=measurement.help)
        command.add_argument("--full", action="store_true",
                             help="the full runs of make bench (default: the short ones)")
        command.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT,
                             help=f"directory for the JSON and the PNG (default {DEFAULT_OUT})")
        measurement.add_arguments(command)
    arguments = parser.parse_args(argv)
    measurement = MEASUREMENTS[arguments.measurement]
    try:
        rows, written = measurement.run(arguments)
    except (clients.ToolMissing, RuntimeError) as failed:  # ab missing, or it failed: a server that died, say
        parser.exit(1, f"{failed}\n")
    print(measurement.summary(rows))
    print("\n".join(f"wrote {path}" for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
