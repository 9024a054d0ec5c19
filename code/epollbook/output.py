"""What a background process prints, read as it comes, kept within bounds, and waited for.

    output = Output(process.stdout, name="example2")
    output.wait_for("Listening on", timeout=5)   # True once printed
    output.text                                   # everything printed so far (the last LIMIT bytes)

A thread reads the pipe, so the process never blocks on a full pipe because
nobody reads it (a pipe holds 64 KiB; a server that prints each request would
stop serving after a few hundred). Two limits keep a process that prints without
end from filling the reader's memory: the text kept is at most ``LIMIT`` bytes
(the oldest lines are dropped first), and a line is read ``READ_SIZE`` bytes at a
time, so a line that never ends arrives in pieces instead of growing without end.
"""

import threading

LIMIT = 1_000_000
READ_SIZE = 65536


class Output:
    """What a process prints to one pipe (a binary file object), read by a thread of its own.

    Properties: ``text`` (what was printed, as text), ``closed`` (True once the
    process closed the pipe: it has exited, usually).
    Methods: ``wait_for(text, timeout)``, ``wait_until(predicate, timeout)``,
    ``wait_closed(timeout)``.

    *on_line*, if given, is called with each line (bytes) as it is read, before
    any waiter wakes up, and with the same lock held that ``wait_until`` holds
    while it calls its predicate; it sees every line, even those later dropped
    to keep within *limit*. The pipe is closed once the process closes its end.
    """

    def __init__(self, pipe, *, name="process", limit=LIMIT, on_line=None):
        self._pipe = pipe
        self._limit = limit
        self._on_line = on_line
        self._chunks, self._size = [], 0
        self._changed = threading.Condition()
        self._closed = False
        threading.Thread(target=self._read, name=f"{name} output", daemon=True).start()

    def _read(self):
        for line in iter(lambda: self._pipe.readline(READ_SIZE), b""):
            with self._changed:
                if self._on_line is not None:
                    self._on_line(line)
                self._chunks.append(line)
                self._size += len(line)
                # The newest line is kept whole even if it alone is over the limit (at most READ_SIZE).
                while self._size > self._limit and len(self._chunks) > 1:
                    self._size -= len(self._chunks.pop(0))
                self._changed.notify_all()
        self._pipe.close()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _text(self):
        # Decoded whole, not chunk by chunk: a READ_SIZE piece may end inside a character.
        return b"".join(self._chunks).decode("utf-8", "replace")

    @property
    def text(self):
        """Everything printed so far (within the limit), as text; undecodable bytes become U+FFFD."""
        with self._changed:
            return self._text()

    @property
    def closed(self):
        """True once the process has closed the pipe and every line is in ``text``."""
        with self._changed:
            return self._closed

    def wait_until(self, predicate, timeout):
        """Wait until ``predicate()`` is true, or the pipe closes, or *timeout* seconds pass; return its last value.

        *predicate* is checked after each line, with the lock ``on_line`` runs
        under held, so it sees what ``on_line`` wrote. Once the pipe has closed
        nothing more can come, so waiting ends there.
        """
        with self._changed:
            self._changed.wait_for(lambda: predicate() or self._closed, timeout)
            return predicate()

    def wait_for(self, text, timeout):
        """Wait until *text* has been printed; return True, or False if the pipe closed or *timeout* passed first."""
        return self.wait_until(lambda: text in self._text(), timeout)

    def wait_closed(self, timeout):
        """Wait until the process has closed the pipe and the last line is read; return True if it has."""
        with self._changed:
            return self._changed.wait_for(lambda: self._closed, timeout)
