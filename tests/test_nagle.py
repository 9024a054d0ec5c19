"""Chapter 9's claims about Nagle's algorithm and TCP_NODELAY, asserted against this kernel.

Timings are compared, never asserted: the stall is at least ten times the
round trip without it (it is some hundreds of times on an idle machine), and
two things that should cost the same stay within a factor of a few.
"""

import os
import socket

import pytest

from epollbook import clients, nagle
from epollbook.launch import serve

ROUNDS = 7
MARGIN = 10


@pytest.fixture
def no_leaks():
    before = set(os.listdir("/proc/self/fd"))
    yield
    left = set(os.listdir("/proc/self/fd")) - before
    assert not left, f"file descriptors left open: {sorted(left)}"


def test_a_client_writing_twice_then_reading_stalls_with_nagle_and_not_with_nodelay(no_leaks):
    with nagle.open_link() as nagle_on, nagle.open_link(client_nodelay=True) as no_delay:
        measured = nagle.alternate(ROUNDS, stalled=lambda: nagle_on.round_trip(nagle.two_sends),
                                   nodelay=lambda: no_delay.round_trip(nagle.two_sends))
    assert measured.ratio("stalled", "nodelay") >= MARGIN, f"no stall measured:\n{measured}"


def test_a_server_answering_in_two_pieces_stalls_likewise(no_leaks):
    with nagle.open_link(nagle.two_sends) as nagle_on, \
            nagle.open_link(nagle.two_sends, server_nodelay=True) as no_delay:
        measured = nagle.alternate(ROUNDS, stalled=lambda: nagle_on.round_trip(nagle.one_send),
                                   nodelay=lambda: no_delay.round_trip(nagle.one_send))
    assert measured.ratio("stalled", "nodelay") >= MARGIN, f"no stall measured:\n{measured}"


def test_a_request_in_one_piece_or_a_receiver_that_acknowledges_at_once_escapes_the_stall(no_leaks):
    with nagle.open_link() as link, nagle.open_link(server_quickack=True) as quick:
        measured = nagle.alternate(
            ROUNDS, stalled=lambda: link.round_trip(nagle.two_sends), joined=lambda: link.round_trip(nagle.one_send),
            gathered=lambda: link.round_trip(nagle.gathered), more=lambda: link.round_trip(nagle.more_then_last),
            corked=lambda: link.round_trip(nagle.corked), quickack=lambda: quick.round_trip(nagle.two_sends))
        assert nagle.nodelay(link.client) == 0, "the link's client was meant to keep Nagle's algorithm on"
    for way in ("joined", "gathered", "more", "corked", "quickack"):
        assert measured.ratio("stalled", way) >= MARGIN, f"{way} did not escape the stall:\n{measured}"


def test_a_new_connections_first_round_is_kept_apart():
    calls = []
    measured = nagle.alternate(3, one=lambda: calls.append("one"), two=lambda: calls.append("two"))
    assert calls == ["one", "two"] * 4, f"the contenders did not take turns: {calls}"
    assert len(measured["one"].times) == 3 and measured["one"].first > 0
    with pytest.raises(ValueError, match="at least 1"):
        nagle.alternate(0, one=lambda: None)


def test_outliers_are_the_rounds_far_from_the_median():
    series = nagle.Series("x", 0.001, [1.0, 1.1, 0.9, 1.0, 9.0, 0.1])
    assert series.outliers == [9.0, 0.1]


def test_the_article_s_one_send_answer_is_no_faster_with_nodelay():
    with serve("example3") as example3, serve("example6") as example6:
        measured = nagle.alternate(20, three=lambda: clients.http_get(example3),
                                   six=lambda: clients.http_get(example6))
    ratio = measured.ratio("six", "three")
    assert 1 / 3 < ratio < 3, f"example 6 and example 3 differ by a factor of {ratio:.2f}:\n{measured}"


def test_accepted_sockets_inherit_the_listeners_option_as_the_handshake_completes(no_leaks):
    accepted = {row.case: (row.listener, row.accepted) for row in nagle.accepted_options()}
    assert accepted == {"not set": (0, 0), "set before the client connects": (1, 1),
                        "set after the handshake, before accept()": (1, 0), "set after accept()": (1, 0)}


def test_example6s_accepted_socket_has_the_option_and_example3s_has_not(no_leaks):
    with serve("example6") as example6, serve("example3") as example3:
        seen = {}
        for name, server in (("example6", example6), ("example3", example3)):
            with clients.stalled_client(server) as client:
                try:
                    seen[name] = nagle.nodelay_of_accepted(server, client)
                except nagle.CannotBorrow as error:
                    pytest.skip(f"this machine does not let a process borrow its child's socket: {error}")
    assert seen == {"example6": 1, "example3": 0}


def test_nodelay_does_not_make_a_socket_unbuffered(no_leaks):
    buffered = nagle.still_buffered(offered=8 << 20, timeout=0.2)
    assert buffered.nodelay == 1
    assert 0 < buffered.taken < buffered.offered, f"one send() took {buffered.taken} bytes"
    assert buffered.not_sent > 0, "nothing waited in the send buffer: the peer took it all"
    assert buffered.taken >= buffered.peer_unread + buffered.not_sent - 65536, \
        f"the buffers hold more than send() took: {buffered}"
    assert buffered.timed_out, f"a sendall() to a peer that reads nothing returned: {buffered}"


def test_small_sends_cost_at_least_as_many_segments_with_nodelay(no_leaks):
    segments = nagle.small_sends(count=100, size=10)
    assert 1 <= segments["Nagle on"] <= segments["TCP_NODELAY"] <= 100, f"data segments: {segments}"


def test_asyncio_sets_nodelay_on_both_ends(no_leaks):
    assert nagle.asyncio_nodelay() == {"client": 1, "server": 1}


def test_read_message_reads_one_message_and_leaves_the_next(no_leaks):
    with clients.connected_pair() as (client, server_side):
        server_side.settimeout(2.0)
        first = nagle.request_head(b"abc") + b"abc"
        second = nagle.request_head(b"")
        client.sendall(first + second)
        assert nagle.read_message(server_side) == first
        assert nagle.read_message(server_side) == second
        client.sendall(b"GET / HTTP/1.1\r\nHost")
        client.shutdown(socket.SHUT_WR)
        with pytest.raises(nagle.MessageError, match="closed after 20 bytes of a head"):
            nagle.read_message(server_side)
    with clients.connected_pair() as (client, server_side):
        client.close()
        assert nagle.read_message(server_side) == b""


def test_read_message_refuses_what_is_not_a_message(no_leaks):
    with clients.connected_pair() as (client, server_side):
        server_side.settimeout(2.0)
        client.sendall(b"POST / HTTP/1.1\r\nContent-Length: many\r\n\r\n")
        with pytest.raises(nagle.MessageError, match="not a number"):
            nagle.read_message(server_side)
    with clients.connected_pair() as (client, server_side):
        server_side.settimeout(2.0)
        client.sendall(b"X" * (nagle.MOST_HEAD + 10))
        with pytest.raises(nagle.MessageError, match="longer than"):
            nagle.read_message(server_side)
    with clients.connected_pair() as (client, server_side):
        server_side.settimeout(2.0)
        client.sendall(nagle.request_head(b"12345") + b"12")
        client.shutdown(socket.SHUT_WR)
        with pytest.raises(nagle.MessageError, match="after 2 of the body's 5 bytes"):
            nagle.read_message(server_side)


def test_the_round_trips_plot_has_a_row_per_contender():
    from epollbook import plots

    first = nagle.alternate(2, one=lambda: None, two=lambda: None)
    second = nagle.alternate(2, three=lambda: None)
    figure = plots.round_trips(first, second)
    labels = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    assert labels == ["three", "two", "one"], f"the rows, bottom to top: {labels}"
    with pytest.raises(ValueError, match="no round trips to draw"):
        plots.round_trips()
