"""Chapter 11's checks: ``dearer`` (which of two servers spends more CPU per request) and ``calls_per_request``.

``dearer`` is judged against the check's own measurement, made on the same
two servers, side by side, taking turns: ``ab`` sends each the same load and
the server's CPU time (user + system, from ``/proc``) is divided by its
requests. The pairs differ by two to five times on any machine the book has
run on; a pair the check's own measurement separates by less than
``MARGIN`` is not judged (a machine that busy says nothing), and the case
says so. Whatever the reader measures with is up to them: the verdict is on
the name returned.

``calls_per_request`` is judged against ``throughput.count_calls`` on the
same trace: live traces of the book's servers by ``strace -f`` (each line
starts with a thread's id) and, hidden, a trace with every kind of line
strace writes (a call split by another thread, a failed call, a signal, an
exit).
"""

import contextlib
import numbers
import os

from epollbook import clients, probes, throughput
from epollbook.checks.harness import CheckFailed, Running, finish, passed, short
from epollbook.launch import serve

MARGIN = 1.4
"""How many times one server's CPU per request the other's must be, by the check's own measurement, to be judged."""

MEASURE_SECONDS = 60.0
"""How long the reader's ``dearer`` may take for one pair (it runs a load of its own)."""

REQUESTS = 600
"""Requests the check sends each server per round of its own measurement."""

TOLERANCE = 0.005
"""How far a count per request may be from the check's (a rounding, not a miscount: one call in 200 requests)."""


# -- dearer ---------------------------------------------------------------------------------------------------


def _threads_cpu(pid):
    """``{thread id: its CPU seconds so far}`` for every thread of *pid*, to the nanosecond (``schedstat``)."""
    spent = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        # OSError: a thread that has just ended.
        with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{pid}/task/{task}/schedstat") as stat:
            spent[task] = int(stat.read().split()[0]) / 1e9
    return spent


def _cpu_per_request(server):
    """The check's figure: *server*'s CPU seconds per request over ``REQUESTS`` requests from ab -c 20.

    Each thread's ``schedstat`` counts to the nanosecond, but goes with its
    thread; ``/proc/PID/stat`` keeps the time of threads that have ended, in
    clock ticks of 10 ms. So: schedstat when the same threads ran the whole
    load, /proc/PID/stat when some came or went.
    """
    threads_before, ticks_before = _threads_cpu(server.pid), probes.cpu_seconds(server.pid)
    result = clients.ab(server, requests=REQUESTS, concurrency=20)
    threads_after, ticks_after = _threads_cpu(server.pid), probes.cpu_seconds(server.pid)
    if threads_before and threads_after.keys() == threads_before.keys():
        spent = sum(threads_after.values()) - sum(threads_before.values())
    else:
        spent = ticks_after - ticks_before
    return spent / max(result.complete, 1)


def _judge_dearer(dearer, first_name, second_name):
    with serve(first_name) as first, serve(second_name) as second:
        for server in (first, second):
            clients.ab(server, requests=100, concurrency=10)  # warm up: imports, first allocations
        costs = {first_name: [], second_name: []}
        for server in (first, second, second, first):  # taking turns: a slow moment falls on both
            costs[server.name].append(_cpu_per_request(server))
        ours = {name: sum(values) / len(values) for name, values in costs.items()}
        running = finish(Running(dearer, first, second),
                         f"dearer(<{first_name}>, <{second_name}>) did not return within {MEASURE_SECONDS:g} s",
                         seconds=MEASURE_SECONDS)
        still = first.running and second.running
    shown = f"dearer(<{first_name}>, <{second_name}>)"
    if running.error is not None:
        raise CheckFailed(f"expected {shown} to return a server's name; {running.describe()}") from running.error
    if not still:
        raise CheckFailed(f"expected {shown} to leave both servers running; one of them stopped")
    answer = running.value
    if not isinstance(answer, str):
        hint = (": return its name (server.name)" if hasattr(answer, "pid") else "")
        raise CheckFailed(f"expected {shown} to return a name, {first_name!r} or {second_name!r}; "
                          f"it returned {short(answer)}{hint}")
    if answer not in ours:
        raise CheckFailed(f"expected {shown} to return {first_name!r} or {second_name!r}; it returned {answer!r}")
    dear, cheap = sorted(ours, key=ours.get, reverse=True)
    ratio = ours[dear] / ours[cheap] if ours[cheap] else float("inf")
    measured = ", ".join(f"{name} {cost * 1e6:.0f} µs" for name, cost in ours.items())
    if ratio < MARGIN:
        passed(f"{shown} returned {answer!r}; not judged: the check's own measurement ({measured} of CPU per "
               f"request) cannot tell them apart on this machine now")
        return
    if answer != dear:
        raise CheckFailed(f"expected {shown} to return {dear!r}, which spent {ratio:.1f} times the CPU per request "
                          f"by the check's own measurement ({measured}); it returned {answer!r}: measure the "
                          "server's CPU time (its /proc/PID/stat), divided by the requests it answered")
    passed(f"{shown} returned {answer!r} ({measured} of CPU per request, by the check's own measurement)")


def check_dearer(dearer, *, hidden=False):
    """Check ``dearer(first, second) -> str``: the name of the server that spends more CPU per request.

    *first* and *second* are running servers (``launch.Server``: ``name``,
    ``pid``, an address for the clients). Cases: asyncio's streams against
    ``uvloop``, and ``fast`` against asyncio's streams, the dearer one first
    in one case and second in the other; hidden: an asyncio Protocol on the
    standard loop against the same Protocol on uvloop.
    """
    if not callable(dearer):
        Running(dearer)  # says: pass the function itself
    pairs = ([("asyncio-protocol", "uvloop")] if hidden
             else [("asyncio-streams", "uvloop"), ("fast", "asyncio-streams")])
    for first, second in pairs:
        _judge_dearer(dearer, first, second)


# -- calls_per_request -----------------------------------------------------------------------------------------

MADE_UP_TRACE = """\
4100  epoll_wait(3, [{events=EPOLLIN, data={u32=4, u64=4}}], 1023, 1000) = 1
4100  accept4(4, {sa_family=AF_INET, sin_port=htons(50000), sin_addr=inet_addr("127.0.0.1")}, [16], SOCK_CLOEXEC) = 7
4100  epoll_ctl(3, EPOLL_CTL_ADD, 7, {events=EPOLLIN|EPOLLRDHUP|EPOLLET, data={u32=7, u64=7}}) = 0
4100  recvfrom(7, 0x7f00, 4096, MSG_DONTWAIT, NULL, NULL) = -1 EAGAIN (Resource temporarily unavailable)
4100  epoll_wait(3,  <unfinished ...>
4102  read(5,  <unfinished ...>
4100  <... epoll_wait resumed>[{events=EPOLLIN, data={u32=7, u64=7}}], 1023, 999) = 1
4100  recvfrom(7, "GET / HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n", 4096, MSG_DONTWAIT, NULL, NULL) = 36
4100  sendto(7, "HTTP/1.0 200 OK\\r\\nDate: Mon, 1 Ja"..., 114, MSG_DONTWAIT, NULL, 0) = 114
4100  shutdown(7, SHUT_WR)              = 0
4100  --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=4200, si_uid=1000, si_status=0} ---
4100  epoll_wait(3, [{events=EPOLLIN|EPOLLHUP|EPOLLRDHUP, data={u32=7, u64=7}}], 1023, 999) = 1
4100  recvfrom(7, "", 4096, MSG_DONTWAIT, NULL, NULL) = 0
4100  close(7)                          = 0
4100  epoll_wait(3, [{events=EPOLLIN, data={u32=4, u64=4}}], 1023, 998) = 1
4100  accept4(4, {sa_family=AF_INET, sin_port=htons(50002), sin_addr=inet_addr("127.0.0.1")}, [16], SOCK_CLOEXEC) = 7
4100  epoll_ctl(3, EPOLL_CTL_ADD, 7, {events=EPOLLIN|EPOLLRDHUP|EPOLLET, data={u32=7, u64=7}}) = 0
4100  recvfrom(7, "GET / HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n", 4096, MSG_DONTWAIT, NULL, NULL) = 36
4100  sendto(7, "HTTP/1.0 200 OK\\r\\nDate: Mon, 1 Ja"..., 114, MSG_DONTWAIT, NULL, 0) = 114
4100  shutdown(7, SHUT_WR)              = 0
4100  epoll_wait(3, [{events=EPOLLIN|EPOLLHUP|EPOLLRDHUP, data={u32=7, u64=7}}], 1023, 998) = 1
4100  recvfrom(7, "", 4096, MSG_DONTWAIT, NULL, NULL) = 0
4100  close(7)                          = 0
4102  <... read resumed>"", 1)           = 0
4102  +++ exited with 0 +++
"""
"""Two requests, written as strace -f writes them, with every kind of line it has (the hidden case)."""


def _judge_counts(calls_per_request, case, trace, requests):
    expected = {call: count / requests for call, count in throughput.count_calls(trace).items()}
    shown = f"calls_per_request(<{case}>, {requests})"
    running = finish(Running(calls_per_request, trace, requests), f"{shown} did not return within 2 s")
    if running.error is not None:
        raise CheckFailed(f"expected {shown} to return a dict of calls per request; {running.describe()}"
                          ) from running.error
    answer = running.value
    if not isinstance(answer, dict):
        raise CheckFailed(f"expected {shown} to return a dict, call name -> calls per request; "
                          f"it returned {short(answer)}")
    strange = sorted(str(name) for name in answer if name not in expected and answer[name])
    if strange:
        raise CheckFailed(f"expected {shown} to name system calls such as {', '.join(sorted(expected)[:3])}, "
                          f"without strace's thread id or a signal's dashes; it named {short(strange, 100)}")
    for call, wanted in sorted(expected.items(), key=lambda item: -item[1]):
        got = answer.get(call, 0)
        if not isinstance(got, numbers.Real) or abs(got - wanted) > TOLERANCE:
            total = sum(throughput.count_calls(trace).values())
            if isinstance(got, numbers.Real) and abs(got - wanted * requests) <= TOLERANCE * requests:
                hint = ": that is the count for all requests; divide by the requests"
            elif isinstance(got, numbers.Real) and got > wanted:
                hint = (": a call strace split in two lines ('<unfinished ...>', then '<... resumed>') "
                        "is one call")
            else:
                hint = ": every line that starts with a call is one, a failed call (= -1 EAGAIN) too"
            raise CheckFailed(f"expected {shown} to say {wanted:.3f} {call} per request ({total} calls in all in "
                              f"the trace); it said {short(got)}{hint}")
    total = sum(expected.values())
    passed(f"calls_per_request counted {total:.2f} system calls per request in {case}")


def check_calls_per_request(calls_per_request, *, hidden=False):
    """Check ``calls_per_request(trace, requests) -> dict``: call name -> calls per request, from strace's text.

    Cases: live traces (``strace -f``) of ``fast`` and ``edge`` under ab;
    hidden: ``uvloop``'s, and a made-up trace of two requests with a call
    split between threads, a failed call, a signal and an exit.
    """
    if not callable(calls_per_request):
        Running(calls_per_request)  # says: pass the function itself
    names = ("uvloop",) if hidden else ("fast", "edge")
    for name in names:
        traced = throughput.system_calls(name, requests=200)
        _judge_counts(calls_per_request, f"strace -f of {name} serving {traced.requests} requests",
                      traced.trace, traced.requests)
    if hidden:
        _judge_counts(calls_per_request, "a trace of 2 requests with split, failed and signal lines",
                      MADE_UP_TRACE, 2)
