"""The probes, epollbook.probes, against real sockets, threads and processes: what they say is true.

A thread (or a server process) is blocked in a real call; the probe must name
that call. The kernel shows where a thread waits in two files: the system call
it is in (/proc/.../syscall, exact) and the kernel function it sleeps in
(/proc/.../wchan, which several calls share). Each is tested on its own, and
skipped, saying so, where this kernel hides it.
"""

import contextlib
import dataclasses
import os
import re
import select
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from epollbook.clients import stalled_client
from epollbook.launch import serve
from epollbook.probes import (
    ProcessState,
    busy_fraction,
    context_switches,
    cpu_seconds,
    epoll_interest_list,
    listen_queue,
    netstat_counters,
    process_state,
    raw_proc,
    ss,
    sysctl,
    sysctl_int,
    tcp_info,
    tcp_sockets,
    time_wait_table,
    wait_until_blocked,
)
from tools import need_tool, no_server_left_running, wait_for_printed


@pytest.fixture(autouse=True)
def no_server_outlives_its_test():
    with no_server_left_running():
        yield


# -- real blocking calls ----------------------------------------------------------------------------


@contextlib.contextmanager
def tcp_pair():
    """Yield ``(client, server_side)``: a real TCP connection on 127.0.0.1, both ends blocking and without timeout."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server_side, _ = listener.accept()
    with client, server_side:
        client.settimeout(None)  # a timeout would make Python wait in poll(), not in the call itself
        yield client, server_side


def fill_send_buffer(sock):
    """Send without blocking until *sock*'s send buffer and its peer's receive buffer are both full."""
    sock.setblocking(False)
    while True:
        try:
            while True:
                sock.send(b"x" * 65536)
        except BlockingIOError:
            pass
        time.sleep(0.05)  # the peer may still take what is in flight; full means full after a pause too
        try:
            sock.send(b"x")
        except BlockingIOError:
            break
    sock.setblocking(True)


@contextlib.contextmanager
def accept_call():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield (lambda: listener.accept()[0].close()), (lambda: socket.create_connection(listener.getsockname()).close())


@contextlib.contextmanager
def recv_call():
    with tcp_pair() as (client, server_side):
        yield (lambda: server_side.recv(1)), (lambda: client.sendall(b"x"))


@contextlib.contextmanager
def send_call():
    with tcp_pair() as (client, server_side):
        fill_send_buffer(client)
        # Closing the other end with bytes unread resets the connection: the blocked send() fails and returns.
        yield (lambda: client.sendall(b"x" * 65536)), server_side.close


@contextlib.contextmanager
def connect_call():
    with socket.socket() as listener, socket.socket() as connecting:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # a queue of one: the filler below fills it, so the next SYN is dropped
        with socket.create_connection(listener.getsockname()):
            # A deadline the kernel keeps (SO_SNDTIMEO), not Python's settimeout: Python would wait in poll().
            connecting.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 5, 0))  # a timeval
            # Closed, the listener answers the next SYN (within a second) with a reset: connect() fails and returns.
            yield (lambda: connecting.connect(listener.getsockname())), listener.close


@contextlib.contextmanager
def wakeable_pair():
    reader, writer = socket.socketpair()
    with reader, writer:
        yield reader, (lambda: writer.send(b"x"))


@contextlib.contextmanager
def select_call():
    with wakeable_pair() as (reader, wake):
        yield (lambda: select.select([reader], [], [])), wake


@contextlib.contextmanager
def poll_call():
    with wakeable_pair() as (reader, wake):
        poll = select.poll()
        poll.register(reader, select.POLLIN)
        yield poll.poll, wake


@contextlib.contextmanager
def epoll_call():
    with wakeable_pair() as (reader, wake), select.epoll() as epoll:
        epoll.register(reader, select.EPOLLIN)
        yield epoll.poll, wake


@contextlib.contextmanager
def sleep_call():
    stop = threading.Event()

    def sleep_until_stopped():
        while not stop.is_set():
            time.sleep(0.2)  # long enough to be caught asleep, short enough to end the test soon

    yield sleep_until_stopped, stop.set


# call -> (what sets it up, the call as the probe names it, the system calls it may be in)
CALLS = {
    "accept": (accept_call, "accept()", {"accept", "accept4"}),
    "recv": (recv_call, "recv()", {"recvfrom", "recvmsg"}),
    "send, buffer full": (send_call, "send()", {"sendto", "sendmsg"}),
    "connect, queue full": (connect_call, "connect()", {"connect"}),
    "select.select": (select_call, "select()", {"select", "pselect6"}),
    "select.poll": (poll_call, "poll()", {"poll", "ppoll"}),
    "select.epoll.poll": (epoll_call, "epoll.poll()", {"epoll_wait", "epoll_pwait", "epoll_pwait2"}),
    "time.sleep": (sleep_call, "time.sleep()", {"nanosleep", "clock_nanosleep"}),
}


@contextlib.contextmanager
def thread_blocked_in(setup):
    """Run the call *setup* sets up in a thread; yield the thread while it is blocked there; wake it and join it."""
    with setup() as (call, wake):
        def run():
            with contextlib.suppress(OSError):  # some are woken by a reset or a refusal
                call()

        thread = threading.Thread(target=run, name="blocked", daemon=True)
        thread.start()
        try:
            yield thread
        finally:
            wake()
            thread.join(10)
            assert not thread.is_alive(), "the blocked thread did not finish once woken"


def named_calls(text):
    """The calls in a blocked_call text: 'recv(), send() or connect()' -> ['recv()', 'send()', 'connect()']."""
    return re.split(r", | or ", text or "")


@pytest.mark.parametrize("call", CALLS)
def test_a_thread_blocked_in_a_call_is_reported_in_it_by_its_system_call(call):
    setup, expected, system_calls = CALLS[call]
    with thread_blocked_in(setup) as thread:
        state = wait_until_blocked(os.getpid(), timeout=5, thread=thread)
    if not state.system_call:
        pytest.skip("this kernel hides /proc/PID/task/TID/syscall from us (a rule against tracing, or a sandbox)")
    assert state.system_call in system_calls, f"{call}: the probe read system call {state.system_call!r} ({state})"
    assert state.blocked_call == expected, f"{call}: the probe says {state}"
    assert f" is blocked in {expected}" in str(state), f"{call}: the probe says {state}"


@pytest.mark.parametrize("call", CALLS)
def test_a_thread_blocked_in_a_call_is_reported_in_it_or_among_others_by_its_wait_channel_alone(call):
    setup, expected, _ = CALLS[call]
    with thread_blocked_in(setup) as thread:
        state = wait_until_blocked(os.getpid(), timeout=5, thread=thread)
    if not state.waiting_in:
        pytest.skip("this kernel hides /proc/PID/task/TID/wchan from us (it shows '0' or nothing)")
    wait_channel_only = dataclasses.replace(state, system_call="")
    assert expected in named_calls(wait_channel_only.blocked_call), \
        f"{call}: in {state.waiting_in}, the probe would say {wait_channel_only.blocked_call!r} without the system call"


def test_a_threads_state_is_its_own_and_the_processs_is_its_main_threads():
    with thread_blocked_in(accept_call) as thread:
        blocked = wait_until_blocked(os.getpid(), timeout=5, thread=thread.native_id)
        main = process_state(os.getpid())
    assert blocked.thread == thread.native_id and str(blocked).startswith(f"thread {thread.native_id} is blocked"), \
        f"the thread's state reads {blocked}"
    assert main.state == "R" and str(main) == f"pid {os.getpid()} is running", \
        f"the main thread, which is reading /proc, reads as {main}"


def test_a_thread_id_that_is_not_a_native_id_gets_one_sentence_naming_the_right_one():
    with pytest.raises(ProcessLookupError, match=re.escape("Thread.native_id is one, Thread.ident is not")):
        process_state(os.getpid(), thread=threading.main_thread().ident)


def test_a_process_that_is_gone_is_a_process_lookup_error():
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with pytest.raises(ProcessLookupError, match=f"there is no process {finished.stdout.strip()}"):
        process_state(int(finished.stdout))


# -- a server process, as the chapters see it ---------------------------------------------------------


def test_a_server_is_reported_blocked_in_accept_then_in_recv():
    with serve("example2") as server:
        waiting = wait_until_blocked(server.pid)
        with stalled_client(server):
            reading = wait_until_blocked(server.pid)
    if not (waiting.system_call or waiting.waiting_in):
        pytest.skip("this kernel hides both /proc/PID/wchan and /proc/PID/syscall from us")
    assert waiting.blocked_call == "accept()", f"a server waiting for a client reads as: {waiting}"
    expected = "recv()" if reading.system_call else "recv(), send() or connect()"
    assert reading.blocked_call == expected, f"a server waiting for a request's end reads as: {reading}"


def test_a_process_sleeping_is_reported_in_time_sleep():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; print('asleep', flush=True); time.sleep(60)"],
                               stdout=subprocess.PIPE)
    try:
        wait_for_printed(sleeper, "^asleep$")
        state = wait_until_blocked(sleeper.pid, timeout=5)
    finally:
        sleeper.kill()
        sleeper.wait()
        sleeper.stdout.close()
    if not (state.system_call or state.waiting_in):
        pytest.skip("this kernel hides both /proc/PID/wchan and /proc/PID/syscall from us")
    assert state.blocked_call == "time.sleep()", f"a process in time.sleep() reads as: {state}"


def test_each_piece_of_a_slow_request_wakes_the_blocked_server_once():
    pieces = 5
    with serve("example2") as server, stalled_client(server, b"GET / HTTP/1.0\r\n") as client:
        wait_until_blocked(server.pid)
        before = context_switches(server.pid)
        for _ in range(pieces):
            client.sendall(b"X-Piece: 1\r\n")
            wait_until_blocked(server.pid)
        after = context_switches(server.pid)
    woken = after.voluntary - before.voluntary
    assert pieces <= woken <= 2 * pieces, f"{pieces} pieces, {woken} voluntary context switches ({before} -> {after})"


# -- CPU time ---------------------------------------------------------------------------------------------


def test_a_spinning_thread_is_busy_and_a_blocked_one_is_not():
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            pass

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        with thread_blocked_in(accept_call) as blocked:
            wait_until_blocked(os.getpid(), timeout=5, thread=blocked)
            spinning, idle = busy_fraction(os.getpid(), 0.3, spinner), busy_fraction(os.getpid(), 0.3, blocked)
            process_cpu, spinner_cpu = cpu_seconds(os.getpid()), cpu_seconds(os.getpid(), spinner)
    finally:
        stop.set()
        spinner.join()
    # No thresholds on a shared machine: a spinning thread gets what other loads leave it, but it gets something,
    # and a blocked one gets nothing, not one clock tick.
    assert spinning > 0, "a thread spinning in a loop used no CPU at all in 0.3 s"
    assert idle == 0, f"a thread blocked in accept() kept {idle:.0%} of a core busy"
    assert process_cpu >= spinner_cpu > 0, f"the process used {process_cpu} s of CPU, one of its threads {spinner_cpu}"


# -- sockets and the listen queue -----------------------------------------------------------------------------


def test_listen_queue_counts_connections_waiting_for_accept_and_reads_the_backlog_from_ss():
    with socket.create_server(("127.0.0.1", 0), backlog=3) as listener:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)), socket.create_connection(("127.0.0.1", port)):
            two = listen_queue(port)
            listener.accept()[0].close()
            one = listen_queue(port)
    assert (two.host, two.port, two.waiting, one.waiting) == ("127.0.0.1", port, 2, 1), f"read {two}, then {one}"
    need_tool("ss")
    assert two.backlog == 3, f"listen(3), and the probe read {two}"


def test_listen_queue_without_ss_says_the_backlog_is_unknown(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no ss on the PATH
    with socket.create_server(("127.0.0.1", 0), backlog=3) as listener:
        queue = listen_queue(listener.getsockname()[1])
    assert queue.waiting == 0 and queue.backlog is None, f"without ss the probe read {queue}"
    assert "iproute2" in str(queue), f"it does not say what to install: {queue}"


def test_listen_queue_of_a_port_nothing_listens_on_is_a_lookup_error():
    with socket.socket() as unlistened:
        unlistened.bind(("127.0.0.1", 0))  # taken, so no one else listens there, but not listening
        port = unlistened.getsockname()[1]
        with pytest.raises(LookupError, match=f"no IPv4 socket listens on port {port}"):
            listen_queue(port)


def test_ss_shows_the_listening_socket_and_both_ends_of_a_connection():
    need_tool("ss")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            client_port = client.getsockname()[1]
            shown = ss(port)
    # (state, local, peer) of each line; other lines (an older connection's TIME-WAIT on this port) may be there too
    lines = {(fields[0], fields[3], fields[4]) for fields in map(str.split, shown.splitlines()[1:])}
    ours = {("LISTEN", f"127.0.0.1:{port}", "0.0.0.0:*"),
            ("ESTAB", f"127.0.0.1:{port}", f"127.0.0.1:{client_port}"),
            ("ESTAB", f"127.0.0.1:{client_port}", f"127.0.0.1:{port}")}
    assert ours <= lines, f"ss showed:\n{shown}"


def test_ss_without_ss_warns_how_to_install_it_and_returns_none(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.warns(UserWarning, match="apt-get install iproute2"):
        assert ss(80) is None


def test_tcp_sockets_lists_a_connection_from_both_ends():
    with tcp_pair() as (client, server_side):
        client_end, server_end = client.getsockname(), server_side.getsockname()
        found = [(found.state, found.local, found.remote) for found in tcp_sockets(server_end[1])]
    # Only this connection's lines: an older connection on the same port may linger in TIME_WAIT.
    ours = [(state, local, remote) for state, local, remote in found if {local, remote} == {client_end, server_end}]
    assert sorted(ours) == sorted([("ESTABLISHED", client_end, server_end), ("ESTABLISHED", server_end, client_end)]), \
        f"tcp_sockets found {found}"


# -- the raw files ------------------------------------------------------------------------------------------------


def test_raw_proc_shows_the_file_a_probe_reads():
    with thread_blocked_in(accept_call) as thread:
        state = wait_until_blocked(os.getpid(), timeout=5, thread=thread)
        wchan = raw_proc(os.getpid(), "wchan", thread)
    assert wchan.split(".")[0] == (state.waiting_in or "0"), f"wchan reads {wchan!r}, the probe said {state}"
    assert raw_proc(os.getpid(), "net/tcp").split()[1] == "local_address", "net/tcp does not begin with its header"


@pytest.mark.parametrize("name", ["../1/environ", "/etc/passwd", ""])
def test_raw_proc_refuses_a_name_outside_the_processs_directory(name):
    with pytest.raises(ValueError, match="is not a file of /proc/PID"):
        raw_proc(os.getpid(), name)


def test_process_state_of_self_names_this_process():
    state = process_state("self")
    assert isinstance(state, ProcessState) and state.pid == os.getpid(), f"process_state('self') is {state!r}"


def test_the_interest_list_of_a_server_shows_its_listener_with_the_bits_the_kernel_adds():
    with serve("example3") as server:
        wait_until_blocked(server.pid)  # it announces its address before it makes its epoll object
        (listener,) = epoll_interest_list(server.pid)
        assert listener.events == select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP, str(listener)
        with socket.create_connection(server.address) as client:
            client.sendall(b"GET / HTTP/1.0\r\n")
            deadline = time.monotonic() + 5
            while len(epoll_interest_list(server.pid)) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(epoll_interest_list(server.pid)) == 2, "the accepted connection was never registered"


def test_the_interest_list_of_a_process_without_epoll_is_a_lookup_error():
    # A process of its own: this one may hold an epoll of an earlier test's thread that has not ended yet.
    with subprocess.Popen(["sleep", "30"]) as sleeper:
        try:
            with pytest.raises(LookupError, match="0 epoll instances"):
                epoll_interest_list(sleeper.pid)
        finally:
            sleeper.kill()


def test_the_listen_overflow_counter_rises_when_a_full_accept_queue_drops_a_syn():
    before = netstat_counters()["ListenOverflows"]
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        clients = [socket.socket() for _ in range(3)]
        try:
            for client in clients:
                client.setblocking(False)
                client.connect_ex(listener.getsockname())
            deadline = time.monotonic() + 5
            while netstat_counters()["ListenOverflows"] == before and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            for client in clients:
                client.close()
    assert netstat_counters()["ListenOverflows"] > before, "three clients at a backlog of 0 overflowed nothing"
    assert "Tcp.RetransSegs" in netstat_counters(), "the Tcp counters of /proc/net/snmp are missing"


def test_the_time_wait_table_counts_a_connection_closed_first_or_the_close_that_skipped_it():
    def closed_first():
        with socket.create_server(("127.0.0.1", 0)) as listener, \
                socket.create_connection(listener.getsockname()) as client:
            listener.accept()[0].close()  # the server's end closes first; the client's close completes it
            client.recv(1)

    # Other programs open and close connections too: of a few tries, one must see the table rise or the skip counted.
    for _ in range(5):
        before = time_wait_table()
        closed_first()
        after = time_wait_table()
        if after.held > before.held or after.dropped > before.dropped:
            break
    else:
        raise AssertionError(f"five connections closed first moved neither the table nor the skips: {after}")
    assert after.limit == sysctl_int("net.ipv4.tcp_max_tw_buckets")


def test_sysctl_reads_a_setting_and_names_one_that_is_absent():
    assert sysctl_int("net.core.somaxconn") > 0
    assert len(sysctl("net.ipv4.tcp_rmem").split()) == 3
    with pytest.raises(LookupError, match=r"no setting net\.core\.no_such_thing"):
        sysctl("net.core.no_such_thing")
    with pytest.raises(ValueError, match="not a kernel setting's name"):
        sysctl("../etc/passwd")


# -- TCP_INFO -----------------------------------------------------------------------------------------------------


def test_tcp_info_counts_each_send_the_peer_read_as_one_data_segment():
    with tcp_pair() as (client, server):
        before = tcp_info(server)
        for _ in range(3):
            server.sendall(b"x" * 100)
            assert client.recv(100) == b"x" * 100
        after = tcp_info(server)
    assert (before.state_name, before.size >= 160) == ("ESTABLISHED", True), before
    assert after.data_segs_out - before.data_segs_out == 3, f"three sends read one by one: {before} -> {after}"
    assert after.bytes_sent - before.bytes_sent == 300, f"{before} -> {after}"
    assert after.segs_out >= after.data_segs_out, "segs_out counts every segment, data or not"


def test_tcp_info_of_a_socket_that_is_not_tcp_or_is_closed_is_one_sentence():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, pytest.raises(ValueError, match="for TCP sockets"):
        tcp_info(udp)
    closed = socket.socket()
    closed.close()
    with pytest.raises(ValueError, match="closed socket"):
        tcp_info(closed)
