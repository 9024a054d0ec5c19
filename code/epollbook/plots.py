"""The book's pictures, drawn with matplotlib from measurements.

    timeline(server.trace())      a server's epoll events over time, one row per connection
    growth(rows, x, columns)      how measurements grow with one of them, a panel each (chapter 3)
    backlog_sweep(rows)           ab's connect times and the dropped SYNs against the listen backlog (chapter 7)
    round_trips(*comparisons)     round trips of contenders measured side by side, log scale (chapter 9)
    wait_costs(rows)              one wait of select, poll and epoll as connections grow, log-log (chapter 10)
    throughput(rows)              requests/s and server CPU per request of servers under wrk (chapter 11)

Each function returns a ``matplotlib.figure.Figure``, built without pyplot:
no backend is chosen, no figure is left open in a global list however often a
cell runs, and ``figure.savefig("x.png")`` works anywhere (Agg draws it). In a
notebook the figure shows as the cell's result (PNG).
"""

import sys

from matplotlib.figure import Figure

from epollbook.probes import EPOLL_EVENTS

_HANG_UP = EPOLL_EVENTS["EPOLLHUP"] | EPOLL_EVENTS["EPOLLERR"] | EPOLL_EVENTS["EPOLLRDHUP"]
_IN, _OUT = EPOLL_EVENTS["EPOLLIN"], EPOLL_EVENTS["EPOLLOUT"]

# How each kind of mark looks: (label, marker, colour, size, offset from the row's line). The events of one
# connection often come within a fraction of a millisecond: each kind has a lane of its own, so none hides another.
_MARKS = {
    "accept": ("something to accept (EPOLLIN)", "D", "tab:purple", 36, -0.22),
    "read": ("something to read (EPOLLIN)", "o", "tab:blue", 30, -0.22),
    "write": ("room to write (EPOLLOUT)", "^", "tab:green", 36, 0.0),
    "hang-up": ("hang-up or error (EPOLLHUP, EPOLLERR, EPOLLRDHUP)", "X", "tab:red", 48, 0.22),
    "interest": ("register / modify / unregister", "|", "black", 60, 0.0),
}


def show_in_notebooks():
    """In an IPython kernel, have figures display as PNG when they are a cell's result (pyplot would do it)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython else None
    if shell is not None:
        from IPython.core.pylabtools import select_figure_formats

        select_figure_formats(shell, {"png"})


def _mark_of(event, listener):
    """Which mark an event gets on the timeline."""
    if event.kind != "poll":
        return "interest"
    if event.mask & _HANG_UP:
        return "hang-up"
    if event.fd == listener:
        return "accept"
    return "read" if event.mask & _IN else "write" if event.mask & _OUT else "interest"


def listener_of(events):
    """The fd of the listening socket in a trace: the one whose events are followed by the registration of a new fd.

    A server accepts when its listening socket is readable and registers what
    ``accept()`` returned, so each such event casts a vote; ties and traces
    without one go to the first fd registered. Returns None for no events.
    """
    votes = {}
    for index, event in enumerate(events):
        if event.kind == "poll" and event.mask & _IN:
            for later in events[index + 1:index + 16]:
                if later.kind == "poll" and later.fd == event.fd:
                    break
                if later.kind == "register" and later.fd != event.fd:
                    votes[event.fd] = votes.get(event.fd, 0) + 1
                    break
    first = next((event.fd for event in events if event.kind == "register"), None)
    return max(votes, key=lambda fd: (votes[fd], fd == first)) if votes else first


def connections_of(events, listener=None):
    """Split a trace into rows: ``[(label, [events])]``, the listening socket first, then one row per connection.

    The listening socket is *listener*, or else ``listener_of(events)``. A
    connection begins with the ``register`` of its fd and ends with its
    ``unregister``: fd numbers are reused, so one fd may be several connections
    one after another. An fd registered before the listening socket's first
    event (a server's own wake-up pipe, say) is not a connection: its row is
    labelled by its number alone.
    """
    if listener is None:
        listener = listener_of(events)
    rows = [(f"listening socket (fd {listener})", [])] if listener is not None else []
    current = {}  # fd -> index in rows of its connection now
    accepting, connections = listener is None, 0
    for event in events:
        if event.kind == "truncated":
            continue
        if event.fd == listener:
            rows[0][1].append(event)
            accepting = accepting or event.kind == "poll"
            continue
        if event.kind == "register" or event.fd not in current:
            current[event.fd] = len(rows)
            if accepting:
                connections += 1
                rows.append((f"connection {connections} (fd {event.fd})", []))
            else:
                rows.append((f"fd {event.fd}", []))
        rows[current[event.fd]][1].append(event)
        if event.kind == "unregister":
            del current[event.fd]
    return rows


def timeline(events, *, title=None, since=None, listener=None, width=9.0):
    """Draw a server's epoll events (``server.trace()``) over time; return the ``Figure``.

    One row per connection (``connections_of``; *listener* as there), the listening socket on
    top; each event a mark: accept, read, write, hang-up, and changes to the
    interest list. Time runs in milliseconds from *since* (a
    ``time.monotonic()`` value; default the first event). Raises ``ValueError``
    if *events* is empty.
    """
    events = [event for event in events if event.kind != "truncated"]
    if not events:
        raise ValueError("there are no events to draw: did the server see any client?")
    start = events[0].time if since is None else since
    if listener is None:
        listener = listener_of(events)
    rows = connections_of(events, listener)

    figure = Figure(figsize=(width, 1.2 + 0.42 * len(rows)), layout="constrained")
    axes = figure.add_subplot()
    shown = set()
    for row, (_, row_events) in enumerate(rows):
        if row_events:  # a thin line while the connection is known to epoll
            axes.plot([(row_events[0].time - start) * 1e3, (row_events[-1].time - start) * 1e3], [row, row],
                      color="0.8", linewidth=2, zorder=1)
        for mark, (legend, marker, colour, size, offset) in _MARKS.items():
            times = [(event.time - start) * 1e3 for event in row_events if _mark_of(event, listener) == mark]
            if times:
                axes.scatter(times, [row + offset] * len(times), marker=marker, color=colour, s=size, zorder=2,
                             label=None if mark in shown else legend, rasterized=len(times) > 1000)
                shown.add(mark)
    axes.set_yticks(range(len(rows)), [label for label, _ in rows])
    axes.set_ylim(len(rows) - 0.5, -0.5)  # the listening socket on top, connections downwards in order
    axes.set_xlabel("milliseconds" + ("" if since is None else " since the start"))
    axes.grid(axis="x", color="0.92")
    handles, labels = axes.get_legend_handles_labels()
    order = [legend for legend, *_ in _MARKS.values()]  # the same order in every picture
    ranked = sorted(zip(labels, handles, strict=True), key=lambda pair: order.index(pair[0]))
    axes.legend([handle for _, handle in ranked], [label for label, _ in ranked],
                loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    if title:
        axes.set_title(title)
    show_in_notebooks()
    return figure


def growth(rows, x, columns, *, limit=None, limit_label="limit", title=None, width=9.0):
    """Draw how each of *columns* grows with *x*, one small panel each, side by side; return the ``Figure``.

    *rows* are measurements as dicts (a table's rows, such as chapter 3's cost
    of a server as idle clients grow); *x* and each of *columns* are keys of
    them. *limit*, an *x* value, is drawn in every panel as a dashed line
    labelled *limit_label* (a server's cap, say). Raises ``ValueError`` if
    *rows* is empty or lacks one of the keys.
    """
    missing = [key for key in (x, *columns) if not rows or key not in rows[0]]
    if missing:
        raise ValueError(f"no rows to draw, or none with {missing}: give dicts with the keys {x!r} and {columns!r}")
    figure = Figure(figsize=(width, 2.6), layout="constrained")
    xs = [row[x] for row in rows]
    for number, column in enumerate(columns):
        axes = figure.add_subplot(1, len(columns), number + 1)
        axes.plot(xs, [row[column] for row in rows], marker="o", color="tab:blue")
        if limit is not None:
            axes.axvline(limit, color="tab:red", linestyle="--", linewidth=1, label=limit_label)
        axes.set_title(column, fontsize="medium")
        axes.set_xlabel(x)
        axes.set_ylim(bottom=0)
        axes.grid(color="0.92")
    if limit is not None:
        figure.axes[0].legend(loc="upper left", fontsize="small", frameon=False)
    if title:
        figure.suptitle(title)
    show_in_notebooks()
    return figure


def backlog_sweep(rows, *, title=None, width=9.0):
    """Draw ``bench.backlog_sweep``'s rows against the listen backlog (log scale); return the ``Figure``.

    Left: connect time, median, 99th percentile and maximum, in ms (a SYN
    dropped and sent again shows as 1000 ms and more). Right: per run, failed
    requests, connects that took a second or more, the most clients seen
    waiting for an answer to their SYN, and the rise of ``ListenOverflows``.
    One line style per server, one line per round: every point is a run, none
    an average (a median of two runs is a number neither measured). A run ab
    gave up is marked on the backlog axis; a dashed line marks the backlog
    whose queue (backlog + 1) holds all of ab's connections.
    *rows* are ``BacklogRow`` objects or their dicts (as read back from JSON).
    Raises ``ValueError`` if *rows* is empty.
    """
    import dataclasses

    rows = [row if isinstance(row, dict) else dataclasses.asdict(row) for row in rows]
    if not rows:
        raise ValueError("there are no rows to draw: run bench.backlog_sweep() first")

    def by_backlog(server, round_number, measure):
        """[(backlog, measure)] of one server's runs in one round, leaving out runs without a value."""
        return sorted((row["backlog"], value) for row in rows
                      if (row["server"], row.get("round", 1)) == (server, round_number)
                      and (value := measure(row)) is not None)

    styles = ["-", "--", ":", "-."]
    servers = list(dict.fromkeys(row["server"] for row in rows))
    figure = Figure(figsize=(width, 4.6 if len(servers) > 1 else 4.0), layout="constrained")
    latency_axes, count_axes = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    latency_lines = [("max", "tab:red"), ("p99", "tab:orange"), ("p50", "tab:blue")]
    count_lines = [("listen_overflows", "ListenOverflows rise", "tab:gray"),
                   ("most_waiting", "most waiting in SYN-SENT", "tab:purple"),
                   ("slow_connects", "connects of 1 s or more", "tab:red"), ("failed", "failed requests", "black")]
    rounds = sorted({row.get("round", 1) for row in rows})
    for number, server in enumerate(servers):
        style = styles[number % len(styles)]
        suffix = f" ({server})" if len(servers) > 1 else ""
        for round_number in rounds:
            first = round_number == rounds[0]  # one legend entry for all the rounds
            for key, colour in latency_lines:
                points = by_backlog(server, round_number, lambda row, key=key: row["connect_ms"][key])
                if points:
                    latency_axes.plot(*zip(*points, strict=True), style, marker="o", color=colour, alpha=0.8,
                                      label=f"connect {key}{suffix}" if first else None)
            for key, label, colour in count_lines:
                points = by_backlog(server, round_number, lambda row, key=key: row.get(key))
                if points:
                    count_axes.plot(*zip(*points, strict=True), style, marker="o", color=colour, alpha=0.8,
                                    label=label + suffix if first else None)
        gave_up = sorted({row["backlog"] for row in rows if row["server"] == server and row["gave_up"]})
        for axes in (latency_axes, count_axes):
            if gave_up:
                axes.plot(gave_up, [0] * len(gave_up), "x", color="tab:purple", markersize=10, clip_on=False,
                          label=f"ab gave up{suffix}" if axes is count_axes else None)
    latency_axes.set_yscale("symlog", linthresh=1)  # a few ms and a few seconds on one axis
    top = max(3000, 2 * max((row["connect_ms"]["max"] or 0 for row in rows), default=0))  # 1 s always in sight
    latency_axes.set_ylim(0, top)
    latency_axes.set_yticks([tick for tick in (0, 1, 10, 100, 1000, 10000, 100000) if tick <= top])
    latency_axes.yaxis.set_major_formatter("{x:g}")
    latency_axes.axhline(1000, color="tab:red", linestyle=":", linewidth=1)  # a SYN sent again after 1 s
    latency_axes.set_ylabel("connect time, ms")
    latency_axes.set_title("how long connecting took", fontsize="medium")
    count_axes.set_ylabel("per run")
    count_axes.set_ylim(bottom=0)
    count_axes.set_title("dropped and failed", fontsize="medium")
    backlogs = sorted({row["backlog"] for row in rows})
    full = {row["concurrency"] - 1 for row in rows if "concurrency" in row}  # backlog + 1 = every connection
    labels, last = [], None
    for backlog in backlogs:  # a label only where it has room: 99 and 128 are close on a log axis
        roomy = last is None or last == 0 or backlog / last >= 1.3
        labels.append(str(backlog) if roomy and backlog not in full else "")
        last = backlog if labels[-1] else last
    for axes in (latency_axes, count_axes):
        if 0 in backlogs:
            axes.set_xscale("symlog", base=2, linthresh=1)  # log, with room for listen(0)
        else:
            axes.set_xscale("log", base=2)
        axes.set_xticks(backlogs, labels, fontsize="small")
        axes.minorticks_off()
        for backlog in full:
            axes.axvline(backlog, color="0.5", linestyle="--", linewidth=1,
                         label=f"backlog + 1 = {backlog + 1} connections" if axes is count_axes else None)
        axes.set_xlabel("listen backlog")
        axes.grid(color="0.92")
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2, fontsize="x-small", frameon=False)
    if title:
        figure.suptitle(title)
    show_in_notebooks()
    return figure


def round_trips(*comparisons, title=None, width=9.0):
    """Draw the round trips of ``nagle.alternate`` comparisons, one row per contender, on a log scale; a ``Figure``.

    Each round is a dot, each contender's median a vertical bar, its first
    round (kept apart) a hollow circle. Contenders of several *comparisons*
    share one axis, top to bottom in the order given. Raises ``ValueError``
    if there is nothing to draw.
    """
    from matplotlib.ticker import FuncFormatter

    rows = [series for comparison in comparisons for series in comparison.series.values()]
    if not rows:
        raise ValueError("there are no round trips to draw: give the Comparison that nagle.alternate() returned")
    figure = Figure(figsize=(width, 0.45 * len(rows) + 1.0), layout="constrained")
    axes = figure.add_subplot()
    for number, series in enumerate(reversed(rows)):
        times = [t * 1e3 for t in series.times]
        axes.scatter(times, [number] * len(times), s=14, color="tab:blue", alpha=0.6,
                     label="a round" if number == 0 else None)
        axes.scatter([series.first * 1e3], [number], s=40, facecolors="none", edgecolors="tab:gray",
                     label="first round" if number == 0 else None)
        axes.plot([series.median * 1e3] * 2, [number - 0.3, number + 0.3], color="tab:red", linewidth=2,
                  label="median" if number == 0 else None)
    axes.set_yticks(range(len(rows)), [series.name for series in reversed(rows)])
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 0.1, 1, 10: not 10^-1
    axes.set_xlabel("round trip (ms, log scale)")
    axes.grid(axis="x", color="0.92")
    axes.legend(loc="lower right", fontsize="small", frameon=False)
    if title:
        figure.suptitle(title)
    show_in_notebooks()
    return figure


def wait_costs(rows, *, reference=None, title=None, width=9.0):
    """Draw ``scale.wait_costs``'s rows: µs of CPU per wait against idle connections, log-log; return the ``Figure``.

    One line per call; a call that refused a size (select, at a descriptor
    numbered 1024 or more) gets a cross on the bottom edge there. *reference*,
    a dict ``{call: {connections: µs per wait}}`` (``scale.TLPI`` converted),
    is drawn dashed in the same colours. *rows* are ``WaitRow`` objects or
    their dicts (as read back from JSON). Raises ``ValueError`` if *rows* is
    empty.
    """
    import dataclasses

    from matplotlib.ticker import FuncFormatter

    rows = [row if isinstance(row, dict) else dataclasses.asdict(row) for row in rows]
    if not rows:
        raise ValueError("there are no rows to draw: run scale.wait_costs() first")
    colours = {"select": "tab:red", "poll": "tab:orange", "epoll": "tab:blue"}
    figure = Figure(figsize=(width, 4.2), layout="constrained")
    axes = figure.add_subplot()
    calls = list(dict.fromkeys(row["call"] for row in rows))
    lowest = min(row["cpu_us"] for row in rows if row["cpu_us"] is not None)
    for call in calls:
        colour = colours.get(call)
        measured = sorted((row["connections"], row["cpu_us"]) for row in rows
                          if row["call"] == call and row["cpu_us"] is not None)
        if measured:
            axes.plot(*zip(*measured, strict=True), marker="o", color=colour, label=f"{call} (measured here)")
        refused = sorted(row["connections"] for row in rows if row["call"] == call and row["error"])
        if refused:
            axes.plot(refused, [lowest / 3] * len(refused), "x", color=colour, markersize=10,
                      label=f"{call} refused (descriptor number ≥ 1024)")
    for call, points in (reference or {}).items():
        shape = sorted(points.items())
        axes.plot(*zip(*shape, strict=True), linestyle="--", marker=".", color=colours.get(call), alpha=0.6,
                  label=f"{call} (TLPI, in C)")
    axes.set_xscale("log")
    axes.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:,g}")  # 10, 1,000: not 10^1
    axes.xaxis.set_major_formatter(plain)
    axes.yaxis.set_major_formatter(plain)
    axes.set_xlabel("idle connections watched (and one active)")
    axes.set_ylabel("µs of CPU per wait (log scale)")
    axes.grid(color="0.92", which="both")
    axes.legend(loc="upper left", fontsize="small", frameon=False)
    if title:
        axes.set_title(title)
    show_in_notebooks()
    return figure


def throughput(rows, *, title=None, width=9.0):
    """Draw ``bench.throughput``'s rows: requests/s and server CPU per request side by side; return the ``Figure``.

    One bar per server, at the median of its rounds, with each round as a dot;
    the servers in the order the rows name them. *rows* are ``ThroughputRow``
    objects or their dicts (as read back from JSON). Raises ``ValueError`` if
    *rows* is empty.
    """
    import dataclasses
    import statistics

    from matplotlib.ticker import FuncFormatter, MaxNLocator

    rows = [row if isinstance(row, dict) else dataclasses.asdict(row) for row in rows]
    if not rows:
        raise ValueError("there are no rows to draw: run bench.throughput() first")
    servers = list(dict.fromkeys(row["server"] for row in rows))
    figure = Figure(figsize=(width, 3.8), layout="constrained")
    panels = figure.subplots(1, 2)
    for axes, field, label in ((panels[0], "requests_per_second", "requests per second (wrk's)"),
                               (panels[1], "cpu_us_per_request", "server CPU per request, µs (/proc)")):
        for place, server in enumerate(servers):
            values = [row[field] for row in rows if row["server"] == server and row[field] is not None]
            if values:
                axes.barh(place, statistics.median(values), color="tab:blue", alpha=0.35)
                axes.plot(values, [place] * len(values), "o", color="tab:blue", markersize=4)
        axes.set_yticks(range(len(servers)), servers)
        axes.invert_yaxis()  # the first server on top, as in the table
        axes.set_xlabel(label)
        axes.grid(color="0.92", axis="x")
    panels[0].xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))  # 120,000: no run-ons
    panels[0].xaxis.set_major_locator(MaxNLocator(4))
    panels[1].tick_params(labelleft=False)
    if title:
        figure.suptitle(title)
    show_in_notebooks()
    return figure
