"""The book's notebooks and their exercises, as the tests see them."""

import pathlib

import nbformat

ROOT = pathlib.Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]-*.ipynb"))  # the appendices that are notebooks have no exercises


def read(path):
    return nbformat.read(path, as_version=4)


def grading(cell):
    return cell.get("metadata", {}).get("nbgrader", {})


def exercises(path):
    """``[(grade_id, solution cell, check cell)]`` of a notebook: a check's grade_id is its solution's plus '-check'."""
    cells = read(path).cells
    by_id = {grading(cell)["grade_id"]: cell for cell in cells if grading(cell).get("grade_id")}
    return [(grade_id, cell, by_id.get(f"{grade_id}-check"))
            for grade_id, cell in by_id.items() if grading(cell).get("solution")]


def all_exercises():
    """Every exercise of the book, as pytest parameters named notebook::grade_id."""
    import pytest

    return [pytest.param(path, grade_id, solution, check, id=f"{path.stem}::{grade_id}")
            for path in CHAPTERS for grade_id, solution, check in exercises(path)]
