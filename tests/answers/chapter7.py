"""Answers to chapter 7's exercises, as students write them: wrong ones, and right ones written differently."""

import contextlib
import errno
import ipaddress
import select
import shutil
import socket
import subprocess

from epollbook import checks

KEPT = []
"""Where a student's answer keeps its sockets (and never closes them)."""


def _writable(sock, deadline):
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    return bool(poller.poll(deadline * 1000))


# -- completed_before_accept: wrong ----------------------------------------------------------------


def counts_the_last_one_too(address, deadline):
    opened = []
    try:
        while True:
            client = socket.socket()
            opened.append(client)
            client.setblocking(False)
            client.connect_ex(address)
            if not _writable(client, deadline):
                return len(opened)  # every client I started
    finally:
        for client in opened:
            client.close()


def blocking_connects(address, deadline):
    opened = []
    try:
        while True:
            client = socket.socket()
            opened.append(client)
            client.connect(address)  # the deadline is for the result, surely
    except OSError:
        return len(opened) - 1
    finally:
        for client in opened:
            client.close()


def never_closes(address, deadline):
    count = 0
    while True:
        client = socket.socket()
        client.setblocking(False)
        client.connect_ex(address)
        if not _writable(client, deadline):
            return count
        count += 1


def keeps_them(address, deadline):
    count = 0
    while True:
        client = socket.socket()
        KEPT.append(client)
        client.setblocking(False)
        client.connect_ex(address)
        if not _writable(client, deadline):
            return count
        count += 1


def einprogress_is_a_failure(address, deadline):
    opened = []
    try:
        while True:
            client = socket.socket()
            opened.append(client)
            client.setblocking(False)
            if client.connect_ex(address) != 0:
                return len(opened) - 1
    finally:
        for client in opened:
            client.close()


def the_queue_holds_the_backlog(address, deadline):
    opened = []
    try:
        while True:
            client = socket.socket()
            opened.append(client)
            client.setblocking(False)
            client.connect_ex(address)
            if not _writable(client, deadline):
                return len(opened) - 2  # the one that failed, and the one the server is handshaking with
    finally:
        for client in opened:
            client.close()


# -- completed_before_accept: right, written differently -------------------------------------------


def with_timeouts(address, deadline):
    opened = []
    try:
        while True:
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            opened.append(client)
            client.settimeout(deadline)
            try:
                client.connect(address)
            except TimeoutError:
                return len(opened) - 1
    finally:
        for client in opened:
            client.close()


def with_create_connection(address, deadline):
    with contextlib.ExitStack() as stack:
        count = 0
        while True:
            try:
                stack.enter_context(socket.create_connection(address, timeout=deadline))
            except TimeoutError:  # create_connection closes the socket that timed out
                return count
            count += 1


def with_epoll(address, deadline):
    completed = []
    with select.epoll() as epoll:
        while True:
            client = socket.socket()
            client.setblocking(False)
            with contextlib.suppress(BlockingIOError):  # EINPROGRESS
                client.connect(address)
            epoll.register(client, select.EPOLLOUT)
            events = epoll.poll(deadline)
            epoll.unregister(client)
            if not events or client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                client.close()
                for done in completed:
                    done.close()
                return len(completed)
            completed.append(client)


# -- how_connect_ended: wrong ------------------------------------------------------------------------


def blocks_without_a_timeout(address, deadline):
    with socket.socket() as client:
        try:
            client.connect(address)
        except ConnectionRefusedError:
            return "refused"
        return "connected"


def every_error_is_a_refusal(address, deadline):
    with socket.socket() as client:
        client.settimeout(deadline)
        try:
            client.connect(address)
        except OSError:
            return "refused"
        return "connected"


def writable_means_connected(address, deadline):
    with socket.socket() as client:
        client.setblocking(False)
        client.connect_ex(address)
        _, writable, _ = select.select([], [client], [], deadline)
        return "connected" if writable else "no answer"


def leaves_the_socket_open(address, deadline):
    client = socket.socket()
    client.settimeout(deadline)
    try:
        client.connect(address)
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "no answer"
    return "connected"


def einprogress_means_refused(address, deadline):
    with socket.socket() as client:
        client.setblocking(False)
        if client.connect_ex(address) != 0:
            return "refused"
        _, writable, _ = select.select([], [client], [], deadline)
        return "connected" if writable else "no answer"


def waits_for_the_retry(address, deadline):
    try:
        with socket.create_connection(address, timeout=5):  # long enough for the SYN to be sent again
            return "connected"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "no answer"


# -- how_connect_ended: right, written differently --------------------------------------------------


def with_settimeout(address, deadline):
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(deadline)
    try:
        client.connect(address)
        return "connected"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "no answer"
    finally:
        client.close()


def with_epoll_and_so_error(address, deadline):
    with socket.socket() as client, select.epoll() as epoll:
        client.setblocking(False)
        status = client.connect_ex(address)
        if status == errno.ECONNREFUSED:
            return "refused"
        epoll.register(client, select.EPOLLOUT)
        if not epoll.poll(deadline):
            return "no answer"
        status = client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return {0: "connected", errno.ECONNREFUSED: "refused"}.get(status, "no answer")


def with_create_connection_and_errno(address, deadline):
    try:
        socket.create_connection(address, timeout=deadline).close()
    except TimeoutError:
        return "no answer"
    except OSError as error:
        if error.errno == errno.ECONNREFUSED:
            return "refused"
        raise
    return "connected"


# -- accept_queue_length: wrong ----------------------------------------------------------------------


def _lines():
    with open("/proc/net/tcp") as table:
        return [line.split() for line in table.read().splitlines()[1:]]


def _hex_address(address):
    host, port = address
    return f"{int.from_bytes(socket.inet_aton(host), 'little'):08X}:{port:04X}"


def reads_decimal(address):
    for fields in _lines():
        if fields[1] == _hex_address(address) and fields[3] == "0A":
            return int(fields[4].split(":")[1])
    raise LookupError(f"nothing listens on {address}")


def reads_tx_queue(address):
    for fields in _lines():
        if fields[1] == _hex_address(address) and fields[3] == "0A":
            return int(fields[4].split(":")[0], 16)
    raise LookupError(f"nothing listens on {address}")


def matches_the_port_only(address):
    for fields in _lines():
        if fields[1].endswith(f":{address[1]:04X}") and fields[3] == "0A":
            return int(fields[4].split(":")[1], 16)
    raise LookupError(f"nothing listens on {address}")


def any_state_will_do(address):
    for fields in _lines():
        if fields[1] == _hex_address(address):
            return int(fields[4].split(":")[1], 16)
    raise LookupError(f"nothing listens on {address}")


def zero_when_nothing_listens(address):
    for fields in _lines():
        if fields[1] == _hex_address(address) and fields[3] == "0A":
            return int(fields[4].split(":")[1], 16)
    return 0


# -- accept_queue_length: right, written differently ---------------------------------------------------


def parses_every_field(address):
    wanted = (ipaddress.IPv4Address(address[0]), address[1])
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            _, local, _, state, queues, *_ = line.split()
            host, port = local.split(":")
            found = (ipaddress.IPv4Address(bytes.fromhex(host)[::-1]), int(port, 16))
            if found == wanted and int(state, 16) == 10:
                return int(queues.partition(":")[2], 16)
    raise LookupError(f"no socket listens on {address[0]}:{address[1]}")


def asks_ss(address):
    if shutil.which("ss") is None:
        return parses_every_field(address)  # the same number, where ss is missing
    printed = subprocess.run(["ss", "-ltnH", "src", f"{address[0]}:{address[1]}"],
                             capture_output=True, text=True, timeout=5, check=True).stdout
    for line in printed.splitlines():
        state, recv_q, _, local, *_ = line.split()
        if state == "LISTEN" and local == f"{address[0]}:{address[1]}":
            return int(recv_q)
    raise LookupError(f"no socket listens on {address[0]}:{address[1]}")


C = checks
WRONG = [
    (C.check_completed_before_accept, counts_the_last_one_too, {}, "the last client, whose SYN was dropped"),
    (C.check_completed_before_accept, blocking_connects, {}, "waits for ever"),
    (C.check_completed_before_accept, never_closes, {}, "left for the garbage collector"),
    (C.check_completed_before_accept, keeps_them, {}, "still open"),
    (C.check_completed_before_accept, einprogress_is_a_failure, {}, "not that it failed"),
    (C.check_completed_before_accept, the_queue_holds_the_backlog, {}, "expected 2 for a listener with backlog 1"),
    (C.check_how_connect_ended, blocks_without_a_timeout, {}, "waits for ever"),
    (C.check_how_connect_ended, every_error_is_a_refusal, {}, "a timeout is not a refusal"),
    (C.check_how_connect_ended, writable_means_connected, {}, "read SO_ERROR"),
    (C.check_how_connect_ended, leaves_the_socket_open, {}, "left for the garbage collector"),
    (C.check_how_connect_ended, waits_for_the_retry, {}, "did not return within"),
    (C.check_how_connect_ended, einprogress_means_refused, {}, "which is no refusal"),
    (C.check_accept_queue_length, reads_decimal, {"hidden": True}, "hexadecimal"),
    (C.check_accept_queue_length, reads_tx_queue, {}, "rx_queue is the second number"),
    (C.check_accept_queue_length, matches_the_port_only, {"hidden": True}, "another on"),
    (C.check_accept_queue_length, any_state_will_do, {"hidden": True}, "expected LookupError"),
    (C.check_accept_queue_length, zero_when_nothing_listens, {}, "expected LookupError for a port where nothing"),
]

RIGHT = [
    (C.check_completed_before_accept, with_timeouts),
    (C.check_completed_before_accept, with_create_connection),
    (C.check_completed_before_accept, with_epoll),
    (C.check_how_connect_ended, with_settimeout),
    (C.check_how_connect_ended, with_epoll_and_so_error),
    (C.check_how_connect_ended, with_create_connection_and_errno),
    (C.check_accept_queue_length, parses_every_field),
    (C.check_accept_queue_length, asks_ss),
]
