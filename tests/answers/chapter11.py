"""Answers to chapter 11's exercises, as students write them: wrong ones, and right ones written differently."""

import collections
import concurrent.futures
import re
import subprocess
import urllib.request

from epollbook import checks, clients, probes

C = checks

# -- dearer: wrong -------------------------------------------------------------------------------------------


def always_the_first(first, second):
    return first.name


def always_the_second(first, second):
    return second.name


def _cpu_per_request(server, requests=3000):
    before = probes.cpu_seconds(server.pid)
    clients.ab(server, requests=requests, concurrency=10)
    return (probes.cpu_seconds(server.pid) - before) / requests


def the_cheaper(first, second):
    # Measured right, compared the wrong way round.
    return min((first, second), key=_cpu_per_request).name


def the_server_itself(first, second):
    return max((first, second), key=_cpu_per_request)  # the object, not its name


# -- dearer: right, written differently ----------------------------------------------------------------------


def _ticks(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime and stime, fields 14 and 15 of stat(5)


def with_urllib_and_proc_stat(first, second):
    def cost(server):
        before = _ticks(server.pid)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: urllib.request.urlopen(f"http://{server.host}:{server.port}/", timeout=5).read(),
                          range(3000)))
        return (_ticks(server.pid) - before) / 3000

    costs = {server.name: cost(server) for server in (first, second)}
    return max(costs, key=costs.get)


def with_wrk_and_proc_stat(first, second):
    def cost(server):
        before = _ticks(server.pid)  # /proc/PID/stat counts the threads that have ended, too
        report = subprocess.run(["wrk", "-t1", "-c20", "-d1s", f"http://{server.host}:{server.port}/"],
                                capture_output=True, text=True, timeout=30).stdout
        requests = int(re.search(r"(\d+) requests in", report)[1])
        return (_ticks(server.pid) - before) / requests

    first_cost, second_cost = cost(first), cost(second)
    return first.name if first_cost > second_cost else second.name


def the_mean_of_rounds(first, second):
    totals = collections.Counter()
    for _ in range(3):
        for server in (first, second):
            totals[server.name] += _cpu_per_request(server, 1500)
    return totals.most_common(1)[0][0]


# -- calls_per_request: wrong --------------------------------------------------------------------------------


def counts_not_per_request(trace, requests):
    counts = collections.Counter()
    for line in trace.splitlines():
        match = re.match(r"\s*(?:\d+\s+)?(\w+)\(", line)
        if match:
            counts[match[1]] += 1
    return dict(counts)


def keeps_the_thread_id(trace, requests):
    counts = collections.Counter(line.split("(")[0].strip() for line in trace.splitlines() if "(" in line)
    return {name: count / requests for name, count in counts.items()}


def counts_the_resumed_half_too(trace, requests):
    counts = collections.Counter()
    for line in trace.splitlines():
        match = re.match(r"\s*(?:\d+\s+)?(?:<\.\.\. )?(\w+)[( ]", line)
        if match and not line.lstrip("0123456789 ").startswith(("---", "+++")):
            counts[match[1]] += 1
    return {name: count / requests for name, count in counts.items()}


def successes_only(trace, requests):
    counts = collections.Counter()
    for line in trace.splitlines():
        match = re.match(r"\s*(?:\d+\s+)?(\w+)\(", line)
        if match and "= -1" not in line:
            counts[match[1]] += 1
    return {name: count / requests for name, count in counts.items()}


# -- calls_per_request: right, written differently -----------------------------------------------------------


def with_split(trace, requests):
    per_request = {}
    for line in trace.splitlines():
        words = line.split()
        if words and words[0].isdigit():
            words = words[1:]
        if not words or not words[0][0].isalpha() or "(" not in words[0]:
            continue  # "<... resumed>", "---" and "+++" lines, and empty ones
        name = words[0].split("(")[0]
        per_request[name] = per_request.get(name, 0) + 1 / requests
    return per_request


def with_findall(trace, requests):
    names = re.findall(r"^(?:\d+ +)?([a-z_0-9]+)\(", trace, re.MULTILINE)
    return {name: count / requests for name, count in collections.Counter(names).items()}


WRONG = [
    (C.check_dearer, always_the_first, {}, "it returned 'fast'"),
    (C.check_dearer, always_the_second, {}, "it returned 'uvloop'"),
    (C.check_dearer, the_cheaper, {}, "it returned 'uvloop'"),
    (C.check_dearer, the_server_itself, {}, "return its name (server.name)"),
    (C.check_calls_per_request, counts_not_per_request, {}, "divide by the requests"),
    (C.check_calls_per_request, keeps_the_thread_id, {}, "without strace's thread id"),
    (C.check_calls_per_request, counts_the_resumed_half_too, {"hidden": True}, "is one call"),
    (C.check_calls_per_request, successes_only, {"hidden": True}, "a failed call (= -1 EAGAIN) too"),
]

RIGHT = [
    (C.check_dearer, with_urllib_and_proc_stat),
    (C.check_dearer, with_wrk_and_proc_stat),
    (C.check_dearer, the_mean_of_rounds),
    (C.check_calls_per_request, with_split),
    (C.check_calls_per_request, with_findall),
]
