"""Chapter 12's mechanics against real sockets: selectors and asyncio seen from /proc, and the tiny loop's steps."""

import os
import pathlib
import socket

import pytest

from epollbook import bridge, clients, probes
from epollbook.launch import serve
from epollbook.servers.framing import RESPONSE


def open_fds():
    return set(os.listdir("/proc/self/fd"))


def test_the_selectors_server_watches_its_connections_level_triggered_with_epoll():
    with serve("selectors") as server, clients.idle_clients(server, 3):
        watched = bridge.interest_list_of(server, 4)
    assert len(watched) == 4, f"the selectors server watched {[str(i) for i in watched]}, not a listener and 3"
    assert {probes.epoll_event_names(i.events) for i in watched} == {"EPOLLIN|EPOLLERR|EPOLLHUP"}, \
        f"the selectors server registered {[str(i) for i in watched]}"
    assert bridge.triggering(watched) == "level-triggered"


def test_an_asyncio_server_watches_one_more_descriptor_its_self_pipe():
    with serve("asyncio-protocol") as server, clients.idle_clients(server, 3):
        watched = bridge.interest_list_of(server, 5)
        with pytest.raises(TimeoutError, match="registered 5 descriptors, not 6"):
            bridge.interest_list_of(server, 6, timeout=0.2)
    assert bridge.triggering(watched) == "level-triggered"


def test_triggering_names_edge_triggered_if_any_registration_has_epollet():
    level = probes.Interest(3, probes.EPOLL_EVENTS["EPOLLIN"], 3)
    edge = probes.Interest(4, probes.EPOLL_EVENTS["EPOLLIN"] | probes.EPOLL_EVENTS["EPOLLET"], 4)
    assert bridge.triggering([level]) == "level-triggered"
    assert bridge.triggering([level, edge]) == "edge-triggered"


def test_asyncio_registers_a_writer_only_for_what_the_kernel_could_not_take():
    before = open_fds()
    view = bridge.asyncio_loop_view()
    assert open_fds() == before, "asyncio_loop_view left descriptors open"
    assert view.selector == "EpollSelector"
    assert view.nodelay, "asyncio's accepted socket had TCP_NODELAY off"
    assert view.small_write_buffered == 0
    assert "EPOLLOUT" not in view.events_of(view.connection_fd, "after_small_write")
    assert view.big_write_buffered > 0, "the kernel took 8 MiB at once: the test needs a bigger write"
    assert "EPOLLOUT" in view.events_of(view.big_fd, "after_big_write")
    assert "EPOLLOUT" not in view.events_of(view.big_fd, "after_drain")
    assert view.events_of(view.self_pipe_fd, "serving") == "EPOLLIN|EPOLLERR|EPOLLHUP"
    everything = [i for moment in ("serving", "connected", "after_big_write") for i in getattr(view, moment)]
    assert bridge.triggering(everything) == "level-triggered"


@pytest.mark.parametrize("step", bridge.STEPS)
def test_each_step_of_the_tiny_loop_serves_polite_and_rude_clients_and_returns(step):
    before = open_fds()
    with bridge.running_tiny_server(step) as address:
        assert clients.exchange(address) == RESPONSE
        assert clients.exchange(address, piece_size=5) == RESPONSE
        with clients.idle_clients(address, 2, sent=clients.FIRST_LINE):  # half requests hold up nobody
            assert clients.exchange(address) == RESPONSE
        clients.early_close_client(address)
        clients.reset_client(address)
        assert clients.half_close_client(address) == RESPONSE
    assert open_fds() == before, f"the {step} loop left descriptors open"


def test_a_step_that_does_not_exist_is_named_with_the_ones_that_do():
    with pytest.raises(ValueError, match="there is no step 'threads'; the steps are callbacks, generators"):
        bridge.step_module("threads")


def test_a_steps_listing_is_its_file_without_the_docstring():
    listing = bridge.show_step("coroutines")
    source = pathlib.Path(bridge.step_module("coroutines").__file__).read_text().splitlines()
    assert listing.numbered_lines[0] == (3, "import selectors")
    assert all(source[number - 1] == text for number, text in listing.numbered_lines)


def test_the_awaitable_hands_the_loop_its_socket_and_event():
    from epollbook.tinyloop.coroutines import readable

    async def read_one(sock):
        await readable(sock)
        return sock.recv(10)

    ours, theirs = socket.socketpair()
    with ours, theirs:
        coroutine = read_one(ours)
        assert coroutine.send(None) == (ours, 1)
        theirs.send(b"x")
        with pytest.raises(StopIteration) as returned:
            coroutine.send(None)
    assert returned.value.value == b"x"
