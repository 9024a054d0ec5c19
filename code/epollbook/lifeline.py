"""A lifeline: a child process that exits when its owner dies, however the owner dies.

    # the owner                                # the child, early in its life
    lifeline = Lifeline()                      from epollbook.lifeline import exit_with_owner
    process = lifeline.popen(argv, ...)        exit_with_owner()
    ...
    lifeline.cut()                             # ...and it exits once the owner cuts or dies

Some facts about processes that die
-----------------------------------

A notebook's kernel starts servers in the background. When the kernel goes,
its servers must go too, and the kernel may go in ways where none of its own
code runs: "Restart kernel" and a crash end it with SIGKILL, which no handler
can catch and after which no ``atexit`` function and no ``finally`` clause
runs. So the owner cannot be trusted to clean up; the child must notice by
itself that its owner is gone.

Signals do not help. Nobody sends the child anything when its parent dies;
Linux's ``PR_SET_PDEATHSIG`` would, but it fires when the *thread* that started
the child exits, not the process, and Python cannot set it between ``fork``
and ``exec`` without ``preexec_fn``, which is unsafe in a process with threads
(a Jupyter kernel has several).

What does help: the kernel closes every file descriptor of a process that
dies, however it died. And ``read()`` on the read end of a pipe returns
``b''`` (end of file) exactly when no process holds the write end any more. So
the owner makes a pipe, keeps the write end, and hands the read end to the
child; the child reads it in a thread of its own. Nobody ever writes, so the
read returns only when the last write end closes: the owner has cut the line,
or has exited, or was killed. Then the child exits.

The subtle part is "the last write end". Every process that holds a copy of
the write end keeps the line alive, so only the owner may hold one:

- The child must not inherit it. ``os.pipe()`` makes both ends
  non-inheritable (PEP 446), and ``pass_fds`` passes the read end alone.
- Nor may any *other* child the owner starts later, or a second server would
  keep the first one's line alive. Non-inheritable descriptors and
  ``subprocess``'s ``close_fds=True`` (the default) see to that; a child made
  with a bare ``os.fork()`` (``multiprocessing``'s "fork" start method) would
  hold copies of everything until it exits.
- The owner closes its copy of the read end as soon as the child has started:
  it does not need it, and each server would otherwise leak one descriptor.

And on the child's side:

- The watching thread is a daemon thread blocked in ``read()``: it costs no
  CPU and never keeps the child alive by itself.
- It ends the child with ``os._exit()``, which ends the whole process from any
  thread; ``sys.exit()`` there would end only the watching thread. Even a main
  thread spinning in a loop that never calls into the kernel cannot stop it:
  Python hands the GIL to the waiting thread within its switch interval (5 ms).
- The descriptor's number travels in the environment variable
  ``EPOLLBOOK_LIFELINE_FD``. The child removes it, so that a program the child
  starts in turn does not mistake some other descriptor for a lifeline.

The lifeline ends the child process only, not processes the child started;
the book's servers start none.
"""

import os
import subprocess
import sys
import threading

VARIABLE = "EPOLLBOOK_LIFELINE_FD"


class Lifeline:
    """The owner's end of a lifeline to one child process.

    Methods: ``popen(argv, ...)`` starts the child holding the line; ``cut()``
    closes the owner's end, after which the child exits. ``cut`` is safe to call
    more than once, and must be called once the child is no longer wanted, or
    the descriptor leaks.
    """

    def __init__(self):
        self._read_end, self._write_end = os.pipe()

    def popen(self, argv, *, env=None, **options):
        """Start *argv* as ``subprocess.Popen(argv, env=env, **options)`` would, holding this lifeline.

        *env* defaults to this process's environment. Returns the ``Popen``.
        Whatever ``Popen`` raises is raised, with the line already cut. A
        lifeline holds one child: calling this twice raises ``RuntimeError``.
        """
        if self._read_end is None:
            raise RuntimeError("this lifeline already holds a child: make a new Lifeline for each")
        env = {**(os.environ if env is None else env), VARIABLE: str(self._read_end)}
        try:
            return subprocess.Popen(argv, env=env, pass_fds=(self._read_end,), **options)
        except BaseException:
            self.cut()
            raise
        finally:
            # The child has its own copy now; ours would only leak.
            os.close(self._read_end)
            self._read_end = None

    def cut(self):
        """Close the owner's end: the child, if it still runs, exits."""
        if self._write_end is not None:
            os.close(self._write_end)
            self._write_end = None


def exit_with_owner():
    """In a child started by ``Lifeline.popen``: exit as soon as the owner cuts the line or dies.

    Call it early, before the child's real work. Returns at once; a thread
    watches the line. Does nothing in a process started any other way. Exits
    with a one-line message if the environment names no usable descriptor.
    """
    number = os.environ.pop(VARIABLE, None)
    if number is None:
        return
    try:
        fd = int(number)
        os.fstat(fd)
    except (ValueError, OSError):
        sys.exit(f"{VARIABLE}={number!r} does not name an open file descriptor: start this through "
                 "epollbook.launch, or without that variable")

    def watch():
        os.read(fd, 1)  # returns when the last write end closes (or, against the rules, someone writes)
        os._exit(0)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()
