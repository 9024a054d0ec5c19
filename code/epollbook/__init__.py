"""epollbook: the package behind the book "epoll, hands on".

One module per job, so that a notebook cell reads like a sentence:

- ``catalog``   — every server the book can run, by name: the article's six examples
                  (``examples``), the corrected servers (``servers``: level, edge,
                  threaded, and fast, the fastest the book builds, with its
                  keep-alive and one-process-per-core variants) and the yardsticks
                  they are measured against (``contenders``: selectors, asyncio, uvloop);
- ``launch``    — start a server in the background, talk to it, stop it for sure
                  (with ``output``, its bounded capture, and ``lifeline``, the pipe it dies by);
- ``clients``   — the only network layer: real tools (curl, ab, wrk), polite and rude
                  clients, and what a check needs to play the server;
- ``probes``    — what the kernel sees: where a process or thread waits, CPU time,
                  context switches, open fds, TCP sockets, the listen queue,
                  epoll interest lists with their event masks by name, a
                  connection's TCP_INFO, the kernel's counters and settings;
- ``show``      — the servers' source code, numbered, for the chapters;
- ``trace``     — a server's own epoll events, recorded without touching its code,
                  and ``plots``, which draws them (and the chapters' measurements);
- ``diagrams``  — the pictures the chapters open with, drawn at build time, most
                  from what this kernel reports (a connection's states and events,
                  level against edge triggering, an epoll instance at work);
- ``cheatsheet`` — the cheat sheet's tables, each row linked to the section that shows it;
- ``edges``, ``hangups`` — the experiments of chapters 5 and 6 (edge-triggered
                  epoll; how each way a connection ends shows at the server);
- ``backlog``, ``cork``, ``nagle`` — the experiments of chapters 7-9 (the listen
                  queue; TCP_CORK and data segments; Nagle's algorithm and delayed ACKs);
- ``scale``     — chapter 10: what one wait of select, poll and epoll costs as idle
                  connections grow, and what epoll costs instead (epoll_ctl);
- ``throughput``, ``bridge`` — chapters 11 and 12: system calls per request, the
                  steps from edge to fast (``servers.steps``), example 3 under load,
                  saved results (``saved/``); selectors and asyncio seen from the
                  kernel, and a small event loop in three steps (``tinyloop``);
- ``bench``     — the measurements that take a load generator and a while: short
                  in the chapters, full by ``make bench``, written with the machine's
                  description beside them;
- ``errata``    — the article's defects, each with the experiment that shows it;
- ``checks``    — the checks behind the exercises, one module per chapter;
- ``exercises`` — the chapters' exercises as their notebooks hold them;
- ``classroom`` — the teacher's tools: the student version and the autograder.

epoll is Linux-only; ``require_linux()`` says what to do elsewhere.
"""

import select
import sys

__version__ = "0.1.0"

NOT_LINUX_ADVICE = (
    "This book runs real servers on Linux's epoll and reads the kernel's /proc, "
    "which {platform} does not have. Run the notebooks on Linux: in a Linux virtual "
    "machine, in WSL 2 on Windows, or in a Linux container (for example "
    "`docker run -it -p 8888:8888 python:3.12 bash`, then clone the book there and "
    "run `make lab`). The built HTML book can be read anywhere."
)


class NotLinuxError(RuntimeError):
    """Raised where the book needs Linux (epoll, /proc) and the machine is not Linux."""


def require_linux():
    """Raise ``NotLinuxError`` with advice unless this machine has epoll and /proc."""
    if not sys.platform.startswith("linux") or not hasattr(select, "epoll"):
        raise NotLinuxError(NOT_LINUX_ADVICE.format(platform=sys.platform))
