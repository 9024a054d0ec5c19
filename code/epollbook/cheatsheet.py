"""The epoll cheat sheet's tables: flags read from ``select``, errors named by Python, hang-ups measured.

    calls_table()                   epoll's system calls and their Python names
    flags_table()                   every EPOLL* constant ``select`` has, its value read from ``select``
    outcomes_table()                what accept/recv/send/... give on a non-blocking socket, and what to do
    rules_table()                   level- against edge-triggered, rule by rule
    hang_ups_table(table)           chapter 6's truth table (``hangups.truth_table()``), short, with what to do
    options_table()                 the socket options the book measures
    what_a_socket_reports()         a ``Reported``: the default mask and what a socket reports, measured
    see(chapter, anchor)            a link to a section of the book: ``[4](04-level-triggered.ipynb#anchor)``

Each table is Markdown (MyST) for ``IPython.display.Markdown``; its last
column links every row to the section of the book that shows it live. The
links' anchors are MyST's slugs of the chapters' headings
(``myst_heading_anchors`` in _config.yml): the build (``-W -n``) fails on one
that is broken, and ``tests/test_cheatsheet.py`` finds it in a second. The
words are data here, next to what is computed, so that a constant Python adds
or an ending chapter 6 measures, undescribed, fails a test instead of going
missing from the page.
"""

import contextlib
import dataclasses
import errno
import os
import select
import socket

from epollbook import clients, probes

CHAPTERS = {
    1: "01-one-request", 2: "02-serving-forever", 3: "03-why-blocking-hurts", 4: "04-level-triggered",
    5: "05-edge-triggered", 6: "06-hang-ups", 7: "07-listen-backlog", 8: "08-tcp-cork", 9: "09-tcp-nodelay",
    10: "10-select-poll-epoll", 11: "11-throughput", 12: "12-selectors-and-asyncio", "errata": "errata",
    "below": "cheat-sheet",
}
"""The pages a row can link to: the chapters by number, the errata, and this cheat sheet itself ("below")."""


def see(chapter, anchor):
    """A Markdown link to the heading *anchor* of *chapter* (a key of ``CHAPTERS``), labelled with the key.

    ``see(4, "what-we-saw")`` gives ``[4](04-level-triggered.ipynb#what-we-saw)``.
    Raises ``KeyError`` for a page the book does not have.
    """
    return f"[{chapter}]({CHAPTERS[chapter]}.ipynb#{anchor})"


def _cell(text):
    """*text* made safe inside a Markdown table cell: a ``|`` would end the cell, even inside code."""
    return str(text).replace("|", "\\|")


def _markdown_table(columns, rows):
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def mask_names(mask):
    """An event mask as its flags' names without the ``EPOLL`` prefix: ``'IN|RDHUP'``; ``'0'`` for none."""
    return probes.epoll_event_names(mask).replace("EPOLL", "")


# -- the calls --------------------------------------------------------------------------------------------------

CALLS = (
    ("`epoll_create1()`", "`ep = select.epoll()`", "a new {term}`interest list`, a descriptor; `with` closes it",
     see(4, "the-interest-list-as-the-kernel-holds-it")),
    ("`epoll_ctl(ADD)`", "`ep.register(fd, mask)`", "watch *fd*; no *mask*: `IN|PRI|OUT` (measured below)",
     see(10, "what-the-articles-code-asks-of-the-kernel")),
    ("`epoll_ctl(MOD)`", "`ep.modify(fd, mask)`", "change what *fd* waits for; re-arms a one-shot",
     see(10, "what-epoll-charges-instead")),
    ("`epoll_ctl(DEL)`", "`ep.unregister(fd)`", "before `close()`: a `dup` keeps the registration alive",
     see(5, "an-event-for-a-number-that-is-closed")),
    ("`epoll_wait()`", "`ep.poll(timeout)`", "`[(fd, mask)...]`; seconds; `None` or negative: for ever",
     see(4, "exercise-43-wake-up-for-the-earliest-deadline")),
    ("`/proc/PID/fdinfo/EPFD`", "`ep.fileno()`", "the interest list as the kernel holds it",
     see(4, "the-interest-list-as-the-kernel-holds-it")),
    ("all of them", "`selectors.DefaultSelector()`", "`EpollSelector` on Linux, level-triggered",
     see(12, "the-same-server-on-selectors")),
)


def calls_table():
    """epoll's calls, their Python names and what they do, as a Markdown table."""
    return _markdown_table(["epoll(7)", "Python", "does", "ch."], CALLS)


# -- the flags ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Flag:
    """One EPOLL* constant: who puts it in a mask, what it means, and where the book shows it."""

    name: str
    who: str        # 'you' (register/modify), 'kernel' (added to every registration), 'create' (epoll_create1)
    meaning: str
    where: str      # a link (``see()``) or a reference outside the book


FLAGS = (
    Flag("EPOLLIN", "you", "readable: bytes, the end (`b''`), or a connection to accept",
         see(4, "level-triggered-told-again-and-again")),
    Flag("EPOLLOUT", "you", "writable: room to send; level-triggered, ask only while bytes wait",
         see(4, "epollout-with-nothing-to-write")),
    Flag("EPOLLRDHUP", "you", "the peer's FIN: it sends nothing more, but may still read", see(6, "the-truth-table")),
    Flag("EPOLLPRI", "you", "urgent data (`MSG_OOB`)", see("below", "bits-the-chapters-do-not-show")),
    Flag("EPOLLET", "you", "{term}`edge-triggered`: once per change", see(5, "one-notification-per-edge")),
    Flag("EPOLLONESHOT", "you", "one event, then disarmed (not removed) until `modify()`",
         see(5, "epolloneshot-disarmed-not-removed")),
    Flag("EPOLLEXCLUSIVE", "you", "`register()` only: wake one of the epolls sharing a listener",
         see(5, "epollexclusive-in-brief")),
    Flag("EPOLLERR", "kernel", "always on: a pending error, which `SO_ERROR` names", see(6, "the-truth-table")),
    Flag("EPOLLHUP", "kernel", "always on: both directions shut; not \"the peer closed\"",
         see(6, "where-example-3s-epollhup-comes-from")),
    Flag("EPOLLRDNORM", "you", "poll(2)'s normal data", see("below", "bits-the-chapters-do-not-show")),
    Flag("EPOLLWRNORM", "you", "poll(2)'s room to write", see("below", "bits-the-chapters-do-not-show")),
    Flag("EPOLLRDBAND", "you", "poll(2)'s priority-band data", see("below", "bits-the-chapters-do-not-show")),
    Flag("EPOLLWRBAND", "you", "poll(2)'s room for priority-band data", see("below", "bits-the-chapters-do-not-show")),
    Flag("EPOLLMSG", "you", "poll(2)'s message bit, unused by Linux", see("below", "bits-the-chapters-do-not-show")),
    Flag("EPOLL_CLOEXEC", "create", "`epoll_create1()`'s flag: Python always sets it",
         "[docs](https://docs.python.org/3/library/select.html#select.epoll)"),
)
"""Every EPOLL* constant the cheat sheet describes, in its order. ``tests/test_cheatsheet.py`` checks that it holds
every one ``select`` has."""


def flags_table():
    """The flags as a Markdown table: each of ``FLAGS`` that ``select`` has, with the value ``select`` gives it."""
    rows = [(f"`{flag.name}`", f"`{getattr(select, flag.name):#x}`", flag.meaning, flag.where)
            for flag in FLAGS if hasattr(select, flag.name)]
    return _markdown_table(["flag", "value", "means", "ch."], rows)


# -- what a socket reports --------------------------------------------------------------------------------


EVERY_EVENT = (select.EPOLLIN | select.EPOLLPRI | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLRDNORM
               | select.EPOLLRDBAND | select.EPOLLWRNORM | select.EPOLLWRBAND | select.EPOLLMSG)
"""Every bit a registration can ask for that is an event, not a mode (``EPOLLET``, ``EPOLLONESHOT``...)."""


@dataclasses.dataclass(frozen=True)
class Reported:
    """What a registration asks for and what a connection reports, as the kernel says."""

    default_mask: int  # what the kernel watches after ``register(fd)`` without a mask
    everything: int    # what a connection with bytes and an urgent byte waiting reports, registered for EVERY_EVENT

    @property
    def never(self):
        """The bits of ``EVERY_EVENT`` the connection did not report, but ``EPOLLRDHUP``: no FIN had come to set it."""
        return EVERY_EVENT & ~select.EPOLLRDHUP & ~self.everything


def what_a_socket_reports(timeout=1.0):
    """Measure a ``Reported`` on a live connection of this process (127.0.0.1); nothing outlives the call.

    The server's end is registered once without a mask, its registration read
    from ``/proc/self/fdinfo``; then for ``EVERY_EVENT`` while the client's
    byte and urgent byte (``MSG_OOB``) wait unread. Raises ``TimeoutError`` if
    the bytes do not arrive within *timeout* s.
    """
    with clients.connected_pair() as (client, server_side), contextlib.ExitStack() as stack:
        by_default = stack.enter_context(select.epoll())
        by_default.register(server_side.fileno())
        default_mask, = (interest.events for interest in probes.epoll_interest_list(os.getpid(), by_default.fileno()))
        client.send(b"!", socket.MSG_OOB)
        client.send(b"bytes")
        if not clients.wait_readable(server_side, timeout):
            raise TimeoutError(f"the client's bytes did not arrive within {timeout:g} s")
        watching = stack.enter_context(select.epoll())
        watching.register(server_side.fileno(), EVERY_EVENT)
        everything = sum(mask for _, mask in watching.poll(timeout))
    return Reported(default_mask, everything)


# -- what each call's outcome means -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One outcome of a call on a non-blocking socket: a return value, or an errno by name."""

    call: str
    outcome: str    # an errno's name ('EAGAIN'), or what the call returns, as code
    means: str
    do: str
    where: str

    @property
    def raised(self):
        """The exception Python raises for it (``BlockingIOError`` for ``EAGAIN``), or ``None`` for a return."""
        code = getattr(errno, self.outcome, None)
        return type(OSError(code, os.strerror(code))).__name__ if code is not None else None

    def gives(self):
        """The outcome as the table shows it: ``'`BlockingIOError` (`EAGAIN`)'``, or the return value as code."""
        return f"`{self.raised}` (`{self.outcome}`)" if self.raised else f"`{self.outcome}`"


OUTCOMES = (
    Outcome("accept()", "(conn, address)", "a connection, *blocking*", "`setblocking(False)`, register",
            see(4, "the-articles-code")),
    Outcome("accept()", "EAGAIN", "the queue is empty", "wait; edge: loop done",
            see(5, "blockingioerror-ends-a-drain")),
    Outcome("accept()", "EMFILE", "no fd left: the client stays queued", "level: pause; edge: spare fd",
            see(5, "out-of-file-descriptors")),
    Outcome("accept()", "ECONNABORTED", "a client gave up in the queue", "accept again",
            see(2, "exercise-22-a-blocking-server-no-client-can-stop")),
    Outcome("recv(n)", "b'...'", "what has arrived, not a message", "append; find the end",
            see(1, "a-request-in-pieces")),
    Outcome("recv(n)", "b''", "the peer's FIN: nothing more, ever", "answer if whole; close",
            see(1, "recv-returns-b-the-other-side-is-done-sending")),
    Outcome("recv(n)", "EAGAIN", "nothing now", "wait; edge: drain done", see(5, "blockingioerror-ends-a-drain")),
    Outcome("recv(n)", "ECONNRESET", "a {term}`reset`; once, then `b''`", "close", see(4, "a-reset-kills-it")),
    Outcome("recv(n)", "ETIMEDOUT", "keepalive got no answer", "close", see(6, "a-peer-that-is-simply-gone")),
    Outcome("send(data)", "n", "what fit, maybe less than given", "keep the rest", see(1, "send-takes-what-fits")),
    Outcome("send(data)", "EAGAIN", "the send buffer is full", "ask for `EPOLLOUT`",
            see(4, "exercise-41-ask-for-epollout-only-while-there-is-something-to-write")),
    Outcome("send(data)", "EPIPE", "the peer closed, or we shut writing", "close", see(6, "the-truth-table")),
    Outcome("send(data)", "ECONNRESET", "a reset", "close", see(6, "the-truth-table")),
    Outcome("shutdown(how)", "ENOTCONN", "a reset came first", "close", see(4, "100-clients-at-once")),
    Outcome("connect(addr)", "EINPROGRESS", "the SYN is out", "`EPOLLOUT`, then `SO_ERROR`",
            see(7, "exercise-71-predict-then-measure")),
    Outcome("connect(addr)", "ECONNREFUSED", "nobody listens (then in `SO_ERROR`); a full queue never refuses",
            "give up", see(7, "a-dropped-syn-no-connection-no-refusal-a-wait")),
    Outcome("bind(addr)", "EADDRINUSE", "`TIME_WAIT`, or a listener, holds it", "`SO_REUSEADDR`",
            see(1, "the-closed-connection-lingers")),
    Outcome("ep.register()", "EEXIST", "registered already (disarmed?)", "`modify()`",
            see(5, "epolloneshot-disarmed-not-removed")),
    Outcome("ep.poll()", "EINTR", "a signal; Python retries (PEP 475)", "none: Ctrl-C raises",
            see("errata", "epollpoll1-waking-every-second-for-nothing")),
    Outcome("select.select()", "ValueError", "a descriptor numbered 1024 or more", "use epoll",
            see(10, "select-stops-at-descriptor-number-1024")),
)
"""What a call on a non-blocking socket (or an epoll object) gives, in the order the cheat sheet lists them."""


def outcomes_table():
    """The outcomes as a Markdown table, each error shown as the exception Python raises for its errno.

    A call is named on its first row only, so that its outcomes read as a group.
    """
    rows, previous = [], None
    for outcome in OUTCOMES:
        call = "" if outcome.call == previous else f"`{outcome.call}`"
        previous = outcome.call
        rows.append((call, outcome.gives(), outcome.means, outcome.do, outcome.where))
    return _markdown_table(["call", "gives", "means", "do", "ch."], rows)


# -- level against edge -----------------------------------------------------------------------------------------

RULES = (
    ("reports", "at every `poll()`, while it holds", "once per change", see(4, "level-triggered-told-again-and-again")
     + ", " + see(5, "one-notification-per-edge")),
    ("reading", "one `recv()` an event", "{term}`drain` to `BlockingIOError` or `b''`",
     see(5, "a-handler-that-does-not-drain")),
    ("accepting", "one `accept()` an event", "until `BlockingIOError`", see(5, "what-changes")),
    ("`b''` ignored", "a {term}`spin`, in `CLOSE_WAIT`", "an endless drain",
     see(4, "a-client-that-hangs-up-early-a-spin-and-a-leak") + ", "
     + see(5, "a-client-that-hangs-up-the-endless-loop")),
    ("`EPOLLOUT`", "only while bytes wait, or a spin", "reported as room frees",
     see(4, "epollout-with-nothing-to-write")),
    ("`EMFILE`", "the listener spins: pause it", "no new edge: a spare fd", see(5, "out-of-file-descriptors")),
    ("a busy client", "one read a turn", "cap the drain, come back", see(5, "one-busy-client-and-the-others")),
    ("threads", "", "`EPOLLONESHOT`, then re-arm", see(5, "the-race-it-prevents")),
    ("deadlines", "`poll(max(0, earliest - now))`", "the same",
     see(4, "exercise-43-wake-up-for-the-earliest-deadline")),
    ("closing", "unregister, close, forget: once", "the same", see(4, "the-fix-the-corrected-level-server")),
)


def rules_table():
    """Level- against edge-triggered epoll, rule by rule, as a Markdown table."""
    return _markdown_table(["", "{term}`level-triggered`", "{term}`edge-triggered` (`EPOLLET`)", "ch."], RULES)


# -- the hang-up truth table, short --------------------------------------------------------------------------


ADVICE = {
    "close": ("answer a whole request, then close", see(6, "the-truth-table")),
    "shut_wr": ("the same, and it still reads: answer it",
                see(6, "exercise-62-answer-a-client-that-has-finished-sending")),
    "close unread": ("close", see(6, "the-truth-table")),
    "reset": ("close; the error is read once", see(6, "the-truth-table")),
    "stopped": ("nothing comes: only a deadline finds it", see(6, "a-peer-that-is-simply-gone")),
    "server shut_rd": ("rarely useful", see(6, "the-truth-table")),
    "server shut_wr": ("read to the client's FIN, then close", see(6, "closing-with-unread-bytes-the-lingering-close")),
    "server shut_rdwr": ("close: example 3's `EPOLLHUP`", see(6, "where-example-3s-epollhup-comes-from")),
}
"""For each ending of ``hangups.ENDINGS`` (by name): what to do when it shows, and where chapter 6 shows it."""


def hang_ups_table(table):
    """*table* (a measured ``hangups.TruthTable``, or its rows) as a short Markdown table, with ``ADVICE``.

    Masks are shown without their ``EPOLL`` prefix. Raises ``KeyError`` for an
    ending ``ADVICE`` does not know.
    """
    rows = []
    for row in table:
        advice, where = ADVICE[row.ending.name]
        rows.append((row.ending.call, f"`{mask_names(row.mask)}`", f"`{mask_names(row.events['0'])}`",
                     ", ".join(f"`{each}`" for each in row.recv), ", ".join(f"`{each}`" for each in row.send),
                     advice, where))
    return _markdown_table(["ending", "events", "with `0`", "`recv()` ×2", "`send()` ×2", "do", "ch."], rows)


# -- socket options ---------------------------------------------------------------------------------------------

OPTIONS = (
    ("`SO_REUSEADDR`", "listener", "bind beside {term}`TIME_WAIT`, never beside a listener",
     see(1, "the-closed-connection-lingers")),
    ("`SO_REUSEPORT`", "each listener", "a {term}`reuseport group`: a queue each, connections hashed",
     see(11, "one-loop-per-core-so_reuseport")),
    ("`listen(n)`", "listener", "n + 1 complete before `accept()`, n at most `somaxconn`; then SYNs are dropped",
     see(7, "backlog--1-connections-before-any-accept") + ", " + see(7, "the-kernels-ceiling-somaxconn")),
    ("`TCP_NODELAY`", "connection (inherited)", "{term}`Nagle's algorithm` off; not \"unbuffered\"",
     see(9, "nagles-algorithm-and-delayed-acks") + ", " + see(9, "set-on-the-listener-inherited-by-accepted-sockets")),
    ("`TCP_CORK`", "connection", "hold partial segments until pulled (a 200 ms ceiling, or more)",
     see(8, "a-cork-never-pulled-the-200-ms-ceiling")),
    ("`MSG_MORE`", "one `send()`", "a cork for one call", see(8, "a-response-written-in-several-send-calls")),
    ("`TCP_QUICKACK`", "receiver, each read", "no {term}`delayed ACK`",
     see(9, "without-tcp_nodelay-one-piece-or-quick-acks")),
    ("`SO_LINGER (1, 0)`", "connection", "`close()` sends a reset, not a FIN", see(6, "the-truth-table")),
    ("`SO_KEEPALIVE`", "connection", "probes a silent peer", see(6, "a-peer-that-is-simply-gone")),
    ("`SO_ERROR`", "(read)", "the pending error; reading clears it", see(6, "the-truth-table")),
    ("`TCP_INFO`", "(read)", "the kernel's counters of a connection", see(8, "what-the-kernel-counts-tcp_info")),
)


def options_table():
    """The socket options (and ``listen()``'s backlog) the book measures, as a Markdown table."""
    return _markdown_table(["option", "on", "does", "ch."], OPTIONS)
