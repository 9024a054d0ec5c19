"""What the book calls a chapter and an exercise, read from its notebooks.

One definition, used by the classroom (the student version, the autograder,
the teacher's guide's table) and by the tests alike:

- A **chapter** is a notebook named ``NN-*.ipynb`` (two digits, a dash) in the
  book's folder; appendices that are notebooks have other names.
- An **exercise** is a chapter's cell whose nbgrader metadata says
  ``"solution": true`` (the student's answer), with its check: the cell whose
  ``grade_id`` is the answer's plus ``-check``. The check gives the points; the
  answer's ``"epollbook"`` metadata says what the exercise teaches
  (``objective``) and how long a student should plan for it (``minutes``).

    chapters(book_dir)  -> [Path]         the chapter notebooks, in order
    exercises(book_dir) -> [Exercise]     every exercise of every chapter, in order
    in_notebook(path)   -> [Exercise]     the exercises of one notebook

Reading a notebook that is not valid JSON raises nbformat's own error (a
``json.JSONDecodeError`` or ``nbformat.reader.NotJSONError``).
"""

import dataclasses
import pathlib

import nbformat

CHAPTER_PATTERN = "[0-9][0-9]-*.ipynb"
CHECK_SUFFIX = "-check"


def grading(cell):
    """The nbgrader metadata of *cell* (a dict; empty if the cell has none)."""
    return cell.get("metadata", {}).get("nbgrader", {})


@dataclasses.dataclass
class Exercise:
    """One exercise: the answer cell the student fills in and the check cell that grades it."""

    notebook: pathlib.Path           # the chapter notebook that holds it
    grade_id: str                    # the answer cell's grade id; the check's is this plus "-check"
    solution: nbformat.NotebookNode  # the answer cell, solution included (between ### BEGIN/END SOLUTION)
    check: nbformat.NotebookNode | None  # the check cell, or None if the notebook lacks one
    points: float                    # what the check gives (0 without a check)
    objective: str                   # what the exercise checks that the student can do ("" if not said)
    minutes: int                     # the author's estimate of the time a student needs (0 if not said)

    @property
    def chapter(self):
        """The notebook's name without ``.ipynb``, as nbgrader and grades.csv name it."""
        return self.notebook.stem


def chapters(book_dir):
    """The chapter notebooks in *book_dir* (``NN-*.ipynb``), in order; [] if there are none or no such folder."""
    return sorted(pathlib.Path(book_dir).glob(CHAPTER_PATTERN))


def in_notebook(path):
    """The exercises of the notebook at *path*, in the order of their answer cells."""
    path = pathlib.Path(path)
    cells = nbformat.read(path, as_version=4).cells
    by_id = {grading(cell)["grade_id"]: cell for cell in cells if grading(cell).get("grade_id")}
    found = []
    for grade_id, cell in by_id.items():
        if not grading(cell).get("solution"):
            continue
        check = by_id.get(grade_id + CHECK_SUFFIX)
        about = cell.get("metadata", {}).get("epollbook", {})
        found.append(Exercise(notebook=path, grade_id=grade_id, solution=cell, check=check,
                              points=grading(check).get("points", 0) if check is not None else 0,
                              objective=about.get("objective", ""), minutes=about.get("minutes", 0)))
    return found


def exercises(book_dir):
    """Every exercise of the chapters in *book_dir*, chapter by chapter, in order."""
    return [exercise for path in chapters(book_dir) for exercise in in_notebook(path)]
