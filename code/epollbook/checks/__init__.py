"""The checks behind the book's exercises: one module per chapter, on a shared harness.

Each ``check_*`` function takes the reader's function, runs it against live
sockets on 127.0.0.1 (real connections, real clients, some of them rude), and
either prints what passed or raises ``CheckFailed``, an ``AssertionError``
whose message says in one sentence what was expected and what happened.
``hidden=True`` runs the harder cases that graders keep hidden (the student
version's check cells call each check without it). ``harness`` says how the
reader's code is run, given up on, and waited for.

No reference answer lives here: a check knows what a right answer does, not
how it is written.
"""

from epollbook.checks.chapter1 import check_make_response, check_open_listener, check_receive_exactly
from epollbook.checks.chapter2 import check_receive_request, check_serve_forever
from epollbook.checks.harness import SECONDS, CheckFailed

__all__ = [
           "SECONDS",
           "CheckFailed",
           "check_make_response",
           "check_open_listener",
           "check_receive_exactly",
           "check_receive_request",
           "check_serve_forever",
]
