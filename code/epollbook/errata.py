"""The errata of the article: each defect as data, with the experiment that shows it.

    from epollbook.errata import DEFECTS, defect

    decode = defect("decode")
    decode.demonstrate("example3")   # Outcome: shown=True, "example3 died (UnicodeDecodeError: ...) ..."
    decode.demonstrate("level")      # Outcome: shown=False, "level answered 'HTTP/1.0 200 OK' ..."

    show("decode", "example3", "level")   # in the notebook: runs both, prints a line for each
    Markdown(summary())                   # a table of every show() so far

A ``Defect`` says where the article has it (the example, its line numbers in
the article's listing, the quoted code or prose), what goes wrong, which of the
book's servers have it (``faithful``: the article's examples, kept as
published) and which do not (``corrected``: the servers the chapters arrive at).
Its ``demonstrate(subject)`` runs one experiment against a live server started
for it (``epollbook.launch.serve``), with the book's clients and probes, and
returns an ``Outcome``: whether the defect showed, and what happened, in one
sentence. The errata notebook and ``tests/test_errata.py`` run the same
experiments: the notebook prints the sentences, the tests assert the booleans.

A subject is a server's name from the catalog, or ``"article"`` (``ARTICLE``)
where the defect is in the article's text itself (a listing that does not
compile, a claim about the kernel): then the experiment tries the text on this
machine. ``article_example5()`` is example 5 as the article published it;
``OUR_COPIES_SAY`` maps the article's lines our copies replace to theirs.

How the experiments stay honest on a loaded machine
---------------------------------------------------

No experiment judges speed. A spin is a share of a core (a spinning server
takes what the scheduler gives it, an idle one takes nothing: the threshold,
a fifth of a core, sits far from both). A leak is a file descriptor or a TCP
state the kernel still shows after the server has had time to act. A death is
an exit status and the traceback's last line. A race that real load provokes
now and then (a client's reset landing between the server's ``send()`` and its
``shutdown()``) is provoked on purpose: client and server share one CPU, so
the client's wake-up preempts the server between the two calls, and the
experiment repeats the exchange a bounded number of times.

Every server is started for one experiment and stopped at its end, bound to
127.0.0.1 on a free port, with one exception: the ``0.0.0.0`` defect runs
example 3 at the article's address, for the time of one request.
"""

import contextlib
import dataclasses
import os
import resource
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable

from epollbook import catalog
from epollbook.clients import (
    FIRST_LINE,
    REQUEST,
    NoEndOfAnswer,
    connected_pair,
    early_close_client,
    exchange,
    half_close_client,
    http_get,
    idle_clients,
    in_background,
    non_utf8_request,
    read_until_closed,
    reset,
    reset_as_answered,
    reset_client,
    stalled_client,
    start_request,
    streaming_client,
)
from epollbook.launch import ServerDidNotStart, serve
from epollbook.probes import (
    busy_fraction,
    epoll_event_names,
    epoll_interest_list,
    open_fds,
    parse_status,
    raw_proc,
    tcp_sockets,
    wait_until_blocked,
)

ARTICLE = "article"
"""The subject that stands for the article's own text (a listing, a claim) rather than a server."""

SPINNING = 0.2
"""A server idle in ``epoll.poll()`` uses no CPU; one that loops without waiting uses what it gets. Between."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one experiment did on one subject."""

    subject: str  # the server (or "article") it ran on
    shown: bool   # True if the defect showed
    said: str     # what happened, in one sentence

    def __str__(self):
        return self.said


@dataclasses.dataclass(frozen=True)
class Defect:
    """One defect of the article.

    ``where`` names the example and the lines of the article's listing;
    ``quoted`` is the article's code or, where its explanation is what is
    wrong, its Chinese text; ``rendering`` is the article's own words on the
    matter in English ('' if it says nothing);
    ``wrong`` says what goes wrong. ``faithful`` are the subjects that have
    the defect, ``corrected`` the servers that fix it (none, for a claim about
    the kernel); ``fixed_in`` says where the book fixes it, in words.
    ``experiment(subject)`` returns ``(shown, said)``; call it through
    ``demonstrate``.
    """

    name: str
    title: str
    where: str
    quoted: str
    wrong: str
    faithful: tuple
    corrected: tuple
    fixed_in: str
    experiment: Callable = dataclasses.field(repr=False)
    rendering: str = ""

    def demonstrate(self, subject):
        """Run the experiment on *subject* (a server's name, or ``"article"``); return an ``Outcome``.

        Raises ``ValueError`` for a subject this defect says nothing about, and
        ``ServerDidNotStart`` (from the launcher) if its server does not start.
        """
        if subject not in self.faithful + self.corrected:
            raise ValueError(f"the defect {self.name!r} is shown on {', '.join(self.faithful)} and fixed in "
                             f"{', '.join(self.corrected) or 'no server yet'}, not on {subject!r}")
        shown, said = self.experiment(subject)
        return Outcome(subject, shown, said)


# -- what the experiments share ---------------------------------------------------------------------


def _last_line(text):
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _death(server, within=1.0):
    """The last line of *server*'s traceback if it exits within *within* seconds, else None."""
    try:
        status = server.wait(within)
    except TimeoutError:
        return None
    return _last_line(server.traceback) or f"exit status {status}"


def _sockets(pid):
    """How many sockets *pid* holds open (0 once it has exited)."""
    try:
        return sum(1 for what in open_fds(pid).values() if what.startswith("socket:"))
    except (FileNotFoundError, ProcessLookupError):
        return 0


def _until(condition, timeout, step=0.02):
    """Wait until ``condition()`` is true or *timeout* seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(step)
    return value


def _memory_kib(pid, field="VmRSS"):
    """A memory figure of *pid* from /proc/PID/status, in KiB (``VmRSS`` now, ``VmHWM`` its peak)."""
    return int(parse_status(raw_proc(pid, "status"))[field].split()[0])


@dataclasses.dataclass(frozen=True)
class _End:
    """One end of a TCP connection, or a listening socket, as the kernel lists it."""

    state: str      # as /proc/net/tcp names it: 'CLOSE_WAIT', 'LISTEN', ...
    local: tuple    # (host, port)
    remote: tuple
    queue: int | None  # a listener's backlog (from ss; None from /proc/net/tcp, which does not show it)


_SS_STATES = {"ESTAB": "ESTABLISHED", "SYN-SENT": "SYN_SENT", "SYN-RECV": "SYN_RECV", "FIN-WAIT-1": "FIN_WAIT1",
              "FIN-WAIT-2": "FIN_WAIT2", "TIME-WAIT": "TIME_WAIT", "CLOSE-WAIT": "CLOSE_WAIT",
              "LAST-ACK": "LAST_ACK", "LISTEN": "LISTEN", "CLOSING": "CLOSING", "UNCONN": "CLOSE"}


def _ends(port):
    """The IPv4 TCP sockets with local or remote *port*: a list of ``_End``.

    Asked of the kernel through ss, which filters them in the kernel: reading all
    of /proc/net/tcp takes a second once a load test has left tens of thousands
    of connections in TIME_WAIT. Without ss (or where it fails), from /proc/net/tcp.
    """
    try:
        listed = subprocess.run(["ss", "-4tanH", f"( sport = :{port} or dport = :{port} )"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):  # no ss, or netlink forbidden (some sandboxes)
        return [_End(found.state, found.local, found.remote, None) for found in tcp_sockets(port)]

    return _parse_ss(listed)


def _parse_ss(text):
    """Parse what ``ss -4tanH`` prints: a list of ``_End``."""

    def address(text):
        host, _, number = text.rpartition(":")
        return host, 0 if number == "*" else int(number)  # a listener's peer: 0.0.0.0:*

    ends = []
    for line in text.splitlines():
        state, _, send_queue, local, remote = line.split()[:5]
        ends.append(_End(_SS_STATES.get(state, state), address(local), address(remote), int(send_queue)))
    return ends


def _server_ends(server):
    """The TCP states of the server's ends of its connections (not the listening socket)."""
    return [end.state for end in _ends(server.port) if end.local[1] == server.port and end.state != "LISTEN"]


def _first_line(answer):
    return answer.split(b"\r\n", 1)[0].decode("latin-1") if answer else ""


def _times(count):
    return {0: "not at all", 1: "once", 2: "twice"}.get(count, f"{count} times")


def _answered(answer):
    return f"answered {_first_line(answer)!r}" if answer else "closed the connection without an answer"


# -- the listing that does not compile ------------------------------------------------------------

# The article's example 5, lines 43-46, exactly as published: the `elif` one column deeper than its siblings.
ARTICLE_EXAMPLE5_HUP_BRANCH = (
    "             elif event & select.EPOLLHUP:\n"
    "                 epoll.unregister(fileno)\n"
    "                 connections[fileno].close()\n"
    "                 del connections[fileno]\n"
)


def article_example5():
    """The source of example 5 as the article published it: our copy with the article's indentation put back.

    Raises ``LookupError`` if our copy no longer has the branch where the article has it.
    """
    ours = catalog.source_path("example5").read_text()
    aligned = "".join(line[1:] + "\n" for line in ARTICLE_EXAMPLE5_HUP_BRANCH.splitlines())
    if aligned not in ours:
        raise LookupError("example5.py no longer holds the EPOLLHUP branch as the errata knows it")
    return ours.replace(aligned, ARTICLE_EXAMPLE5_HUP_BRANCH)


def _compiles(subject):
    if subject == ARTICLE:
        try:
            compile(article_example5(), "example5 as published", "exec")
        except SyntaxError as error:  # IndentationError is one
            return True, (f"its listing of example 5 does not compile: {type(error).__name__}: {error.msg}, "
                          f"at {(error.text or '').strip()!r}")
        return False, "its listing of example 5 compiles"
    compile(catalog.source_path(subject).read_text(), subject, "exec")
    with serve(subject) as server:
        reply = http_get(server)
    return False, f"our copy, its branch aligned, compiles and serves: {reply.status} {reply.reason}"


# -- the b'' loops ----------------------------------------------------------------------------------


def _early_close(subject):
    with serve(subject) as server:
        early_close_client(server)  # one line of a request, then a FIN
        busy = busy_fraction(server.pid, seconds=0.3)
        # A server that does not spin gets a little longer to close: a loaded machine may be slow to run it.
        waiting = _server_ends(server).count("CLOSE_WAIT")
        if waiting and busy < SPINNING and _until(lambda: "CLOSE_WAIT" not in _server_ends(server), 0.5):
            waiting = 0
    end = ("its end of the connection still in CLOSE_WAIT (never closed)" if waiting
           else "its end of the connection closed")
    return busy >= SPINNING or waiting > 0, (
        f"after a client sent one line and hung up, {subject} kept {busy:.0%} of a core busy, {end}")


def _half_close(subject):
    with serve(subject) as server:
        # A busy server finds the request and the FIN both waiting (we make it busy: SIGSTOP). On an idle one
        # the drain loop may meet BlockingIOError between the two, and answer by luck.
        os.kill(server.pid, signal.SIGSTOP)
        try:
            client = in_background(half_close_client, server, REQUEST, 0.8)  # a whole request, then a FIN
            _until(lambda: "CLOSE_WAIT" in _server_ends(server), 2.0)  # the FIN has arrived
        finally:
            os.kill(server.pid, signal.SIGCONT)
        try:
            answer = client.result(timeout=3.0)
        except NoEndOfAnswer:
            answer = None
        busy = busy_fraction(server.pid, seconds=0.2)
    said = f"a client sent a whole request, then said it would send no more (shutdown(SHUT_WR)); {subject} "
    if answer is None:
        return True, said + f"never answered, and kept {busy:.0%} of a core busy"
    return False, said + _answered(answer)


# -- bytes, resets, file descriptors ----------------------------------------------------------------


def _serving(server):
    """Whether *server* still answers a polite request: ``(True, "200 OK")``, or ``(False, how it died)``."""
    try:
        reply = http_get(server, timeout=2.0)
        return True, f"{reply.status} {reply.reason}"
    except OSError as error:
        return False, _death(server, within=1.0) or f"no answer: {error}"


def _not_utf8(subject):
    with serve(subject) as server:
        try:
            answer = exchange(server, non_utf8_request, timeout=2.0)
        except OSError:
            answer = b""
        alive, said = _serving(server)
    if not alive:
        return True, f"{subject} died ({said}), and the client got {_first_line(answer) or 'no answer'}"
    return False, f"{subject} {_answered(answer)} and kept serving (the next request: {said})"


def _reset_mid_request(subject):
    with serve(subject) as server:
        before = _sockets(server.pid)
        reset_client(server)  # one line of a request, then an RST
        # Until it has dealt with the reset: died, or closed that connection (a loaded machine may take a while).
        _until(lambda: not server.running or _sockets(server.pid) <= before, 2.0)
        died = _death(server, within=0.2)
        alive, said = (False, died) if died else _serving(server)
    if not alive:
        return True, f"a client reset its connection mid-request, and {subject} died: {said}"
    return False, f"a client reset its connection mid-request; {subject} went on (the next request: {said})"


def _shutdown_after_reset(subject, attempts=3000):
    with serve(subject) as server:
        took = reset_as_answered(server, attempts)
        died = _death(server, within=0.5)
    if died:
        return True, (f"{subject} died after {took} clients reset their connection as the answer arrived: {died}")
    return False, f"{subject} served {attempts} clients that reset their connection as the answer arrived, and lives"


def _swallowed_reset(subject):
    with serve(subject) as server:
        before = _sockets(server.pid)
        reset_client(server)
        time.sleep(0.1)  # time to accept the connection and meet the reset
        _until(lambda: _sockets(server.pid) <= before, 0.5)
        after = _sockets(server.pid)
        watched = len(epoll_interest_list(server.pid))
    if after > before:
        return True, (f"{subject} swallowed the reset and still holds the connection's socket 0.6 s later "
                      f"({after - before} more socket than before; its epoll watches {watched} fds): "
                      f"nothing will ever close it")
    return False, f"{subject} closed the reset connection (no more sockets than before)"


def _out_of_descriptors(subject):
    with serve(subject) as server:
        wait_until_blocked(server.pid)  # it announces its address before it makes its epoll object: wait for that
        taken = set(open_fds(server.pid))
        free = [number for number in range(len(taken) + 2) if number not in taken]
        _, hard = resource.prlimit(server.pid, resource.RLIMIT_NOFILE)
        # fds are numbered from the lowest free one: with this limit the server has exactly one left.
        resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (free[1], hard))
        with stalled_client(server) as first:  # takes the last fd
            time.sleep(0.1)
            second = start_request(server, timeout=3.0)  # accept() fails for it: EMFILE
            busy = busy_fraction(server.pid, seconds=0.2)
            died = _death(server, within=0.0)
            if not died:
                first.sendall(b"\r\n")  # the first client finishes: the server closes its fd
                try:
                    read_until_closed(first)
                except NoEndOfAnswer:
                    return True, (f"the process had one file descriptor left; {subject} did not even answer "
                                  f"the client that holds it")
        if died:
            return True, f"the process had one file descriptor left; {subject} died on the next client: {died}"
        served = _until(lambda: second.answered, 0.7)
        died = _death(server, within=0.0)
    try:
        answer = second.result(timeout=0.0) if served else None
    except OSError:
        answer = b""
    if died:
        return True, f"the process ran out of file descriptors, and {subject} died: {died}"
    if busy >= SPINNING:
        return True, (f"the process ran out of file descriptors, and {subject} spun at {busy:.0%} of a core "
                      f"while a client waited to be accepted")
    if answer is None:
        return True, (f"the process ran out of file descriptors; once the first client's was free again, "
                      f"{subject} still left the client waiting to be accepted, unanswered, 0.7 s later")
    if not answer:
        return False, (f"the process ran out of file descriptors; {subject} did not spin ({busy:.0%} of a core) "
                       f"and closed the connection it had no descriptor for at once, instead of leaving it waiting")
    return False, (f"the process ran out of file descriptors; {subject} waited without spinning "
                   f"({busy:.0%} of a core) and served the waiting client once an fd was free")


# -- memory -------------------------------------------------------------------------------------------


def _endless_request(subject, most=512 * 1024):
    with serve(subject) as server:
        before = _memory_kib(server.pid)
        stream = in_background(lambda: streaming_client(server, most=most, stall=1.0))
        peak = before
        while not stream.done:
            with contextlib.suppress(OSError, KeyError):  # it may die once the client resets
                peak = max(peak, _memory_kib(server.pid, "VmHWM"))
            time.sleep(0.01)
        sent = stream.result()
    grew = (peak - before) / 1024
    if sent.ended == "sent all":
        return True, (f"{subject} read all {sent.sent:,} bytes of a request that never ends and grew by "
                      f"{grew:.1f} MiB on the way")
    how = "cut it off" if sent.ended == "cut" else "stopped reading it"
    return False, f"{subject} {how} after {sent.sent:,} bytes of a request that never ends; it grew by {grew:.1f} MiB"


def _held_after_close(subject, clients=64, size=7000):
    head = FIRST_LINE + b"X-Filler: " + b"x" * size + b"\r\n"  # a request's head, all but its blank line
    # All open at once, so that each has a file descriptor number of its own. The backlog is no matter here:
    # 128 for every server, so that no connection waits for a retry (the backlog defect, below).
    with serve(subject, backlog=128) as server:
        http_get(server)  # the first request warms up what every request uses
        before, sockets = _memory_kib(server.pid), _sockets(server.pid)
        answers = set()
        with idle_clients(server, clients, sent=head) as socks:
            _until(lambda: _sockets(server.pid) >= sockets + clients, 2.0)  # each accepted: a number of its own
            for sock in socks:
                sock.sendall(b"\r\n")
                answers.add(_first_line(read_until_closed(sock)) or "no answer")
        _until(lambda: _sockets(server.pid) <= sockets, 1.0)
        held = _memory_kib(server.pid) - before
        died = _death(server, within=0.0)
    if died:
        return True, f"{subject} died on {clients} requests of {size // 1000} kB: {died}"
    done = (f"{subject} answered {clients} requests of {size // 1000} kB each, all open at once "
            f"({', '.join(sorted(answers))}), and closed them")
    if held >= clients * size / 1024 / 2:
        return True, f"{done}; it still holds {held:,} KiB more than before"
    return False, f"{done}; it holds {held:,} KiB more than before"


# -- what the article says about the kernel ---------------------------------------------------------


def _hang_up_comes_from_shutdown(subject):
    if subject == ARTICLE:
        return _hang_up_events()
    with serve(subject) as server:
        before = _sockets(server.pid)
        with stalled_client(server, sent=REQUEST) as client:
            answer = read_until_closed(client)  # the answer, then the server's FIN
            closed = _until(lambda: _sockets(server.pid) <= before, 1.0)
            ends = _server_ends(server)
            client_ends = [end.state for end in _ends(server.port) if end.local == client.getsockname()]
    state = ends[0] if ends else "gone"
    if closed:
        return True, (f"{subject} {_answered(answer)}, then closed its socket (its end now {state}) while the "
                      f"client had not closed (its end {', '.join(client_ends) or 'gone'}): the EPOLLHUP it "
                      f"closed on came from its own shutdown(), not from the client")
    return False, f"{subject} {_answered(answer)} and kept its socket open until the client closed"


def _hang_up_events():
    """What epoll reports to a server's socket when the client closes, and when the server shuts it down itself."""
    watched = select.EPOLLIN | select.EPOLLRDHUP
    epoll = select.epoll()
    try:
        with connected_pair() as (client, server_side):
            epoll.register(server_side, watched)
            client.close()  # a FIN: the client will send nothing more
            on_close = epoll.poll(1.0)
            server_side.shutdown(socket.SHUT_RDWR)
            on_shutdown = epoll.poll(1.0)
    finally:
        epoll.close()
    closed = on_close[0][1] if on_close else 0
    shut = on_shutdown[0][1] if on_shutdown else 0
    said = (f"a server's socket watched for EPOLLIN|EPOLLRDHUP got {epoll_event_names(closed)} when the client "
            f"closed, and {epoll_event_names(shut)} once the server called shutdown(SHUT_RDWR) itself")
    return not closed & select.EPOLLHUP and bool(shut & select.EPOLLHUP), said


def _one_shot(subject):
    epoll = select.epoll()
    try:
        with connected_pair() as (client, server_side):
            epoll.register(server_side, select.EPOLLIN | select.EPOLLONESHOT)
            client.sendall(b"first")
            first = epoll.poll(1.0)
            client.sendall(b"second")
            second = epoll.poll(0.2)
            still_listed = [found for found in epoll_interest_list(os.getpid(), epoll.fileno())
                            if found.fd == server_side.fileno()]
            try:
                epoll.register(server_side, select.EPOLLIN)
                registered_again = "register() again succeeded"
            except FileExistsError:
                registered_again = "register() again raised FileExistsError (EEXIST)"
            epoll.modify(server_side, select.EPOLLIN | select.EPOLLONESHOT)
            rearmed = epoll.poll(1.0)
    finally:
        epoll.close()
    removed = not still_listed and "succeeded" in registered_again
    listed = (f"still in the interest list, its mask down to {epoll_event_names(still_listed[0].events)}"
              if still_listed else "gone from the interest list")
    said = (f"with EPOLLONESHOT the socket was reported {_times(len(first))}, then {_times(len(second))} with new "
            f"bytes waiting; it was {listed}, {registered_again}, and modify() re-armed it: reported "
            f"{_times(len(rearmed))}")
    return (not removed and not second and bool(rearmed)), said


# -- defaults that belong to a demonstration, not a server ----------------------------------------


def _this_machines_address():
    """This machine's IPv4 address on its network, or None: a UDP connect() picks the route and sends nothing."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1 (RFC 5737): routed like any address, never used
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def _every_interface(subject):
    # The article's examples as published bind 0.0.0.0; the corrected servers keep their own default.
    options = {"host": "0.0.0.0"} if subject in FAITHFUL_EXAMPLES else {}
    with serve(subject, **options) as server:
        listening = [end.local[0] for end in _ends(server.port) if end.state == "LISTEN"]
        outside = _this_machines_address()
        if outside is None:
            reached = "this machine has no other address to try it from"
        else:
            try:
                reply = http_get((outside, server.port), timeout=2.0)
                reached = f"a request to this machine's network address {outside} got {reply.status} {reply.reason}"
            except OSError as error:
                reached = f"a request to this machine's network address {outside} failed: {error.strerror or error}"
    everywhere = "0.0.0.0" in listening
    where = "every interface" if everywhere else "this machine only"
    return everywhere, f"{subject} listens on {', '.join(listening)}:{server.port} ({where}); {reached}"


def _burst_while_busy(subject, clients=100):
    with serve(subject) as server:
        sockets = []
        os.kill(server.pid, signal.SIGSTOP)  # busy for a moment: it accepts no one
        try:
            for _ in range(clients):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sockets.append(sock)
                with contextlib.suppress(BlockingIOError):
                    sock.connect(server.address)
            time.sleep(0.2)
            ours = {sock.getsockname()[1] for sock in sockets}
            ends = _ends(server.port)
            dropped = sum(1 for end in ends if end.local[1] in ours and end.state == "SYN_SENT")
            backlog = next((end.queue for end in ends if end.state == "LISTEN"), None)
        finally:
            os.kill(server.pid, signal.SIGCONT)
            for sock in sockets:
                reset(sock)
    backlog = "" if backlog is None else f" (its listen backlog: {backlog})"
    if dropped:
        return True, (f"while {subject} was busy for 0.2 s, {clients} clients connected{backlog}: the kernel "
                      f"dropped the connection requests of {dropped}, which must wait for their kernels to ask again")
    return False, (f"while {subject} was busy for 0.2 s, {clients} clients connected{backlog}: all of them "
                   f"waited in its queue, none was dropped")


def _poll_timeout(subject):
    with serve(subject) as server:
        state = wait_until_blocked(server.pid)
        fields = raw_proc(server.pid, "syscall").split()
    if state.blocked_call != "epoll.poll()" or len(fields) < 5:
        return False, f"{subject} is not waiting in epoll.poll() where it can be read: {state}"
    # epoll_wait(epfd, events, maxevents, timeout) and epoll_pwait(..., timeout, sigmask): the 4th argument.
    timeout = int(fields[4], 16) & 0xFFFFFFFF
    timeout = timeout - (1 << 32) if timeout >= 1 << 31 else timeout
    if timeout >= 0:
        return True, (f"{subject}, with nothing to do, waits in epoll.poll() with a timeout of {timeout} ms: it "
                      f"wakes every {timeout} ms for nothing")
    return False, f"{subject}, with nothing to do, waits in epoll.poll() with no timeout (-1): it sleeps until needed"


ESCAPE = b"\x1b[2J"
"""The terminal's 'clear the screen' sequence: bytes a client may put in a request."""


def _prints_requests(subject):
    with serve(subject) as server:
        exchange(server, b"GET /" + ESCAPE + b" HTTP/1.0\r\n\r\n", timeout=2.0)
        # It prints before it answers, but what it prints reaches us through a pipe and a thread.
        _until(lambda: ESCAPE.decode() in server.output, 0.5)
        output = server.output
    if ESCAPE.decode() in output:
        return True, (f"{subject} printed the client's bytes as they came, ESC[2J ('clear the screen') included: "
                      f"a terminal showing its output obeys any client")
    said = "printed the request with its control bytes made visible" if "GET /" in output else "did not print it"
    return False, f"{subject} {said}"


OUR_COPIES_SAY = {
    "serversocket.bind(('0.0.0.0', 8080))": "serversocket.bind((HOST, PORT))",
    "serversocket.listen(1)": "serversocket.listen(BACKLOG)",
}
"""The article's lines our copies of the examples replace, and what they say instead (see command_line.py)."""


# -- the defects ----------------------------------------------------------------------------------------

FAITHFUL_EXAMPLES = tuple(f"example{n}" for n in range(1, 7))

DEFECTS = (
    Defect(
        name="indentation",
        title="Example 5 does not run as published",
        where="Example 5, line 43 (the article's listing)",
        quoted=ARTICLE_EXAMPLE5_HUP_BRANCH.splitlines()[0],
        wrong="The `elif event & select.EPOLLHUP:` branch is indented one column deeper than the `elif` "
              "branches above it. Python rejects the whole file before running a line of it.",
        faithful=(ARTICLE,), corrected=("example5",),
        fixed_in="our copy of example 5 aligns the branch (its docstring says so); chapter 8 runs it",
        experiment=_compiles,
    ),
    Defect(
        name="empty-recv",
        title="`recv()` returning `b''` is never checked",
        where="Examples 1-2, lines 16-17 / 18-19; example 3, line 31; example 4, lines 36-37",
        quoted="requests[fileno] += connections[fileno].recv(1024)",
        wrong="`b''` from `recv()` means the client will send nothing more. No example checks for it: "
              "examples 1-2 loop on it at full speed; example 3 (level-triggered) is told again and again that "
              "the socket is readable, reads `b''` each time and never closes it; example 4's `while True:` "
              "loop never meets the exception it waits for, and serves no one else, ever.",
        faithful=("example1", "example2", "example3", "example4", "example5", "example6"),
        corrected=("threaded", "level", "edge"),
        fixed_in="chapter 2 (exercise 2.1), chapter 3's threaded server, chapters 4-5's level and edge servers",
        experiment=_early_close,
    ),
    Defect(
        name="half-close",
        title="Example 4 never answers a client that half-closes",
        where="Example 4, lines 36-37",
        quoted="requests[fileno] += connections[fileno].recv(1024)",
        wrong="An HTTP/1.0 client may send its request and then `shutdown(SHUT_WR)`: \"I have said all\". "
              "Example 4's drain loop reads the request, then `b''`, forever: the exception that should end the "
              "loop never comes, so the request is never answered (examples 1-3 answer it: they stop reading "
              "at the blank line).",
        faithful=("example4",), corrected=("edge",),
        fixed_in="chapter 5: the edge server's drain loop ends on b'' too, and answers what it has",
        experiment=_half_close,
    ),
    Defect(
        name="decode",
        title="`decode()` of whatever a client sends",
        where="Every example: example 1, line 18; examples 2-4, lines 20 / 34 / 42",
        quoted="print('-'*40 + '\\n' + requests[fileno].decode()[:-2])",
        wrong="HTTP requests are bytes, not UTF-8 text. One byte that is not UTF-8 raises "
              "`UnicodeDecodeError`, which nothing catches: the server dies, for every client.",
        faithful=("example1", "example2", "example3", "example4", "example5", "example6"),
        corrected=("threaded", "level", "edge"),
        fixed_in="chapters 2-5: the corrected servers never decode a request",
        experiment=_not_utf8,
    ),
    Defect(
        name="reset",
        title="A reset kills the server",
        where="Examples 1-3, 5, 6: the `recv()` calls (example 3, line 31)",
        quoted="requests[fileno] += connections[fileno].recv(1024)",
        wrong="A client may end a connection with a reset (RST): `recv()` then raises "
              "`ConnectionResetError`. Nothing catches it, so one client takes the server down.",
        faithful=("example2", "example3", "example5", "example6"),
        corrected=("threaded", "level"),
        fixed_in="chapter 2 (exercise 2.2), chapter 3's threaded server, chapter 4's level server",
        experiment=_reset_mid_request,
    ),
    Defect(
        name="shutdown-after-reset",
        title="`shutdown()` on a connection the client has reset",
        where="Example 3, line 40; example 4, line 52 (and examples 5-6)",
        quoted="connections[fileno].shutdown(socket.SHUT_RDWR)",
        wrong="A client that resets the connection as the answer arrives (load generators do, when they stop) "
              "leaves a socket the kernel has closed: `shutdown()` raises `OSError: [Errno 107] Transport "
              "endpoint is not connected` (ENOTCONN). Nothing catches it, not even example 4's `except "
              "socket.error`, which guards the `send()` above but not this line.",
        faithful=("example3", "example4", "example5", "example6"),
        corrected=("level", "edge"),
        fixed_in="chapters 4-5: the corrected servers' shutdown(SHUT_WR) expects ENOTCONN, and just closes then",
        experiment=_shutdown_after_reset,
    ),
    Defect(
        name="broad-except",
        title="`except socket.error: pass` swallows real errors",
        where="Example 4, lines 32, 38, 48",
        quoted="except socket.error:",
        rendering="Lines 32, 38 and 48 catch the expected socket exceptions.",
        wrong="`socket.error` is Python 2's name for `OSError`: it catches every socket error, not only "
              "`BlockingIOError`, the one the loops expect. A reset (`ECONNRESET`) is swallowed like the end of "
              "the data: the connection is never closed, and its file descriptor leaks; `EMFILE` from "
              "`accept()` is swallowed too (next defect).",
        faithful=("example4",), corrected=("edge",),
        fixed_in="chapter 5: the edge server catches BlockingIOError alone, and closes on any other error",
        experiment=_swallowed_reset,
    ),
    Defect(
        name="emfile",
        title="Out of file descriptors",
        where="Example 3, line 24; example 4, lines 24-33",
        quoted="connection, address = serversocket.accept()",
        rendering="In edge-triggered mode, the program must keep calling accept() until a socket.error "
                  "exception is raised.",
        wrong="Every process has a limit on open file descriptors (`ulimit -n`); once a server reaches it, "
              "`accept()` raises `OSError: [Errno 24] Too many open files` (EMFILE). Example 3 does not "
              "catch it and dies. Example 4 takes it for the end of its accept loop: the client stays in the "
              "listen queue, and edge-triggered epoll never reports the listening socket again until another "
              "client arrives.",
        faithful=("example3", "example4"), corrected=("level", "edge"),
        fixed_in="chapters 4-5: level stops accepting for a moment and tries again; edge keeps a spare descriptor "
                 "to take the connection it cannot serve and close it",
        experiment=_out_of_descriptors,
    ),
    Defect(
        name="unbounded-request",
        title="No limit on a request's size",
        where="Examples 1-6: the `recv()` loops (example 3, line 31; example 4, lines 36-37)",
        quoted="requests[fileno] += connections[fileno].recv(1024)",
        wrong="A request grows until its blank line comes. A client that never sends one makes the server read "
              "and keep everything it sends, as long as it sends (and `+=` copies the whole request at each "
              "step). A server must cut a request off at a limit.",
        faithful=("example3", "example4"), corrected=("level", "edge"),
        fixed_in="chapters 4-5: the corrected servers answer 431 or close beyond their limit",
        experiment=_endless_request,
    ),
    Defect(
        name="stale-state",
        title="`requests` and `responses` are never cleaned up",
        where="Example 3, lines 41-44; example 4, lines 53-56",
        quoted="del connections[fileno]",
        wrong="When a connection ends, its entry leaves `connections` but not `requests` or `responses`: the "
              "last request of each file descriptor number stays in memory until the number is reused, however "
              "large it was.",
        faithful=("example3", "example4"), corrected=("level", "edge"),
        fixed_in="chapters 4-5: the corrected servers keep a connection's state in one object, dropped on close",
        experiment=_held_after_close,
    ),
    Defect(
        name="hang-up",
        title="What `EPOLLHUP` means, and who closes first",
        where="Example 3, lines 40-41 (the article's explanation)",
        quoted="第40行：……本示例程序这样使用，是为了让客户端首先关闭。\n"
               "第41行：HUP（挂起）event表明客户端socket已经断开（即关闭），所以服务端也需要关闭。",
        rendering="Line 40: ... this example uses [shutdown] so that the client closes first. Line 41: a HUP "
                  "(hang-up) event means the client socket has disconnected (that is, closed), so the server "
                  "must close too.",
        wrong="A client's `close()` sends a FIN, which makes the server's socket readable (`recv()` returns "
              "`b''`), not `EPOLLHUP`. `EPOLLHUP` means both directions are shut: after a reset, or, in "
              "example 3, right after the server's own `shutdown(SHUT_RDWR)`. So example 3 closes first, "
              "whatever the client does; and a client that closes first never causes the `EPOLLHUP` branch "
              "(the `b''` defect above).",
        faithful=("example3", ARTICLE), corrected=(),
        fixed_in="chapter 6 measures which events each way of ending a connection brings",
        experiment=_hang_up_comes_from_shutdown,
    ),
    Defect(
        name="oneshot",
        title="`EPOLLONESHOT` disarms, it does not remove",
        where="After example 4 (the article's explanation)",
        quoted="当使用这个选项时，注册的event只适用于一个epoll.poll()调用，调用之后它会自动从被监视的socket注册列表中移除。",
        rendering="With this option, the registered event applies to one epoll.poll() call only; after it, "
                  "it is automatically removed from the list of watched sockets.",
        wrong="After one event the kernel disarms the registration but keeps it: the fd stays in the interest "
              "list, `register()` again fails with `EEXIST`, and `modify()` re-arms it (epoll_ctl(2)). Code "
              "that believes the article registers again and crashes.",
        faithful=(ARTICLE,), corrected=(),
        fixed_in="chapter 5 re-arms a one-shot registration with modify()",
        experiment=_one_shot,
    ),
    Defect(
        name="every-interface",
        title="`0.0.0.0`: listening on every interface",
        where="Examples 1-6, line 11",
        quoted="serversocket.bind(('0.0.0.0', 8080))",
        rendering="Line 11: listen on port 8080 on all of this machine's IPv4 addresses.",
        wrong="The explanation is right, and that is the problem: a demonstration server that anyone on the "
              "network can reach, and crash (see above). Our copies listen on 127.0.0.1 unless asked "
              "(`command_line.py`); here example 3 runs at the article's address for one request.",
        faithful=FAITHFUL_EXAMPLES, corrected=("level", "edge", "threaded"),
        fixed_in="every server of the book: `--host`, default 127.0.0.1 (examples/command_line.py)",
        experiment=_every_interface,
    ),
    Defect(
        name="backlog",
        title="`listen(1)`",
        where="Examples 1-6, line 12",
        quoted="serversocket.listen(1)",
        rendering="On a production server ... a value of 1 is usually not enough.",
        wrong="The article says it itself, after the examples: a backlog of 1 is not enough. Linux queues "
              "backlog + 1 completed connections; when the queue is full it drops new connection requests, and "
              "the client's kernel asks again only after a timeout (a second at first; chapter 7 reads your "
              "kernel's schedule). A server busy for a moment makes clients wait seconds.",
        faithful=FAITHFUL_EXAMPLES, corrected=("level", "edge"),
        fixed_in="the corrected servers listen with a backlog made for bursts (ss shows it above); chapter 7 "
                 "measures what the backlog does",
        experiment=_burst_while_busy,
    ),
    Defect(
        name="poll-timeout",
        title="`epoll.poll(1)`: waking every second for nothing",
        where="Example 3, line 21 (and examples 4-6)",
        quoted="events = epoll.poll(1)",
        rendering="Line 21: ... the argument 1 means we wait up to one second for an event.",
        wrong="Nothing happens on the timeout: the loop polls again. An idle server wakes once a second for "
              "nothing (keeping a laptop's CPU from its deep sleep). Ctrl-C does not need it: since Python 3.5 "
              "a signal interrupts `epoll.poll()` and raises `KeyboardInterrupt` at once.",
        faithful=("example3", "example4", "example5", "example6"), corrected=("level", "edge"),
        fixed_in="chapters 4-5: the corrected servers wait without a timeout unless a deadline is due",
        experiment=_poll_timeout,
    ),
    Defect(
        name="print-requests",
        title="Printing every request, raw",
        where="Example 3, line 34 (and examples 1-6)",
        quoted="print('-'*40 + '\\n' + requests[fileno].decode()[:-2])",
        rendering="Line 34: print the complete request, to show that ... the data can be assembled and "
                  "processed as a whole.",
        wrong="A client's bytes go to the server's terminal as they came: control sequences included, which "
              "the terminal obeys (clear the screen, set the window title, move the cursor). And a print per "
              "request costs a write per request; when nobody reads the output (a full pipe), the whole server "
              "stops.",
        faithful=FAITHFUL_EXAMPLES, corrected=("level", "edge", "threaded"),
        fixed_in="chapters 3-5: the corrected servers print nothing a client sent",
        experiment=_prints_requests,
    ),
)


def defect(name):
    """The ``Defect`` called *name*; raises ``KeyError`` listing the names there are."""
    for found in DEFECTS:
        if found.name == name:
            return found
    raise KeyError(f"no defect is called {name!r}; the errata lists: {', '.join(found.name for found in DEFECTS)}")


_seen = {}  # defect name -> the outcomes show() printed, for summary()


def show(name, *subjects):
    """Run defect *name*'s experiment on *subjects* and print one line for each; return the ``Outcome`` list.

    By default the subjects are its first faithful one and its corrected
    servers. A server that cannot start is reported in its line, not raised.
    The lines are printed together once all have run, so they read as one block.
    """
    found = defect(name)
    outcomes, lines = [], []
    for subject in subjects or found.faithful[:1] + found.corrected:
        label = ("the article's text" if subject == ARTICLE
                 else f"{subject} ({'the article' if subject in found.faithful else 'corrected'})")
        try:
            outcome = found.demonstrate(subject)
        except (ServerDidNotStart, ImportError) as error:
            lines.append(f"{label}: could not run: {_last_line(str(error))}")
            continue
        verdict = "the defect shows" if outcome.shown else "no defect"
        lines.append(f"{label}: {outcome.said}. [{verdict}]")
        outcomes.append(outcome)
    print("\n".join([*lines, f"Fixed in: {found.fixed_in}."]))
    _seen[name] = outcomes
    return outcomes


def summary():
    """A Markdown table of what ``show()`` has run in this process: one row per defect, in the errata's order."""
    rows = ["| defect | the article's | corrected |", "| --- | --- | --- |"]
    for found in DEFECTS:
        if found.name not in _seen:
            continue
        cells = {True: [], False: []}
        for outcome in _seen[found.name]:
            verdict = "shows it" if outcome.shown else "does not"
            subject = "the article's text" if outcome.subject == ARTICLE else outcome.subject
            cells[outcome.subject in found.faithful].append(f"{subject}: {verdict}")
        corrected = ", ".join(cells[False]) or found.fixed_in
        rows.append(f"| {found.title} | {', '.join(cells[True])} | {corrected} |")
    return "\n".join(rows)
