"""The probes' pure parts: parsing what /proc and ss print, naming system calls, and the lines a state prints.

The samples were read on Linux 6.18 (x86_64); tests/test_probes.py checks the
probes against the live kernel.
"""

import pytest

from epollbook.probes import (
    EPOLL_EVENTS,
    SYSTEM_CALLS,
    ListenQueue,
    ProcessState,
    TimeWaitTable,
    epoll_event_names,
    parse_counter_table,
    parse_epoll_fdinfo,
    parse_sockstat,
    parse_ss_listening,
    parse_stat,
    parse_status,
    parse_syscall,
    parse_tcp_table,
    system_call_name,
)

pytestmark = pytest.mark.quick

STAT = ("4242 (my (odd) server) S 4241 4242 4242 0 -1 4194560 1380 0 0 0 37 12 0 0 20 0 2 0 "
        "123456 20000000 2300 18446744073709551615 1 1 0 0 0 0 0 16781312 2 0 0 0 17 1 0 0 0 0 0\n")

STATUS = """Name:\tpython
Umask:\t0022
State:\tS (sleeping)
Tgid:\t4242
Pid:\t4242
VmRSS:\t   10240 kB
Threads:\t2
voluntary_ctxt_switches:\t17
nonvoluntary_ctxt_switches:\t4
"""

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:88DB 00000000:0000 0A 00000000:00000002 00:00000000 00000000     0        0 26930 3 0000fa8a2c45 100 0 0
   1: 0100007F:80CD 0100007F:E326 06 00000000:00000000 03:00000226 00000000     0        0 0 3 00001fe00641
   2: 0100007F:E326 0100007F:80CD 01 00000010:00000020 00:00000000 00000000     0        0 31337 1 000000000000 20 4 30
"""

SS_WITH_HEADER = """\
State  Recv-Q Send-Q Local Address:Port  Peer Address:PortProcess
LISTEN 2      3          127.0.0.1:35035      0.0.0.0:*
LISTEN 0      4096            [::]:22            [::]:*
"""

SS_WITHOUT_HEADER = "LISTEN 0      128    0.0.0.0:8080 0.0.0.0:*\n"


# -- /proc/PID/stat and /proc/PID/status ---------------------------------------------------------------


def test_parse_stat_reads_state_and_cpu_ticks_after_a_command_with_spaces_and_parentheses():
    stat = parse_stat(STAT)
    assert stat == ("my (odd) server", "S", 37, 12), f"parsed {stat}"


@pytest.mark.parametrize("text", ["", "4242 S 1 2 3", "4242 (python) S 1 2\n"])
def test_parse_stat_refuses_text_that_is_not_a_stat_file(text):
    with pytest.raises(ValueError, match="not the text of /proc/PID/stat"):
        parse_stat(text)


def test_parse_status_reads_each_field_as_text():
    status = parse_status(STATUS)
    expected = {"State": "S (sleeping)", "VmRSS": "10240 kB", "voluntary_ctxt_switches": "17",
                "nonvoluntary_ctxt_switches": "4"}
    assert expected.items() <= status.items(), f"parsed {status}"


# -- /proc/PID/syscall and the names of system calls --------------------------------------------------------


@pytest.mark.parametrize("text, number", [
    ("45 0x3 0x7f5a4888d000 0x1 0x0 0x0 0x0 0x7ffe91def5e8 0x7f5a48a082ad\n", 45),
    ("288 0x3 0x0 0x0 0x80000 0x0 0x0 0x7ffc 0x7f12\n", 288),
    ("running\n", None),
    ("-1 0x7ffe91def5e8 0x7f5a48a082ad\n", None),  # blocked, but not in a system call
    ("", None),
])
def test_parse_syscall_reads_the_number_or_none_outside_a_system_call(text, number):
    assert parse_syscall(text) == number, f"{text!r} parsed as {parse_syscall(text)!r}"


@pytest.mark.parametrize("number, machine, name", [
    (288, "x86_64", "accept4"), (45, "x86_64", "recvfrom"), (44, "x86_64", "sendto"), (270, "x86_64", "pselect6"),
    (7, "x86_64", "poll"), (232, "x86_64", "epoll_wait"), (230, "x86_64", "clock_nanosleep"),
    (242, "aarch64", "accept4"), (207, "aarch64", "recvfrom"), (206, "aarch64", "sendto"),
    (72, "aarch64", "pselect6"), (73, "aarch64", "ppoll"), (22, "aarch64", "epoll_pwait"),
    (115, "aarch64", "clock_nanosleep"),
    (9999, "x86_64", "syscall 9999"), (45, "vax", "syscall 45"),
])
def test_system_call_name_by_number_and_machine(number, machine, name):
    assert system_call_name(number, machine) == name, f"{machine} {number}: {system_call_name(number, machine)!r}"


def test_the_system_call_tables_give_each_number_one_name_and_each_name_one_number():
    for machine, names in SYSTEM_CALLS.items():
        assert len(set(names.values())) == len(names), f"{machine}: a name appears twice"


# -- /proc/net/tcp and ss ---------------------------------------------------------------------------------------


def test_parse_tcp_table_reads_addresses_states_queues_inodes_and_timers():
    listening, time_wait, established = parse_tcp_table(TCP, ticks_per_second=100)
    assert (listening.local, listening.remote, listening.state, listening.recv_queue, listening.inode) == \
        (("127.0.0.1", 35035), ("0.0.0.0", 0), "LISTEN", 2, 26930), f"parsed {listening!r}"
    assert (time_wait.state, time_wait.inode, time_wait.timer_seconds) == ("TIME_WAIT", 0, 5.5), \
        f"parsed {time_wait!r}"
    assert (established.state, established.send_queue, established.recv_queue, established.timer_seconds) == \
        ("ESTABLISHED", 16, 32, 0.0), f"parsed {established!r}"
    assert str(established) == "ESTABLISHED 127.0.0.1:58150 -> 127.0.0.1:32973", f"shown as {established}"


def test_parse_tcp_table_refuses_a_line_that_is_not_one_of_its_lines():
    with pytest.raises(ValueError, match="not a line of /proc/net/tcp"):
        parse_tcp_table("header\n   0: 0100007F:88DB garbage\n", ticks_per_second=100)


def test_parse_ss_listening_reads_the_queue_and_the_backlog_with_or_without_the_header():
    assert parse_ss_listening(SS_WITH_HEADER) == [ListenQueue("127.0.0.1", 35035, 2, 3), ListenQueue("::", 22, 0, 4096)]
    assert parse_ss_listening(SS_WITHOUT_HEADER) == [ListenQueue("0.0.0.0", 8080, 0, 128)]
    assert parse_ss_listening("") == []


# -- what a state says, in a line that fits after a label -----------------------------------------------------


@pytest.mark.parametrize("state, line", [
    (ProcessState(4242, "S", "inet_csk_accept", "accept4"),
     "pid 4242 is blocked in accept(), asleep in inet_csk_accept"),
    (ProcessState(4242, "S", "wait_woken", "recvfrom"), "pid 4242 is blocked in recv(), asleep in wait_woken"),
    (ProcessState(4242, "S", "wait_woken", "sendto"), "pid 4242 is blocked in send(), asleep in wait_woken"),
    (ProcessState(4242, "S", "wait_woken", ""),
     "pid 4242 is blocked in recv(), send() or connect(), asleep in wait_woken"),
    (ProcessState(4242, "S", "poll_schedule_timeout", "pselect6"),
     "pid 4242 is blocked in select(), asleep in poll_schedule_timeout"),
    (ProcessState(4242, "S", "poll_schedule_timeout", ""),
     "pid 4242 is blocked in select() or poll(), asleep in poll_schedule_timeout"),
    (ProcessState(4242, "S", "", "epoll_wait"), "pid 4242 is blocked in epoll.poll()"),
    (ProcessState(4242, "S", "futex_do_wait", "futex"), "pid 4242 is asleep in futex_do_wait in system call futex"),
    (ProcessState(4242, "S", "", ""), "pid 4242 is asleep"),
    (ProcessState(4242, "R", "", ""), "pid 4242 is running"),
    (ProcessState(4242, "Z", "", ""), "pid 4242 is a zombie (exited, not yet reaped)"),
    (ProcessState(4242, "S", "do_epoll_wait", "epoll_wait", thread=4243),
     "thread 4243 is blocked in epoll.poll(), asleep in do_epoll_wait"),
    (ProcessState(4242, "S", "do_epoll_wait", "epoll_wait", thread=4242),
     "pid 4242 is blocked in epoll.poll(), asleep in do_epoll_wait"),
])
def test_a_state_says_what_the_kernel_showed_in_one_line(state, line):
    assert str(state) == line, f"{state!r} reads {str(state)!r}"


def test_a_running_thread_is_blocked_in_nothing_whatever_it_was_in_before():
    assert ProcessState(4242, "R", "", "recvfrom").blocked_call is None


def test_a_system_call_the_book_has_no_name_for_is_not_named_after_the_kernel_function():
    # splice() sleeps where read() does; the system call says it is not read().
    assert ProcessState(4242, "S", "anon_pipe_read", "splice").blocked_call is None


def test_a_system_call_number_this_machine_has_no_table_for_leaves_the_kernel_function_to_name_the_call():
    assert ProcessState(4242, "S", "inet_csk_accept", "syscall 330").blocked_call == "accept()"


def test_a_blocked_servers_lines_fit_a_page_of_80_characters_after_the_chapters_longest_label():
    # Six digits: pids stay below 32768 by default, below 4194304 where systemd raises pid_max (a seventh digit
    # there makes the longest line 81 characters).
    pid = 999999
    lines = ["the hostage sent one line: " + str(ProcessState(pid, "S", "wait_woken", "recvfrom")),  # chapter 2
             str(ProcessState(pid, "S", "inet_csk_accept", "accept4"))]  # chapter 1, on its own
    for line in lines:
        assert len(line) <= 80, f"{len(line)} characters: {line}"


EPOLL_FDINFO = """pos:	0
flags:	02000002
mnt_id:	17
ino:	18
tfd:        4 events: 80000019 data:                4  pos:0 ino:444bb sdev:9
tfd:        7 events:     2019 data:                7  pos:0 ino:444c0 sdev:9
"""


def test_parse_epoll_fdinfo_reads_each_registration_with_its_mask_in_hex():
    first, second = parse_epoll_fdinfo(EPOLL_FDINFO)
    assert (first.fd, first.events, first.data) == (4, 0x80000019, 4)
    assert str(first) == "fd 4: EPOLLIN|EPOLLERR|EPOLLHUP|EPOLLET"
    assert str(second) == "fd 7: EPOLLIN|EPOLLERR|EPOLLHUP|EPOLLRDHUP"


def test_parse_epoll_fdinfo_of_an_empty_instance_is_an_empty_list_and_a_broken_line_an_error():
    assert parse_epoll_fdinfo("pos:\t0\nflags:\t02\n") == []
    with pytest.raises(ValueError, match="fdinfo"):
        parse_epoll_fdinfo("tfd: 4 data: 4\n")


@pytest.mark.parametrize("mask, names", [(0, "0"), (0x1, "EPOLLIN"), (0x19, "EPOLLIN|EPOLLERR|EPOLLHUP"),
                                         (0x40000004, "EPOLLOUT|EPOLLONESHOT"), (0x2020, "EPOLLRDHUP|0x20")])
def test_epoll_event_names_lists_every_bit_and_shows_unnamed_ones_in_hex(mask, names):
    assert epoll_event_names(mask) == names


def test_the_epoll_bits_are_the_ones_python_knows():
    import select

    known = {name: getattr(select, name) & 0xFFFFFFFF for name in EPOLL_EVENTS if hasattr(select, name)}
    assert known == {name: EPOLL_EVENTS[name] for name in known}, "a bit differs from the select module's"


NETSTAT_SAMPLE = """\
TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops
TcpExt: 0 0 3 5
IpExt: InNoRoutes InTruncatedPkts
IpExt: 0 0
"""


def test_counter_tables_are_read_in_pairs_of_lines_by_group():
    assert parse_counter_table(NETSTAT_SAMPLE) == {
        ("TcpExt", "SyncookiesSent"): 0, ("TcpExt", "SyncookiesRecv"): 0, ("TcpExt", "ListenOverflows"): 3,
        ("TcpExt", "ListenDrops"): 5, ("IpExt", "InNoRoutes"): 0, ("IpExt", "InTruncatedPkts"): 0}
    only_ip = parse_counter_table(NETSTAT_SAMPLE, {"IpExt"})
    assert set(only_ip) == {("IpExt", "InNoRoutes"), ("IpExt", "InTruncatedPkts")}


SOCKSTAT_SAMPLE = """\
sockets: used 9
TCP: inuse 4 orphan 0 tw 131072 alloc 6 mem 284
UDP: inuse 0 mem 0
"""


def test_sockstat_is_read_as_names_and_numbers_by_protocol():
    counts = parse_sockstat(SOCKSTAT_SAMPLE)
    assert (counts[("TCP", "tw")], counts[("TCP", "inuse")], counts[("sockets", "used")]) == (131072, 4, 9)
    assert len(counts) == 8, counts


@pytest.mark.parametrize("line", ["TCP inuse 4", "TCP: inuse", "TCP: inuse four"])
def test_a_line_that_is_not_sockstat_s_is_a_value_error(line):
    with pytest.raises(ValueError, match="not a line of /proc/net/sockstat"):
        parse_sockstat(line)


def test_a_full_time_wait_table_says_that_closes_skip_time_wait_and_what_to_do():
    assert "full" not in str(TimeWaitTable(9, 131072, 0))
    for full in (TimeWaitTable(131072, 131072, 5), TimeWaitTable(0, 0, 0)):
        assert full.full and "skips TIME_WAIT" in str(full) and "a minute later" in str(full), str(full)


def test_a_reading_says_how_many_closes_skipped_time_wait_since_an_earlier_one_even_with_room_again():
    earlier, later = TimeWaitTable(131072, 131072, 4), TimeWaitTable(131000, 131072, 10)
    said = later.since(earlier)
    assert "6 close(s) found the table full" in said and "a minute later" in said, said
    assert TimeWaitTable(12, 131072, 4).since(TimeWaitTable(9, 131072, 4)) == str(TimeWaitTable(12, 131072, 4))


def test_a_counter_table_whose_lines_do_not_pair_is_a_value_error():
    with pytest.raises(ValueError, match="not a pair of counter lines"):
        parse_counter_table("TcpExt: A B\nTcpExt: 1\n")
