"""Chapter 8's claims about TCP_CORK, asserted as shapes against this kernel (never as timings).

Each test measures on real connections of this process on 127.0.0.1, the way
the chapter measures. Segment counts come from the sending kernel's
TCP_INFO; where a loaded machine may merge or split differently, the test
asserts the invariant and the comment says why.
"""

import ast
import os
import pathlib

import pytest

from epollbook import cork, probes
from epollbook.launch import serve
from tools import no_server_left_running

EXAMPLE5 = pathlib.Path(cork.__file__).parent / "examples" / "example5.py"


@pytest.fixture(autouse=True)
def nothing_left_open():
    fds_before = set(os.listdir("/proc/self/fd"))
    with no_server_left_running():
        yield
    left = set(os.listdir("/proc/self/fd")) - fds_before
    assert not left, f"the measurement left file descriptors open: {sorted(left)}"


def test_the_response_is_example_5s_and_the_pieces_are_its_lines():
    literals = [node.value for node in ast.walk(ast.parse(EXAMPLE5.read_text()))
                if isinstance(node, ast.Constant) and isinstance(node.value, bytes) and node.value.startswith(
                    (b"HTTP", b"Content-Type", b"Hello"))]
    assert b"".join(literals) == cork.RESPONSE, "cork.RESPONSE is not the answer example5.py sends"
    assert b"".join(cork.PIECES) == cork.RESPONSE and len(cork.PIECES) == 6


def test_pieces_sent_apart_leave_one_segment_each_and_corked_in_one():
    plain = cork.send_pieces("send() each piece")
    corked = cork.send_pieces("TCP_CORK, send() each, uncork")
    assert plain.size == corked.size == len(cork.RESPONSE), (plain, corked)
    # 5 ms apart, each piece has left (and been acknowledged) before the next: nothing can merge them but the cork.
    # A machine so loaded that the 5 ms pause shrinks to nothing could merge some, hence "more", not "six".
    assert corked.data_segments == 1, corked
    assert plain.data_segments > corked.data_segments, (plain, corked)


@pytest.mark.parametrize("way", ["MSG_MORE on all but the last", "join, one send()"])
def test_msg_more_and_one_joined_send_leave_in_one_segment_as_the_cork_does(way):
    assert cork.send_pieces(way).data_segments == 1


def test_a_cork_never_pulled_still_delivers_the_response_once_its_timer_fires():
    ceiling = cork.cork_ceiling(rounds=3)
    # The timer is the retransmission timeout, at least 200 ms: far longer than an uncorked answer takes on
    # loopback. The margin is wide (100 ms) because a loaded machine delays the reader, never the timer's floor.
    assert all(wait is not None and wait >= 100 for wait in ceiling.waits_ms), ceiling
    assert ceiling.data_segments == [1, 1, 1], ceiling
    uncorked = cork.send_pieces("TCP_CORK, send() each, uncork", [cork.RESPONSE])
    assert uncorked.last_byte_ms < min(ceiling.waits_ms), (uncorked, ceiling)


def test_several_pipelined_answers_leave_in_one_segment_when_corked_and_one_each_when_not():
    corked = cork.pipelined("TCP_CORK, send() each, uncork", count=3)
    plain = cork.pipelined("TCP_NODELAY, send() each", count=3)
    assert (corked.size, plain.size) == (3 * len(cork.RESPONSE),) * 2
    assert corked.data_segments == 1, corked
    assert plain.data_segments == 3, plain  # TCP_NODELAY: every send() leaves at once, paused or not


@pytest.mark.parametrize("way, most", [("TCP_CORK around both", 1), ("MSG_MORE on the head, sendfile()", 1),
                                       ("read the file, one send()", 1)])
def test_a_head_and_a_file_leave_together_when_the_head_is_held_back(way, most):
    sent = cork.head_and_file(way)
    assert sent.size > cork.FILE_SIZE and sent.data_segments <= most, sent


def test_a_head_sent_alone_before_a_file_costs_a_segment_of_its_own():
    sent = cork.head_and_file("send() the head, sendfile()")
    assert sent.data_segments >= 2, sent


def test_example_5s_one_send_arrives_in_one_segment_with_or_without_its_cork():
    for name in ("example5", "example3"):
        with serve(name) as server:
            received = cork.as_a_client_sees(server)
        assert received.answer == cork.RESPONSE, (name, received)
        assert received.data_segments == 1, (name, received)


def test_the_comparison_table_has_a_row_per_way_and_counts_autocorking():
    table = cork.compare_ways(rounds=1)
    assert [row.way for row in table] == list(cork.WAYS)
    assert table.way("TCP_CORK, send() each, uncork").data_segments() == 1
    assert table.autocorked() >= 0
    assert "data segments" in str(table) and "<table>" in table._repr_html_()
    assert probes.sysctl("net.ipv4.tcp_autocorking") in {"0", "1"}


def test_an_unknown_way_is_one_sentence():
    with pytest.raises(ValueError, match="is not a way this module knows"):
        cork.send_pieces("shout")
    with pytest.raises(ValueError, match="is not one of"):
        cork.head_and_file("shout")
