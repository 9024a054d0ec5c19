"""The book's exercises as classroom assignments: a student version and an autograder, through nbgrader.

    python -m epollbook.classroom student   [--book DIR] [--out dist/student]
    python -m epollbook.classroom autograde SUBMISSIONS [--book DIR] [--out dist/autograded]
                                            [-j JOBS] [--every-cell] [--memory MIB]

Both build an nbgrader course folder from the chapter notebooks in the book's
folder (``--book``, default ``./book``; one assignment holding every chapter)
and run nbgrader itself on it: ``generate_assignment`` makes the student
notebooks (solutions replaced by stubs, hidden tests and outputs removed),
``autograde`` runs every submitted notebook with the visible and hidden
tests, JOBS students at a time (default: one per core), each notebook's
exercises and what they need only (``--every-cell``: all of it), each kernel
with a memory limit and each cell with an output limit. Everything is local:
nbgrader's gradebook is an SQLite file, and no hub, server or container is
needed.

``SUBMISSIONS`` holds one folder per student with that student's notebooks as
handed back. ``autograde`` writes ``grades.csv`` (one row per student per
exercise) and, per student, ``feedback/STUDENT.md``, which says for each check
that failed what it expected and what happened.

One module per job:

- ``course``     — the nbgrader course folder, and nbgrader's runs in it;
- ``student``    — the student version, and the scan that keeps solutions out of it;
- ``autograder`` — handing in, grading students in parallel, killing what a student's code left running;
- ``execution``  — how one notebook runs: only what grading needs, surviving a kernel a student ends;
- ``needed``     — which cells an exercise depends on, read from the names in their code;
- ``kernel``     — the grading kernel: IPython's, with a memory limit;
- ``feedback``   — the words: a failed check's sentence, a student's page, the exercise table;
- ``guide``      — the teacher's guide chapter by chapter: objectives, minutes, the mistakes checks name;
- ``__main__``   — the command line.

Nothing here reads the book's repository except the chapters (and the
teacher's guide the answer tables in ``tests/answers``, if they are there): the package
handed to students is copied from this installed package, and the student
version's ``Makefile`` and ``README.md`` are files of this package.
"""

from epollbook.classroom.autograder import GRADING_TAG, Grade, autograde
from epollbook.classroom.course import ASSIGNMENT, CELL_TIME_LIMIT, ClassroomError, prepare_course
from epollbook.classroom.feedback import exercise_table
from epollbook.classroom.student import copied_solutions, make_student, solution_blocks

__all__ = ["ASSIGNMENT", "CELL_TIME_LIMIT", "GRADING_TAG", "ClassroomError", "Grade", "autograde",
           "copied_solutions", "exercise_table", "make_student", "prepare_course", "solution_blocks"]
