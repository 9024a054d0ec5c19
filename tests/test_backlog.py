"""Chapter 7's claims about the listen backlog, asserted against this kernel.

Shapes with margins, never timings: backlog + 1 connections complete with no
accept(); the next clients wait in SYN-SENT and are never refused; the queue the
kernel shows matches; somaxconn caps listen(); Python's defaults are what their
code asks for. The pure parts (the SYN schedule, ss's drop count) are quick tests.
"""

import os
import socket

import pytest

from epollbook import backlog, probes
from tools import need_tool


@pytest.fixture(autouse=True)
def no_descriptor_left():
    """Every experiment closes what it opened: its clients (those in SYN-SENT too) and its listeners."""
    before = set(os.listdir("/proc/self/fd"))
    yield
    left = set(os.listdir("/proc/self/fd")) - before
    assert not left, f"the experiment left file descriptors open: {sorted(left)}"


# -- pure parts ------------------------------------------------------------------------------------------


@pytest.mark.quick
def test_syn_schedule_doubles_from_one_second_without_linear_timeouts():
    assert backlog.syn_retransmission_times(6) == [1, 3, 7, 15, 31, 63]


@pytest.mark.quick
def test_syn_schedule_keeps_one_second_waits_for_linear_timeouts_plus_one():
    # The kernel's commit message: initial RTO 1 s and tcp_syn_linear_timeouts = 2 give waits 1, 1, 1, 2, 4, ...
    assert backlog.syn_retransmission_times(5, linear=2) == [1, 2, 3, 5, 9]


@pytest.mark.quick
def test_listener_drops_read_from_what_ss_prints():
    sample = ("State  Recv-Q Send-Q Local Address:Port  Peer Address:PortProcess\n"
              "LISTEN 2      1          127.0.0.1:47949      0.0.0.0:*\n"
              "\t skmem:(r0,rb131072,t0,tb16384,f0,w0,o0,bl0,d3)\n")
    assert backlog.parse_listener_drops(sample) == 3
    assert backlog.parse_listener_drops("LISTEN 0 5 127.0.0.1:80 0.0.0.0:*\n") is None


@pytest.mark.quick
def test_server_states_read_from_what_ss_prints():
    sample = ("State    Recv-Q Send-Q Local Address:Port  Peer Address:Port Process\n"
              "LISTEN   0      0          127.0.0.1:44555      0.0.0.0:*\n"
              "SYN-RECV 0      0          127.0.0.1:44555    127.0.0.1:55094\n"
              "ESTAB    0      0          127.0.0.1:44555    127.0.0.1:58814\n"
              "ESTAB    0      0          127.0.0.1:58814    127.0.0.1:44555\n")
    assert backlog.parse_ss_states(sample, 44555) == {55094: "SYN-RECV", 58814: "ESTABLISHED"}


# -- live ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 2, 5])
def test_backlog_plus_one_connections_complete_before_any_accept(size):
    fill = backlog.fill_queue(size, extra=2)
    assert fill.waiting == size + 1, f"listen({size}): the kernel shows {fill.waiting} waiting for accept()"
    # The clients' own view: at least those; more only if a loaded machine let a last ACK meet a full queue (the
    # client then believes it is connected; chapter 7 shows it), which never made the queue hold more.
    assert size + 1 <= fill.completed <= fill.clients - 1, \
        f"listen({size}): {fill.completed} of {fill.clients} clients completed their connect()"


@pytest.mark.parametrize("size", [0, 3])
def test_the_clients_beyond_the_queue_wait_in_syn_sent_and_are_not_refused(size):
    fill = backlog.fill_queue(size, extra=3)
    assert fill.refused == 0, f"listen({size}): {fill.refused} clients were refused (ECONNREFUSED)"
    # Each client either completed or waits; 3 wait unless a loaded machine let handshakes overlap (see above).
    assert fill.syn_sent + fill.completed == fill.clients and fill.syn_sent >= 1, \
        f"listen({size}): of {fill.clients} clients {fill.completed} completed and {fill.syn_sent} are in SYN-SENT"


def test_ss_shows_the_backlog_and_the_listeners_own_drops():
    need_tool("ss")
    fill = backlog.fill_queue(2, extra=2)
    assert fill.applied == 2, f"listen(2): ss shows a backlog (Send-Q) of {fill.applied}"
    # Each extra client's SYN was dropped at least once; a loaded machine may resend one within the wait.
    assert fill.drops is not None and fill.drops >= 2, f"the listener counted {fill.drops} drops for 2 extra clients"


def test_a_backlog_above_somaxconn_is_lowered_to_it():
    need_tool("ss")
    somaxconn = probes.sysctl_int("net.core.somaxconn")
    assert backlog.applied_backlog(somaxconn + 1000) == somaxconn
    assert backlog.applied_backlog(3) == 3


def test_pythons_defaults_are_what_their_code_asks_for():
    need_tool("ss")
    rows = {row.api: row for row in backlog.python_defaults()}
    assert rows["socket.listen()"].applied == min(socket.SOMAXCONN, 128)
    assert rows["socket.create_server(address)"].applied == min(socket.SOMAXCONN, 128)
    assert rows["socketserver.TCPServer"].applied == 5
    assert rows["asyncio: loop.create_server()"].applied == 100


def test_a_dropped_syn_gets_through_only_after_accept_made_room():
    first, later = backlog.retries(accept_after=(0.3, 1.2), timeout=5.0)
    for retry in (first, later):
        assert retry.state_while_waiting == "SYN-SENT", f"a client waiting for its SYN was {retry}"
        assert retry.outcome == "connected", f"the client never got in, or was refused: {retry}"
        # Never before the room was made; a SYN is sent again at whole seconds, so at least 1 s in.
        assert retry.connected_after >= max(retry.room_after, 0.9), f"it got in too early: {retry}"
        assert retry.drops is not None and retry.drops >= 1, f"its listener counted no drop: {retry}"
    assert later.connected_after > first.connected_after, f"room made later, yet in no later: {first}, {later}"


def test_clients_that_connect_together_are_all_served_in_the_end():
    result = backlog.half_open(clients=2, free_at=0.3, timeout=6.0)
    connected = [client for client in result.clients if client.connected_after is not None]
    assert connected, f"no client connected at all: {result}"
    for client in connected:
        # Believed connected or not, the kernel completes the connection once there is room: nothing is lost.
        assert client.sent == len(b"hello") and client.received == len(b"hello"), f"bytes lost: {client}"
        assert client.accepted_after >= client.connected_after - 0.05, f"accepted before it connected: {client}"
    for client in result.believed:
        assert client.server_side in ("SYN-RECV", "none"), f"believed connected, yet: {client}"
