"""The epoll cheat sheet's computed tables: flags read from ``select``, errors from ``errno``, hang-ups measured.

    flags_table(reported=None)          every EPOLL* constant of ``select``: value, who sets it, meaning, where shown
    outcomes_table()                    what accept/recv/send/... give in non-blocking mode, with Python's exception
    hang_ups_table(table)               chapter 6's measured truth table, short, with what to do about each ending
    what_a_socket_reports()             a connection registered for every bit: the ``Reported`` masks, measured
    see(chapter, anchor, text)          a Markdown link to a chapter's section: ``[4: text](04-....ipynb#anchor)``

The tables are Markdown text (MyST): a notebook shows one with
``IPython.display.Markdown(flags_table())``, and every link in them is to a
chapter's heading, which the book's build checks (``-W -n``) and so does
``tests/test_cheatsheet.py``. The prose (meanings, advice) is data here, next
to what is computed, so that a constant Python adds or an ending chapter 6
measures and the cheat sheet does not describe fails a test instead of going
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
    "here": "cheat-sheet",
}
"""The book's pages by chapter number (and the errata, and this cheat sheet), as files in ``book/``."""


def see(chapter, anchor, text):
    """A Markdown link to the heading *anchor* of *chapter* (a key of ``CHAPTERS``), labelled with its number.

    ``see(4, "the-interest-list-as-the-kernel-holds-it", "interest list")``
    gives ``[4: interest list](04-level-triggered.ipynb#the-interest-list-as-the-kernel-holds-it)``.
    The anchor is MyST's slug of the heading (``myst_heading_anchors``).
    Raises ``KeyError`` for a chapter the book does not have.
    """
    label = {"errata": "errata", "here": "below"}.get(chapter, chapter)
    return f"[{label}: {text}]({CHAPTERS[chapter]}.ipynb#{anchor})"


def _cell(text):
    """*text* made safe inside a Markdown table cell: a ``|`` would end the cell, even inside code."""
    return str(text).replace("|", "\\|")


def _markdown_table(columns, rows):
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# -- the flags ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Flag:
    """One EPOLL* constant: who puts it in a mask, what it means, and where the book shows it."""

    name: str
    who: str        # 'you' (register/modify), 'kernel' (added to every registration), 'create' (epoll_create1)
    meaning: str
    where: str      # a link (``see()``) or a reference outside the book


FLAGS = (
    Flag("EPOLLIN", "you", "readable: bytes, the end of the stream (`recv()` gives `b''`), or a connection to accept",
         see(4, "level-triggered-told-again-and-again", "told again")),
    Flag("EPOLLOUT", "you", "writable: room in the send buffer; level-triggered, ask only while you have bytes to send",
         see(4, "epollout-with-nothing-to-write", "the spin")),
    Flag("EPOLLRDHUP", "you", "the peer's FIN: it will send nothing more (closed, or only shut its writing side)",
         see(6, "the-truth-table", "truth table")),
    Flag("EPOLLPRI", "you", "urgent data (TCP's `MSG_OOB`); without a mask, `register()` asks for it",
         see("here", "bits-the-chapters-do-not-show", "measured")),
    Flag("EPOLLET", "you", "edge-triggered: reported once per change, so drain until `BlockingIOError`",
         see(5, "one-notification-per-edge", "one per edge")),
    Flag("EPOLLONESHOT", "you", "one event, then disarmed, not removed: `modify()` re-arms, `register()` is `EEXIST`",
         see(5, "epolloneshot-disarmed-not-removed", "disarmed")),
    Flag("EPOLLEXCLUSIVE", "you", "`register()` only: of the epoll instances watching one listener, wake one or a few",
         see(5, "epollexclusive-in-brief", "in brief")),
    Flag("EPOLLERR", "kernel", "a pending error (a reset): `SO_ERROR` names it, the next call raises it, once",
         see(6, "the-truth-table", "truth table")),
    Flag("EPOLLHUP", "kernel", "both directions shut (a reset, or a FIN each way), not \"the peer closed\"",
         see(6, "where-example-3s-epollhup-comes-from", "where from")),
    Flag("EPOLLRDNORM", "you", "poll(2)'s name for normal data: comes with `EPOLLIN` on a socket",
         see("here", "bits-the-chapters-do-not-show", "measured")),
    Flag("EPOLLWRNORM", "you", "poll(2)'s name for room to write: comes with `EPOLLOUT` on a socket",
         see("here", "bits-the-chapters-do-not-show", "measured")),
    Flag("EPOLLRDBAND", "you", "poll(2)'s priority-band data",
         see("here", "bits-the-chapters-do-not-show", "measured")),
    Flag("EPOLLWRBAND", "you", "poll(2)'s room for priority-band data",
         see("here", "bits-the-chapters-do-not-show", "measured")),
    Flag("EPOLLMSG", "you", "poll(2)'s message bit, which Linux does not use",
         see("here", "bits-the-chapters-do-not-show", "measured")),
    Flag("EPOLL_CLOEXEC", "create", "`epoll_create1()`'s flag, not a mask bit: Python's epoll objects always have it",
         "[select.epoll](https://docs.python.org/3/library/select.html#select.epoll)"),
)
"""Every EPOLL* constant the cheat sheet describes, in its order. ``tests/test_cheatsheet.py`` checks that it holds
every one ``select`` has."""

_WHO = {"you": "you", "kernel": "the kernel, always", "create": "`select.epoll()`"}


def mask_names(mask):
    """An event mask as its flags' names without the ``EPOLL`` prefix: ``'IN|RDHUP'``; ``'0'`` for none."""
    return probes.epoll_event_names(mask).replace("EPOLL", "")


def flags_table(reported=None):
    """The flags as a Markdown table: every EPOLL* of ``FLAGS`` that ``select`` has, its value read from ``select``.

    With *reported* (a ``Reported``), a column says whether the connection it
    measured showed the bit (empty for a mode, such as ``EPOLLET``, which is
    never reported).
    """
    columns = ["flag", "value", "set by", "means", "shown in"]
    if reported is not None:
        columns.insert(4, "reported here")
    rows = []
    for flag in FLAGS:
        value = getattr(select, flag.name, None)
        if value is None:  # a constant this Python does not have
            continue
        row = [f"`{flag.name}`", f"`{value:#x}`", _WHO[flag.who], flag.meaning, flag.where]
        if reported is not None:
            asked = EVERY_EVENT | select.EPOLLERR | select.EPOLLHUP  # modes (EPOLLET...) are not events
            row.insert(4, "" if not value & asked else "yes" if reported.everything & value else "no")
        rows.append(row)
    return _markdown_table(columns, rows)


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

    def cells(self):
        raised = self.raised
        shown = f"`{raised}` (`{self.outcome}`)" if raised else f"`{self.outcome}`"
        return [f"`{self.call}`", shown, self.means, self.do, self.where]


OUTCOMES = (
    Outcome("accept()", "(conn, address)", "a connection, *blocking* even from a non-blocking listener",
            "`conn.setblocking(False)`, register it", see(4, "the-articles-code", "line by line")),
    Outcome("accept()", "EAGAIN", "the accept queue is empty", "wait for the next event; edge: the loop is done",
            see(5, "blockingioerror-ends-a-drain", "drain")),
    Outcome("accept()", "EMFILE", "no descriptor left (`ENFILE`: the system's); the client stays queued",
            "level: stop watching the listener a moment; edge: free a spare fd, accept, close",
            see(5, "out-of-file-descriptors", "EMFILE")),
    Outcome("accept()", "ECONNABORTED", "a client gave up while it was queued", "accept again",
            see(2, "exercise-22-a-blocking-server-no-client-can-stop", "ex. 2.2")),
    Outcome("recv(n)", "b'...'", "1 to n bytes: what has arrived, not a message", "append; look for the end",
            see(1, "a-request-in-pieces", "pieces")),
    Outcome("recv(n)", "b''", "the peer's FIN: nothing more, ever; it may still read",
            "stop reading; answer a whole request, then close", see(6, "the-truth-table", "truth table")),
    Outcome("recv(n)", "EAGAIN", "nothing to read now", "wait for the next event; edge: the drain is done",
            see(5, "blockingioerror-ends-a-drain", "drain")),
    Outcome("recv(n)", "ECONNRESET", "a reset; raised once, then `b''`", "close",
            see(4, "a-reset-kills-it", "a reset")),
    Outcome("recv(n)", "ETIMEDOUT", "keepalive probes went unanswered", "close",
            see(6, "a-peer-that-is-simply-gone", "gone")),
    Outcome("send(data)", "n", "the bytes the send buffer took: maybe fewer than given", "keep the rest",
            see(1, "send-takes-what-fits", "what fits")),
    Outcome("send(data)", "EAGAIN", "the send buffer is full", "ask for `EPOLLOUT`; go on reading meanwhile",
            see(4, "exercise-41-ask-for-epollout-only-while-there-is-something-to-write", "ex. 4.1")),
    Outcome("send(data)", "EPIPE", "the peer closed and reset, or we shut our writing side; no `SIGPIPE` in Python",
            "close", see(6, "the-truth-table", "truth table")),
    Outcome("send(data)", "ECONNRESET", "a reset", "close", see(6, "the-truth-table", "truth table")),
    Outcome("shutdown(how)", "ENOTCONN", "a reset came first: the connection is gone", "close",
            see(4, "100-clients-at-once", "100 clients")),
    Outcome("connect_ex(address)", "EINPROGRESS", "the SYN is out", "wait for `EPOLLOUT`, then read `SO_ERROR`",
            see(7, "exercise-71-predict-then-measure", "ex. 7.1")),
    Outcome("connect_ex(address)", "ECONNREFUSED", "nobody listens; a full backlog never refuses (the SYN is dropped)",
            "give up, or try later", see(7, "a-dropped-syn-no-connection-no-refusal-a-wait", "dropped SYN")),
    Outcome("bind(address)", "EADDRINUSE", "old connections in `TIME_WAIT`, or a listener, hold the port",
            "`SO_REUSEADDR` (or a `SO_REUSEPORT` group)", see(1, "the-closed-connection-lingers", "TIME_WAIT")),
    Outcome("epoll.register(fd, mask)", "EEXIST", "already registered, perhaps a disarmed one-shot", "`modify()`",
            see(5, "epolloneshot-disarmed-not-removed", "disarmed")),
    Outcome("epoll.poll(timeout)", "EINTR", "a signal: Python retries by itself (PEP 475) unless its handler raises",
            "nothing; Ctrl-C raises `KeyboardInterrupt`", see("errata", "epollpoll1-waking-every-second-for-nothing",
                                                                "poll(1)")),
    Outcome("select.select(r, w, x)", "ValueError", "a descriptor numbered 1024 or more (`FD_SETSIZE`)",
            "use `epoll` (or `poll`)", see(10, "select-stops-at-descriptor-number-1024", "1024")),
)
"""What a call on a non-blocking socket (or epoll) gives, in the order the cheat sheet lists them."""


def outcomes_table():
    """The outcomes as a Markdown table, each error shown as the exception Python raises for its errno."""
    return _markdown_table(["call", "gives", "means", "do", "shown in"], [outcome.cells() for outcome in OUTCOMES])


# -- the hang-up truth table, short --------------------------------------------------------------------------


ADVICE = {
    "close": ("the peer's FIN; it may still read: answer a whole request, then close",
              see(6, "the-truth-table", "truth table")),
    "shut_wr": ("the same FIN, from a client that waits for its answer: answer it",
                see(6, "exercise-62-answer-a-client-that-has-finished-sending", "ex. 6.2")),
    "close unread": ("its kernel reset the connection: close", see(6, "the-truth-table", "truth table")),
    "reset": ("the error is read once, by whichever call comes first: close",
              see(6, "the-truth-table", "truth table")),
    "stopped": ("nothing ever comes: only a deadline of yours (or keepalive) finds it",
                see(6, "a-peer-that-is-simply-gone", "gone")),
    "server shut_rd": ("our own end of reading: `recv()` gives `b''`; rarely useful",
                       see(6, "the-truth-table", "truth table")),
    "server shut_wr": ("the lingering close: read until the client's FIN (with a deadline), then close",
                       see(6, "closing-with-unread-bytes-the-lingering-close", "lingering close")),
    "server shut_rdwr": ("`EPOLLHUP` at once, of our own making (example 3's): close",
                         see(6, "where-example-3s-epollhup-comes-from", "where from")),
}
"""For each ending of ``hangups.ENDINGS`` (by name): what to do when it shows, and where chapter 6 shows it."""


def hang_ups_table(table):
    """*table* (a measured ``hangups.TruthTable``) as a short Markdown table, with ``ADVICE`` for each row.

    Masks are shown without their ``EPOLL`` prefix. Raises ``KeyError`` for an
    ending ``ADVICE`` does not know.
    """
    rows = []
    for row in table:
        advice, where = ADVICE[row.ending.name]
        rows.append([row.ending.call, f"`{mask_names(row.mask)}`", f"`{mask_names(row.events['0'])}`",
                     " then ".join(f"`{each}`" for each in row.recv), " then ".join(f"`{each}`" for each in row.send),
                     f"{advice} ({where})"])
    columns = ["ending", "events (`IN\\|RDHUP` registered)", "(`0` registered)", "`recv()`, twice", "`send()`, twice",
               "what to do"]
    return _markdown_table(columns, rows)
