"""Every claim of chapter 6's truth table, asserted against this kernel.

The table is measured once per module (``truth_table``), as the notebook
measures it, and each test asserts one row's claim. Where Linux versions or a
loaded machine may legitimately differ, the test asserts the invariant and the
comment says why.
"""

import errno
import os
import select
import socket

import psutil
import pytest

from epollbook import hangups
from epollbook.probes import epoll_event_names

IN, OUT, RDHUP = select.EPOLLIN, select.EPOLLOUT, select.EPOLLRDHUP
ERR, HUP = select.EPOLLERR, select.EPOLLHUP
RESET_ERRORS = {"ECONNRESET", "EPIPE"}  # which of the two names a reset depends on the state it meets (see below)


@pytest.fixture(scope="module")
def table():
    fds_before = set(os.listdir("/proc/self/fd"))
    measured = hangups.truth_table()
    left = set(os.listdir("/proc/self/fd")) - fds_before
    assert not left, f"measuring the table left file descriptors open: {sorted(left)}"
    assert not client_processes(), "measuring the table left a client process behind"
    return measured


def client_processes():
    """This process's children that run the hang-up table's client (their command line ends on its stdin)."""
    return [child for child in psutil.Process().children()
            if any("sys.stdin.read()" in part for part in child.cmdline())]


def names(mask):
    return epoll_event_names(mask)


def test_a_close_and_a_shutdown_for_writing_look_the_same_to_the_server(table):
    close, shut_wr = table.row("close"), table.row("shut_wr")
    assert close.mask == IN | RDHUP, f"after the client's close(): {names(close.mask)}"
    assert shut_wr.events == close.events and shut_wr.recv == close.recv, \
        f"close() showed {close.cells()}, shutdown(SHUT_WR) {shut_wr.cells()}"
    assert close.recv == ("b''", "b''"), f"recv() after the client's close(): {close.recv}"
    assert close.events["0"] == 0, "a FIN alone set EPOLLERR or EPOLLHUP"
    assert close.so_error == "0", f"SO_ERROR after a FIN: {close.so_error}"


def test_only_a_send_tells_a_closed_client_from_a_half_closed_one(table):
    close, shut_wr = table.row("close"), table.row("shut_wr")
    # The kernel cannot know the peer closed: the first send() is taken; the closed peer's kernel answers it with a
    # reset. Linux names that reset EPIPE in CLOSE_WAIT (tcp_reset()); other versions may say ECONNRESET.
    assert close.send[0] == "6 bytes" and close.send[1] in RESET_ERRORS, f"send() to a closed client: {close.send}"
    assert shut_wr.send == ("6 bytes", "6 bytes"), f"send() to a client that still reads: {shut_wr.send}"


@pytest.mark.parametrize("name", ["reset", "close unread"])
def test_a_reset_sets_err_and_hup_and_recv_raises_econnreset_once(table, name):
    row = table.row(name)
    assert row.mask & (ERR | HUP) == ERR | HUP, f"after {row.ending}: {names(row.mask)}"
    assert row.events["0"] & (ERR | HUP) == ERR | HUP, f"registered 0, after {row.ending}: {names(row.events['0'])}"
    assert row.so_error == "ECONNRESET", f"SO_ERROR after {row.ending}: {row.so_error}"
    # The error is reported once; after it, the connection is simply at its end.
    assert row.recv == ("ECONNRESET", "b''"), f"recv() after {row.ending}: {row.recv}"
    assert row.send[0] == "ECONNRESET" and row.send[1] in RESET_ERRORS, f"send() after {row.ending}: {row.send}"


def test_an_error_is_reported_once_whoever_reads_it_first():
    read = hangups.reading_an_error()
    assert read.events & ERR, f"a reset showed {names(read.events)}"
    assert (read.so_error, read.recv, read.so_error_again) == ("ECONNRESET", "b''", "0"), str(read)


def test_a_stopped_client_shows_no_event_at_all_and_still_takes_what_is_sent(table):
    row = table.row("stopped")
    assert row.mask == 0 and row.events["0"] == 0, f"a stopped client showed {names(row.mask)}"
    with_out = row.events["EPOLLIN|EPOLLRDHUP|EPOLLOUT"]
    assert with_out == OUT, f"a stopped client, registered with EPOLLOUT too: {names(with_out)}"
    assert row.recv == ("EAGAIN", "EAGAIN") and row.so_error == "0", f"recv(): {row.recv}, SO_ERROR {row.so_error}"
    # Its kernel is alive: it acknowledges, and the bytes wait in its buffer.
    assert row.send == ("6 bytes", "6 bytes"), f"send() to a stopped client: {row.send}"


def test_the_servers_own_shutdowns(table):
    shut_rd, shut_wr, shut_rdwr = (table.row(f"server {how}") for how in ("shut_rd", "shut_wr", "shut_rdwr"))
    # SHUT_RD is a local promise: recv() returns b'' and the client may still be written to.
    assert shut_rd.mask == IN | RDHUP and shut_rd.recv == ("b''", "b''"), f"SHUT_RD: {shut_rd.cells()}"
    assert shut_rd.send == ("6 bytes", "6 bytes"), f"send() after SHUT_RD: {shut_rd.send}"
    # SHUT_WR: nothing to read yet, and writing is over: EPOLLOUT says send() will not block, and it fails at once.
    assert shut_wr.mask == 0 and shut_wr.events["EPOLLIN|EPOLLRDHUP|EPOLLOUT"] == OUT, f"SHUT_WR: {shut_wr.cells()}"
    assert shut_wr.recv == ("EAGAIN", "EAGAIN") and shut_wr.send == ("EPIPE", "EPIPE"), f"SHUT_WR: {shut_wr.cells()}"
    # SHUT_RDWR ends both directions: EPOLLHUP, with nothing from the client.
    assert shut_rdwr.mask == IN | RDHUP | HUP and shut_rdwr.events["0"] == HUP, f"SHUT_RDWR: {shut_rdwr.cells()}"
    assert shut_rdwr.send == ("EPIPE", "EPIPE") and shut_rdwr.so_error == "0", f"SHUT_RDWR: {shut_rdwr.cells()}"


def test_every_ending_leaves_the_connection_writable_and_registered_0_shows_only_err_and_hup(table):
    for row in table:
        # send() never blocks once a connection has ended (it fails at once), nor while the peer's buffer has room.
        assert row.events["EPOLLIN|EPOLLRDHUP|EPOLLOUT"] == row.mask | OUT, \
            f"{row.ending}: {names(row.mask)} without EPOLLOUT, {row.names('EPOLLIN|EPOLLRDHUP|EPOLLOUT')} with it"
        assert row.events["0"] == row.mask & (ERR | HUP), \
            f"{row.ending}: {names(row.mask)} registered for reading, {row.names('0')} registered for nothing"


def test_epollhup_comes_once_both_directions_are_shut_whoever_shut_them():
    for case in hangups.where_hup_comes_from():
        both_shut = case.server == "shutdown(SHUT_RDWR)" or (case.client == "closes" and case.server != "nothing")
        assert case.hup == both_shut, f"client {case.client}, server {case.server}: {names(case.events)}"
        assert not case.events & ERR, f"client {case.client}, server {case.server}: {names(case.events)}"


def test_a_stopped_client_is_found_only_once_it_ends():
    peer = hangups.a_stopped_peer(seconds=2.5, keepalive=1)
    assert peer.while_stopped == 0, f"while stopped: {names(peer.while_stopped)}"
    # Keepalive probed at least once in 2.5 s of silence, and the stopped process's kernel answered: no ETIMEDOUT.
    assert peer.keepalive_error == "0", f"keepalive against a stopped client: {peer.keepalive_error}"
    assert peer.acknowledged < peer.quiet_for, \
        f"no acknowledgement for {peer.acknowledged} s, no data for {peer.quiet_for} s: no probe was answered"
    assert peer.sent_while_stopped > 0, "send() took nothing while the client was stopped"
    # It ended with our bytes unread: its kernel closed the socket with a reset.
    assert peer.once_ended & (IN | RDHUP) == IN | RDHUP, f"once it ended: {names(peer.once_ended)}"
    assert not client_processes(), "the stopped client's process is still there"


def test_closing_with_pipelined_bytes_unread_resets_the_answer():
    saw = hangups.answer_then_close(hangups.close_at_once)
    assert saw.end == "ECONNRESET" and not saw.whole, f"the client {saw}"


def test_shutdown_then_draining_then_close_delivers_the_whole_answer():
    def drain_then_close(conn):
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(65536):
            pass
        conn.close()

    saw = hangups.answer_then_close(drain_then_close)
    assert saw.whole, f"the client {saw}"


@pytest.mark.quick
def test_outcome_names_bytes_and_errors():
    def fails():
        raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")

    assert hangups.outcome(lambda: b"") == "b''"
    assert hangups.outcome(lambda: 6) == "6 bytes"
    assert hangups.outcome(lambda: b"x" * 100) == "100 bytes"
    assert hangups.outcome(fails) == "ECONNRESET"


@pytest.mark.quick
def test_a_table_prints_aligned_and_renders_as_html():
    table = hangups.Table(["ending", "events"], [["close()", "EPOLLIN|EPOLLRDHUP"], ["reset", "0"]])
    lines = str(table).splitlines()
    assert lines[1].index("EPOLLIN") == lines[0].index("events") == lines[2].index("0"), str(table)
    assert "<th>events</th>" in table._repr_html_() and "EPOLLIN|<wbr>EPOLLRDHUP" in table._repr_html_()


@pytest.mark.quick
def test_an_unknown_ending_is_named_in_the_error():
    with pytest.raises(KeyError, match="'close'"):
        hangups.ending("hang up")
