"""Shared fixtures: whatever a test starts, no process of the book outlives the test session."""

import psutil
import pytest


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
