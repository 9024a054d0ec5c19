"""The book's diagrams: pictures of how sockets, TCP and epoll behave, drawn with matplotlib at build time.

    call_sequence()                      a server's and a client's socket calls, with the segments between them (ch. 1)
    call_sequence(**WRITE_WRITE_READ)    the same for a write, write, read stall: Nagle and delayed ACKs (ch. 9)
    record_interest()                    ``Watched`` sockets: an epoll's interest list from /proc, and what poll() said
    epoll_at_work(watched)               that drawn: the program, the kernel's lists, the sockets (ch. 4)
    wait_calls()                         what one wait of select, poll and epoll hands the kernel (ch. 10)
    record_triggers(arrivals, polls)     a ``TriggerRun``: what level- and edge-triggered epoll reported, poll by poll
    trigger_timelines(run)               that run drawn: bytes waiting, and the polls that reported them (ch. 5)
    record_connection()                  ``Moment`` s: a connection's TCP states and epoll's events, step by step
    connection_states(moments)           those moments drawn: both ends' states, the segments, the events (ch. 6)
    listen_queue(fill, retransmissions)  the SYN queue and the accept queue, with chapter 7's measured numbers

Each drawing function returns a ``matplotlib.figure.Figure``, as ``plots``
does (no pyplot, nothing left open, PNG in a notebook). What can be asked of
this machine's kernel is: ``record_interest``, ``record_triggers`` and
``record_connection`` run their experiment on sockets of this process, in
well under a second, and the pictures draw what they recorded rather than
what a textbook says; ``listen_queue`` draws chapter 7's measurement. What
happens too fast to catch on loopback (the states a connection passes through
for a few microseconds, SYN_SENT or LAST_ACK) is drawn in grey and said to be
the TCP state machine's, not a measurement.

The layouts are computed from the data (a row per step, a slot per place in
the queue): coordinates are in inches from the top left corner, so a
picture grows with what it shows, and text keeps its size at any length.
"""

import contextlib
import dataclasses
import os
import select
import shutil
import socket
import subprocess
import time

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from epollbook import clients, probes
from epollbook.plots import show_in_notebooks

WIDTH = 8.0
"""Inches: the book's column shows a picture about 700 px wide, so 8 inches at 100 dpi keep 9-point text legible."""

_COLOURS = {"client": "tab:blue", "server": "tab:green", "listener": "tab:purple", "hang-up": "tab:red",
            "idle": "0.55", "passing": "0.5"}


# -- shared drawing ------------------------------------------------------------------------------------------


def _canvas(height, width=WIDTH):
    """A figure of *width* x *height* inches whose one axes measures inches, y downwards from the top."""
    figure = Figure(figsize=(width, height))
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    axes.axis("off")
    return figure, axes


def _box(axes, x, y, width, height, text, colour, *, filled=False, size=9, weight="normal"):
    """A rounded box centred on (x, y) with *text* in it."""
    axes.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.02",
                                  facecolor=colour if filled else "white", edgecolor=colour, linewidth=1.2,
                                  alpha=0.25 if filled else 1.0))
    axes.text(x, y, text, ha="center", va="center", fontsize=size, weight=weight)


def _arrow(axes, start, end, colour="black", *, style="-|>", width=1.2, dashed=False):
    """An arrow from *start* to *end*; every arrow of a diagram is a ``FancyArrowPatch`` (tests count them)."""
    axes.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=12, color=colour, linewidth=width,
                                   linestyle="--" if dashed else "-", shrinkA=0, shrinkB=0))


def arrows_of(figure):
    """The arrows drawn in *figure* (``FancyArrowPatch`` es), in the order they were drawn."""
    return [patch for axes in figure.axes for patch in axes.patches if isinstance(patch, FancyArrowPatch)]


def texts_of(figure):
    """Every piece of text in *figure*: labels, titles, tick labels, legends."""
    return [text.get_text() for text in figure.findobj(lambda artist: hasattr(artist, "get_text"))
            if text.get_text()]


# -- 1. the call sequence ------------------------------------------------------------------------------------

CALLS = (
    # (side, the call, the step it is made at, the step it returns at: later when it blocks)
    ("server", "socket()", 0, 0),
    ("server", "bind(address)", 1, 1),
    ("server", "listen(backlog)", 2, 2),
    ("server", "accept()", 3, 7),
    ("client", "socket()", 3, 3),
    ("client", "connect(address)", 4, 6),
    ("server", "recv()", 8, 10),
    ("client", "send(request)", 9, 9),
    ("client", "recv()", 10, 12),
    ("server", "send(answer)", 11, 11),
    ("server", "close()", 13, 13),
    ("client", "recv() → b''", 14, 14),
    ("client", "close()", 16, 16),
)
"""Example 1 and a client, call by call: the rows of ``call_sequence``'s picture."""

SEGMENTS = (
    # (who sends it, what it is, the step it leaves at; it arrives at the next step)
    ("client", "SYN", 4),
    ("server", "SYN-ACK (from the server's kernel)", 5),
    ("client", "ACK", 6),
    ("client", "GET / HTTP/1.1", 9),
    ("server", "HTTP/1.0 200 OK … Hello, world!", 11),
    ("server", "FIN", 13),
    ("client", "ACK", 14),
    ("client", "FIN", 16),
    ("server", "ACK", 17),
)
"""The TCP segments between them: the handshake, the request, the answer, and each side's FIN with its ACK."""

AFTERWARDS = {"server": "closed first: TIME_WAIT, then CLOSED", "client": "CLOSED"}
"""Where each side ends: the side that closes first keeps the connection in TIME_WAIT (chapter 1 shows it)."""

WRITE_WRITE_READ = {
    "calls": (("client", "send(head)", 0, 0), ("server", "recv()", 0, 1), ("client", "send(body)", 1, 1),
              ("client", "recv()", 2, 8), ("server", "recv()", 2, 6), ("server", "send(answer)", 7, 7)),
    "segments": (("client", "head", 0), ("server", "ACK, when the timer fires", 4), ("client", "body", 5),
                 ("server", "answer", 7)),
    "notes": (("client", "Nagle's algorithm:\nthe body waits for\nthe head's ACK", 1, 5),
              ("server", "delayed ACK:\nno answer to carry\nit yet, a timer runs", 1, 4)),
    "afterwards": {"client": "with TCP_NODELAY, the body\nwould leave at once"},
}
"""Chapter 9's stall, as ``call_sequence`` arguments: a client writes a request in two pieces, then reads."""


def call_sequence(*, calls=CALLS, segments=SEGMENTS, afterwards=AFTERWARDS, notes=(), width=WIDTH):
    """Draw a server's and a client's socket calls down two lifelines, with the segments between; a ``Figure``.

    *calls* are ``(side, call, step made, step returned)``: a call that
    blocks is a thick bar from the one step to the other. *segments* are
    ``(sender, label, step)`` arrows from one lifeline to the other, arriving
    a step later. *afterwards* says where each side ends. *notes* are
    ``(side, text, first step, last step)``: what that side's kernel does
    meanwhile, written between the lifelines beside a dashed bracket (keep
    their lines short: both sides' notes may share the middle). Steps are
    rows, time runs down. Raises ``ValueError`` for a side other than
    'server' or 'client'.
    """
    sides = {"server": width * 0.30, "client": width * 0.70}
    unknown = {side for side, *_ in (*calls, *segments, *notes)} - sides.keys()
    if unknown:
        raise ValueError(f"a call or segment on a side that is neither 'server' nor 'client': {sorted(unknown)}")
    step_height, top = 0.3, 0.75
    steps = 1 + max([returned for *_, returned in calls] + [step + 1 for *_, step in segments]
                    + [last for *_, last in notes])
    height = top + step_height * steps + 0.55
    figure, axes = _canvas(height, width)

    def y(step):
        return top + step_height * (step + 0.5)

    for side, x in sides.items():
        axes.text(x, 0.3, side, ha="center", va="center", fontsize=11, weight="bold", color=_COLOURS[side])
        axes.plot([x, x], [0.5, y(steps - 1) + 0.1], color="0.75", linewidth=1, zorder=0)
        axes.text(x, y(steps - 1) + 0.3, afterwards.get(side, ""), ha="center", va="center", fontsize=8,
                  color="0.35", style="italic")
    outward = {"server": -1, "client": 1}  # call names sit outside the lifelines, away from the arrows
    for side, call, made, returned in calls:
        x = sides[side]
        if returned > made:  # blocked: the process waits in the kernel from one step to the other
            axes.plot([x, x], [y(made), y(returned)], color=_COLOURS[side], linewidth=5, alpha=0.35,
                      solid_capstyle="butt", zorder=1)
            axes.text(x + outward[side] * 0.12, (y(made) + y(returned)) / 2, "blocks",
                      ha="right" if outward[side] < 0 else "left", va="center", fontsize=7.5, color="0.45",
                      style="italic")
        axes.plot([x], [y(made)], "o", color=_COLOURS[side], markersize=4, zorder=2)
        axes.text(x + outward[side] * 0.12, y(made), call, ha="right" if outward[side] < 0 else "left",
                  va="center", fontsize=9, family="monospace")
        if returned > made:
            axes.plot([x], [y(returned)], "o", color=_COLOURS[side], markersize=4, zorder=2,
                      markerfacecolor="white")
    for sender, label, step in segments:
        start, end = sides[sender], sides["client" if sender == "server" else "server"]
        _arrow(axes, (start, y(step)), (end, y(step + 1)), _COLOURS[sender])
        middle = ((start + end) / 2, (y(step) + y(step + 1)) / 2)
        axes.text(*middle, label, ha="center", va="bottom", fontsize=8,
                  bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
    for side, text, first, last in notes:
        x = sides[side] - outward[side] * 0.12  # inward, where the arrows are not while the kernel waits
        axes.plot([x, x], [y(first), y(last)], color="0.55", linewidth=1, linestyle=(0, (3, 2)))
        axes.text(x - outward[side] * 0.08, (y(first) + y(last)) / 2, text, ha="left" if outward[side] < 0 else "right",
                  va="center", fontsize=8, color="0.3", style="italic")
    axes.text(width / 2, height - 0.12, "time runs down; a thick bar: the call waits in the kernel; "
              "●: called, ○: returned", ha="center", va="bottom", fontsize=7.5, color="0.4")
    show_in_notebooks()
    return figure


# -- 2. an epoll instance at work, read from the kernel ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Watched:
    """One socket on an epoll instance's interest list: what it is, the mask asked for and held, what poll() said."""

    fd: int
    what: str        # 'listener, a client in its queue'
    asked: int       # the mask register() or modify() gave
    held: int        # the mask the kernel holds, from /proc/self/fdinfo: what was asked, plus EPOLLERR|EPOLLHUP
    ready: int       # the mask poll() returned for it; 0 if it was not ready


def record_interest(window=0.05):
    """Register sockets in five situations on one epoll, as example 3 registers them; read what the kernel holds.

    A listener with a client in its queue, a connection whose request has
    arrived, an idle one, one registered for ``EPOLLOUT`` (its answer to
    send), one whose client has closed: each situation is waited for (up to
    5 s) before anything is registered. Returns a list of ``Watched``: the
    interest list as ``/proc/self/fdinfo`` shows it, and what one
    ``poll(window)`` returned, in the order registered. Closes everything.
    """
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        address = listener.getsockname()
        ends = []
        for _ in range(4):
            client = stack.enter_context(socket.create_connection(address))
            ends.append((client, stack.enter_context(listener.accept()[0])))
        stack.enter_context(socket.create_connection(address))  # left in the accept queue
        (requesting, request_end), (_, idle), (_, answering), (closing, closed) = ends
        requesting.sendall(b"GET / HTTP/1.0\r\n\r\n")
        closing.close()
        situations = [(listener, "listener, a client in its queue", select.EPOLLIN),
                      (request_end, "connection, a request arrived", select.EPOLLIN),
                      (idle, "connection, idle", select.EPOLLIN),
                      (answering, "connection, an answer to send", select.EPOLLOUT),
                      (closed, "connection, its client closed", select.EPOLLIN)]
        for sock in (listener, request_end, closed):  # loopback delivers at once, but a busy machine may lag
            clients.wait_readable(sock, 5.0)
        epoll = stack.enter_context(select.epoll())
        for sock, _, mask in situations:
            epoll.register(sock.fileno(), mask)
        held = {interest.fd: interest.events for interest in probes.epoll_interest_list(os.getpid(), epoll.fileno())}
        ready = dict(epoll.poll(window))
        return [Watched(sock.fileno(), what, mask, held.get(sock.fileno(), 0), ready.get(sock.fileno(), 0))
                for sock, what, mask in situations]


def _short(mask, asked=None):
    """A mask as names without the EPOLL prefix; what the kernel added to *asked* in brackets: 'IN (+ERR HUP)'."""
    added = 0 if asked is None else mask & ~asked
    text = probes.epoll_event_names(mask & ~added).replace("EPOLL", "")
    if added:
        text += " (+" + probes.epoll_event_names(added).replace("EPOLL", "").replace("|", " ") + ")"
    return text


def epoll_at_work(watched=None, *, width=WIDTH):
    """Draw an epoll instance's interest list and what ``poll()`` returned (``record_interest()``, run now by
    default); return the ``Figure``.

    The program on the left registers sockets and polls; the kernel's
    interest list in the middle, with the events it adds by itself; the
    sockets on the right, an arrow from each one that was ready to its entry
    in what ``poll()`` returned. Raises ``ValueError`` if nothing is watched.
    """
    watched = record_interest() if watched is None else list(watched)
    if not watched:
        raise ValueError("there is nothing on the interest list to draw: give what record_interest() returned")
    ready = [each for each in watched if each.ready]
    row, top = 0.32, 0.85
    interest_top = top
    ready_top = interest_top + row * len(watched) + 0.75
    height = ready_top + row * max(len(ready), 1) + 0.55
    figure, axes = _canvas(height, width)
    program_x, kernel_x, sockets_x = 1.05, 3.55, 6.7
    axes.text(program_x, 0.3, "the program", ha="center", fontsize=9.5, weight="bold")
    axes.text(kernel_x, 0.3, "the kernel's epoll instance", ha="center", fontsize=9.5, weight="bold")
    axes.text(sockets_x, 0.3, "the sockets", ha="center", fontsize=9.5, weight="bold")
    axes.add_patch(FancyBboxPatch((kernel_x - 1.2, 0.5), 2.4, height - 0.9, boxstyle="round,pad=0.05",
                                  facecolor="0.97", edgecolor="0.8"))
    axes.text(kernel_x, interest_top - 0.12, "interest list (/proc/self/fdinfo)", ha="center", va="bottom",
              fontsize=8.5, style="italic")
    axes.text(kernel_x, ready_top - 0.12, "ready: what poll() returned", ha="center", va="bottom", fontsize=8.5,
              style="italic")
    entry = {}
    for number, each in enumerate(watched):
        y = interest_top + row * (number + 0.5)
        _box(axes, kernel_x, y, 2.1, row * 0.78, f"fd {each.fd}  {_short(each.held, each.asked)}", "0.45",
             size=8)
        colour = _COLOURS["listener"] if number == 0 else _COLOURS["client"]
        _box(axes, sockets_x, y, 2.5, row * 0.78, f"fd {each.fd}: {each.what}", colour, size=8,
             filled=bool(each.ready))
        entry[each.fd] = y
    for number, each in enumerate(ready):
        y = ready_top + row * (number + 0.5)
        _box(axes, kernel_x, y, 2.1, row * 0.78, f"fd {each.fd}  {_short(each.ready)}", _COLOURS["hang-up"]
             if each.ready & (select.EPOLLHUP | select.EPOLLERR | select.EPOLLRDHUP) else "tab:blue", size=8)
        _arrow(axes, (sockets_x - 1.28, entry[each.fd]), (kernel_x + 1.08, y), "0.45", width=0.8)
    if not ready:
        axes.text(kernel_x, ready_top + row / 2, "nothing ready", ha="center", va="center", fontsize=8, color="0.5")
    register_y = interest_top + row * len(watched) / 2
    poll_y = ready_top + row * max(len(ready), 1) / 2
    _box(axes, program_x, register_y, 1.9, 0.42, "epoll.register(fd, mask)\nmodify(), unregister()",
         _COLOURS["server"], size=7.5)
    _arrow(axes, (program_x + 0.97, register_y), (kernel_x - 1.08, register_y), _COLOURS["server"])
    _box(axes, program_x, poll_y, 1.9, 0.42, "events = epoll.poll()\nonly the ready ones", _COLOURS["server"],
         size=7.5)
    _arrow(axes, (kernel_x - 1.08, poll_y), (program_x + 0.97, poll_y), _COLOURS["server"])
    axes.text(width / 2, height - 0.12, "recorded live; (+ERR HUP): events the kernel adds to every "
              "registration; a filled socket: ready", ha="center", va="bottom", fontsize=7, color="0.4")
    show_in_notebooks()
    return figure


# -- 3. what one wait asks of the kernel: select, poll, epoll ------------------------------------------------

WAITS = (
    # (the call, what the program hands the kernel, what the kernel does, what comes back, kept in the kernel)
    ("select(rlist, wlist, xlist)", "every call: the whole list,\nas bitmaps up to the highest fd",
     "asks every socket\n\"are you ready?\"", "the bitmaps back, ready ones marked", False),
    ("poll.poll()", "every call: the whole list,\nan entry per descriptor",
     "asks every socket\n\"are you ready?\"", "the whole list, ready ones marked", False),
    ("epoll.poll()", "nothing but room for the answer:\nthe list lives in the kernel,\nchanged by epoll_ctl()",
     "each socket puts\nitself on a ready\nlist as it becomes\nready", "only the ready ones", True),
)
"""The three ways of waiting chapter 10 measures, as rows of ``wait_calls``'s picture."""


def wait_calls(descriptors=12, ready=(7,), *, waits=WAITS, width=WIDTH):
    """Draw what one wait of select, poll and epoll hands the kernel and gets back; return the ``Figure``.

    A row per entry of *waits* (``WAITS``): the call, what crosses into the
    kernel, *descriptors* sockets as squares (those numbered in *ready*
    filled), what the kernel looks at (every square, or only the ready
    ones) and what comes back. Raises ``ValueError`` if a ready number is
    not one of the descriptors.
    """
    if not set(ready) <= set(range(descriptors)):
        raise ValueError(f"ready descriptors {sorted(ready)} must be among 0..{descriptors - 1}")
    row, top = 1.05, 0.55
    height = top + row * len(waits) + 0.35
    figure, axes = _canvas(height, width)
    program_x, kernel_left, square = 0.1, 3.55, 0.22
    axes.text(program_x, 0.3, "one wait, from the program", ha="left", fontsize=9.5, weight="bold")
    axes.text(kernel_left, 0.3, "into the kernel, and back", ha="left", fontsize=9.5, weight="bold")
    for number, (call, handed, work, back, kept) in enumerate(waits):
        middle = top + row * (number + 0.5)
        if number:
            axes.plot([0.1, width - 0.1], [middle - row / 2] * 2, color="0.85", linewidth=0.8)
        axes.text(program_x, middle - 0.22, call, ha="left", va="center", fontsize=9.5, family="monospace",
                  weight="bold")
        axes.text(program_x, middle + 0.12, handed, ha="left", va="center", fontsize=8, color="0.25")
        colour = "tab:blue" if kept else "tab:red"
        _arrow(axes, (2.45, middle - 0.12), (kernel_left - 0.05, middle - 0.12), colour,
               width=0.8 if kept else 2.5)
        for place in range(descriptors):
            x = kernel_left + place * (square + 0.04)
            is_ready = place in ready
            axes.add_patch(FancyBboxPatch((x, middle - 0.22), square, square, boxstyle="square,pad=0",
                                          facecolor=colour if is_ready else "white", edgecolor="0.4",
                                          alpha=0.8 if is_ready else 1.0, gid="ready" if is_ready else "idle"))
            if not kept or is_ready:  # what the kernel looks at during this wait
                axes.text(x + square / 2, middle - 0.27, "?", ha="center", va="bottom", fontsize=7, color=colour)
        right = kernel_left + descriptors * (square + 0.04)
        axes.text(right + 0.1, middle - 0.11, work, ha="left", va="center", fontsize=7.5, color="0.25")
        _arrow(axes, (kernel_left - 0.05, middle + 0.22), (2.45, middle + 0.22), colour, width=0.8 if kept else 2.5)
        axes.text(kernel_left, middle + 0.22, back, ha="left", va="center", fontsize=8, color=colour)
    show_in_notebooks()
    return figure


# -- 4. level- against edge-triggered, recorded --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Reader:
    """What one reader saw over a ``TriggerRun``: at each poll, the bytes waiting and whether poll() reported them."""

    name: str            # 'level-triggered, one recv() per report'
    edge: bool           # registered with EPOLLET
    drains: bool         # reads until BlockingIOError when told, rather than one recv()
    waiting: tuple       # bytes unread in the socket when each poll() was called
    reported: tuple      # whether that poll() returned the socket (True/False, one per poll)


@dataclasses.dataclass(frozen=True)
class TriggerRun:
    """Bytes sent in bursts to three readers at once, and what each reader's epoll said at each poll."""

    arrivals: dict       # {poll number: bytes sent just before it}
    chunk: int           # what one recv() asks for
    readers: tuple       # ``Reader`` s

    @property
    def polls(self):
        return len(self.readers[0].waiting)


READERS = (("level-triggered, one recv() per report", False, False),
           ("edge-triggered (EPOLLET), one recv() per report", True, False),
           ("edge-triggered (EPOLLET), recv() until BlockingIOError", True, True))
"""The readers ``record_triggers`` runs side by side: (name, edge-triggered, drains)."""


def record_triggers(arrivals=None, polls=10, chunk=100):
    """Send the same bursts to three readers and record, at each of *polls* polls, what their epoll reported.

    *arrivals* is ``{poll number: bytes}`` (default: 300 bytes before poll 1,
    100 before poll 6), sent just before that poll. Each reader is one end of
    a ``socket.socketpair()``, registered for ``EPOLLIN`` in an epoll of its
    own (``READERS`` says how: with ``EPOLLET`` or not, one ``recv(chunk)`` per
    report or every byte); each ``poll(0)`` asks the kernel once, without
    waiting. Returns a ``TriggerRun``; every socket is closed. Raises
    ``ValueError`` for an arrival outside the polls or of no bytes.
    """
    arrivals = {1: 3 * chunk, 6: chunk} if arrivals is None else dict(arrivals)
    wrong = {poll: size for poll, size in arrivals.items() if not 0 <= poll < polls or size <= 0}
    if wrong:
        raise ValueError(f"arrivals must be a positive number of bytes before one of polls 0..{polls - 1}: {wrong}")
    readers = []
    for name, edge, drains in READERS:
        waiting, reported = [], []
        sender, receiver = socket.socketpair()
        with sender, receiver, select.epoll() as epoll:
            receiver.setblocking(False)
            epoll.register(receiver.fileno(), select.EPOLLIN | (select.EPOLLET if edge else 0))
            unread = 0
            for poll in range(polls):
                if poll in arrivals:
                    sender.sendall(b"x" * arrivals[poll])
                    unread += arrivals[poll]
                waiting.append(unread)
                told = bool(epoll.poll(0))
                reported.append(told)
                while told:
                    try:
                        unread -= len(receiver.recv(chunk))
                    except BlockingIOError:  # the socket is empty: the end of a drain
                        break
                    told = drains
        readers.append(Reader(name, edge, drains, tuple(waiting), tuple(reported)))
    return TriggerRun(arrivals, chunk, tuple(readers))


def trigger_timelines(run=None, *, width=WIDTH):
    """Draw a ``TriggerRun`` (default: ``record_triggers()``, run now): a panel per reader; return the ``Figure``.

    In each panel, a bar per poll: the bytes waiting when poll() was called;
    a dot above it where poll() reported the socket, a hollow ring where it
    reported nothing though bytes were waiting (an edge-triggered reader's
    stranded bytes); "+N" beside a bar: N bytes arrived just before that poll.
    """
    run = record_triggers() if run is None else run
    figure = Figure(figsize=(width, 1.25 * len(run.readers) + 0.9), layout="constrained")
    panels = figure.subplots(len(run.readers), 1, sharex=True)
    most = max(max(reader.waiting) for reader in run.readers)
    polls = range(run.polls)
    for axes, reader in zip(panels, run.readers, strict=True):
        colour = "tab:orange" if reader.edge else "tab:blue"
        axes.bar(polls, reader.waiting, width=0.6, color=colour, alpha=0.3)
        told = [poll for poll in polls if reader.reported[poll]]
        stranded = [poll for poll in polls if not reader.reported[poll] and reader.waiting[poll]]
        axes.plot(told, [most * 1.25] * len(told), "o", color=colour, markersize=8,
                  label="poll() reported the socket")
        axes.plot(stranded, [most * 1.25] * len(stranded), "o", color="tab:red", markersize=8,
                  markerfacecolor="none", label="bytes waiting, poll() reported nothing")
        for poll, size in run.arrivals.items():
            axes.text(poll - 0.42, most * 1.02, f"+{size}", fontsize=7.5, color="0.3", va="bottom", ha="right")
        axes.set_ylim(0, most * 1.5)
        axes.set_yticks([0, most])
        axes.set_ylabel("bytes\nwaiting", fontsize=8)
        axes.set_title(reader.name, fontsize=9, loc="left")
        axes.spines[["top", "right"]].set_visible(False)
        last_arrival = max(run.arrivals, default=-1)
        if reader.waiting[-1] and not any(reader.reported[poll] for poll in polls if poll > last_arrival):
            axes.set_title(f"{reader.waiting[-1]} bytes left, never reported again", fontsize=9, loc="right",
                           color="tab:red")
    panels[-1].set_xticks(list(polls))
    panels[-1].set_xlabel(f"poll() number (the +N over a poll: bytes sent just before it; one recv() asks for "
                          f"{run.chunk})", fontsize=8.5)
    handles, labels = [], []
    for axes in panels:
        for handle, label in zip(*axes.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    figure.legend(handles, labels, loc="outside upper right", ncols=2, fontsize=8, frameon=False)
    show_in_notebooks()
    return figure


# -- 5. a connection's life, recorded ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Moment:
    """One step of a connection's life: what was done, the segments it sent, both ends' states, epoll's answer."""

    action: str          # what the program did: 'client: connect()'
    segments: tuple      # the segments that sends, in order: (('client', 'SYN'), ('server', 'SYN-ACK'), ...)
    client: str          # the client end's TCP state afterwards (``_state``); 'gone' once no socket holds it
    server: str          # the server end's: the listener's, or the accepted connection's
    watched: str         # what the server's epoll watched: 'listener' or 'connection'
    events: int          # the mask epoll.poll() returned for it; 0 for nothing within the window
    passing: tuple = ("", "")  # states each end passes through on the way, too brief to catch (the state machine's)
    skipped: str = ""    # the end, 'client' or 'server', that closed into a full TIME_WAIT table and so skipped it

    @property
    def names(self):
        return probes.epoll_event_names(self.events) if self.events else "nothing"


PASSING = ("SYN_SENT", "SYN_RECV", "FIN_WAIT1", "CLOSING", "LAST_ACK")
"""States that last until the other side's ACK comes: on loopback microseconds, or a delayed ACK's few ms."""


_SS_NAMES = {"ESTAB": "ESTABLISHED", "FIN-WAIT-1": "FIN_WAIT1", "FIN-WAIT-2": "FIN_WAIT2", "UNCONN": "CLOSE"}


def _listed_state(local, remote):
    """The state the kernel's table lists for the connection end *local* -> *remote*; None if it lists none.

    Asked of ``ss`` (one netlink query, filtered in the kernel) where it
    runs; else read from ``/proc/net/tcp``, which on a machine that has just
    run a load test holds tens of thousands of lines and takes a while.
    """
    if shutil.which("ss"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            finished = subprocess.run(["ss", "-tan", f"( sport = :{local[1]} and dport = :{remote[1]} )"],
                                      capture_output=True, text=True, timeout=10)
            if finished.returncode == 0:
                for fields in (line.split() for line in finished.stdout.splitlines()[1:]):
                    if fields[3:5] == [f"{local[0]}:{local[1]}", f"{remote[0]}:{remote[1]}"]:
                        return _SS_NAMES.get(fields[0], fields[0].replace("-", "_"))
                return None
    for found in probes.tcp_sockets(local[1]):
        if (found.local, found.remote) == (local, remote):
            return found.state
    return None


def _state(local, remote, sock=None, *, settle=0.5):
    """The TCP state of the connection end *local* -> *remote*, held by *sock* (None: by no socket of ours).

    Our own socket's state is read with ``TCP_INFO``; where it says CLOSE, or
    there is no socket, the kernel's table is asked (``_listed_state``): it
    lists an end in TIME_WAIT, which no socket holds any more. An end it does
    not list is ``'CLOSED'`` while we hold its socket, ``'gone'`` once we
    closed it. A state of ``PASSING`` is read again until it has passed, or
    for *settle* seconds: what a step leads to, not the instant before the
    other side's ACK.
    """
    deadline = time.monotonic() + settle
    while True:
        state = None
        if sock is not None and sock.fileno() >= 0:
            state = probes.TCP_STATES.get(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0])
        if state in (None, "CLOSE"):
            state = _listed_state(local, remote) or ("CLOSED" if sock is not None and sock.fileno() >= 0 else "gone")
        if state == "CLOSE":
            state = "CLOSED"
        if state not in PASSING or time.monotonic() > deadline:
            return state
        time.sleep(0.002)


def _events(epoll, fd, window):
    """The events epoll reports for *fd* within *window* seconds: their mask, 0 if none came."""
    return sum(mask for ready, mask in epoll.poll(window) if ready == fd)


def record_connection(window=0.05):
    """Live a connection through on 127.0.0.1 and record each step: a list of ``Moment`` s.

    The server's end is watched by one epoll, as a server watches it (the
    listener for ``EPOLLIN``, the connection for ``EPOLLIN|EPOLLRDHUP``); each
    step's events are what ``poll()`` returned within *window* seconds. The
    client sends a request and ends its side with ``shutdown(SHUT_WR)``; the
    server answers and ends its own; a second connection is reset. The states
    are read from the kernel after each step (``_state``). Everything is closed
    on return; it takes a few tenths of a second.
    """
    moments = []
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        listener.setblocking(False)
        address = listener.getsockname()
        epoll = stack.enter_context(select.epoll())
        epoll.register(listener.fileno(), select.EPOLLIN)

        def step(action, segments, watched, events, passing=("", ""), *, client=None, server=None, time_wait=None):
            """Record a moment of the connection from *mine* (the client's address), held by *client* and *server*.

            *time_wait* is (the end this step sends to TIME_WAIT, the kernel's
            count of closes that skipped it, read before the step): that end
            skipped it if it comes out CLOSED and the count rose.
            """
            states = {"client": _state(mine, address, client), "server": _state(address, mine, server)}
            skipped = ""
            if time_wait is not None:
                end, dropped = time_wait
                if states[end] == "CLOSED" and probes.time_wait_table().dropped > dropped:
                    skipped = end
            moments.append(Moment(action, segments, states["client"], states["server"], watched, events, passing,
                                  skipped))

        moments.append(Moment("server: listen()", (), "—", "LISTEN", "listener",
                              _events(epoll, listener.fileno(), window)))
        client = stack.enter_context(socket.create_connection(address))
        mine = client.getsockname()
        step("client: connect()", (("client", "SYN"), ("server", "SYN-ACK"), ("client", "ACK")), "listener",
             _events(epoll, listener.fileno(), window), ("SYN_SENT", "SYN_RECV"), client=client)

        server = stack.enter_context(listener.accept()[0])
        epoll.register(server.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
        ends = {"client": client, "server": server}
        step("server: accept(), register", (), "connection", _events(epoll, server.fileno(), window), **ends)

        client.sendall(b"GET / HTTP/1.0\r\n\r\n")
        events = _events(epoll, server.fileno(), window)
        server.recv(4096)  # read, so that what the next step shows comes from the FIN alone
        step("client: send(request)", (("client", "request"),), "connection", events, **ends)

        client.shutdown(socket.SHUT_WR)
        step("client: shutdown(SHUT_WR)", (("client", "FIN"), ("server", "ACK")), "connection",
             _events(epoll, server.fileno(), window), ("FIN_WAIT1", ""), **ends)

        time_wait = ("client", probes.time_wait_table().dropped)  # it goes there now, if the table has room
        server.sendall(b"HTTP/1.0 200 OK\r\n\r\nHello, world!")
        server.shutdown(socket.SHUT_WR)
        step("server: send(answer), shutdown(SHUT_WR)", (("server", "answer"), ("server", "FIN"), ("client", "ACK")),
             "connection", _events(epoll, server.fileno(), window), ("", "LAST_ACK"), time_wait=time_wait, **ends)

        epoll.unregister(server.fileno())
        other = socket.create_connection(address)
        mine = other.getsockname()
        _events(epoll, listener.fileno(), window)
        other_end = stack.enter_context(listener.accept()[0])
        epoll.register(other_end.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
        clients.reset(other)
        step("another client: close(), SO_LINGER 0", (("client", "RST"),), "connection",
             _events(epoll, other_end.fileno(), window), client=other, server=other_end)
    return moments


def _wrap(text, separator, width):
    """*text* in lines of at most *width* characters where it can, broken after each *separator* it needs to."""
    pieces = text.split(separator)
    lines = [pieces[0]]
    for piece in pieces[1:]:
        if len(lines[-1]) + len(separator) + len(piece) <= width:
            lines[-1] += separator + piece
        else:
            lines[-1] += separator.rstrip()
            lines.append(piece)
    return "\n".join(lines)


def _event_colour(moment):
    if moment.events & (select.EPOLLHUP | select.EPOLLERR | select.EPOLLRDHUP):
        return _COLOURS["hang-up"]
    if not moment.events:
        return _COLOURS["idle"]
    return _COLOURS["listener"] if moment.watched == "listener" else _COLOURS["client"]


def connection_states(moments=None, *, width=WIDTH):
    """Draw a connection's life (``record_connection()``'s ``Moment`` s, recorded now by default); a ``Figure``.

    A row per moment, time running down: what was done; the client's state;
    the segments sent, as arrows between the two ends; the server's state;
    and what the server's epoll reported. States passed through too fast to
    catch are written small and grey above the state they lead to. Raises
    ``ValueError`` if there are no moments.
    """
    moments = record_connection() if moments is None else list(moments)
    if not moments:
        raise ValueError("there is no moment to draw: give what record_connection() returned")
    columns = {"action": 0.05, "client": width * 0.36, "server": width * 0.64, "events": width * 0.735}
    heights = [0.5 + 0.2 * max(len(moment.segments) - 1, 0) for moment in moments]
    line = int((width - columns["events"] - 0.1) / 0.068)  # characters of 8-point monospace the events column holds
    top = 0.55
    height = top + sum(heights) + 0.35
    figure, axes = _canvas(height, width)
    headings = {"action": "what happens", "client": "client's end", "server": "server's end",
                "events": "server's epoll reports"}
    for column, heading in headings.items():
        axes.text(columns[column], 0.3, heading, ha="left" if column in ("action", "events") else "center",
                  va="center", fontsize=9.5, weight="bold")
    box_width, gap = 1.1, 0.08
    y = top
    for moment, row_height in zip(moments, heights, strict=True):
        middle = y + row_height / 2
        if moment.action.startswith("another"):  # a new connection: a line sets it apart
            axes.plot([0.05, width - 0.05], [y, y], color="0.8", linewidth=0.8, linestyle="--")
        axes.text(columns["action"], middle, _wrap(moment.action, ", ", 25), ha="left", va="center", fontsize=8,
                  family="monospace")
        for side, state, passing in (("client", moment.client, moment.passing[0]),
                                     ("server", moment.server, moment.passing[1])):
            _box(axes, columns[side], middle, box_width, 0.26, state, _COLOURS[side], size=8)
            if passing and passing != state:
                axes.text(columns[side], middle - 0.19, f"via {passing}", ha="center", va="bottom", fontsize=7,
                          color=_COLOURS["passing"], style="italic")
            if moment.skipped == side:
                axes.text(columns[side], middle + 0.17, "no TIME_WAIT: the kernel's\ntable of them was full",
                          ha="center", va="top", fontsize=6.5, color=_COLOURS["passing"], style="italic")
        left, right = columns["client"] + box_width / 2 + gap, columns["server"] - box_width / 2 - gap
        count = len(moment.segments)
        for number, (sender, label) in enumerate(moment.segments):
            level = middle + (number - (count - 1) / 2) * 0.2
            start, end = (left, right) if sender == "client" else (right, left)
            _arrow(axes, (start, level), (end, level), _COLOURS[sender], width=1)
            axes.text((left + right) / 2, level - 0.015, label, ha="center", va="bottom", fontsize=7,
                      color=_COLOURS[sender])
        axes.text(columns["events"], middle, _wrap(f"{moment.watched}: {moment.names}", "|", line), ha="left",
                  va="center", fontsize=8, family="monospace", color=_event_colour(moment))
        y += row_height
    axes.text(width / 2, height - 0.12, "recorded live: states from the kernel after each step, events from "
              "epoll.poll(); grey 'via': passed through too fast to catch", ha="center", va="bottom",
              fontsize=7, color="0.4")
    show_in_notebooks()
    return figure


# -- 6. the listen queue -------------------------------------------------------------------------------------


def listen_queue(fill, retransmissions=(), *, width=WIDTH):
    """Draw the listen queues with chapter 7's measured numbers; return the ``Figure``.

    *fill* is ``backlog.fill_queue``'s ``Fill`` (or anything with its
    ``backlog``, ``clients``, ``completed``, ``syn_sent``, ``waiting`` and
    ``applied``): the clients that connected fill the accept queue's
    backlog + 1 places, the others wait in SYN_SENT. *retransmissions* are
    the moments (s) a dropped SYN is sent again (``backlog.syn_schedule()``),
    drawn on a time line below. Raises ``ValueError`` if *fill* counts no
    client.
    """
    if fill.clients <= 0:
        raise ValueError("there is no client to draw: give what backlog.fill_queue() returned")
    places = (fill.backlog if fill.applied is None else fill.applied) + 1
    row, top = 0.34, 0.55
    clients_height = row * fill.clients
    timeline = 1.0 if retransmissions else 0.0
    height = top + max(clients_height, 1.6) + 0.5 + timeline
    figure, axes = _canvas(height, width)
    client_x, syn_x, queue_x, program_x = 0.75, 3.1, 5.0, 7.2
    centre = top + max(clients_height, 1.6) / 2
    axes.text(0.1, 0.3, f"{fill.clients} clients: connect()", ha="left", fontsize=9.5, weight="bold")
    axes.text((syn_x + queue_x) / 2, 0.3, "the server's kernel", ha="center", fontsize=9.5, weight="bold")
    axes.text(program_x, 0.3, "the program", ha="center", fontsize=9.5, weight="bold")
    kernel = FancyBboxPatch((syn_x - 0.95, top - 0.05), queue_x - syn_x + 2.1, max(clients_height, 1.6) + 0.1,
                            boxstyle="round,pad=0.05", facecolor="0.97", edgecolor="0.8")
    axes.add_patch(kernel)
    _box(axes, syn_x, centre - 0.35, 1.55, 0.5, "SYN queue\nhalf-open, SYN_RECV", _COLOURS["passing"], size=8)
    axes.text(syn_x, centre + 0.05, "answers SYN-ACK", ha="center", va="top", fontsize=7.5, color="0.4")
    # The accept queue: a slot per place, filled by the connections measured waiting in it.
    slot = 0.26
    slots_top = centre - places * slot / 2
    for place in range(places):
        filled = place < fill.waiting
        axes.add_patch(FancyBboxPatch((queue_x - 0.35, slots_top + place * slot + 0.02), 0.7, slot - 0.04,
                                      boxstyle="square,pad=0", facecolor=_COLOURS["client"] if filled else "white",
                                      edgecolor=_COLOURS["client"], alpha=0.6 if filled else 1.0,
                                      gid="waiting" if filled else "free"))  # tests count the places by gid
    axes.text(queue_x, slots_top - 0.08, f"accept queue: listen({fill.backlog})\nholds {places} (backlog + 1)",
              ha="center", va="bottom", fontsize=8)
    axes.text(queue_x, slots_top + places * slot + 0.05, f"{fill.waiting} ESTABLISHED, waiting\n(Recv-Q, measured)",
              ha="center", va="top", fontsize=7.5, color=_COLOURS["client"])
    _arrow(axes, (syn_x + 0.8, centre - 0.35), (queue_x - 0.4, centre), "0.3")
    axes.text((syn_x + queue_x) / 2 + 0.1, centre - 0.28, "ACK", ha="center", fontsize=7.5, color="0.3")
    _arrow(axes, (queue_x + 0.4, centre), (program_x - 0.6, centre), "0.3", dashed=True)
    _box(axes, program_x, centre, 1.15, 0.42, "accept()\nnot called", _COLOURS["server"], size=8)
    for number in range(fill.clients):
        y = top + row * (number + 0.5) + (max(clients_height, 1.6) - clients_height) / 2
        connected = number < fill.completed
        colour = _COLOURS["client"] if connected else _COLOURS["hang-up"]
        _box(axes, client_x, y, 1.3, row * 0.75, "ESTABLISHED" if connected else "SYN_SENT", colour, size=7.5,
             filled=not connected)
        if connected:
            _arrow(axes, (client_x + 0.68, y), (syn_x - 0.8, centre - 0.35), colour, width=0.8)
        else:
            _arrow(axes, (client_x + 0.68, y), (syn_x - 0.95, y), colour, width=0.8)
            axes.text(syn_x - 0.9, y, "✕ SYN dropped (queue full)", ha="left", va="center", fontsize=7.5,
                      color=colour)
    if retransmissions:
        base = height - 0.55
        times = [0.0, *retransmissions]
        left, right = 1.4, width - 0.5
        scale = (right - left) / max(times)
        axes.plot([left, right], [base, base], color="0.6", linewidth=1)
        axes.text(left - 0.1, base, "a dropped\nclient's SYNs", ha="right", va="center", fontsize=8)
        for moment in times:
            x = left + moment * scale
            axes.plot([x], [base], "|", color=_COLOURS["hang-up"], markersize=12, markeredgewidth=2)
            axes.text(x, base + 0.1, f"{moment:g} s", ha="center", va="top", fontsize=7.5)
        axes.text(right, base - 0.12, "then connect() gives up: ETIMEDOUT", ha="right", va="bottom", fontsize=7.5,
                  color="0.35")
    show_in_notebooks()
    return figure
