"""The book's notebooks and their exercises, as the tests see them.

A thin layer over ``epollbook.exercises``, which holds the one definition of a
chapter and an exercise that the classroom uses too; the names here are the
ones test modules import.

Run as a program, ``python tests/notebooks.py NOTEBOOK BUILD_FOLDER`` runs one
notebook exactly as ``jupyter-book build --path-output BUILD_FOLDER`` would (see
``run_as_the_build_does``), so the test suite runs each notebook once: the
build that follows finds the outputs in its execution cache.
"""

import pathlib
import sys

import nbformat
import yaml

from epollbook import exercises as book_exercises
from epollbook.exercises import grading  # noqa: F401 (tests import it from here)

ROOT = pathlib.Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))
CHAPTERS = book_exercises.chapters(BOOK)  # the appendices that are notebooks have no exercises


def read(path):
    return nbformat.read(path, as_version=4)


def exercises(path):
    """``[(grade_id, solution cell, check cell)]`` of a notebook: a check's grade_id is its solution's plus '-check'."""
    return [(exercise.grade_id, exercise.solution, exercise.check) for exercise in book_exercises.in_notebook(path)]


def all_exercises():
    """Every exercise of the book, as pytest parameters named notebook::grade_id."""
    import pytest

    return [pytest.param(exercise.notebook, exercise.grade_id, exercise.solution, exercise.check,
                         id=f"{exercise.chapter}::{exercise.grade_id}")
            for exercise in book_exercises.exercises(BOOK)]


def execution_cache(build_folder):
    """The folder where `jupyter-book build --path-output build_folder` keeps executed notebooks (jupyter-cache)."""
    return pathlib.Path(build_folder) / "_build" / ".jupyter_cache"


def run_as_the_build_does(notebook, build_folder):
    """Run *notebook* top to bottom as `jupyter-book build --path-output build_folder` runs it, and cache it there.

    The same executor (jupyter-cache's, which MyST-NB calls), with _config.yml's
    execution settings, in the notebook's own folder, in a kernel of its own.
    On success the executed notebook goes into that build's execution cache,
    under the hash the build looks it up by (its code cells), so the build
    shows these outputs instead of running the notebook again.

    Returns ``None`` on success, else the failing cell's traceback as text.
    Raises ``OSError`` if the notebook cannot be read or the cache written.
    """
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn
    from jupyter_cache.executors.utils import single_nb_execution

    notebook = pathlib.Path(notebook).resolve()
    settings = yaml.safe_load((ROOT / "_config.yml").read_text())["execute"]
    executed = read(notebook)
    result = single_nb_execution(executed, cwd=str(notebook.parent), timeout=settings["timeout"],
                                 allow_errors=settings["allow_errors"], meta_override=True)
    if result.err is not None:
        return result.exc_string
    get_cache(str(execution_cache(build_folder))).cache_notebook_bundle(
        CacheBundleIn(executed, str(notebook), data={"execution_seconds": result.time}),
        check_validity=False, overwrite=True)
    return None


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tests/notebooks.py NOTEBOOK BUILD_FOLDER")
    sys.exit(run_as_the_build_does(sys.argv[1], sys.argv[2]))
