"""What the kernel sees of a process: its state, where it sleeps, its CPU time, its fds.

All of it is read from ``/proc`` (Linux only), for any process of the same user:
a server started with ``epollbook.launch.serve`` (pass ``server.pid``), or this
very Python process (``os.getpid()``).
"""

import dataclasses
import os
import time

_STATES = {
    "R": "running", "S": "sleeping", "D": "sleeping uninterruptibly", "T": "stopped",
    "t": "stopped by a debugger", "Z": "a zombie (exited, not yet reaped)", "I": "idle",
}

# Kernel functions a blocked socket call sleeps in, and the call they stand for.
# Names vary across kernel versions; an unknown one is shown as it is.
_WAITING_IN = {
    "inet_csk_accept": "accept()",
    "inet_csk_wait_for_connect": "accept()",
    "sk_wait_data": "recv()",
    "wait_woken": "recv()",
    "sk_stream_wait_memory": "send()",
    "do_epoll_wait": "epoll.poll()",
    "ep_poll": "epoll.poll()",
    "do_select": "select()",
    "do_sys_poll": "poll()",
}


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    return text[text.rindex(")") + 2:].split()


def cpu_seconds(pid):
    """CPU time *pid* has used so far, user plus system, in seconds."""
    fields = _stat_fields(pid)
    ticks = int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)
    return ticks / os.sysconf("SC_CLK_TCK")


def busy_fraction(pid, seconds=0.5):
    """How busy *pid* keeps the CPU over the next *seconds*: 0.0 idle, 1.0 one core flat out."""
    start_cpu, start = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - start_cpu) / (time.monotonic() - start)


@dataclasses.dataclass
class ProcessState:
    """A snapshot of what a process is doing."""

    pid: int
    state: str       # one letter, as in ps: R running, S sleeping, ...
    waiting_in: str  # the kernel function it sleeps in ('' when running)

    @property
    def blocked_call(self):
        """The system call it is blocked in, if the kernel function is a known one, else None."""
        return _WAITING_IN.get(self.waiting_in)

    def __str__(self):
        text = f"pid {self.pid} is {_STATES.get(self.state, self.state)}"
        if self.state in "SD" and self.waiting_in:
            text += f" in the kernel function {self.waiting_in}"
            if self.blocked_call:
                text += f" (blocked in {self.blocked_call})"
        return text


def process_state(pid):
    """Return a ``ProcessState`` of *pid*: its state letter and the kernel function it waits in.

    For a process with several threads this is its main thread, the one that
    runs the article's servers.
    """
    state = _stat_fields(pid)[0]
    try:
        with open(f"/proc/{pid}/wchan") as wchan:
            waiting_in = wchan.read().strip()
    except OSError:  # some kernels hide wchan; the state letter still tells a lot
        waiting_in = ""
    return ProcessState(pid, state, "" if waiting_in == "0" else waiting_in)


def open_fds(pid):
    """Return ``{fd: what it is}`` for *pid*: ``'socket:[inode]'``, a file's path, ``'pipe:[...]'``."""
    fds = {}
    directory = f"/proc/{pid}/fd"
    for name in os.listdir(directory):
        try:
            fds[int(name)] = os.readlink(f"{directory}/{name}")
        except FileNotFoundError:  # closed between listdir and readlink
            pass
    return dict(sorted(fds.items()))


def socket_count(pid):
    """How many sockets *pid* has open."""
    return sum(target.startswith("socket:") for target in open_fds(pid).values())
