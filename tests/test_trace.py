"""epollbook.trace records a server's own epoll events without touching its code; plots.timeline draws them.

The pure parts (a trace's lines, the rows of a timeline, the picture) are
quick; the rest runs the article's example 3 with its events recorded, as
``serve(name, trace=True)`` and ``python -m epollbook.trace`` do.
"""

import itertools
import os
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from epollbook import trace
from epollbook.clients import http_get
from epollbook.launch import serve
from epollbook.plots import connections_of, timeline
from epollbook.probes import EPOLL_EVENTS
from epollbook.trace import Event, parse_trace
from tools import no_server_left_running

IN, OUT, HUP = EPOLL_EVENTS["EPOLLIN"], EPOLL_EVENTS["EPOLLOUT"], EPOLL_EVENTS["EPOLLHUP"]

# The trace of one polite client of example 3, as the server wrote it.
ONE_CLIENT = """\
100.000000 register 4 EPOLLIN
100.001000 poll 4 EPOLLIN
100.001100 register 5 EPOLLIN
100.001200 poll 5 EPOLLIN
100.001300 modify 5 EPOLLOUT
100.001400 poll 5 EPOLLOUT
100.001500 modify 5 0
100.001600 poll 5 EPOLLHUP
100.001700 unregister 5 -
100.002000 poll 4 EPOLLIN
100.002100 register 5 EPOLLIN
100.002200 poll 5 EPOLLIN|EPOLLHUP|0x40000
"""


# -- the pure parts ---------------------------------------------------------------------------------


@pytest.mark.quick
def test_a_trace_reads_back_as_events_and_each_event_prints_as_its_line():
    events = parse_trace(ONE_CLIENT)
    assert len(events) == 12, f"read {len(events)} events from 12 lines"
    assert events[0] == Event(100.0, "register", 4, IN), f"the first line read as {events[0]}"
    assert events[-1].mask == IN | HUP | 0x40000, f"the last line's mask read as {events[-1].names}"
    assert "\n".join(map(str, events)) + "\n" == ONE_CLIENT, "an event does not print as the line it was read from"


@pytest.mark.quick
def test_a_last_line_still_being_written_is_left_out():
    events = parse_trace(ONE_CLIENT + "100.003000 poll 5 EPOLLI")
    assert len(events) == 12, f"read {len(events)} events: the unfinished line counted"


@pytest.mark.quick
@pytest.mark.parametrize("line", ["100.0 poll 5", "100.0 listen 5 EPOLLIN", "x poll 5 EPOLLIN", "1.0 poll 5 EPOLLUP"])
def test_a_line_that_is_not_a_trace_line_is_named_in_the_error(line):
    with pytest.raises(ValueError, match="not a line of an epoll trace") as error:
        parse_trace(line + "\n")
    assert repr(line) in str(error.value), f"the error does not quote the line: {error.value}"


@pytest.mark.quick
def test_the_timeline_has_the_listener_on_top_and_a_row_per_connection_even_when_an_fd_number_comes_back():
    rows = connections_of(parse_trace(ONE_CLIENT))
    labels = [label for label, _ in rows]
    assert labels == ["listening socket (fd 4)", "connection 1 (fd 5)", "connection 2 (fd 5)"], labels
    assert [len(events) for _, events in rows] == [3, 7, 2], \
        [[str(event) for event in events] for _, events in rows]


@pytest.mark.quick
def test_the_listening_socket_is_found_by_what_follows_its_events_not_by_coming_first():
    # The corrected servers register a wake-up pipe of their own before the listening socket.
    wake_up_first = "100.000000 register 6 EPOLLIN\n" + ONE_CLIENT
    labels = [label for label, _ in connections_of(parse_trace(wake_up_first))]
    assert labels == ["listening socket (fd 4)", "fd 6", "connection 1 (fd 5)", "connection 2 (fd 5)"], labels


@pytest.mark.quick
def test_the_timeline_is_a_figure_with_a_labelled_row_per_connection_that_saves_as_png(tmp_path):
    figure = timeline(parse_trace(ONE_CLIENT), title="one client")
    (axes,) = figure.axes
    assert [tick.get_text() for tick in axes.get_yticklabels()] == [label for label, _ in
                                                                   connections_of(parse_trace(ONE_CLIENT))]
    figure.savefig(tmp_path / "timeline.png")
    assert (tmp_path / "timeline.png").read_bytes().startswith(b"\x89PNG"), "savefig wrote no PNG"


@pytest.mark.quick
def test_a_timeline_of_nothing_says_so():
    with pytest.raises(ValueError, match="no events"):
        timeline([])


def test_the_stand_in_behaves_as_epoll_does_and_records_only_what_succeeded(monkeypatch):
    reading, writing = os.pipe()
    monkeypatch.setattr(trace, "_recorder", trace._Recorder(writing))
    left, right = socket.socketpair()
    try:
        with trace.RecordingEpoll() as epoll:
            epoll.register(left, select.EPOLLIN)
            with pytest.raises(FileExistsError):
                epoll.register(left.fileno(), select.EPOLLIN)
            right.sendall(b"x")
            assert epoll.poll(1) == [(left.fileno(), select.EPOLLIN)]
            epoll.modify(left, select.EPOLLOUT)
            epoll.unregister(left)
            assert not epoll.closed
        assert epoll.closed, "leaving the with block did not close the epoll"
    finally:
        left.close()
        right.close()
        os.close(writing)
    with os.fdopen(reading) as recorded:
        kinds = [(event.kind, event.fd, event.names) for event in parse_trace(recorded.read())]
    fd = kinds[0][1]
    assert kinds == [("register", fd, "EPOLLIN"), ("poll", fd, "EPOLLIN"), ("modify", fd, "EPOLLOUT"),
                     ("unregister", fd, "0")], kinds


def test_recording_stops_at_its_limit_with_one_truncated_line(monkeypatch):
    reading, writing = os.pipe()
    monkeypatch.setattr(trace, "_recorder", trace._Recorder(writing, limit=3))
    for fd in range(10):
        trace._recorder.record("poll", fd, select.EPOLLIN)
    os.close(writing)
    with os.fdopen(reading) as recorded:
        events = parse_trace(recorded.read())
    assert [event.kind for event in events] == ["poll", "poll", "truncated"], [str(event) for event in events]


# -- a real server, recorded ------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_server_outlives_its_test():
    with no_server_left_running():
        yield


def until(produce, timeout=3.0):
    """Call *produce* every 10 ms until it returns something true; return that, or its last value after *timeout* s."""
    deadline = time.monotonic() + timeout
    while not (value := produce()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


def is_subsequence(wanted, seen):
    seen = iter(seen)
    return all(item in seen for item in wanted)


def test_serve_with_trace_records_example3s_events_for_one_client_in_order():
    with serve("example3", trace=True) as server:
        assert http_get(server).status == 200
        # The client has its answer a moment before the server gets on to what follows its send().
        events = until(lambda: server.trace() if any(event.kind == "unregister" for event in server.trace()) else None)
        output = server.output
    listener = events[0].fd
    connection = next(event.fd for event in events if event.kind == "register" and event.fd != listener)
    wanted = [("register", listener, IN), ("poll", listener, IN), ("register", connection, IN),
              ("poll", connection, IN), ("modify", connection, OUT), ("poll", connection, OUT),
              ("modify", connection, 0)]
    seen = [(event.kind, event.fd, event.mask) for event in events]
    assert is_subsequence(wanted, seen), f"example 3's events for one client were recorded as {seen}"
    assert all(earlier.time <= later.time for earlier, later in itertools.pairwise(events)), "events out of order"
    assert "register" not in output, f"the events landed in what the server printed: {output!r}"


def test_the_trace_outlives_the_server_but_its_file_does_not():
    server = serve("example3", trace=True)
    path = server._trace_file.path
    http_get(server)
    server.stop()
    assert not os.path.exists(path), f"{path} is still there after the server stopped"
    assert any(event.kind == "register" for event in server.trace()), "the events were lost with the file"


def test_a_server_started_without_trace_says_how_to_get_one():
    with serve("example3") as server, pytest.raises(RuntimeError, match="trace=True"):
        server.trace()


def test_run_by_hand_it_writes_one_line_per_event_to_stderr_and_leaves_the_servers_output_alone():
    command = [sys.executable, "-m", "epollbook.trace", "example3", "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    try:
        announced = process.stdout.readline()
        assert "http://127.0.0.1:" in announced, f"it announced {announced!r}"
        assert http_get(announced.split()[-1]).status == 200
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            stdout, stderr = process.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # never leave it running, whatever went wrong
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    events = parse_trace("".join(line + "\n" for line in stderr.splitlines() if line[:1].isdigit()))
    assert [event.kind for event in events[:2]] == ["register", "poll"], f"stderr held:\n{stderr}"
    assert "register" not in stdout, f"the events landed on stdout: {stdout!r}"


def test_an_unknown_server_is_answered_with_the_list_of_known_ones():
    finished = subprocess.run([sys.executable, "-m", "epollbook.trace", "example9"], capture_output=True,
                              text=True, timeout=10)
    assert finished.returncode == 2 and "example3" in finished.stderr, finished.stderr
