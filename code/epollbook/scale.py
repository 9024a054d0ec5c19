"""select, poll and epoll as the connections grow: chapter 10's measurements.

    fd_limit(needed)                          raise this process's soft RLIMIT_NOFILE within its hard limit, restore it
    sizes_within_limit(sizes)                 the numbers of connections the hard limit leaves room for
    IdleConnections()                         one active connection and as many idle ones as asked (``grow(n)``)
    wait_costs(sizes, calls=..., rounds=...)  the cost of one wait of select, poll and epoll at each size: [WaitRow]
    select_refuses(number=1024)               one socket moved to a high fd number, shown to select, poll and epoll
    change_costs(sizes, changes=...)          one epoll_ctl (a change of interest), beside one wait: [ChangeRow]
    ratio(rows, call, small, large)           how many times a call's wait at *large* costs its wait at *small*
    tlpi_ratio(call), tlpi_us_per_wait()      the same of TLPI's table, and the table as µs per wait
    TLPI                                      the published shape to compare with (Kerrisk, TLPI, table 63-9)

Some facts about measuring a wait
---------------------------------

``select()`` and ``poll()`` are told the whole list of descriptors on every
call; the kernel asks each one whether it is ready (its ``poll`` method), and
copies the answer back for every one. ``epoll_wait()`` is told nothing: the
kernel keeps the interest list between calls, and each descriptor puts itself
on a ready list when something happens to it, so a wait looks only at what is
ready. With one active connection among N idle ones, select's and poll's
waits grow with N and epoll's does not: that is the whole claim, and what
``wait_costs`` measures. The active connection has a byte waiting that nobody
reads, so every wait returns at once with one descriptor ready (each wait has
a timeout all the same: if it were ever reached, the row would say so by its
cost).

What is timed is the wait alone: the connections are made, and registered
with poll and epoll, before the clock starts; select is handed a list built
beforehand (the C library has to build its ``fd_set`` again before every call
because the kernel overwrites it; Python's ``select.select`` does that from the
list, and that is part of what a select costs). The clock is this thread's CPU
time (user + system, ``time.thread_time()``), the measure TLPI's table uses:
the time other programs on a loaded machine take the CPU from us does not
count. Wall-clock time is kept beside it. Calls take turns within each round,
each timed over a batch of waits long enough for the clock, and the median
of the rounds is the figure.

The connections are ``socket.socketpair()`` pairs (Unix stream sockets), not
TCP: 10,000 TCP connections need a listener, 10,000 handshakes and leave
10,000 sockets to tear down; a pair costs one system call. What grows is the
number of descriptors the kernel asks, one ``poll`` method call each (a Unix
socket's is a few lines, a TCP socket's a few more): the family changes the
cost per descriptor, not how the cost grows with their number. This process
holds our end of each connection, as a server does; the other ends are handed
to a small helper process (``SCM_RIGHTS``), as real clients live elsewhere, so
that 10,000 connections cost this process 10,000 descriptors, not 20,000.
The helper exits when its channel closes, so it cannot outlive us.

``select()``'s limit is on the descriptor's *number*: an ``fd_set`` is a bitmap
of ``FD_SETSIZE`` (1024) bits, and a descriptor numbered 1024 has no bit,
however few are open. Python checks and raises ``ValueError``; a C program
writes past the bitmap (glibc's fortified ``FD_SET`` aborts instead).
"""

import contextlib
import dataclasses
import fcntl
import os
import resource
import select
import socket
import statistics
import subprocess
import sys
import time

SELECT_LIMIT = 1024
"""FD_SETSIZE: the first descriptor number select() cannot watch."""

TLPI = {"epoll": {10: 0.41, 10_000: 0.66}, "poll": {10: 0.61, 10_000: 990}, "select": {10: 0.73, 10_000: 930}}
"""CPU seconds for 100,000 waits with one descriptor ready, by call and number of descriptors watched.

Michael Kerrisk, *The Linux Programming Interface* (No Starch Press, 2010), table 63-9; written in C, so the
cost of a wait at 10 descriptors is the kernel's and the C library's alone.
"""

CALLS = ("select", "poll", "epoll")

SIZES = (10, 30, 100, 300, 900, 1000, 3000, 10_000)
"""The chapter's sizes: 900 and 1000 on either side of select's limit, once a notebook's own descriptors count."""

SPARE_FDS = 64
"""Descriptors left free above what a measurement needs, for whatever else the process opens meanwhile."""


# -- the descriptor limit --------------------------------------------------------------------------------


@contextlib.contextmanager
def fd_limit(needed):
    """Within the block, this process may have at least *needed* descriptors open, if its hard limit allows.

    Raises the soft ``RLIMIT_NOFILE`` to *needed* (never lowers it; never
    above the hard limit, which only root may raise), yields the soft limit
    in force, and puts the old one back when the block ends. Close what the
    block opened before it ends: a limit put back below the descriptors open
    leaves them open, but no more can be opened.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = soft if needed <= soft else needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield wanted
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_fds():
    """How many descriptors this process has open now."""
    return len(os.listdir("/proc/self/fd"))


# -- the connections -------------------------------------------------------------------------------------

# The helper: keeps every descriptor it is sent until its channel (its stdin) closes, then exits.
_HOLDER = """\
import resource, socket, sys
limit = resource.RLIMIT_NOFILE
soft, hard = resource.getrlimit(limit)
resource.setrlimit(limit, (min(max(soft, int(sys.argv[1])), hard), hard))
channel = socket.socket(fileno=0)
kept = []
while True:
    data, fds, _, _ = socket.recv_fds(channel, 1, 1)
    if not data:
        break
    kept += fds
"""


class NotEnoughDescriptors(OSError):
    """This process's hard limit on open descriptors is too low for the connections asked for."""


class IdleConnections:
    """One active connection and as many idle ones as ``grow()`` asks for; our ends as descriptor numbers.

    ``active`` is our end of a connection with one byte waiting, never read:
    every wait reports it ready. ``idle`` are our ends of connections whose
    other end never sends: no wait reports them. The other ends are kept by a
    helper process (see the module's essay). Use it in a ``with`` block, with
    the descriptor limit raised (``fd_limit``) for as many as you will grow to:
    closing it closes every connection and ends the helper.

    Raises ``NotEnoughDescriptors`` from ``grow()`` when the limit is reached.
    """

    def __init__(self, most=10_000):
        self.idle = []
        ours, theirs = socket.socketpair()
        self._active_pair = (ours, theirs)
        theirs.sendall(b"!")
        self.active = ours.fileno()
        channel, helper_end = socket.socketpair()
        self._channel = channel
        try:
            self._helper = subprocess.Popen([sys.executable, "-I", "-c", _HOLDER, str(most + SPARE_FDS)],
                                            stdin=helper_end, stdout=subprocess.DEVNULL)
        except BaseException:
            for sock in (ours, theirs, channel):
                sock.close()
            raise
        finally:
            helper_end.close()

    def grow(self, count):
        """Open idle connections until there are *count*; return the list of our ends (``idle``).

        Each other end goes to the helper as soon as it is made, so that the
        number it had is free for the next connection: our ends take the
        lowest numbers, one after another, as a server's connections do.
        """
        while len(self.idle) < count:
            try:
                ours, theirs = socket.socketpair()
            except OSError as error:
                raise NotEnoughDescriptors(error.errno, f"{len(self.idle)} idle connections open, then "
                                                        f"{error.strerror}: raise the limit with fd_limit()") from None
            with theirs:  # the helper has its own copy once it is sent
                socket.send_fds(self._channel, [b"+"], [theirs.fileno()])
            self.idle.append(ours.detach())
        return self.idle

    def close(self):
        """Close every connection; the helper, whose channel closes, exits."""
        for fd in self.idle:
            os.close(fd)
        self.idle = []
        for sock in (*self._active_pair, self._channel):
            sock.close()
        try:
            self._helper.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._helper.kill()
            self._helper.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


# -- the three waiters -------------------------------------------------------------------------------------
#
# Each watches descriptors for reading: add(fds) once (the set-up), then wait(timeout) as often as measured,
# which returns how many descriptors were ready. Only wait() is timed.


class SelectWaiter:
    name = "select"

    def __init__(self):
        self.fds = []

    def add(self, fds):
        self.fds += fds

    def wait(self, timeout):
        readable, _, _ = select.select(self.fds, (), (), timeout)
        return len(readable)

    def close(self):
        self.fds = []


class PollWaiter:
    name = "poll"

    def __init__(self):
        self.poller = select.poll()

    def add(self, fds):
        for fd in fds:
            self.poller.register(fd, select.POLLIN)

    def wait(self, timeout):
        return len(self.poller.poll(timeout * 1000))  # poll's timeout is in milliseconds

    def close(self):
        self.poller = None


class EpollWaiter:
    name = "epoll"

    def __init__(self):
        self.poller = select.epoll()

    def add(self, fds):
        for fd in fds:
            self.poller.register(fd, select.EPOLLIN)

    def wait(self, timeout):
        return len(self.poller.poll(timeout, 64))

    def close(self):
        self.poller.close()


WAITERS = {"select": SelectWaiter, "poll": PollWaiter, "epoll": EpollWaiter}


# -- the cost of a wait ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WaitRow:
    """The cost of one wait of *call* watching *connections* idle connections and one active one.

    ``cpu_us`` is the median over ``rounds`` of this thread's CPU time per
    wait, in µs; ``wall_us`` the median wall-clock time; ``outliers`` the
    rounds' CPU times more than ``OUTLIER_FACTOR`` times from the median.
    ``highest_fd`` is the highest descriptor number watched. When the call
    refused (select at a number of 1024 and more), ``error`` says what it
    raised and the times are None.
    """

    call: str
    connections: int
    highest_fd: int
    waits: int | None
    rounds: int
    cpu_us: float | None
    wall_us: float | None
    outliers: tuple = ()
    error: str | None = None

    @property
    def per_100000_waits(self):
        """CPU seconds for 100,000 waits, as TLPI's table counts them (None for a refusal)."""
        return None if self.cpu_us is None else self.cpu_us / 10


OUTLIER_FACTOR = 4


def _timed(waiter, waits, timeout):
    """CPU and wall seconds per wait of *waits* waits; raises RuntimeError if a wait did not see one ready."""
    cpu, wall = time.thread_time(), time.perf_counter()
    for _ in range(waits):
        ready = waiter.wait(timeout)
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    if ready != 1:
        raise RuntimeError(f"{waiter.name} reported {ready} descriptors ready instead of the one active connection")
    return cpu / waits, wall / waits


def _waits_for(waiter, batch_seconds, timeout):
    """How many waits make a batch of about *batch_seconds*, from a first trial of a few."""
    trial = 3
    per_wait, _ = _timed(waiter, trial, timeout)
    return max(trial, min(20_000, round(batch_seconds / max(per_wait, 1e-7))))


def sizes_within_limit(sizes=SIZES):
    """The sizes of *sizes* this process's hard descriptor limit leaves room for (connections + open + spare)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return tuple(sizes)
    return tuple(size for size in sizes if open_fds() + size + 2 * SPARE_FDS <= hard)


def wait_costs(sizes=SIZES, calls=CALLS, *, rounds=5, batch_seconds=0.002, timeout=1.0):
    """Measure one wait of each of *calls* watching each number of idle connections in *sizes*; ``[WaitRow]``.

    For each size (in increasing order; the connections are opened once and
    grow), every call watches the idle connections and the one active one,
    registered before any clock starts; then the calls take turns, *rounds*
    rounds, each round a batch of waits of about *batch_seconds*. Each wait
    has a *timeout* (seconds) it never reaches: the active connection is
    always ready. select refuses a descriptor numbered ``SELECT_LIMIT`` or
    more: its row then carries the ``ValueError`` it raised. The descriptor
    limit is raised for the largest size and put back after. Raises
    ``NotEnoughDescriptors`` if the hard limit does not allow the largest size,
    ``ValueError`` for an unknown call or no sizes.
    """
    unknown = [call for call in calls if call not in WAITERS]
    if unknown or not sizes:
        raise ValueError(f"calls are among {', '.join(WAITERS)} and sizes at least one number; got {calls}, {sizes}")
    sizes = sorted(sizes)
    rows = []
    with fd_limit(open_fds() + sizes[-1] + 2 * SPARE_FDS), IdleConnections(sizes[-1]) as connections:
        waiters = {call: WAITERS[call]() for call in calls}
        try:
            watched = [connections.active]
            for call in calls:
                waiters[call].add(watched)
            for size in sizes:
                new = connections.grow(size)[len(watched) - 1:]
                watched += new
                for waiter in waiters.values():
                    waiter.add(new)
                rows += _measure_size(waiters, size, max(watched), rounds, batch_seconds, timeout)
        finally:
            for waiter in waiters.values():
                waiter.close()
    return rows


def _measure_size(waiters, size, highest_fd, rounds, batch_seconds, timeout):
    refused, batches = {}, {}
    for call, waiter in waiters.items():
        try:
            batches[call] = _waits_for(waiter, batch_seconds, timeout)
        except ValueError as error:  # select, at a descriptor number it has no bit for
            refused[call] = f"ValueError: {error}"
    times = {call: [] for call in batches}
    for _ in range(rounds):
        for call in batches:
            times[call].append(_timed(waiters[call], batches[call], timeout))
    rows = []
    for call in waiters:
        if call in refused:
            rows.append(WaitRow(call, size, highest_fd, None, rounds, None, None, (), refused[call]))
            continue
        cpu = statistics.median(t for t, _ in times[call]) * 1e6
        wall = statistics.median(w for _, w in times[call]) * 1e6
        outliers = tuple(round(t * 1e6, 2) for t, _ in times[call]
                         if t * 1e6 > cpu * OUTLIER_FACTOR or t * 1e6 * OUTLIER_FACTOR < cpu)
        rows.append(WaitRow(call, size, highest_fd, batches[call], rounds, round(cpu, 3), round(wall, 3), outliers))
    return rows


def ratio(rows, call, small, large):
    """How many times *call*'s wait (CPU) at *large* connections costs its wait at *small*; None if not measured."""
    cost = {row.connections: row.cpu_us for row in rows if row.call == call and row.cpu_us is not None}
    if small not in cost or large not in cost:
        return None
    return cost[large] / cost[small]


def tlpi_us_per_wait():
    """TLPI's table as µs of CPU per wait: ``{call: {descriptors: µs}}``, for ``plots.wait_costs(reference=...)``."""
    return {call: {size: seconds * 10 for size, seconds in points.items()} for call, points in TLPI.items()}


def tlpi_ratio(call):
    """How many times TLPI's wait at 10,000 descriptors costs its wait at 10, for *call*."""
    return TLPI[call][10_000] / TLPI[call][10]


# -- select's limit ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Refusal:
    """What ``select_refuses`` saw: a socket at descriptor ``fd``, with ``open`` descriptors in the process.

    ``said`` maps each call to what it did: "ready" or the error it raised.
    """

    fd: int
    open: int
    said: dict


def _try_each(fd):
    said = {}
    try:
        said["select"] = "ready" if select.select([fd], [], [], 1.0)[0] else "not ready"
    except ValueError as error:
        said["select"] = f"ValueError: {error}"
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    said["poll"] = "ready" if poller.poll(1000) else "not ready"
    with select.epoll() as epoll:
        epoll.register(fd, select.EPOLLIN)
        said["epoll"] = "ready" if epoll.poll(1.0) else "not ready"
    return said


def select_refuses(number=SELECT_LIMIT):
    """Show select, poll and epoll one readable socket at descriptor *number* or the next free one above; a ``Refusal``.

    A connection is made (a byte waits on our end), our end is duplicated to
    the lowest free number from *number* up (``fcntl(F_DUPFD)``), the low
    original closed, and the three calls asked about the high one. The
    descriptor limit is raised just enough meanwhile, and everything is
    closed before it is put back.
    """
    with fd_limit(number + SPARE_FDS):
        ours, theirs = socket.socketpair()
        with ours, theirs:
            theirs.sendall(b"!")
            high = fcntl.fcntl(ours.fileno(), fcntl.F_DUPFD_CLOEXEC, number)
            try:
                ours.close()
                return Refusal(high, open_fds(), _try_each(high))
            finally:
                os.close(high)


# -- what epoll moves elsewhere -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ChangeRow:
    """What one change of the interest list costs with *connections* registered, beside one wait, in µs (CPU).

    ``modify_us`` is one ``epoll.modify()`` (``EPOLL_CTL_MOD``), ``register_us``
    one ``register()`` and ``unregister()`` together (``EPOLL_CTL_ADD`` +
    ``EPOLL_CTL_DEL``: a connection's arrival and departure), ``wait_us`` one
    ``epoll.poll()`` with one connection ready; all medians of ``rounds``.
    """

    connections: int
    rounds: int
    modify_us: float
    register_us: float
    wait_us: float


def change_costs(sizes=(10, 10_000), *, changes=2000, rounds=5, timeout=1.0):
    """Measure ``epoll_ctl`` with each number of idle connections in *sizes* registered; ``[ChangeRow]``.

    Each round times *changes* modifications of the active connection's
    interest (``EPOLLIN`` to ``EPOLLIN | EPOLLOUT`` and back, as a server does
    to wait for room to write and stop), *changes* registrations of an idle
    connection with their removals, and as many waits, taking turns. The
    descriptor limit is raised for the largest size and put back after.
    """
    sizes = sorted(sizes)
    rows = []
    with fd_limit(open_fds() + sizes[-1] + 2 * SPARE_FDS), IdleConnections(sizes[-1]) as connections, \
            select.epoll() as epoll:
        epoll.register(connections.active, select.EPOLLIN)
        registered = 0
        for size in sizes:
            idle = connections.grow(size)
            for fd in idle[registered:size - 1]:
                epoll.register(fd, select.EPOLLIN)
            registered = size - 1
            spare = idle[size - 1]  # the one that comes and goes
            times = {"modify": [], "register": [], "wait": []}
            for _ in range(rounds):
                times["modify"].append(_cpu(changes, lambda: (
                    epoll.modify(connections.active, select.EPOLLIN | select.EPOLLOUT),
                    epoll.modify(connections.active, select.EPOLLIN))) / 2)
                times["register"].append(_cpu(changes, lambda spare=spare: (
                    epoll.register(spare, select.EPOLLIN), epoll.unregister(spare))))
                times["wait"].append(_cpu(changes, lambda: epoll.poll(timeout, 64)))
            epoll.register(spare, select.EPOLLIN)
            registered = size
            medians = {name: round(statistics.median(found) * 1e6, 3) for name, found in times.items()}
            rows.append(ChangeRow(size, rounds, medians["modify"], medians["register"], medians["wait"]))
    return rows


def _cpu(count, action):
    started = time.thread_time()
    for _ in range(count):
        action()
    return (time.thread_time() - started) / count
