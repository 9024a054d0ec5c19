"""The book's notebooks and their exercises, as the tests see them.

A thin layer over ``epollbook.exercises``, which holds the one definition of a
chapter and an exercise that the classroom uses too; the names here are the
ones test modules import.
"""

import pathlib

import nbformat

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
