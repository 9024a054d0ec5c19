"""epollbook.diagrams: the chapters' opening pictures, and the recordings some of them draw.

The drawings are tested on data given here (quick): each picture holds the
labels, arrows and places its data asks for, and saves as PNG. The
recordings run on real sockets of this process and are tested against what
Linux reports: level-triggered epoll reports every poll while bytes wait,
edge-triggered once per arrival; a FIN brings EPOLLRDHUP, both FINs EPOLLHUP,
a reset EPOLLERR.
"""

import gc
import os
import select

import pytest

from epollbook import diagrams
from epollbook.backlog import Fill
from epollbook.diagrams import Moment, Reader, TriggerRun, Watched, arrows_of, texts_of

IN, OUT, RDHUP, HUP, ERR = select.EPOLLIN, select.EPOLLOUT, select.EPOLLRDHUP, select.EPOLLHUP, select.EPOLLERR


def saves_as_png(figure, tmp_path):
    path = tmp_path / "picture.png"
    figure.savefig(path)
    return path.read_bytes().startswith(b"\x89PNG")


def open_descriptors():
    """This process's open descriptors, once garbage that holds sockets (an earlier test's traceback) is collected."""
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


# -- the call sequence ---------------------------------------------------------------------------------------


@pytest.mark.quick
def test_the_call_sequence_names_every_call_and_draws_every_segment_as_an_arrow(tmp_path):
    figure = diagrams.call_sequence()
    texts = texts_of(figure)
    missing = [call for _, call, *_ in diagrams.CALLS if call not in texts]
    missing += [label for _, label, _ in diagrams.SEGMENTS if label not in texts]
    assert not missing, f"the call sequence lacks {missing}; it shows {texts}"
    assert len(arrows_of(figure)) == len(diagrams.SEGMENTS) == 9, \
        f"{len(arrows_of(figure))} arrows for {len(diagrams.SEGMENTS)} segments (handshake 3, request, answer, 2 FINs)"
    assert {"server", "client", "blocks"} <= set(texts), f"lifelines or blocking calls unlabelled: {texts}"
    assert saves_as_png(figure, tmp_path)


@pytest.mark.quick
def test_a_call_sequence_on_a_third_side_is_refused_with_the_sides_it_knows():
    with pytest.raises(ValueError, match=r"neither 'server' nor 'client'.*proxy"):
        diagrams.call_sequence(calls=(("proxy", "socket()", 0, 0),))
    with pytest.raises(ValueError, match="proxy"):
        diagrams.call_sequence(notes=(("proxy", "waits", 0, 1),))


@pytest.mark.quick
def test_the_write_write_read_stall_shows_both_kernels_waiting_beside_brackets_and_four_segments():
    figure = diagrams.call_sequence(**diagrams.WRITE_WRITE_READ)
    texts = texts_of(figure)
    missing = [text for _, text, *_ in diagrams.WRITE_WRITE_READ["notes"] if text not in texts]
    assert not missing, f"the stall's notes are missing: {missing}"
    assert len(arrows_of(figure)) == 4, "head, the delayed ACK, body, answer: 4 arrows"
    dashed = [line for line in figure.axes[0].lines if line.get_linestyle() not in ("-", "None")]
    assert len(dashed) == 2, f"a bracket beside each note: {len(dashed)} dashed lines"


# -- an epoll instance at work ------------------------------------------------------------------------------


@pytest.mark.quick
def test_the_epoll_picture_lists_every_registration_with_what_the_kernel_added_and_links_each_ready_socket(tmp_path):
    watched = [Watched(3, "listener, a client in its queue", IN, IN | ERR | HUP, IN),
               Watched(5, "connection, idle", IN, IN | ERR | HUP, 0),
               Watched(6, "connection, an answer to send", OUT, OUT | ERR | HUP, OUT)]
    figure = diagrams.epoll_at_work(watched)
    texts = texts_of(figure)
    missing = [text for text in ("fd 3  IN (+ERR HUP)", "fd 5  IN (+ERR HUP)", "fd 6  OUT (+ERR HUP)", "fd 3  IN",
                                 "fd 6  OUT", "fd 5: connection, idle") if text not in texts]
    assert not missing, f"the picture lacks {missing}: {texts}"
    assert "fd 5  IN" not in texts, "the idle connection is drawn among the ready ones"
    assert len(arrows_of(figure)) == 2 + 2, f"register, poll and 2 ready sockets: {len(arrows_of(figure))} arrows"
    assert saves_as_png(figure, tmp_path)


def test_the_kernel_holds_every_registration_with_err_and_hup_added_and_poll_returns_only_the_ready_ones():
    before = open_descriptors()
    watched = diagrams.record_interest()
    assert open_descriptors() == before, "record_interest left descriptors open"
    added = [each.what for each in watched if each.held != each.asked | ERR | HUP]
    assert not added, f"the kernel should hold what was asked plus EPOLLERR|EPOLLHUP; not so for {added}"
    ready = {each.what: each.ready for each in watched}
    assert ready == {"listener, a client in its queue": IN, "connection, a request arrived": IN,
                     "connection, idle": 0, "connection, an answer to send": OUT,
                     "connection, its client closed": IN}, f"poll() returned {ready}"


# -- select, poll and epoll ----------------------------------------------------------------------------------


@pytest.mark.quick
def test_the_three_waits_show_every_socket_asked_by_select_and_poll_and_only_the_ready_one_by_epoll(tmp_path):
    figure = diagrams.wait_calls(descriptors=10, ready=(3,))
    texts = texts_of(figure)
    missing = [call for call, *_ in diagrams.WAITS if call not in texts]
    assert not missing, f"the calls {missing} are not named"
    assert texts.count("?") == 10 + 10 + 1, f"select and poll ask all 10 sockets, epoll the ready one: {texts}"
    ready = [patch for patch in figure.axes[0].patches if patch.get_gid() == "ready"]
    assert len(ready) == 3, f"the ready socket in each of the 3 rows: {len(ready)}"
    assert len(arrows_of(figure)) == 6, "a call and its answer per row"
    assert saves_as_png(figure, tmp_path)


@pytest.mark.quick
def test_a_ready_socket_outside_the_drawn_ones_is_refused():
    with pytest.raises(ValueError, match=r"\[12\] must be among 0..9"):
        diagrams.wait_calls(descriptors=10, ready=(12,))


# -- level- against edge-triggered -------------------------------------------------------------------------


STRANDED = TriggerRun({1: 300}, 100, (
    Reader("level", False, False, (0, 300, 200, 100, 0), (False, True, True, True, False)),
    Reader("edge, one recv()", True, False, (0, 300, 200, 200, 200), (False, True, False, False, False)),
))


@pytest.mark.quick
def test_the_trigger_timelines_have_a_panel_per_reader_and_say_which_bytes_were_never_reported_again(tmp_path):
    figure = diagrams.trigger_timelines(STRANDED)
    titles = [axes.get_title(loc="left") for axes in figure.axes]
    assert titles == ["level", "edge, one recv()"], f"one panel per reader, titled by its name; got {titles}"
    stranded = [axes.get_title(loc="right") for axes in figure.axes]
    assert stranded == ["", "200 bytes left, never reported again"], \
        f"only the edge-triggered reader that did not drain strands bytes; the panels say {stranded}"
    assert "+300" in texts_of(figure), "the arrival of 300 bytes is not marked"
    assert saves_as_png(figure, tmp_path)


def test_level_triggered_epoll_reports_every_poll_while_bytes_wait_and_edge_triggered_once_per_arrival():
    before = open_descriptors()
    run = diagrams.record_triggers({1: 300, 6: 100}, polls=10, chunk=100)
    assert open_descriptors() == before, "record_triggers left descriptors open"
    level, edge, draining = run.readers
    assert not level.edge and edge.edge and draining.edge and draining.drains
    told = [poll for poll, reported in enumerate(level.reported) if reported]
    waiting = [poll for poll, count in enumerate(level.waiting) if count]
    assert told == waiting == [1, 2, 3, 6], \
        f"level-triggered: reported at polls {told}, bytes waited at polls {waiting}"
    for reader in (edge, draining):
        told = [poll for poll, reported in enumerate(reader.reported) if reported]
        assert told == [1, 6], f"{reader.name}: reported at polls {told}, the bytes arrived before polls 1 and 6"
    assert edge.waiting[-1] == 200, f"one recv() per report should strand 200 bytes; {edge.waiting[-1]} were left"
    assert draining.waiting[2:6] == (0,) * 4 and draining.waiting[-1] == 0, \
        f"a draining reader leaves nothing: {draining.waiting}"


@pytest.mark.quick
def test_arrivals_outside_the_polls_are_refused_with_what_was_asked():
    with pytest.raises(ValueError, match="12: 50"):
        diagrams.record_triggers({12: 50}, polls=10)


# -- a connection's life -------------------------------------------------------------------------------------


MOMENTS = [
    Moment("server: listen()", (), "—", "LISTEN", "listener", 0),
    Moment("client: connect()", (("client", "SYN"), ("server", "SYN-ACK"), ("client", "ACK")), "ESTABLISHED",
           "ESTABLISHED", "listener", IN, ("SYN_SENT", "SYN_RECV")),
    Moment("client: shutdown(SHUT_WR)", (("client", "FIN"), ("server", "ACK")), "FIN_WAIT1", "CLOSE_WAIT",
           "connection", IN | RDHUP, ("FIN_WAIT1", "")),
]


@pytest.mark.quick
def test_the_connection_picture_has_both_ends_states_an_arrow_per_segment_and_the_events(tmp_path):
    figure = diagrams.connection_states(MOMENTS)
    texts = "\n".join(texts_of(figure))
    missing = [text for text in ("LISTEN", "ESTABLISHED", "CLOSE_WAIT", "via SYN_SENT", "via SYN_RECV",
                                 "listener: EPOLLIN", "listener: nothing", "EPOLLRDHUP", "server: listen()")
               if text not in texts]
    assert not missing, f"the picture lacks {missing}; it shows:\n{texts}"
    assert "via FIN_WAIT1" not in texts, "a state caught as it was ('FIN_WAIT1') is also drawn as passed through"
    assert len(arrows_of(figure)) == 5, f"5 segments, {len(arrows_of(figure))} arrows"
    assert saves_as_png(figure, tmp_path)


@pytest.mark.quick
def test_an_end_that_skipped_time_wait_is_drawn_closed_with_the_reason():
    skipped = Moment("server: send(answer), shutdown(SHUT_WR)", (("server", "FIN"), ("client", "ACK")), "CLOSED",
                     "CLOSED", "connection", IN | RDHUP | HUP, ("", "LAST_ACK"), skipped="client")
    texts = "\n".join(texts_of(diagrams.connection_states([skipped])))
    assert "no TIME_WAIT: the kernel's\ntable of them was full" in texts, texts
    assert "table of them was full" not in "\n".join(texts_of(diagrams.connection_states(MOMENTS)))


@pytest.mark.quick
def test_a_connection_picture_of_no_moment_says_so():
    with pytest.raises(ValueError, match="no moment"):
        diagrams.connection_states([])


def test_a_recorded_connection_shows_what_linux_reports_at_each_step():
    before = open_descriptors()
    moments = diagrams.record_connection()
    assert open_descriptors() == before, "record_connection left descriptors open"
    seen = {moment.action: moment for moment in moments}
    expected = {  # action: (client's state, server's state, events that must be there, events that must not)
        "server: listen()": ("—", "LISTEN", 0, IN),
        "client: connect()": ("ESTABLISHED", "ESTABLISHED", IN, RDHUP | HUP | ERR),
        "server: accept(), register": ("ESTABLISHED", "ESTABLISHED", 0, IN),
        "client: send(request)": ("ESTABLISHED", "ESTABLISHED", IN, RDHUP | HUP | ERR),
        "client: shutdown(SHUT_WR)": ("FIN_WAIT2", "CLOSE_WAIT", IN | RDHUP, HUP | ERR),
        "server: send(answer), shutdown(SHUT_WR)": ("TIME_WAIT", "CLOSED", IN | RDHUP | HUP, ERR),
        "another client: close(), SO_LINGER 0": ("gone", "CLOSED", IN | HUP | ERR, 0),
    }
    assert list(seen) == list(expected), f"the steps recorded: {list(seen)}"
    closing = seen["server: send(answer), shutdown(SHUT_WR)"]
    if closing.skipped:  # the kernel's TIME_WAIT table was full (a load test ran within the minute): CLOSED at once
        assert closing.skipped == "client", f"the server's end skipped TIME_WAIT, which it never enters: {closing}"
        expected[closing.action] = ("CLOSED", *expected[closing.action][1:])
    assert not any(moment.skipped for moment in moments if moment is not closing), \
        f"an end skipped TIME_WAIT where none goes there: {moments}"
    wrong = [f"{action}: {seen[action].client} / {seen[action].server} / {seen[action].names}"
             for action, (client, server, present, absent) in expected.items()
             if (seen[action].client, seen[action].server) != (client, server)
             or seen[action].events & present != present or seen[action].events & absent]
    assert not wrong, "steps whose states or events differ from Linux's (client / server / events):\n" + \
        "\n".join(wrong)
    assert seen["client: connect()"].watched == "listener"


# -- the listen queue ---------------------------------------------------------------------------------------


def places(figure, gid):
    return [patch for patch in figure.axes[0].patches if patch.get_gid() == gid]


@pytest.mark.quick
def test_the_listen_queue_has_backlog_plus_one_places_filled_as_measured_and_the_dropped_clients(tmp_path):
    fill = Fill(backlog=2, clients=5, completed=3, syn_sent=2, refused=0, waiting=3, applied=2, drops=2)
    figure = diagrams.listen_queue(fill, [1.0, 3.0, 7.0])
    assert (len(places(figure, "waiting")), len(places(figure, "free"))) == (3, 0), \
        "listen(2) holds 3, and 3 were measured waiting"
    texts = texts_of(figure)
    assert texts.count("✕ SYN dropped (queue full)") == 2, f"2 clients were dropped: {texts}"
    assert texts.count("ESTABLISHED") == 3 and texts.count("SYN_SENT") == 2
    missing = [label for label in ("0 s", "1 s", "3 s", "7 s", "accept queue: listen(2)\nholds 3 (backlog + 1)")
               if label not in texts]
    assert not missing, f"the listen queue lacks {missing}: {texts}"
    assert saves_as_png(figure, tmp_path)


@pytest.mark.quick
def test_the_listen_queue_counts_its_places_from_the_backlog_the_kernel_applied():
    fill = Fill(backlog=4096, clients=3, completed=1, syn_sent=0, refused=0, waiting=1, applied=3, drops=None)
    figure = diagrams.listen_queue(fill)
    assert (len(places(figure, "waiting")), len(places(figure, "free"))) == (1, 3), \
        "somaxconn cut listen(4096) to 3: 4 places, 1 measured waiting"


@pytest.mark.quick
def test_a_listen_queue_without_clients_says_what_to_give():
    with pytest.raises(ValueError, match="fill_queue"):
        diagrams.listen_queue(Fill(2, 0, 0, 0, 0, 0, None, None))


@pytest.mark.quick
@pytest.mark.parametrize("text, separator, width, lines", [
    ("connection: EPOLLIN|EPOLLERR|EPOLLHUP|EPOLLRDHUP", "|", 30,
     "connection: EPOLLIN|EPOLLERR|\nEPOLLHUP|EPOLLRDHUP"),
    ("client: connect()", ", ", 25, "client: connect()"),
    ("server: send(answer), shutdown(SHUT_WR)", ", ", 25, "server: send(answer),\nshutdown(SHUT_WR)"),
])
def test_long_labels_break_after_a_separator(text, separator, width, lines):
    assert diagrams._wrap(text, separator, width) == lines
