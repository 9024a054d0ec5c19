"""Run only in a network namespace whose TIME_WAIT table is full (``test_full_time_wait_table.py`` makes it).

Each test here assumes the kernel keeps no connection in TIME_WAIT, which is
true on an ordinary machine only for the minute after a load test; so pytest
does not collect this module by itself (its name does not start ``test_``).
"""

import socket

import pytest

from answers.chapter1 import with_create_server, without_reuseaddr
from epollbook import diagrams, probes
from epollbook.checks import CheckFailed, check_open_listener


def test_in_a_full_table_a_connection_closed_first_skips_time_wait_and_the_probe_says_why():
    before = probes.time_wait_table()
    assert before.full and "run this again a minute later" in str(before), str(before)
    with socket.create_server(("127.0.0.1", 0)) as listener, \
            socket.create_connection(listener.getsockname()) as client:
        listener.accept()[0].close()
        client.recv(1)
    after = probes.time_wait_table()
    assert after.held == 0 and after.dropped > before.dropped, f"{before} -> {after}"
    assert "close(s) found the table full" in after.since(before), after.since(before)


def test_in_a_full_table_the_recorded_connection_says_which_end_skipped_time_wait():
    closing = {moment.action: moment for moment in diagrams.record_connection()}[
        "server: send(answer), shutdown(SHUT_WR)"]
    assert (closing.client, closing.skipped) == ("CLOSED", "client"), closing


def test_in_a_full_table_exercise_1_2_holds_the_port_with_an_open_connection_and_says_so(capsys):
    check_open_listener(with_create_server)
    assert "while a connection there is open (the kernel's TIME_WAIT table is full" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match=r"a connection is open there \(the kernel's TIME_WAIT table is full"):
        check_open_listener(without_reuseaddr)
