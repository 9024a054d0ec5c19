"""Every notebook runs clean top to bottom (nbval), and leaves no process behind.

Each notebook runs in a pytest of its own, under nbval's lax mode (a cell
fails if it raises; outputs, which depend on the machine, are not compared).
Every process that run starts carries a tag in its environment, so that a
server it left behind is found even after its parent is gone.
"""

import os
import subprocess
import sys
import time
import uuid

import pytest

from notebooks import NOTEBOOKS, ROOT
from tools import processes_with_environment


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_clean_and_leaves_nothing_running(notebook):
    tag = uuid.uuid4().hex
    command = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider",
               "-p", "no:xdist", "-q", str(notebook)]
    started = time.monotonic()
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180,
                              env={**os.environ, "EPOLLBOOK_TEST_TAG": tag})
    seconds = time.monotonic() - started
    assert finished.returncode == 0, \
        f"{notebook.name} failed under nbval:\n{finished.stdout[-6000:]}\n{finished.stderr[-2000:]}"
    print(f"{notebook.name}: ran clean in {seconds:.1f} s")

    deadline = time.monotonic() + 5.0
    while (left := processes_with_environment(EPOLLBOOK_TEST_TAG=tag)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for process in left:
        process.kill()
    assert not left, f"{notebook.name} left processes running: {[' '.join(p.cmdline()) for p in left]}"
