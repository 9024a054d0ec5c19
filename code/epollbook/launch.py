"""Start the book's servers in the background, and stop them for sure.

    from epollbook.launch import serve

    server = serve("example2")            # a free port on 127.0.0.1
    server.url                            # 'http://127.0.0.1:40123/'
    print(server.output)                  # what it has printed so far
    server.stop()

    with serve("example1") as server:     # stopped when the block ends
        ...

``serve`` returns once the server listens, which it learns from the line the
server prints (``Listening on http://...``), not from a test connection:
example 1 serves exactly one connection and a probe would spend it.

A server never outlives what started it. It runs in a process group of its own
and is stopped (SIGTERM, then SIGKILL) by ``stop()``, at the end of a ``with``
block, when the Python process exits normally (``atexit``), and, through a pipe
the server watches, when that process dies any other way, ``kill -9`` included
(``epollbook.lifeline`` explains how). In a notebook, re-running the cell that
started a server stops the one that cell started before, so a cell run twice
leaves one server, not two. What the server prints is read and bounded by
``epollbook.output``.
"""

import atexit
import contextlib
import os
import re
import signal
import subprocess
import sys

from epollbook import catalog
from epollbook.lifeline import Lifeline
from epollbook.output import Output
from epollbook.trace import TraceFile

ANNOUNCEMENT = re.compile(rb"http://(?P<host>[0-9.]+):(?P<port>\d+)/")

_running = {}          # pid -> Server, for atexit
_started_by_cell = {}  # (cell file, line, name) -> (execution count, [Server, ...])


class ServerDidNotStart(RuntimeError):
    """The server exited, or did not announce its address in time."""


class Server:
    """A server running in a background process.

    Attributes: ``name``, ``host``, ``port``, ``address`` (``(host, port)``),
    ``url``, ``pid``. ``output`` is what it printed (stdout and stderr, in order,
    the last megabyte of it); ``traceback`` the last traceback in it.
    Methods: ``wait_for_output(text)``, ``wait()``, ``interrupt()``, ``stop()``,
    ``trace()`` (its epoll events, when started with ``trace=True``);
    ``running`` and ``returncode`` say whether it still runs.
    """

    def __init__(self, name, argv, *, ready_timeout=10.0, trace_file=None):
        self.name = name
        self._trace_file = trace_file  # an epollbook.trace.TraceFile when started with trace=True
        self.host = self.port = None
        self._lifeline = Lifeline()
        self._process = self._lifeline.popen(
            argv,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a group of its own: Ctrl-C in a terminal or a kernel interrupt leaves it alone
        )
        self.pid = self._process.pid
        _running[self.pid] = self
        self._output = Output(self._process.stdout, name=name, on_line=self._notice_announcement)
        try:
            self._wait_until_listening(ready_timeout)
        except BaseException:
            self.stop()
            raise

    # -- what it prints -------------------------------------------------

    def _notice_announcement(self, line):
        # Called by the output's reader for each line: the first announcement says where it listens.
        if self.port is None and (match := ANNOUNCEMENT.search(line)):
            self.host, self.port = match["host"].decode(), int(match["port"])

    @property
    def output(self):
        """Everything the server has printed so far, as text."""
        return self._output.text

    @property
    def traceback(self):
        """The last traceback the server printed (from its 'Traceback' line on), or '' if none."""
        output = self.output
        start = output.rfind("Traceback (most recent call last)")
        return output[start:] if start >= 0 else ""

    def wait_for_output(self, text, timeout=5.0):
        """Wait until the server has printed *text*; return all its output.

        Raises ``TimeoutError`` saying what it printed instead.
        """
        if self._output.wait_for(text, timeout):
            return self.output
        if self._output.closed:  # it stopped printing: it has exited
            raise TimeoutError(f"{self.name} exited (status {self._process.wait()}) without printing {text!r}; "
                               f"it printed:\n{self.output}")
        raise TimeoutError(f"{self.name} did not print {text!r} within {timeout:g} s; it printed:\n{self.output}")

    def _wait_until_listening(self, timeout):
        self._output.wait_until(lambda: self.port is not None, timeout)  # ends early if the server exits
        if self.port is None:
            state = "exited" if self._output.closed else f"did not say it listens within {timeout:g} s"
            raise ServerDidNotStart(f"{self.name} {state}; it printed:\n{self.output or '(nothing)'}")

    # -- where it listens -------------------------------------------------

    @property
    def address(self):
        return (self.host, self.port)

    @property
    def url(self):
        return f"http://{self.host}:{self.port}/"

    # -- its life -------------------------------------------------------

    @property
    def running(self):
        """True while the server process has not exited."""
        return self._process.poll() is None

    @property
    def returncode(self):
        """The exit status once it exited (negative: killed by that signal), else None."""
        return self._process.poll()

    def wait(self, timeout=5.0):
        """Wait for the server to exit by itself; return its exit status.

        Raises ``TimeoutError`` if it is still running after *timeout* seconds.
        """
        try:
            code = self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self.name} (pid {self.pid}) was still running after {timeout:g} s") from None
        self._finish()
        return code

    def interrupt(self, timeout=5.0):
        """Press Ctrl-C: send SIGINT, as a terminal would; return the exit status.

        The server's ``finally`` clauses run and its traceback lands in ``output``.
        """
        self._signal(signal.SIGINT)
        try:
            return self.wait(timeout)
        finally:
            self.stop()

    def stop(self, grace=1.0):
        """Stop the server and everything it started; safe to call more than once.

        Returns the exit status (negative: the signal that ended it).
        """
        if self._process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self._process.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._process.wait()
        self._finish()
        return self._process.returncode

    def _signal(self, signum):
        # Signal the whole group: whatever the server started goes with it. Only
        # while the process is unreaped, so its pid (the group's id) is still ours.
        if self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signum)

    def _finish(self):
        """Forget a server that has exited: cut its lifeline, wait for its last output."""
        _running.pop(self.pid, None)
        self._lifeline.cut()
        self._output.wait_closed(2.0)
        if self._trace_file is not None:
            self._trace_file.close()

    # -- its epoll events (serve(name, trace=True); epollbook.trace says how) ------

    def trace(self):
        """The epoll events the server has seen so far: a list of ``epollbook.trace.Event``.

        Raises ``RuntimeError`` if it was not started with ``serve(name, trace=True)``.
        """
        if self._trace_file is None:
            raise RuntimeError(f"{self.name} was started without trace=True, so its events were not recorded")
        return self._trace_file.events()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def __repr__(self):
        state = "running" if self.running else f"exited with status {self.returncode}"
        where = f" at {self.url}" if self.port is not None else ""
        return f"<Server {self.name}{where}, pid {self.pid}, {state}>"


def serve(name, *, host="127.0.0.1", port=0, backlog=None, options=(), ready_timeout=10.0, trace=False):
    """Start server *name* (see ``python -m epollbook list``) in the background.

    Returns a running ``Server`` once it listens on *host*:*port* (port 0: a free
    port). *backlog* defaults to the server's own (1 for the article's examples).
    *options* go to the server's command line as they are: the corrected servers
    take some, e.g. ``serve("threaded", options=["--max-threads", 8])`` (see
    ``python -m epollbook.servers.threaded --help``).
    With *trace*, every epoll event the server sees is recorded: ``server.trace()``.
    Raises ``ServerDidNotStart`` with what the server printed if it fails to.
    """
    catalog.module_of(name)  # an unknown name fails here, with the list of known ones
    trace_file = TraceFile() if trace else None
    runner = trace_file.command() if trace else ["-m", "epollbook", "serve"]
    argv = [sys.executable, *runner, name, "--host", host, "--port", str(port)]
    if backlog is not None:
        argv += ["--backlog", str(backlog)]
    argv += [str(option) for option in options]
    cell = _calling_cell(name)
    if cell is not None:
        _stop_previous_run(*cell)
    server = Server(name, argv, ready_timeout=ready_timeout, trace_file=trace_file)
    if cell is not None:
        _started_by_cell[cell[0]][1].append(server)
    return server


def running_servers():
    """The servers started from this process that are still running."""
    return [server for server in list(_running.values()) if server.running]


@atexit.register
def stop_all():
    """Stop every server started from this process."""
    for server in list(_running.values()):
        server.stop()


def _calling_cell(name):
    """Where in a notebook ``serve(name)`` was called from, or None outside a notebook.

    Returns ``((cell file, line, name), execution count)``. IPython names a cell's
    code after a hash of its text, so running the same cell again gives the same
    key with a new execution count.
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython else None
    if shell is None:
        return None
    frame = sys._getframe(2)  # the caller of serve()
    if frame.f_code.co_filename not in getattr(shell.compile, "_filename_map", {}):
        return None
    return (frame.f_code.co_filename, frame.f_lineno, name), shell.execution_count


def _stop_previous_run(key, execution_count):
    """Stop what an earlier run of this cell line started (not this run's: a loop may start several)."""
    started_in, servers = _started_by_cell.get(key, (None, []))
    if started_in != execution_count:
        for server in servers:
            server.stop()
        _started_by_cell[key] = (execution_count, [])
