"""The checks behind the book's exercises: one module per chapter, on a shared harness.

Each ``check_*`` function takes the reader's function, runs it against live
sockets on 127.0.0.1 (real connections, real clients, some of them rude), and
either prints what passed or raises ``CheckFailed``, an ``AssertionError``
whose message says in one sentence what was expected and what happened.
``hidden=True`` runs the harder cases that graders keep hidden (the student
version's check cells call each check without it). ``harness`` says how the
reader's code is run, given up on, and waited for.

No reference answer lives here: a check knows what a right answer does, not
how it is written. Every ``check_*`` of a module ``chapterN.py`` is importable
from here: ``from epollbook.checks import check_make_response``.
"""

import importlib
import pkgutil

from epollbook.checks.harness import SECONDS, CheckFailed

__all__ = ["SECONDS", "CheckFailed"]

# A chapter's module is found by its name, so that adding a chapter's checks takes no edit here.
for _chapter in sorted(module.name for module in pkgutil.iter_modules(__path__) if module.name.startswith("chapter")):
    for _name, _check in vars(importlib.import_module(f"{__name__}.{_chapter}")).items():
        if _name.startswith("check_") and callable(_check):
            globals()[_name] = _check
            __all__.append(_name)
