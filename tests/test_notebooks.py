"""Every notebook runs clean top to bottom, and leaves no process behind.

Each notebook runs in a process and a kernel of its own, exactly as the
book's build runs it (``notebooks.run_as_the_build_does``: a cell that raises
fails the notebook; outputs, which depend on the machine, are not compared).
Every process that run starts carries a tag in its environment, so that a
server it left behind is found even after its parent is gone.

The executed notebooks go into the execution cache of this test run's book
build (the ``book_build_folder`` fixture), so test_book.py's build shows these
outputs instead of running every notebook a second time.
"""

import os
import subprocess
import sys
import time
import uuid

import pytest

from notebooks import NOTEBOOKS, ROOT
from tools import processes_with_environment

RUN_ONE_NOTEBOOK = ROOT / "tests" / "notebooks.py"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_clean_and_leaves_nothing_running(notebook, book_build_folder):
    tag = uuid.uuid4().hex
    started = time.monotonic()
    finished = subprocess.run([sys.executable, str(RUN_ONE_NOTEBOOK), str(notebook), str(book_build_folder)],
                              cwd=ROOT, capture_output=True, text=True, timeout=180,
                              env={**os.environ, "EPOLLBOOK_TEST_TAG": tag})
    seconds = time.monotonic() - started
    assert finished.returncode == 0, \
        f"{notebook.name} failed as the build runs it:\n{finished.stderr[-6000:]}\n{finished.stdout[-2000:]}"
    print(f"{notebook.name}: ran clean in {seconds:.1f} s")

    deadline = time.monotonic() + 5.0
    while (left := processes_with_environment(EPOLLBOOK_TEST_TAG=tag)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for process in left:
        process.kill()
    assert not left, f"{notebook.name} left processes running: {[' '.join(p.cmdline()) for p in left]}"
