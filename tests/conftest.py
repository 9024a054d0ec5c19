"""Shared fixtures: whatever a test starts, no process of the book outlives the test session.

Also how `make test` spreads the modules over its workers (`--dist loadfile`):
a module runs whole on one worker, so its module-wide fixtures (a book build,
a grading run) are made once; and test_notebooks.py runs just before
test_book.py, on the same worker, so the build finds every notebook already
run in its execution cache instead of running them all a second time.
"""

import os
import pathlib

import psutil
import pytest

# Modules that run on one worker, in this order (the first fills the second's build folder).
NOTEBOOKS_THEN_BUILD = ("test_notebooks", "test_book")
# Long modules whose tests share no fixture wider than a test: spread test by test, so that no worker
# is left finishing one of them alone (check_tables: 420 tests, 270 s, many waiting out a check's limit).
SPREAD_TEST_BY_TEST = ("test_check_tables",)


def book_processes(root=None):
    """Processes below *root* (default: this one) that run the book's servers."""
    root = root or psutil.Process()
    found = []
    for child in root.children(recursive=True):
        try:
            if any("epollbook" in part for part in child.cmdline()):
                found.append(child)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return found


@pytest.fixture(autouse=True, scope="session")
def no_server_outlives_the_session():
    yield
    left = book_processes()
    assert not left, f"servers still running after the tests: {[' '.join(p.cmdline()) for p in left]}"


@pytest.fixture(scope="session")
def book_build_folder(tmp_path_factory):
    """The folder this test run builds the book into (`--path-output`), one for all xdist workers.

    test_notebooks.py fills its execution cache; test_book.py's build reuses
    what is there and runs the rest. A new folder every run, so nothing a
    previous run measured is ever shown.
    """
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # each worker has its own popen-gwN folder inside the run's one
    folder = base / "book-build"
    folder.mkdir(exist_ok=True)
    return folder


def pytest_collection_modifyitems(items):
    """Put test_notebooks.py's tests just before test_book.py's, when both run, and SPREAD_TEST_BY_TEST's last.

    xdist hands out work in this order: the small spread tests come last to fill the workers' gaps.
    """
    notebooks, build = NOTEBOOKS_THEN_BUILD
    ran_first = [item for item in items if item.path.stem == notebooks]
    others = [item for item in items if item.path.stem != notebooks]
    build_at = next((index for index, item in enumerate(others) if item.path.stem == build), None)
    if ran_first and build_at is not None:
        items[:] = others[:build_at] + ran_first + others[build_at:]
    items.sort(key=lambda item: item.path.stem in SPREAD_TEST_BY_TEST)  # stable: the rest keep their order


@pytest.hookimpl(optionalhook=True)  # a hook of xdist's: absent when it is not loaded (make quick)
def pytest_xdist_make_scheduler(config, log):
    """Under `--dist loadfile`, give test_notebooks.py and test_book.py to one worker, in collection order,
    and the tests of SPREAD_TEST_BY_TEST to any worker, one at a time.

    (xdist's own `--dist loadgroup` would do it with marks, but with pytest 9
    it no longer groups anything: it renames `item._nodeid`, which pytest 9's
    node ids no longer read.)
    """
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class BookScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid):
            scope = super()._split_scope(nodeid)
            module = pathlib.PurePath(scope).stem
            if module in NOTEBOOKS_THEN_BUILD:
                return "+".join(NOTEBOOKS_THEN_BUILD)
            return nodeid if module in SPREAD_TEST_BY_TEST else scope

    return BookScheduling(config, log)
