"""Chapter 12's mechanics: what ``selectors`` and asyncio do with epoll, seen from /proc, and the tiny loop run.

``asyncio_loop_view()`` starts a fresh asyncio loop in a thread of this
process, serves with it on a free port of 127.0.0.1, connects its own
clients, and reads what the loop asked of the kernel at each moment: the
epoll instance's interest list (``/proc/self/fdinfo``, through
``probes.epoll_interest_list``), ``TCP_NODELAY`` on the accepted sockets, and
when a writer is registered. ``interest_list_of(server, count)`` reads the
interest list of a server process once it holds *count* connections.
``running_tiny_server(step)`` runs one step of ``epollbook.tinyloop`` in a
thread, and ``show_step(step)`` lists its code.

Nothing here outlives its call or its ``with`` block: loops, threads and
sockets are closed, and a wait that does not come to pass raises
``TimeoutError`` with what was seen instead.
"""

import asyncio
import contextlib
import dataclasses
import importlib
import os
import pathlib
import socket
import threading
import time

from epollbook import clients, probes, show
from epollbook.probes import Interest
from epollbook.servers.framing import RESPONSE

STEPS = ("callbacks", "generators", "coroutines")
"""The steps of the tiny loop, in order: modules of ``epollbook.tinyloop``."""

BIG_ANSWER = 8 << 20
"""Bytes a transport is asked to write to a client that reads nothing: more than loopback's buffers hold."""


def _wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not come to pass within {timeout:g} s")
        time.sleep(0.002)
    return value


# -- the selectors server, and any other, seen from /proc -----------------------------------------


def interest_list_of(server, count, timeout=5.0):
    """The interest list of *server*'s epoll (a ``launch.Server``) once it holds *count* registrations.

    Returns a list of ``probes.Interest``. Raises ``TimeoutError`` if it does
    not reach *count* within *timeout* seconds, saying what it held.
    """
    seen = []

    def reached():
        seen[:] = probes.epoll_interest_list(server.pid)
        return len(seen) >= count

    try:
        _wait_until(reached, timeout, f"{count} registrations")
    except TimeoutError:
        raise TimeoutError(f"{server} registered {len(seen)} descriptors, not {count}, within {timeout:g} s: "
                           f"{', '.join(map(str, seen))}") from None
    return seen


def triggering(interests):
    """'edge-triggered' if any of *interests* has ``EPOLLET``, else 'level-triggered'."""
    return "edge-triggered" if any(i.events & probes.EPOLL_EVENTS["EPOLLET"] for i in interests) else "level-triggered"


# -- asyncio's loop, from the inside --------------------------------------------------------------


@dataclasses.dataclass
class LoopView:
    """What a fresh asyncio loop asked of the kernel, moment by moment (``asyncio_loop_view()``)."""

    selector: str                  # the class of the loop's selector
    epoll_fd: int                  # its epoll instance, as found in /proc/self/fd
    self_pipe_fd: int              # the loop's own wake-up socket (call_soon_threadsafe, signals)
    listener_fd: int
    serving: list[Interest]        # the interest list once the server listens
    connected: list[Interest]      # ... with a connection accepted, its request not yet come
    connection_fd: int
    nodelay: bool                  # TCP_NODELAY on the accepted socket, as the loop left it
    after_small_write: list[Interest]  # right after transport.write() of the article's answer
    small_write_buffered: int      # bytes the transport kept of it (0: the kernel took it all at once)
    big_fd: int
    after_big_write: list[Interest]    # after a write larger than the socket's buffers, the client not reading
    big_write_buffered: int
    after_drain: list[Interest]    # once the client has read it all

    def events_of(self, fd, moment):
        """The event names registered for *fd* at *moment* (a field name: 'connected', ...); '' if not registered."""
        return next((probes.epoll_event_names(i.events) for i in getattr(self, moment) if i.fd == fd), "")


class _Remembering(asyncio.Protocol):
    """Keeps each transport in *made*, so the view can write on it; reads and drops what comes."""

    def __init__(self, made):
        self.made = made

    def connection_made(self, transport):
        self.made.append(transport)

    def data_received(self, data):
        pass


def asyncio_loop_view(timeout=5.0):
    """Serve on a fresh asyncio loop in a thread of its own and read its epoll interest list at each step.

    Returns a ``LoopView``. Raises ``TimeoutError`` if a step does not come to
    pass within *timeout* seconds. Runs in a thread so that it works where a
    loop is running already (a notebook's kernel runs one).
    """
    result = {}

    def run():
        before = set(probes.epoll_descriptors(os.getpid()))
        loop = asyncio.new_event_loop()
        try:
            made = set(probes.epoll_descriptors(os.getpid())) - before
            # Another thread may have made an epoll meanwhile: then ask the loop (a private attribute) which is its.
            epoll_fd = made.pop() if len(made) == 1 else loop._selector._selector.fileno()
            result["view"] = loop.run_until_complete(asyncio.wait_for(_look(loop, epoll_fd), timeout))
        except BaseException as error:  # handed to the caller's thread
            result["error"] = error
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="asyncio_loop_view")
    thread.start()
    thread.join(timeout + 2.0)
    if "error" in result:
        raise result["error"]
    return result["view"]


async def _look(loop, epoll_fd):
    def interests():
        return probes.epoll_interest_list(os.getpid(), epoll_fd)

    async def until(condition, what):
        while not condition():
            await asyncio.sleep(0.002)  # the loop runs meanwhile: this is its own wait
        return what

    made = []
    server = await loop.create_server(lambda: _Remembering(made), "127.0.0.1", 0)
    listener_fd = server.sockets[0].fileno()
    serving = interests()
    with contextlib.ExitStack() as held:
        held.enter_context(socket.create_connection(server.sockets[0].getsockname()))
        await until(lambda: made, "accepted")
        transport = made[0]
        connection = transport.get_extra_info("socket")
        connected = interests()
        nodelay = bool(connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        transport.write(RESPONSE)
        after_small_write, small_buffered = interests(), transport.get_write_buffer_size()

        big = held.enter_context(socket.create_connection(server.sockets[0].getsockname()))
        big.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        await until(lambda: len(made) == 2, "accepted")
        big_transport = made[1]
        big_transport.set_write_buffer_limits(high=BIG_ANSWER * 2)  # no pause_writing(): the lesson is the writer
        big_transport.write(bytes(BIG_ANSWER))
        after_big_write, big_buffered = interests(), big_transport.get_write_buffer_size()
        big.setblocking(False)
        received = 0

        def drained():
            nonlocal received
            with contextlib.suppress(BlockingIOError):
                while chunk := big.recv(1 << 20):
                    received += len(chunk)
            return received >= BIG_ANSWER and big_transport.get_write_buffer_size() == 0

        await until(drained, "drained")
        await asyncio.sleep(0)  # the writer is removed in the callback that sent the last byte
        after_drain = interests()
        self_pipe = {i.fd for i in serving} - {listener_fd}
        view = LoopView(type(loop._selector).__name__,  # private, read only to show it
                        epoll_fd, min(self_pipe) if self_pipe else -1, listener_fd, serving, connected,
                        connection.fileno(), nodelay, after_small_write, small_buffered,
                        big_transport.get_extra_info("socket").fileno(), after_big_write, big_buffered, after_drain)
        for each in made:
            each.close()
        server.close()
        await server.wait_closed()
        return view


# -- the tiny loop ----------------------------------------------------------------------------------


def step_module(step):
    """The module of tiny-loop *step* ('callbacks', 'generators', 'coroutines'); raise ``ValueError`` for others."""
    if step not in STEPS:
        raise ValueError(f"there is no step {step!r}; the steps are {', '.join(STEPS)}")
    return importlib.import_module(f"epollbook.tinyloop.{step}")


def show_step(step):
    """A ``show.Listing`` of tiny-loop *step*'s code, numbered as in its file, without its docstring."""
    module = step_module(step)
    lines = pathlib.Path(module.__file__).read_text().splitlines()
    first = next(number for number, line in enumerate(lines) if line.startswith("import"))
    return show.Listing(f"code/epollbook/tinyloop/{step}.py",
                        [(first + 1 + i, text) for i, text in enumerate(lines[first:])])


@contextlib.contextmanager
def running_tiny_server(step, *, timeout=5.0):
    """Run tiny-loop *step*'s ``serve`` on a free port of 127.0.0.1 in a thread; yield its address.

    When the block ends, the listener is shut down and the loop must return
    within *timeout* seconds (it finishes the connections in flight), else
    ``TimeoutError``. An error of the loop is raised here.
    """
    serve = step_module(step).serve
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    running = clients.Background(serve, listener, name=f"tiny loop: {step}")
    try:
        yield listener.getsockname()
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        finished = running.finished.wait(timeout)
        listener.close()
    if not finished:
        raise TimeoutError(f"the {step} loop did not return within {timeout:g} s of its listener's shutdown")
    if running.error is not None:
        raise running.error
