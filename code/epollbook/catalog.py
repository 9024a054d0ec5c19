"""Every server the book can run, by name.

A server is a module that serves when it is run as a script and takes
``--host``, ``--port`` and ``--backlog`` (see ``examples/command_line.py``).
Its docstring's first line is its description in ``python -m epollbook list``.
"""

import importlib.util
import pathlib

SERVERS = {f"example{n}": f"epollbook.examples.example{n}" for n in range(1, 7)}
# The servers the chapters arrive at: examples 3 and 4 with every defect of the errata fixed,
# the thread-per-connection server of chapter 3, and chapter 11's fast one.
SERVERS.update({name: f"epollbook.servers.{name}" for name in ("threaded", "level", "edge", "fast")})
SERVERS["fast-keep-alive"] = "epollbook.servers.fast_keep_alive"  # chapter 11's second mode: fast, keeping connections
SERVERS["fast-reuseport"] = "epollbook.servers.reuseport"  # fast's loop in one process per core (SO_REUSEPORT)
# What chapter 11 measures the book's servers against (epollbook/contenders says what they leave out).
SERVERS.update({"selectors": "epollbook.contenders.selectors_server",
                "asyncio-protocol": "epollbook.contenders.asyncio_protocol",
                "asyncio-streams": "epollbook.contenders.asyncio_streams",
                "uvloop": "epollbook.contenders.uvloop_protocol",
                "uvloop-keep-alive": "epollbook.contenders.keep_alive"})


class UnknownServer(KeyError):
    def __str__(self):
        return f"there is no server called {self.args[0]!r}; the servers are: {', '.join(SERVERS)}"


def module_of(name):
    """Return the module name that runs server *name*; raise ``UnknownServer``."""
    try:
        return SERVERS[name]
    except KeyError:
        raise UnknownServer(name) from None


def source_path(name):
    """Return the path of server *name*'s source file."""
    return pathlib.Path(importlib.util.find_spec(module_of(name)).origin)


def description(name):
    """Return the first line of server *name*'s docstring, read without running it."""
    import ast

    docstring = ast.get_docstring(ast.parse(source_path(name).read_text())) or ""
    return docstring.split("\n", 1)[0]
