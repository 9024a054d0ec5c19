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
            text += f" in {self.waiting_in}"
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


def wait_until_blocked(pid, timeout=1.0):
    """Return *pid*'s ``ProcessState`` once it sleeps in the kernel, or as it is after *timeout* seconds.

    Right after a client sends, the server is briefly running; this waits for it
    to block again, so that what we print is where it waits, not a race.
    """
    deadline = time.monotonic() + timeout
    while True:
        state = process_state(pid)
        if state.state in "SDZ" or time.monotonic() > deadline:
            return state
        time.sleep(0.002)


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


def _ipv4(hex_address):
    address, port = hex_address.split(":")
    octets = bytes.fromhex(address)[::-1]  # the kernel prints the address in host (little-endian) order
    return ".".join(map(str, octets)), int(port, 16)


def tcp_sockets(port=None):
    """The machine's IPv4 TCP sockets, from ``/proc/net/tcp``; with *port*, those whose local or remote port it is."""
    sockets = []
    with open("/proc/net/tcp") as table:
        next(table)  # the header
        for line in table:
            fields = line.split()
            send_queue, recv_queue = (int(n, 16) for n in fields[4].split(":"))
            timer_running, left = fields[5].split(":")  # in clock ticks (USER_HZ)
            found = TcpSocket(_ipv4(fields[1]), _ipv4(fields[2]), TCP_STATES.get(int(fields[3], 16), fields[3]),
                              send_queue, recv_queue, int(fields[9]),
                              int(left, 16) / os.sysconf("SC_CLK_TCK") if int(timer_running, 16) else 0.0)
            if port is None or port in (found.local[1], found.remote[1]):
                sockets.append(found)
    return sockets
