"""fast on every core: one epoll loop per process, each with a listener of its own (SO_REUSEPORT, chapter 11).

One Python process runs one loop on one core at a time (the GIL sees to
that). To use more cores, this server's parent opens N listening sockets on
the same address, forks N workers, and each worker runs ``fast``'s loop
(``FastServer``, unchanged) on its own listener. The parent serves nothing:
it watches its workers.

    python -m epollbook serve fast-reuseport --processes 2
    python -m epollbook.servers.reuseport --port 8080 --processes 4 --idle-timeout 2

Some facts about SO_REUSEPORT
-----------------------------

**One address, several listeners.** Normally one address and port has at
most one listening socket: a second ``bind()`` fails with ``EADDRINUSE``.
(``SO_REUSEADDR``, which every server here sets, does not change that: it
lets a server bind beside old connections in ``TIME_WAIT``, never beside a
listener.) With ``SO_REUSEPORT`` (Linux 3.9) set on every one of them before
its ``bind()``, by processes of the same user, several sockets bind and
listen on one address: a *reuseport group*. Each has its own accept queue.
Port 0 works too: the first ``bind()`` picks a free port, the others bind
that one.

**The kernel picks a listener by a hash.** When a client's SYN comes, the
kernel hashes the connection's four addresses (client address and port,
server address and port) and the hash chooses the group's listener: the
connection is queued there and only that listener's worker is woken. Every
new connection of a client comes from a new port, so one client's
connections spread over the workers; the same four addresses always go to
the same listener. The kernel does not ask which worker is busy: a
connection may wait in a busy worker's queue while another worker idles.

**The other way: one listener, shared by forked workers.** A parent that
forks after ``listen()`` gives every worker the *same* listener, with one
accept queue, and whoever accepts first takes the next connection: the best
balance there is. But each worker's epoll instance watches that one
listener, and a new connection wakes every worker waiting for it; one
``accept()`` wins and the others find nothing and sleep again. That is the
thundering herd: N - 1 wasted wake-ups per connection. ``EPOLLEXCLUSIVE``
(Linux 4.5) wakes one waiter, or a few, instead of all. With ``SO_REUSEPORT``
no worker's epoll sees another's listener, so there is no herd to tame.

**A listener that leaves the group drops its queue.** When the last
descriptor of a listener closes, the connections waiting in its queue are
reset (unless ``net.ipv4.tcp_migrate_req`` is 1, Linux 5.14 and later, which
moves them to another listener of the group), and new connections go to the
listeners left. So each worker holds its own listener and no other, and the
parent holds none once its workers run: when a worker dies, its listener
leaves the group with it. Had the parent kept a copy, the dead worker's
listener would stay in the group, and one connection in N would wait in a
queue nobody accepts from: half a server, and silent. (The same reset
happens to any server's queue when it stops: a stop under load can reset
the few connections still waiting.)

**When it pays.** Only when the machine has more cores than one loop can
fill, counting the cores the clients need: on two cores with the load
generator on one of them, one loop already has the other core, and a second
worker only shares it. **The price:** any process of the same user that sets
``SO_REUSEPORT`` joins the group and takes a share of the connections: a
second ``fast-reuseport`` started on the same port does not fail.

How the parent and its workers live and die
-------------------------------------------

The parent opens every listener and forks every worker before it serves, so
an address it cannot listen on ends it with one line (status 1) and nothing
forked. Each worker closes the listeners that are not its own, builds its
``FastServer`` and says it is ready through a pipe; once all are, the parent
closes its copies of the listeners and announces the address (the same line
as every server, so ``launch.serve`` waits for it).

SIGINT or SIGTERM to the parent is passed on to every worker; each stops as
``fast`` does (every connection closed) and reports, through another pipe,
the signal that stopped it and how many connections it closed; the parent
prints one line and exits 0. A signal sent to the whole process group (a
terminal's Ctrl-C, ``launch``'s ``stop()``) reaches the workers directly,
and one sent to a single worker stops the server too: when any worker ends,
the parent stops the others. If one ends any other way than stopped by a
signal (a traceback, SIGKILL), the parent exits 1 with a line that says which
worker ended and how: a crash is visible, never half a server. The parent
learns of signals and of its workers' exits through ``signal.set_wakeup_fd``,
one byte per signal, read in its loop, so that it acts on them in one place
and signals only workers it has not reaped (a reaped pid may already be
another process's).

When the parent dies, however it dies, its workers must not stay behind.
``epollbook.lifeline`` (a pipe and a thread) does not reach them: the parent
forks and does not exec, and a thread does not survive ``fork``. So each
worker asks the kernel, first thing after ``fork``, for a SIGTERM when its
parent dies: ``prctl(PR_SET_PDEATHSIG)``, called through ``ctypes``. The
lifeline could not use it (it must be set between fork and exec, and Python
cannot run code there safely in a process with threads); here the worker
sets it itself, in Python, while it is a single thread. It fires when the
*thread* that forked the worker exits, which here is the parent's main
thread: it lives as long as the parent does. SIGTERM is what stops a worker
cleanly anyway. One race is left, the parent dying before the ``prctl``:
the worker checks ``os.getppid()`` after it and stops if its parent has
changed. (A worker also inherits the read end of the launcher's lifeline
pipe; a read end keeps no line alive.)
"""

import contextlib
import ctypes
import os
import signal
import socket
import sys
import time
import traceback
import warnings
from typing import NamedTuple

from epollbook import probes
from epollbook.lifeline import exit_with_owner
from epollbook.servers.fast import FastServer
from epollbook.servers.running import BACKLOG, Limits, command_line, positive_whole

STOPPING = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop the server (and each worker) cleanly."""

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def open_listeners(address, count, backlog=BACKLOG):
    """Open *count* sockets listening on one *address* with ``SO_REUSEPORT``: one reuseport group.

    *address* is ``(host, port)``; port 0 asks for a free port: the first
    bind picks it, the others bind that one. Returns the listening sockets.
    Raises ``OSError`` (having closed what it opened) if one cannot bind:
    ``EADDRINUSE`` when a socket without ``SO_REUSEPORT``, or another user's,
    listens there.
    """
    listeners = []
    try:
        for _ in range(count):
            listeners.append(socket.create_server(address, backlog=backlog, reuse_port=True))
            address = listeners[-1].getsockname()
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def serve_in_workers(listeners, make_server):
    """Serve each of *listeners* in a worker process of its own, and watch the workers; return the exit status.

    *make_server(listener)* builds a worker's server (``FastServer``'s
    contract: ``serve_forever()``, ``stop()``, ``close()``,
    ``connection_count``); it runs in the worker. Announces the address once
    every worker is ready; serves until SIGINT or SIGTERM, then prints one
    line and returns 0. When a worker ends, stops the others; if one cannot
    start, or ends any other way than stopped by a signal, prints one line to
    stderr saying which and how, and returns 1.
    Closes *listeners* (each worker keeps its own). Call it from the main
    thread: signals are handled there, and the workers' ``PR_SET_PDEATHSIG``
    watches the thread that forked them.
    """
    wakeup_read, wakeup_write = os.pipe()
    os.set_blocking(wakeup_write, False)  # written by the C signal handler, which must never block
    ready_read, ready_write = os.pipe()    # a byte from each worker once it serves; end of file once all have
    report_read, report_write = os.pipe()  # from each worker that stops cleanly: "SIGTERM 3" (its connections)
    watched = (*STOPPING, signal.SIGCHLD)
    # The handlers do nothing: set_wakeup_fd writes each signal's number to the pipe, and the loop acts on it.
    previous = {signum: signal.signal(signum, _noted) for signum in watched}
    previous_wakeup = signal.set_wakeup_fd(wakeup_write)
    parent, workers, exits = os.getpid(), {}, []  # workers: pid -> number, while unreaped; exits: (number, pid, code)
    stopped_by = failure = None
    try:
        # Blocked until each worker has its own handlers: a stop that comes meanwhile waits for them.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOPPING)
        try:
            for number, listener in enumerate(listeners, 1):
                pid = _fork()
                if pid == 0:
                    _work(number, listener, listeners, make_server, parent, ready_write, report_write,
                          (wakeup_read, wakeup_write, ready_read, report_read))  # never returns
                workers[pid] = number
        except OSError as error:  # EAGAIN, ENOMEM: no process for this worker
            failure = f"could not start worker {len(workers) + 1} of {len(listeners)}: {os.strerror(error.errno)}"
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPING)
            os.close(ready_write)
            os.close(report_write)
        exit_with_owner()  # started by epollbook.launch: gone when the launcher is (and the workers with it)
        ready = _read_to_end(ready_read)
        host, port = listeners[0].getsockname()
        for listener in listeners:
            listener.close()  # from now on each listener lives as long as its worker
        if failure is None and len(ready) == len(listeners):
            # announce()'s line (examples/command_line.py), printed once the parent holds no listener any more.
            print(f"Listening on http://{host}:{port}/", flush=True)
        if failure is not None:
            _signal(workers, signal.SIGTERM)
        while workers:
            for signum in os.read(wakeup_read, 256):
                if signum == signal.SIGCHLD:
                    for pid, code in _reaped():
                        exits.append((workers.pop(pid), pid, code))
                        if len(exits) == 1 and stopped_by is None:
                            _signal(workers, signal.SIGTERM)  # the first to end, however, ends them all
                elif stopped_by is None:
                    stopped_by = signal.Signals(signum).name
                    if not exits:  # else they are stopping already
                        _signal(workers, signum)
        reports = [line.split() for line in _read_to_end(report_read).decode().splitlines()]
    finally:
        signal.set_wakeup_fd(previous_wakeup)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for fd in (wakeup_read, wakeup_write, ready_read, report_read):
            os.close(fd)
    return _last_word(len(listeners), exits, reports, stopped_by, failure)


def _last_word(count, exits, reports, stopped_by, failure):
    """Print the one line that says how the server ended; return its exit status.

    *reports* is each cleanly stopped worker's ``[signal name, connections it closed]``.
    """
    # Whether the parent saw its own signal before a worker ended says nothing: a signal sent to the process group
    # reaches them all at once, and the parent's may be handled last (in another thread, the lifeline's). Only a
    # worker's status says how it ended: 0 after a stop signal, else a crash.
    crashed = [(number, pid, code) for number, pid, code in exits if code != 0]
    if failure is None and crashed:
        number, pid, code = crashed[0]
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        failure = f"worker {number} of {count} (pid {pid}) {how}"
    if failure is not None:
        print(f"{failure}; the other workers were stopped.", file=sys.stderr, flush=True)
        return 1
    closed = sum(int(connections) for _, connections in reports)
    print(f"Stopped by {stopped_by or reports[0][0]}; {count} worker{'s' * (count != 1)} closed {closed} open "
          f"connection{'s' * (closed != 1)}.", flush=True)
    return 0


def _noted(signum, frame):
    """A signal handler that does nothing: ``set_wakeup_fd`` has already written the signal's number."""


def _signal(workers, signum):
    for pid in workers:  # not reaped yet, so each pid is still our worker's, even if it has just exited
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _reaped():
    """Yield ``(pid, exit code)`` for each child that has ended (negative: killed by that signal), reaping it."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # no child left
            return
        if pid == 0:  # children left, none ended
            return
        yield pid, os.waitstatus_to_exitcode(status)


def _read_to_end(fd):
    """Everything that comes through pipe *fd* until every write end is closed."""
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


def _fork():
    # Buffered output would be printed twice, by the parent and by the worker.
    sys.stdout.flush()
    sys.stderr.flush()
    with warnings.catch_warnings():
        # `python -m epollbook serve` may have started the lifeline's thread (epollbook.lifeline), and Python 3.12
        # warns of any fork beside a thread. fork copies only this thread, and that one holds no lock a worker
        # could need: it waits in read(), outside the interpreter.
        warnings.filterwarnings("ignore", r"This process .* is multi-threaded", DeprecationWarning)
        return os.fork()


def _work(number, listener, listeners, make_server, parent, ready, report, parents_fds):
    """Worker *number*'s whole life, in the process just forked: serve *listener* until told to stop. Never returns."""
    code = 1
    try:
        _stop_with_parent(parent)
        signal.set_wakeup_fd(-1)  # the parent's pipe: this worker's signals are its own business
        for fd in parents_fds:
            os.close(fd)
        for other in listeners:
            if other is not listener:
                other.close()  # else a dead worker's listener would stay in the group (see above)
        server = make_server(listener)
        stopped_by = []

        def stop(signum, frame):
            stopped_by.append(signal.Signals(signum).name)
            server.stop()

        for signum in STOPPING:
            signal.signal(signum, stop)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPING)
        os.write(ready, b"+")
        os.close(ready)
        try:
            server.serve_forever()
            open_connections = server.connection_count
        finally:
            server.close()
        with contextlib.suppress(BrokenPipeError):  # the parent is gone (killed): nobody to tell
            os.write(report, f"{stopped_by[0]} {open_connections}\n".encode())
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)  # never back into the parent's stack: its finally clauses and atexit are the parent's


def _stop_with_parent(parent):
    """Have the kernel send this process SIGTERM when its parent dies (``PR_SET_PDEATHSIG``); see above."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGTERM), 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl(PR_SET_PDEATHSIG): {os.strerror(error)}")
    if os.getppid() != parent:  # it died before the prctl: no signal will come for that
        signal.raise_signal(signal.SIGTERM)  # blocked until the worker's handler is set; then it stops at once


def main(argv=None):
    """Run ``fast-reuseport`` from the command line; return the exit status.

    The options are ``fast``'s (``running.command_line``), ``--backlog`` per
    listener, and ``--processes N`` (default: the CPUs this process may run
    on). Bad options end the program with argparse's one line and status 2;
    an address it cannot listen on, with one line and status 1.
    """
    processes = len(os.sched_getaffinity(0))
    parser = command_line(FastServer, description=__doc__.split("\n", 1)[0])
    parser.add_argument("--processes", type=positive_whole, default=processes, metavar="N",
                        help="worker processes, each with its own listener (of --backlog) and loop "
                             f"(default {processes}: the CPUs this process may run on)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        listeners = open_listeners((args.host, args.port), args.processes, args.backlog)
    except OSError as error:  # EADDRINUSE, EACCES, EADDRNOTAVAIL, EMFILE: a sentence, not a traceback
        parser.exit(1, f"cannot listen on {args.host}:{args.port}: {os.strerror(error.errno)}\n")
    limits, options = Limits.from_arguments(args), FastServer.options(args)

    def make_server(listener):
        return FastServer(limits=limits, show_requests=args.show_requests, listener=listener, **options)

    return serve_in_workers(listeners, make_server)


# -- what a chapter looks at: the workers, their listeners, their share of the work --------------------------


def worker_pids(server):
    """The pids of the workers of *server* (a ``launch.Server``, or a pid), in the order they were forked.

    They are its children (``probes.children``); ``[]`` for a server that
    forks none. Raises ``ProcessLookupError`` if it is not running.
    """
    return probes.children(getattr(server, "pid", server))


class Listener(NamedTuple):
    """One listening socket on a server's port, as the kernel lists it, and the pids of the processes holding it."""

    inode: int
    waiting: int  # connections in its accept queue
    holders: tuple

    def __str__(self):
        held = ", ".join(f"pid {pid}" for pid in self.holders) or "no process of the server"
        return f"listener {self.inode}: {self.waiting} waiting for accept(), held by {held}"


def listeners_of(server):
    """Every socket listening on *server*'s port (a ``launch.Server``): a ``Listener`` each.

    ``holders`` names which of the server's processes (itself and its
    workers) hold it: for ``fast-reuseport``, one worker each. In the order
    of their holders: the parent's first, then worker 1's, worker 2's, ...
    """
    pids = [server.pid, *worker_pids(server)]
    held = _sockets_held_by(pids)
    listeners = [Listener(found.inode, found.recv_queue, tuple(pid for pid in pids if found.inode in held[pid]))
                 for found in probes.tcp_sockets(server.port)
                 if found.state == "LISTEN" and found.local[1] == server.port]
    return sorted(listeners, key=lambda listener: [pids.index(pid) for pid in listener.holders])


def connections_per_worker(server, total=None, timeout=2.0):
    """``{worker pid: connections it holds}``: the accepted connections of *server* (a ``launch.Server``), by worker.

    Exact, read from the kernel's table of sockets and each worker's
    descriptors; it counts the connections open now, so hold them open
    (``clients.idle_clients``) to see where they went. A worker accepts in
    its own time: with *total*, this waits up to *timeout* seconds for the
    workers to hold that many together, and returns what they hold then.
    """
    deadline = time.monotonic() + timeout
    while True:
        accepted = {found.inode for found in probes.tcp_sockets(server.port)
                    if found.local[1] == server.port and found.state != "LISTEN" and found.inode}
        held = {pid: len(inodes & accepted) for pid, inodes in _sockets_held_by(worker_pids(server)).items()}
        if total is None or sum(held.values()) >= total or time.monotonic() > deadline:
            return held
        time.sleep(0.01)


def _sockets_held_by(pids):
    """``{pid: the inodes of the sockets it holds}``."""
    return {pid: {int(what[len("socket:["):-1]) for what in probes.open_fds(pid).values()
                  if what.startswith("socket:[")}
            for pid in pids}


class CpuPerWorker:
    """CPU time each worker of a server used during a ``with`` block: ``with cpu_per_worker(server) as used: ...``.

    After the block, ``seconds`` is ``{worker pid: CPU seconds}`` and
    ``shares`` ``{worker pid: its share of the workers' total}``; printed, one
    line per worker. A worker that served nothing used next to none: it
    slept in ``epoll_wait``.
    """

    def __init__(self, server):
        self._pids = worker_pids(server)
        self.seconds = {}

    def __enter__(self):
        self._before = {pid: probes.cpu_seconds(pid) for pid in self._pids}
        return self

    def __exit__(self, *exc_info):
        self.seconds = {pid: probes.cpu_seconds(pid) - before for pid, before in self._before.items()}

    @property
    def shares(self):
        total = sum(self.seconds.values())
        return {pid: used / total if total else 0.0 for pid, used in self.seconds.items()}

    def __str__(self):
        return "\n".join(f"worker {number} (pid {pid}): {self.seconds[pid]:.2f} s of CPU, {share:.0%} of the workers'"
                         for number, (pid, share) in enumerate(self.shares.items(), 1))


def cpu_per_worker(server):
    """A ``CpuPerWorker`` for *server* (a ``launch.Server``): the CPU time of each worker over a ``with`` block."""
    return CpuPerWorker(server)


def try_to_bind(port, *, reuse_port, host="127.0.0.1"):
    """Bind a new socket to *host*:*port*, with ``SO_REUSEPORT`` or without, and close it; return what bind said.

    Returns ``"bound"``, or the error's message (``"Address already in use"``).
    It never listens, so it never joins a group and takes no connection.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            return error.strerror
    return "bound"


if __name__ == "__main__":
    sys.exit(main())
