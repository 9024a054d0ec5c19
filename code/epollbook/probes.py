"""What the kernel sees of a process: where it waits, how often it wakes, its CPU time, its fds and sockets.

    process_state(pid, thread=None)         where it is: "pid 4242 is blocked in accept(), asleep in inet_csk_accept"
    wait_until_blocked(pid, timeout=1.0, thread=None)     the same, once it has gone to sleep again
    context_switches(pid, thread=None)      (voluntary, involuntary): how often it slept, how often it was preempted
    cpu_seconds(pid, thread=None)           CPU time used so far
    children(pid), process_tree(pid)        the processes it started; it and all its descendants
    busy_fraction(pid, seconds=0.5, thread=None)          share of a core it keeps busy
    open_fds(pid)                           {fd: what it is}
    tcp_sockets(port=None)                  the IPv4 TCP sockets, as ``ss -tan`` lists them
    listen_queue(port, host=None)           connections waiting for accept(), and the backlog
    raw_proc(pid, name, thread=None)        the text of one /proc file, to see a probe's source
    ss(port)                                what ``ss -tan`` prints for that port
    epoll_interest_list(pid, epfd=None)     what an epoll instance watches, as the kernel holds it
    epoll_event_names(mask)                 an epoll event mask as names: 'EPOLLIN|EPOLLHUP'
    netstat_counters()                      the kernel's TCP counters: ListenOverflows, Tcp.RetransSegs, ...
    time_wait_table()                       connections in TIME_WAIT, the most the kernel keeps, how many it skipped
    sysctl(name), sysctl_int(name)          a kernel setting: sysctl_int("net.core.somaxconn")
    tcp_info(sock)                          what the kernel knows of one TCP connection: segments sent, RTT, ...

All of it is read from ``/proc`` (Linux only), for any process of the same user:
a server started with ``epollbook.launch.serve`` (pass ``server.pid``), or this
very Python process (``os.getpid()``). Where a server runs in a thread (the
exercise checks run students' servers so), pass ``thread=`` a native thread id
(``threading.get_native_id()`` in the thread, ``Thread.native_id`` outside it)
or the ``threading.Thread`` itself. The parsing is separate from the reading
(``parse_stat``, ``parse_status``, ``parse_syscall``, ``parse_tcp_table``,
``parse_ss_listening``, ``parse_epoll_fdinfo``, ``parse_sockstat``), so it can
be tested from sample text.

Where a blocked thread waits, read truthfully
---------------------------------------------

``/proc/PID/wchan`` names the kernel function a sleeping thread waits in, and
for most calls that names the call: ``inet_csk_accept`` is ``accept()``,
``do_epoll_wait`` is ``epoll.poll()``. Not for all. On Linux 6.x a blocked
``recv()``, a ``send()`` waiting for room in a full buffer, and a ``connect()``
waiting for an answer all sleep in the same ``wait_woken``; ``select()`` and
``poll()`` both sleep in ``poll_schedule_timeout``. The names also change from
one kernel version to the next (one shows ``ep_poll`` where another shows
``do_epoll_wait``, ``pipe_read`` where another shows ``anon_pipe_read``) and
may carry a compiler's suffix (``poll_schedule_timeout.constprop.0``).

``/proc/PID/syscall`` is not ambiguous: its first number is the system call the
thread is in. So the call is named from that number when the file is readable
(it takes the right to trace the process, which a process has over its own
threads and children unless the machine forbids tracing), and from the wait
channel only where the function names one call; otherwise the probe says which
calls it may be ("recv(), send() or connect()") rather than guess. The numbers
differ by architecture: x86_64's table and the generic one of aarch64 and
riscv64 are here; elsewhere the wait channel alone names the call.

One race remains: a thread that has only just gone to sleep is still on its CPU
for a moment, and until it is off the kernel shows "0" as its wchan. Reading
``syscall`` first makes the kernel wait for that moment; ``wait_until_blocked``
waits for it too.

What the kernel sees is what the C library asked for, which is not always the
Python call: ``select.select()`` is ``pselect6`` in glibc, ``time.sleep()`` is
``clock_nanosleep``, and a socket with a timeout (``settimeout``) waits in
``poll()`` before each ``recv()`` or ``accept()``: such a server is shown
blocked in ``poll()``, because it is.
"""

import contextlib
import dataclasses
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import warnings
from typing import NamedTuple

_STATES = {
    "R": "running", "S": "asleep", "D": "asleep, uninterruptibly", "T": "stopped",
    "t": "stopped by a debugger", "Z": "a zombie (exited, not yet reaped)", "I": "idle",
}

# -- system calls and wait channels, by name ------------------------------------------------------

# The system calls a thread of the book's programs blocks in, by number, as read on the kernels' own tables
# (arch/x86/entry/syscalls/syscall_64.tbl; include/uapi/asm-generic/unistd.h, which aarch64 and riscv64 use).
_GENERIC_SYSTEM_CALLS = {
    22: "epoll_pwait", 63: "read", 64: "write", 65: "readv", 66: "writev", 67: "pread64", 72: "pselect6",
    73: "ppoll", 95: "waitid", 98: "futex", 101: "nanosleep", 115: "clock_nanosleep", 128: "restart_syscall",
    133: "rt_sigsuspend", 202: "accept", 203: "connect", 206: "sendto", 207: "recvfrom", 211: "sendmsg",
    212: "recvmsg", 242: "accept4", 243: "recvmmsg", 260: "wait4", 269: "sendmmsg", 441: "epoll_pwait2",
}
SYSTEM_CALLS = {
    "x86_64": {
        0: "read", 1: "write", 7: "poll", 17: "pread64", 19: "readv", 20: "writev", 23: "select", 34: "pause",
        35: "nanosleep", 42: "connect", 43: "accept", 44: "sendto", 45: "recvfrom", 46: "sendmsg", 47: "recvmsg",
        61: "wait4", 130: "rt_sigsuspend", 202: "futex", 219: "restart_syscall", 230: "clock_nanosleep",
        232: "epoll_wait", 247: "waitid", 270: "pselect6", 271: "ppoll", 281: "epoll_pwait", 288: "accept4",
        299: "recvmmsg", 307: "sendmmsg", 441: "epoll_pwait2",
    },
    "aarch64": _GENERIC_SYSTEM_CALLS,
    "riscv64": _GENERIC_SYSTEM_CALLS,
}

# The call a Python program made, by the system call it is in.
_CALL_OF_SYSTEM_CALL = {
    "accept": "accept()", "accept4": "accept()",
    "recvfrom": "recv()", "recvmsg": "recv()", "recvmmsg": "recv()",
    "sendto": "send()", "sendmsg": "send()", "sendmmsg": "send()",
    "connect": "connect()",
    "read": "read()", "readv": "read()", "pread64": "read()",
    "write": "write()", "writev": "write()",
    "select": "select()", "pselect6": "select()",
    "poll": "poll()", "ppoll": "poll()",
    "epoll_wait": "epoll.poll()", "epoll_pwait": "epoll.poll()", "epoll_pwait2": "epoll.poll()",
    "nanosleep": "time.sleep()", "clock_nanosleep": "time.sleep()",
    "wait4": "wait()", "waitid": "wait()",
}

# The call, by the kernel function it sleeps in: for when /proc/PID/syscall cannot be read. Functions several
# calls share say so. Names vary across kernel versions (both old and new are here); an unknown one gives None.
_CALL_OF_WAIT = {
    "inet_csk_accept": "accept()",
    "inet_csk_wait_for_connect": "accept()",
    "wait_woken": "recv(), send() or connect()",
    "sk_wait_data": "recv()",
    "unix_stream_read_generic": "recv()",
    "__skb_wait_for_more_packets": "recv()",
    "sk_stream_wait_memory": "send()",
    "inet_wait_for_connect": "connect()",
    "poll_schedule_timeout": "select() or poll()",
    "do_select": "select()",
    "do_sys_poll": "poll()",
    "do_epoll_wait": "epoll.poll()",
    "ep_poll": "epoll.poll()",
    "hrtimer_nanosleep": "time.sleep()",
    "do_nanosleep": "time.sleep()",
    "pipe_read": "read()",
    "anon_pipe_read": "read()",
}

# -- reading /proc: pure parsing, from text -------------------------------------------------------


class Stat(NamedTuple):
    """The fields of ``/proc/PID/stat`` the probes use."""

    command: str       # the program's name, at most 15 characters
    state: str         # one letter, as in ps: R running, S sleeping, ...
    user_ticks: int    # CPU time in user mode, in clock ticks (os.sysconf("SC_CLK_TCK") a second)
    system_ticks: int  # CPU time in the kernel, in clock ticks


def parse_stat(text):
    """Parse the text of ``/proc/PID/stat`` (or of one thread's); return a ``Stat``.

    Raises ``ValueError`` if *text* is not in that file's format.
    """
    # The command (field 2) is in parentheses and may hold spaces and parentheses itself: split after the last ')'.
    opening, closing = text.find("("), text.rfind(")")
    fields = text[closing + 2:].split()
    if opening < 0 or closing < opening or len(fields) < 13:
        raise ValueError(f"not the text of /proc/PID/stat: {text[:80]!r}")
    # proc(5) numbers the fields from 1: state is field 3, utime 14 and stime 15; *fields* begins at field 3.
    return Stat(text[opening + 1:closing], fields[0], int(fields[11]), int(fields[12]))


def parse_status(text):
    """Parse the text of ``/proc/PID/status``: return ``{name: value}``, values as text (``'VmRSS': '9000 kB'``)."""
    fields = {}
    for line in text.splitlines():
        name, colon, value = line.partition(":")
        if colon:
            fields[name] = value.strip()
    return fields


def parse_syscall(text):
    """Parse the text of ``/proc/PID/syscall``; return the number of the system call the thread is in.

    Returns None if it is in none: the file says ``running``, or ``-1`` (blocked
    outside a system call, in a page fault, say), or is empty (hidden).
    """
    first = text.split(maxsplit=1)[0] if text.strip() else ""
    if not first.lstrip("-").isdigit() or int(first) < 0:
        return None
    return int(first)


def system_call_name(number, machine=None):
    """The name of system call *number* on *machine* (default: this one, ``os.uname().machine``).

    Returns ``'syscall NUMBER'`` for a number or machine the tables here do not know.
    """
    machine = machine or os.uname().machine
    return SYSTEM_CALLS.get(machine, {}).get(number, f"syscall {number}")


def parse_tcp_table(text, ticks_per_second=None):
    """Parse the text of ``/proc/net/tcp``; return a ``TcpSocket`` for each line after the header.

    Timers are in clock ticks; *ticks_per_second* defaults to this machine's
    (``os.sysconf("SC_CLK_TCK")``). Raises ``ValueError`` on a line not in that format.
    """
    ticks_per_second = ticks_per_second or os.sysconf("SC_CLK_TCK")
    sockets = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        try:
            send_queue, recv_queue = (int(n, 16) for n in fields[4].split(":"))
            timer_running, left = (int(n, 16) for n in fields[5].split(":"))
            state = int(fields[3], 16)
            sockets.append(TcpSocket(_ipv4(fields[1]), _ipv4(fields[2]), TCP_STATES.get(state, str(state)),
                                     send_queue, recv_queue, int(fields[9]),
                                     left / ticks_per_second if timer_running else 0.0))
        except (IndexError, ValueError):
            raise ValueError(f"not a line of /proc/net/tcp: {line!r}") from None
    return sockets


def _ipv4(hex_address):
    address, port = hex_address.split(":")
    octets = bytes.fromhex(address)[::-1]  # the kernel prints the address in host (little-endian) order
    if len(octets) != 4:
        raise ValueError(f"not an IPv4 address: {hex_address}")
    return ".".join(map(str, octets)), int(port, 16)


def parse_ss_listening(text):
    """Parse what ``ss -ltn`` prints (with its header line or without); return a ``ListenQueue`` per socket.

    For a listening socket ``ss`` shows the connections waiting for ``accept()``
    as Recv-Q and the backlog as Send-Q.
    """
    queues = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[0] != "LISTEN":  # the header, or a blank line
            continue
        host, _, port = fields[3].rpartition(":")
        queues.append(ListenQueue(host.strip("[]"), int(port), int(fields[1]), int(fields[2])))
    return queues


def parse_counter_table(text, prefixes=None):
    """Parse ``/proc/net/netstat`` or ``/proc/net/snmp``: pairs of lines, names then values, per group.

    Returns ``{(group, name): value}``, e.g. ``{("TcpExt", "ListenOverflows"): 3}``;
    *prefixes* keeps only those groups. Raises ``ValueError`` where a pair of
    lines does not match.
    """
    counters = {}
    lines = [line.split() for line in text.splitlines() if line.strip()]
    for names, values in zip(lines[::2], lines[1::2], strict=False):  # a last unpaired line is cut short
        group = names[0].rstrip(":")
        if values[0] != names[0] or len(values) != len(names):
            raise ValueError(f"not a pair of counter lines: {' '.join(names)!r} / {' '.join(values)!r}")
        if prefixes is None or group in prefixes:
            counters.update(((group, name), int(value)) for name, value in zip(names[1:], values[1:], strict=True))
    return counters


def parse_sockstat(text):
    """Parse ``/proc/net/sockstat``: ``{(protocol, name): value}``, e.g. ``{("TCP", "tw"): 9, ("TCP", "inuse"): 4}``.

    Each line is a protocol, then pairs of a name and a number
    (``TCP: inuse 4 orphan 0 tw 9 alloc 6 mem 1``). Raises ``ValueError``
    where a line does not read so.
    """
    counts = {}
    for line in filter(str.strip, text.splitlines()):
        protocol, colon, pairs = line.partition(":")
        fields = pairs.split()
        if not colon or len(fields) % 2 or not all(value.isdigit() for value in fields[1::2]):
            raise ValueError(f"not a line of /proc/net/sockstat: {line!r}")
        counts.update(((protocol, name), int(value)) for name, value in zip(fields[::2], fields[1::2], strict=True))
    return counts


# -- reading /proc: the files ------------------------------------------------------------------------


def _directory(pid, thread=None):
    """The /proc directory of *pid*, or of its thread *thread* (a native id or a ``threading.Thread``)."""
    if isinstance(thread, threading.Thread):
        if thread.native_id is None:
            raise ValueError(f"thread {thread.name!r} has not started, so it has no native id yet")
        thread = thread.native_id
    return f"/proc/{pid}" if thread is None else f"/proc/{pid}/task/{thread}"


def _read(pid, name, thread=None):
    """The text of /proc/PID/NAME (or of the thread's); raises ``ProcessLookupError`` if there is no such process."""
    directory = _directory(pid, thread)
    try:
        with open(f"{directory}/{name}", "rb") as file:
            return file.read().decode("utf-8", "replace")
    except FileNotFoundError:
        if os.path.isdir(directory):
            raise  # the process is there; this kernel has no such file
        if thread is None:
            raise ProcessLookupError(f"there is no process {pid} (it has exited, or never was)") from None
        raise ProcessLookupError(f"process {pid} has no thread {directory.rpartition('/')[2]} (it has exited, "
                                 "or that is not a native thread id: Thread.native_id is one, Thread.ident is not)"
                                 ) from None


def _read_if_shown(pid, name, thread=None):
    """Like ``_read``, but '' where the kernel hides the file (not ours to trace, or not built in)."""
    try:
        return _read(pid, name, thread)
    except (PermissionError, FileNotFoundError):
        return ""


def raw_proc(pid, name, thread=None):
    """The text of the file ``/proc/PID/NAME`` (or ``/proc/PID/task/THREAD/NAME``), as the kernel wrote it.

    For the reader to see a probe's source once: ``raw_proc(server.pid, "wchan")``,
    ``raw_proc(server.pid, "status")``. *name* is a file under that directory
    (``"net/tcp"`` too); ``ValueError`` if it leads out of it,
    ``ProcessLookupError`` if there is no such process, ``OSError`` if the
    kernel does not let us read the file.
    """
    parts = name.split("/")
    if not name or name.startswith("/") or ".." in parts:
        raise ValueError(f"{name!r} is not a file of /proc/PID: give a name like 'wchan', 'status' or 'net/tcp'")
    return _read(pid, name, thread)


def cpu_seconds(pid, thread=None):
    """CPU time *pid* (or its *thread*) has used so far, user plus system, in seconds.

    For a process this counts every one of its threads.
    """
    stat = parse_stat(_read(pid, "stat", thread))
    return (stat.user_ticks + stat.system_ticks) / os.sysconf("SC_CLK_TCK")


def children(pid):
    """The pids of the processes *pid* started that run now, in the order it started them.

    Read from ``/proc/PID/task/TID/children`` (Linux 3.5 and later); ``[]``
    for a process that started none. Raises ``ProcessLookupError`` if *pid*
    is not running.
    """
    _read(pid, "stat")  # a clear ProcessLookupError for a pid that is not there
    found = []
    with contextlib.suppress(FileNotFoundError):  # it has just exited
        for thread in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread that has just ended
                found += map(int, _read(pid, "children", thread).split())
    return found


def process_tree(pid):
    """*pid* and its descendants that are running now, parents before their children: ``[pid, child, ...]``.

    A server that forks workers (``fast-reuseport``) spends its CPU in them,
    and each process's ``stat`` counts only its own threads. Raises
    ``ProcessLookupError`` if *pid* is not running.
    """
    tree = [pid, *children(pid)]
    for parent in tree[1:]:  # the list grows as it is read: grandchildren after children
        with contextlib.suppress(ProcessLookupError):  # it has just exited
            tree += children(parent)
    return tree


def busy_fraction(pid, seconds=0.5, thread=None):
    """How busy *pid* (or its *thread*) keeps the CPU over the next *seconds*: 0.0 idle, 1.0 one core flat out.

    A process with several threads can go above 1.0. The precision is a clock
    tick (usually 10 ms) in *seconds*.
    """
    start_cpu, start = cpu_seconds(pid, thread), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid, thread) - start_cpu) / (time.monotonic() - start)


class ContextSwitches(NamedTuple):
    """How many times a thread has given up the CPU."""

    voluntary: int    # it blocked: it waited for something (data, a client, a timer) and slept
    involuntary: int  # the kernel took the CPU from it to run something else


def context_switches(pid, thread=None):
    """How many times *pid*'s main thread (or its *thread*) has given up the CPU so far: ``ContextSwitches``.

    A blocked server wakes once for each piece of data that arrives, handles
    it, and blocks again: each time, the voluntary count goes up by about one.
    From ``/proc/PID/status``, which counts the main thread only.
    """
    status = parse_status(_read(pid, "status", thread))
    return ContextSwitches(int(status["voluntary_ctxt_switches"]), int(status["nonvoluntary_ctxt_switches"]))


# -- where a process waits ---------------------------------------------------------------------------


@dataclasses.dataclass
class ProcessState:
    """A snapshot of what a process (its main thread) or one of its threads is doing.

    ``str()`` says it in one line short enough to follow a label on a page:
    ``pid 4242 is blocked in recv(), asleep in wait_woken``.
    """

    pid: int
    state: str             # one letter, as in ps: R running, S sleeping, ...
    waiting_in: str        # the kernel function it sleeps in, from /proc/.../wchan ('' running, or hidden)
    system_call: str = ""  # the system call it is in, from /proc/.../syscall: 'recvfrom' ('' running, or hidden)
    thread: int | None = None  # the native id of the thread, or None for the main thread

    @property
    def blocked_call(self):
        """The call it is blocked in, as Python names it (``'accept()'``), or None if it is not blocked in a known one.

        From the system call when the kernel showed it, else from the kernel
        function, which may name several (``'recv(), send() or connect()'``).
        """
        if self.state not in "SD":
            return None
        if self.system_call and not self.system_call.startswith("syscall "):
            # The kernel said which call: name it, or nothing if the book has no name for it (futex, say).
            return _CALL_OF_SYSTEM_CALL.get(self.system_call)
        return _CALL_OF_WAIT.get(self.waiting_in)

    def __str__(self):
        who = f"pid {self.pid}" if self.thread in (None, self.pid) else f"thread {self.thread}"
        state = _STATES.get(self.state, self.state)
        if self.state not in "SD":
            return f"{who} is {state}"
        if self.blocked_call:
            where = f", {state} in {self.waiting_in}" if self.waiting_in else ""
            return f"{who} is blocked in {self.blocked_call}{where}"
        where = [f"in {self.waiting_in}"] if self.waiting_in else []
        where += [f"in system call {self.system_call}"] if self.system_call else []
        return " ".join([f"{who} is {state}", *where])


def process_state(pid, thread=None):
    """Return a ``ProcessState`` of *pid*'s main thread, the one that runs the article's servers, or of its *thread*.

    *thread* is a native thread id or a ``threading.Thread``. Raises
    ``ProcessLookupError`` if there is no such process or thread.
    """
    if pid == "self":
        pid = os.getpid()
    state = parse_stat(_read(pid, "stat", thread)).state
    # syscall first: to read it the kernel waits until the thread is off its CPU, and only then is wchan shown.
    number = parse_syscall(_read_if_shown(pid, "syscall", thread))
    # Some kernels hide wchan, or show "0" (not ours to trace, a container's rules); the state still tells a lot.
    waiting_in = _read_if_shown(pid, "wchan", thread).strip()
    # A compiler's copy of a function carries a suffix: poll_schedule_timeout.constprop.0 is poll_schedule_timeout.
    waiting_in = "" if waiting_in == "0" else waiting_in.split(".")[0]
    system_call = "" if number is None else system_call_name(number)
    if isinstance(thread, threading.Thread):
        thread = thread.native_id
    return ProcessState(pid, state, waiting_in, system_call, thread)


def waiting_for_a_lock(system_call, waiting_in=""):
    """True if a thread asleep in *system_call* (or kernel function *waiting_in*) waits for a lock.

    Python threads wait for the GIL in a futex: a thread doing that is on its
    way back to running, not blocked in a call of its program's.
    """
    return system_call in ("futex", "futex_waitv") or waiting_in.startswith("futex")


def wait_until_blocked(pid, timeout=1.0, thread=None):
    """Return *pid*'s (or its *thread*'s) ``ProcessState`` once it sleeps in the kernel, or as it is after *timeout* s.

    Right after a client sends, the server is briefly running; this waits for it
    to block again, so that what we print is where it waits, not a race. A
    thread waiting for a lock does not count: in Python that is mostly the wait
    for the GIL, on the way back to running. Raises ``ProcessLookupError`` if
    there is no such process or thread.
    """
    deadline = time.monotonic() + timeout
    asleep_unshown_since = None
    while True:
        state = process_state(pid, thread)
        now = time.monotonic()
        asleep = state.state in "SDZ" and not waiting_for_a_lock(state.system_call, state.waiting_in)
        if asleep and (state.waiting_in or state.state == "Z"):
            return state
        # A thread that has just gone to sleep is still on its CPU for a moment, and until it is off the kernel
        # shows "0" as its wchan; asleep and showing nothing for longer, it is the kernel that hides it.
        asleep_unshown_since = (asleep_unshown_since or now) if asleep else None
        if (asleep and now - asleep_unshown_since > 0.02) or now > deadline:
            return state
        time.sleep(0.002)


# -- files and sockets -----------------------------------------------------------------------------


def open_fds(pid):
    """Return ``{fd: what it is}`` for *pid*: ``'socket:[inode]'``, a file's path, ``'pipe:[...]'``."""
    fds = {}
    directory = f"/proc/{pid}/fd"
    for name in os.listdir(directory):
        with contextlib.suppress(FileNotFoundError):  # closed between listdir and readlink (listdir's own fd, for one)
            fds[int(name)] = os.readlink(f"{directory}/{name}")
    return dict(sorted(fds.items()))


TCP_STATES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
    7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV",
}


@dataclasses.dataclass
class TcpSocket:
    """One line of ``/proc/net/tcp``: an IPv4 TCP socket as the kernel lists it (what ``ss -tan`` shows)."""

    local: tuple
    remote: tuple
    state: str
    send_queue: int   # bytes not yet acknowledged (LISTEN: 0)
    recv_queue: int   # bytes not yet read (LISTEN: connections waiting for accept())
    inode: int        # 0 for a socket no process holds any more (TIME_WAIT)
    timer_seconds: float  # time left on the socket's running timer (TIME_WAIT: until the kernel drops it); 0 if none

    def __str__(self):
        return f"{self.state:<11} {self.local[0]}:{self.local[1]} -> {self.remote[0]}:{self.remote[1]}"


def tcp_sockets(port=None):
    """The machine's IPv4 TCP sockets, from ``/proc/net/tcp``; with *port*, those whose local or remote port it is."""
    with open("/proc/net/tcp") as table:
        text = table.read()
    if port is not None:
        # Parse only the lines that hold the port, as the table writes it (hex, after a colon): a machine that has
        # just served a load test holds tens of thousands of sockets in TIME_WAIT, and parsing them all takes long.
        header, *lines = text.splitlines()
        text = "\n".join([header, *(line for line in lines if f":{port:04X} " in line)])
    sockets = parse_tcp_table(text)
    return [found for found in sockets if port is None or port in (found.local[1], found.remote[1])]


@dataclasses.dataclass
class ListenQueue:
    """The queue of a listening socket: connections the kernel has completed, waiting for ``accept()``."""

    host: str
    port: int
    waiting: int   # connections in the queue now
    backlog: int | None  # listen()'s backlog as the kernel applies it (capped at net.core.somaxconn); None unknown

    def __str__(self):
        backlog = "unknown (it takes ss, from iproute2)" if self.backlog is None else self.backlog
        return f"{self.host}:{self.port}: {self.waiting} waiting for accept(), backlog {backlog}"


SS_MISSING = "ss is not installed (on Debian or Ubuntu: `sudo apt-get install iproute2`)"


def listen_queue(port, host=None):
    """The accept queue of the socket listening on *port* (and *host*, if given): a ``ListenQueue``.

    ``waiting`` comes from ``/proc/net/tcp`` (a listening socket's rx_queue);
    ``backlog`` only netlink shows, so it comes from ``ss -ltn`` and is None
    when ss is not installed or fails (a sandbox may forbid netlink). Raises
    ``LookupError`` if nothing listens there, or if several sockets do and
    *host* does not say which.
    """
    listening = [found for found in tcp_sockets(port)
                 if found.state == "LISTEN" and found.local[1] == port and host in (None, found.local[0])]
    if len(listening) != 1:
        where = f"{host}:{port}" if host else f"port {port}"
        if not listening:
            raise LookupError(f"no IPv4 socket listens on {where}")
        hosts = ", ".join(found.local[0] for found in listening)
        raise LookupError(f"{len(listening)} sockets listen on {where} (on {hosts}): say which with host=")
    (found,) = listening
    backlog = None
    if shutil.which("ss"):
        with contextlib.suppress(RuntimeError, OSError, subprocess.TimeoutExpired):
            for queue in parse_ss_listening(_run_ss("-ltn", f"( sport = :{port} )")):
                if (queue.host, queue.port) == found.local:
                    backlog = queue.backlog
    return ListenQueue(*found.local, found.recv_queue, backlog)


def ss(port):
    """What ``ss -tan`` prints about the TCP sockets with local or remote port *port*.

    ``ss`` (from iproute2) is the tool to look at sockets outside the book;
    this shows its raw output once. Without ss, warns how to install it and
    returns None. Raises ``RuntimeError`` if ss fails.
    """
    if not shutil.which("ss"):
        warnings.warn(SS_MISSING, stacklevel=2)
        return None
    # Without the spaces ss pads its last column with, and its last newline: printed, it ends where it ends.
    return "\n".join(line.rstrip() for line in _run_ss("-tan", f"( sport = :{port} or dport = :{port} )").splitlines())


def _run_ss(*arguments):
    finished = subprocess.run(["ss", *arguments], capture_output=True, text=True, timeout=10)
    if finished.returncode != 0:
        raise RuntimeError(f"ss {' '.join(arguments)} failed (exit {finished.returncode}): {finished.stderr.strip()}")
    return finished.stdout


# -- epoll: event masks and interest lists ---------------------------------------------------------

EPOLL_EVENTS = {
    "EPOLLIN": 0x001, "EPOLLPRI": 0x002, "EPOLLOUT": 0x004, "EPOLLERR": 0x008, "EPOLLHUP": 0x010,
    "EPOLLRDNORM": 0x040, "EPOLLRDBAND": 0x080, "EPOLLWRNORM": 0x100, "EPOLLWRBAND": 0x200, "EPOLLMSG": 0x400,
    "EPOLLRDHUP": 0x2000, "EPOLLEXCLUSIVE": 1 << 28, "EPOLLWAKEUP": 1 << 29, "EPOLLONESHOT": 1 << 30,
    "EPOLLET": 1 << 31,
}
"""Every bit of an epoll event mask, by name (from <sys/epoll.h>; the same on every Linux architecture)."""


def epoll_event_names(mask):
    """The bits of an epoll event *mask* as names, lowest bit first: ``'EPOLLIN|EPOLLHUP'``; ``'0'`` for none.

    A bit without a name is shown in hex, so nothing set is ever hidden.
    """
    names = [name for name, bit in EPOLL_EVENTS.items() if mask & bit]
    unknown = mask & ~sum(EPOLL_EVENTS.values())
    if unknown:
        names.append(hex(unknown))
    return "|".join(names) or "0"


@dataclasses.dataclass
class Interest:
    """One registration on an epoll instance, as the kernel holds it (a ``tfd:`` line of its fdinfo)."""

    fd: int      # the registered file descriptor, by its number when it was registered
    events: int  # the mask the kernel watches: what was asked for, plus EPOLLERR|EPOLLHUP, which it always adds
    data: int    # the data the kernel hands back with each event (Python's epoll: the fd)

    def __str__(self):
        return f"fd {self.fd}: {epoll_event_names(self.events)}"


def parse_epoll_fdinfo(text):
    """The registrations in the text of ``/proc/PID/fdinfo/EPFD`` of an epoll descriptor: a list of ``Interest``.

    Each ``tfd:`` line holds the fd, its event mask and its data in hex.
    Raises ``ValueError`` if a ``tfd:`` line has no ``events:`` field.
    """
    interests = []
    for line in text.splitlines():
        if not line.startswith("tfd:"):
            continue
        fields = line.split()
        try:
            interests.append(Interest(int(fields[1]), int(fields[fields.index("events:") + 1], 16),
                                      int(fields[fields.index("data:") + 1], 16)))
        except (IndexError, ValueError):
            raise ValueError(f"not a line of an epoll instance's fdinfo: {line!r}") from None
    return interests


def epoll_descriptors(pid):
    """The fds of *pid* that are epoll instances, in order."""
    return [fd for fd, what in open_fds(pid).items() if what == "anon_inode:[eventpoll]"]


def epoll_interest_list(pid, epfd=None):
    """What epoll instance *epfd* of *pid* watches (its only one if *epfd* is None): a list of ``Interest``.

    Raises ``LookupError`` if *pid* has no epoll instance, or several and
    *epfd* does not say which.
    """
    if epfd is None:
        found = epoll_descriptors(pid)
        if len(found) != 1:
            raise LookupError(f"pid {pid} has {len(found)} epoll instances"
                              + ("" if not found else f" (fds {found}): say which with epfd="))
        (epfd,) = found
    return parse_epoll_fdinfo(_read(pid, f"fdinfo/{epfd}"))


def netstat_counters():
    """The kernel's network counters since boot, by name: ``{"ListenOverflows": 12, "Tcp.RetransSegs": 40, ...}``.

    The ``TcpExt`` counters of ``/proc/net/netstat`` go by their own names
    (``ListenOverflows``: a connection found the accept queue full;
    ``ListenDrops``: a SYN or handshake dropped at a listener, overflows
    included); the ``Tcp`` counters of ``/proc/net/snmp`` as ``"Tcp.NAME"``.
    They count for the whole network namespace, so other programs move them
    too: compare two readings and say "rose by at least".
    """
    with open("/proc/net/netstat") as netstat, open("/proc/net/snmp") as snmp:
        extended, standard = netstat.read(), snmp.read()
    counters = {name: value for (_, name), value in parse_counter_table(extended, {"TcpExt"}).items()}
    counters.update((f"Tcp.{name}", value) for (_, name), value in parse_counter_table(standard, {"Tcp"}).items())
    return counters


def sysctl(name):
    """A kernel setting as ``sysctl NAME`` shows it, read from /proc/sys: ``sysctl("net.core.somaxconn")`` -> "4096".

    Only reads (nothing here changes the machine). Raises ``LookupError`` with
    a sentence if this kernel has no such setting, ``ValueError`` for a name
    that is not a setting's.
    """
    parts = name.split(".")
    if not all(parts) or "/" in name:
        raise ValueError(f"{name!r} is not a kernel setting's name: give one like 'net.core.somaxconn'")
    try:
        with open("/proc/sys/" + "/".join(parts)) as file:
            return " ".join(file.read().split())
    except (FileNotFoundError, IsADirectoryError):
        raise LookupError(f"this kernel has no setting {name} (no /proc/sys/{'/'.join(parts)})") from None


def sysctl_int(name):
    """A kernel setting that is one number, as an int: ``sysctl_int("net.ipv4.tcp_autocorking")`` -> 1."""
    text = sysctl(name)
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} is {text!r}, not one number") from None


class TimeWaitTable(NamedTuple):
    """The kernel's table of connections in TIME_WAIT, read at one moment (``time_wait_table()``)."""

    held: int     # connections it holds in TIME_WAIT now (and closed ones still waiting in FIN_WAIT2)
    limit: int    # the most it holds: net.ipv4.tcp_max_tw_buckets
    dropped: int  # closes that found it full since boot, and so skipped TIME_WAIT (TcpExt TCPTimeWaitOverflow)

    @property
    def full(self):
        return self.held >= self.limit

    def __str__(self):
        if self.full:
            return (f"{self._holding()}:\nthe table is full, so a connection that closes now skips TIME_WAIT and is "
                    f"forgotten at once.\n{_AFTER_A_LOAD}")
        return self._holding()

    def since(self, earlier):
        """This reading, and how many closes skipped TIME_WAIT since *earlier* (a ``TimeWaitTable`` read before).

        The table empties as fast as it fills, a minute later, so a reading
        after the fact may find room again: the count of skips says what
        happened in between.
        """
        skipped = self.dropped - earlier.dropped
        if skipped <= 0:
            return str(self)
        return (f"{self._holding()}:\nsince the reading before, {skipped:,} close(s) found the table full: each "
                f"skipped TIME_WAIT and was forgotten at once.\n{_AFTER_A_LOAD}")

    def _holding(self):
        return (f"the kernel holds {self.held:,} connection(s) in TIME_WAIT, of at most {self.limit:,} "
                "(net.ipv4.tcp_max_tw_buckets)")


_AFTER_A_LOAD = ("A load test fills the table; its entries expire a minute after they came: run this again a minute "
                 "later.")


def time_wait_table():
    """How full the kernel's TIME_WAIT table is now: a ``TimeWaitTable``, for this network namespace.

    A load test of a server that closes first (chapter 11's: 20,000
    connections a second) fills it in seconds, and for the minute its
    entries last, connections closed on this machine skip TIME_WAIT: what
    chapter 1 shows, and ``SO_REUSEADDR`` is for, is then not there to see.
    """
    with open("/proc/net/sockstat") as sockstat:
        held = parse_sockstat(sockstat.read()).get(("TCP", "tw"), 0)
    return TimeWaitTable(held, sysctl_int("net.ipv4.tcp_max_tw_buckets"),
                         netstat_counters().get("TCPTimeWaitOverflow", 0))


# -- TCP_INFO: what the kernel knows of one connection ----------------------------------------------

# Fields of ``struct tcp_info`` (include/uapi/linux/tcp.h) as (name, offset in bytes, struct format), in the
# kernel's order. The struct only grows, at its end (data_segs_out came in Linux 4.6, delivered in 4.18,
# bytes_sent in 4.19, snd_wnd in 5.4), and the kernel copies min(what was asked, what it has): a field is
# read only if the bytes it returned reach past the field's end. Formats are native byte order, standard
# sizes ("B" a __u8, "I" a __u32, "Q" a __u64). Names without the kernel's ``tcpi_`` prefix; a unit the kernel's
# name leaves unsaid is added (rtt is in microseconds, last_data_sent in milliseconds).
TCP_INFO_FIELDS = (
    ("state", 0, "B"),
    ("ca_state", 1, "B"),
    ("retransmits", 2, "B"),
    ("rto_us", 8, "I"),
    ("ato_us", 12, "I"),
    ("snd_mss", 16, "I"),
    ("rcv_mss", 20, "I"),
    ("unacked", 24, "I"),
    ("lost", 32, "I"),
    ("retrans", 36, "I"),
    ("last_data_sent_ms", 44, "I"),
    ("last_data_recv_ms", 52, "I"),
    ("last_ack_recv_ms", 56, "I"),
    ("pmtu", 60, "I"),
    ("rtt_us", 68, "I"),
    ("rttvar_us", 72, "I"),
    ("snd_cwnd", 80, "I"),
    ("total_retrans", 100, "I"),
    ("bytes_acked", 120, "Q"),
    ("bytes_received", 128, "Q"),
    ("segs_out", 136, "I"),
    ("segs_in", 140, "I"),
    ("notsent_bytes", 144, "I"),
    ("min_rtt_us", 148, "I"),
    ("data_segs_in", 152, "I"),
    ("data_segs_out", 156, "I"),
    ("delivered", 192, "I"),
    ("bytes_sent", 200, "Q"),
    ("bytes_retrans", 208, "Q"),
    ("snd_wnd", 228, "I"),
    ("rcv_wnd", 232, "I"),
)

# What getsockopt() is asked for: more than any kernel's struct tcp_info yet (280 bytes in Linux 6.18).
TCP_INFO_ASK = 512

@dataclasses.dataclass(frozen=True)
class TcpInfo:
    """One reading of ``TCP_INFO``: each field of ``TCP_INFO_FIELDS``, or None where the kernel returned too few bytes.

    ``size`` is how many bytes the kernel returned. Counters (``segs_out``,
    ``data_segs_out``, ``bytes_sent``, ...) count from the connection's start:
    what one response cost is the difference of two readings.
    """

    size: int
    state: int | None = None
    ca_state: int | None = None
    retransmits: int | None = None
    rto_us: int | None = None
    ato_us: int | None = None
    snd_mss: int | None = None
    rcv_mss: int | None = None
    unacked: int | None = None
    lost: int | None = None
    retrans: int | None = None
    last_data_sent_ms: int | None = None
    last_data_recv_ms: int | None = None
    last_ack_recv_ms: int | None = None
    pmtu: int | None = None
    rtt_us: int | None = None
    rttvar_us: int | None = None
    snd_cwnd: int | None = None
    total_retrans: int | None = None
    bytes_acked: int | None = None
    bytes_received: int | None = None
    segs_out: int | None = None
    segs_in: int | None = None
    notsent_bytes: int | None = None
    min_rtt_us: int | None = None
    data_segs_in: int | None = None
    data_segs_out: int | None = None
    delivered: int | None = None
    bytes_sent: int | None = None
    bytes_retrans: int | None = None
    snd_wnd: int | None = None
    rcv_wnd: int | None = None

    @property
    def state_name(self):
        """The state as ``tcp_sockets`` names it ("ESTABLISHED", "SYN_SENT"), or None if the kernel returned none."""
        return None if self.state is None else TCP_STATES.get(self.state, f"state {self.state}")


def parse_tcp_info(data):
    """A ``TcpInfo`` from the bytes ``getsockopt(IPPROTO_TCP, TCP_INFO, n)`` returned.

    Each field is read at its offset only if ``data`` reaches past its end;
    the others are None (an older kernel, or too few bytes asked for).
    Raises ``ValueError`` for something that is not bytes, or for no bytes at all.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"TCP_INFO is read from the bytes getsockopt() returns, not from {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ValueError("getsockopt() returned no bytes of TCP_INFO: there is no field to read")
    values = {}
    for name, offset, form in TCP_INFO_FIELDS:
        form = "=" + form
        if offset + struct.calcsize(form) <= len(data):
            (values[name],) = struct.unpack_from(form, data, offset)
    return TcpInfo(size=len(data), **values)


def tcp_info(sock):
    """What the kernel knows of a TCP connection now: ``tcp_info(sock).data_segs_out`` -> 3.

    ``sock`` is a TCP socket (IPv4 or IPv6), connected or not. Returns a
    ``TcpInfo``; fields this kernel does not give are None. Raises
    ``ValueError`` with a sentence for a closed socket or one that is not TCP.
    """
    if not isinstance(sock, socket.socket):
        raise ValueError(f"tcp_info() reads a socket, not {type(sock).__name__}")
    if sock.fileno() == -1:
        raise ValueError("tcp_info() was given a closed socket: read it before close()")
    if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
        raise ValueError(f"TCP_INFO is for TCP sockets, and this one is {sock.family.name}, {sock.type.name}")
    return parse_tcp_info(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_ASK))
