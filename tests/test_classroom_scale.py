"""Grading a class: students in parallel, only the cells grading needs, and students who try to sink it.

The class is generated, never committed: ``make_class`` fills the student
version's answer cells, student by student and exercise by exercise, with the
book's solution, the untouched stub, a wrong answer (the stub returning
None), or one that never returns; a student also adds a helper cell of
their own. Hostile
students (``HOSTILE``) end their kernel with ``os._exit``, fill its memory,
or print without end.

The tests grade a small class on two chapters (the first, and chapter 12,
whose coroutine exercise awaits ``readable``, imported by an experiment's
cell above it), with two students at a time: once running only what grading
needs, once running every cell; the grades must be the same. A class with a hostile student must give everybody
else the grades they earn, and that student's other exercises theirs. The
grader's executor is also run alone on three-cell notebooks, to show each
defence at work: the cell after the hostile one still sees the first.

The class of 30 that the teacher's guide quotes is made by the same code:

    .venv/bin/python tests/test_classroom_scale.py DIR 30   # then: make autograde SUBMISSIONS=DIR
"""

import contextlib
import csv
import json
import os
import pathlib
import random
import re
import shutil
import sys
import uuid

import nbformat
import pytest

from epollbook import classroom
from epollbook.exercises import grading
from notebooks import BOOK, CHAPTERS
from tools import processes_with_environment

SOLUTION = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION\n?", re.DOTALL)
STUB = "raise NotImplementedError()"
KINDS = {  # what a student wrote where the stub was, by the weight of how often
    "solved": 6,
    "stub": 2,
    "wrong": 2,
    "hanging": 1,
}
HOSTILE = {  # grade id of chapter 1's exercises -> an answer that tries to sink its grading
    "make-response": "import os\n\ndef make_response(text):\n    os._exit(1)\n",
    "open-listener": ("hog = []\nwhile True:  # fills the kernel's memory as the cell runs\n"
                      "    hog.append(bytearray(1 << 26))\n"),
    "receive-exactly": "def receive_exactly(conn, size):\n    while True:\n        print('spam ' * 100)\n",
}
THIS_RUN = {"EPOLLBOOK_TEST_RUN": uuid.uuid4().hex}

pytestmark = pytest.mark.timeout(900)


def answer_cells(notebook):
    return {grading(cell)["grade_id"]: cell for cell in notebook.cells if grading(cell).get("solution")}


def filled(stub_source, solution_source, kind):
    """The answer cell's source as a student of *kind* hands it back (*stub_source* is what they were given)."""
    if kind == "stub":
        return stub_source
    if kind == "solved":
        return solution_source  # its markers are comments: a student's cell may keep them
    replacement = {"wrong": "return None", "hanging": "while True:\n        pass"}[kind]
    return re.sub(r"raise NotImplementedError\(\)", lambda _: replacement, stub_source)


def make_class(student_version, book, out, size, seed=10):
    """Write *size* students' submissions into *out* (one folder each), from *student_version* and *book*.

    Student ``student-00`` solves everything; the next three are the hostile
    ones (chapter 1 only, the rest solved); the others are drawn at random
    with *seed*. Returns ``{student: {(notebook, grade id): kind}}``.
    """
    rng = random.Random(seed)
    kinds = [kind for kind, weight in KINDS.items() for _ in range(weight)]
    plan = {}
    for number in range(size):
        student = f"student-{number:02d}"
        plan[student] = {}
        for chapter in sorted(pathlib.Path(book).glob("[0-9][0-9]-*.ipynb")):
            handed_out = nbformat.read(student_version / chapter.name, as_version=4)
            solutions = answer_cells(nbformat.read(chapter, as_version=4))
            for grade_id, cell in answer_cells(handed_out).items():
                if number == 0:
                    kind = "solved"
                elif 1 <= number <= 3:
                    hostile = list(HOSTILE)[number - 1]
                    kind = f"hostile:{hostile}" if grade_id == hostile else "solved"
                else:
                    kind = rng.choice(kinds)
                plan[student][(chapter.stem, grade_id)] = kind
                if kind.startswith("hostile:"):
                    cell.source = HOSTILE[grade_id]
                else:
                    cell.source = filled(cell.source, solutions[grade_id].source, kind)
            folder = out / student
            folder.mkdir(parents=True, exist_ok=True)
            nbformat.write(handed_out, folder / chapter.name)
    return plan


@contextlib.contextmanager
def marked(variables):
    """Every process started inside carries *variables* in its environment (so that the test finds what it left)."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def grades_of(graded):
    with (graded / "grades.csv").open() as file:
        return {(row["student"], row["notebook"], row["exercise"]): (float(row["points"]), float(row["max_points"]),
                                                                    row["feedback"])
                for row in csv.DictReader(file)}


# -- fixtures: two chapters, their student version, a small class -------------------------------

@pytest.fixture(scope="module")
def small_book(tmp_path_factory):
    book = tmp_path_factory.mktemp("book")
    for chapter in (CHAPTERS[0], CHAPTERS[11]):  # chapter 12's answers use what an experiment's cell imported
        shutil.copy(chapter, book)
    return book


@pytest.fixture(scope="module")
def small_student_version(small_book, tmp_path_factory):
    return classroom.make_student(tmp_path_factory.mktemp("handout") / "student", small_book)


@pytest.fixture(scope="module")
def small_class(small_book, small_student_version, tmp_path_factory):
    """Three students: one solved everything; one of every kind; one who wrote a helper cell of their own."""
    out = tmp_path_factory.mktemp("class")
    make_class(small_student_version, small_book, out, 1)  # student-00: everything solved
    for chapter in sorted(small_book.glob("*.ipynb")):
        handed_out = nbformat.read(small_student_version / chapter.name, as_version=4)
        solutions = answer_cells(nbformat.read(chapter, as_version=4))
        for number, (grade_id, cell) in enumerate(answer_cells(handed_out).items()):
            kind = ["wrong", "solved", "hanging", "stub"][number % 4]
            cell.source = filled(cell.source, solutions[grade_id].source, kind)
        (out / "student-01").mkdir(exist_ok=True)
        nbformat.write(handed_out, out / "student-01" / chapter.name)

        handed_out = nbformat.read(small_student_version / chapter.name, as_version=4)
        answers = answer_cells(handed_out)
        for grade_id, cell in answers.items():
            cell.source = filled(cell.source, solutions[grade_id].source, "solved")
        if "make-response" in answers:  # a helper of the student's own, in a cell of its own above the answer
            answer = answers["make-response"]
            answer.source = answer.source.replace("def make_response(text):",
                                                  "def make_response(text):\n    return with_body(text)\n\n"
                                                  "def unused(text):")
            helper = nbformat.v4.new_code_cell(
                "def with_body(text):\n    body = text.encode()\n"
                "    return (b'HTTP/1.0 200 OK\\r\\nContent-Type: text/plain; charset=utf-8\\r\\n'\n"
                "            b'Content-Length: %d\\r\\n\\r\\n%s' % (len(body), body))\n")
            handed_out.cells.insert(handed_out.cells.index(answer), helper)
        (out / "student-02").mkdir(exist_ok=True)
        nbformat.write(handed_out, out / "student-02" / chapter.name)
    return out


@pytest.fixture(scope="module")
def skipping(small_class, small_book, tmp_path_factory):
    out = tmp_path_factory.mktemp("skipping") / "graded"
    classroom.autograde(small_class, out, small_book, jobs=2)
    return out


@pytest.fixture(scope="module")
def every_cell(small_class, small_book, tmp_path_factory):
    out = tmp_path_factory.mktemp("every-cell") / "graded"
    classroom.autograde(small_class, out, small_book, jobs=2, skip_unneeded=False)
    return out


# -- tests ------------------------------------------------------------------------------------

def test_skipping_what_no_exercise_needs_gives_the_grades_of_running_every_cell(skipping, every_cell):
    skipped, full = grades_of(skipping), grades_of(every_cell)
    assert skipped.keys() == full.keys(), "the two runs graded different exercises"
    differ = {key: (skipped[key], full[key]) for key in skipped if skipped[key][:2] != full[key][:2]}
    assert not differ, f"grades differ (skipping, every cell): {differ}"
    solved = {key: value for key, value in skipped.items() if key[0] in ("student-00", "student-02")}
    assert all(got == most > 0 for got, most, _ in solved.values()), f"solutions lost points: {solved}"
    mixed = [got for (student, _, _), (got, _, _) in skipped.items() if student == "student-01"]
    assert sum(mixed) > 0 and 0 in mixed, f"the mixed student's grades do not mix: {mixed}"


def test_skipping_runs_fewer_cells_than_there_are(skipping, every_cell):
    def cells_run(graded):
        return sum(1 for path in (graded / "course" / "autograded").rglob("*.ipynb")
                   for cell in nbformat.read(path, as_version=4).cells
                   if cell.cell_type == "code" and cell.get("execution_count"))
    skipped, full = cells_run(skipping), cells_run(every_cell)
    assert skipped < full / 2, f"skipping ran {skipped} cells, every cell {full}"


@pytest.fixture(scope="module")
def hostile_class(small_student_version, small_book, tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile")
    only_chapter_1 = tmp_path_factory.mktemp("book-1")
    shutil.copy(CHAPTERS[0], only_chapter_1)
    make_class(small_student_version, only_chapter_1, out, 4)  # student-00 solved, then one per hostile answer
    graded = tmp_path_factory.mktemp("hostile-graded") / "graded"
    with marked(THIS_RUN):
        classroom.autograde(out, graded, only_chapter_1, jobs=2, memory=1 << 30)
    return graded


def test_hostile_answers_cost_their_own_exercise_only(hostile_class):
    grades = grades_of(hostile_class)
    for (student, _, exercise), (got, most, said) in grades.items():
        hostile = {"student-01": "make-response", "student-02": "open-listener",
                   "student-03": "receive-exactly"}.get(student)
        if exercise == hostile:
            assert got == 0, f"{student}'s hostile {exercise} got {got} points"
        else:
            assert got == most, f"{student} lost {exercise} ({said}) to someone's hostile answer"
    assert "kernel running this notebook ended" in grades[("student-01", CHAPTERS[0].stem, "make-response")][2]
    assert "characters were printed" in grades[("student-03", CHAPTERS[0].stem, "receive-exactly")][2]


def test_hostile_answers_leave_nothing_running_and_the_graded_notebook_small(hostile_class):
    left = [" ".join(process.cmdline())
            for process in processes_with_environment(**{classroom.GRADING_TAG: None}, **THIS_RUN)]
    assert not left, f"processes started while grading are still running: {left}"
    spammed = next((hostile_class / "course" / "autograded" / "student-03").rglob("01-*.ipynb"))
    assert spammed.stat().st_size < 2_000_000, f"the endless printer's notebook is {spammed.stat().st_size:,} bytes"


# -- one notebook, run by the grader's executor alone -------------------------------------------

def execute(*sources, memory=None, tmp_path=None, **options):
    """Run a notebook of *sources* with ``GradingExecute`` (every cell); return its cells.

    With *memory*, in the grading kernel limited to that many bytes (its spec
    written under *tmp_path*).
    """
    from epollbook.classroom.course import KERNEL_NAME, kernel_spec
    from epollbook.classroom.execution import GradingExecute

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])
    if memory is not None:
        spec = tmp_path / "jupyter" / "kernels" / KERNEL_NAME / "kernel.json"
        spec.parent.mkdir(parents=True)
        spec.write_text(json.dumps(kernel_spec(memory)))
        options.update(kernel_name=KERNEL_NAME, memory=memory)
    with marked({"JUPYTER_PATH": str(tmp_path / "jupyter")} if memory is not None else {}):
        GradingExecute(**{"timeout": 30, "skip_unneeded": False, **options}).preprocess(notebook, {})
    return notebook.cells


def errors(cell):
    return [output["ename"] for output in cell.outputs if output.output_type == "error"]


def printed(cell):
    return "".join(output.get("text", "") for output in cell.outputs if output.output_type == "stream")


def test_a_cell_that_ends_its_kernel_loses_only_itself_and_the_next_cells_run_in_a_new_one():
    cells = execute("x = 41", "import os\nos._exit(3)", "print(x + 1)")
    assert errors(cells[1]) == ["KernelDied"], cells[1].outputs
    assert printed(cells[2]) == "42\n" and not errors(cells[2]), f"x was not defined again: {cells[2].outputs}"


def test_a_cell_that_prints_without_end_is_cut_at_the_limit_and_stopped():
    cells = execute("x = 41", "while True:\n    print('spam ' * 100)", "print(x + 1)", output_limit=50_000)
    assert errors(cells[1]) == ["OutputLimitExceeded"], cells[1].outputs
    assert printed(cells[1]).startswith("spam spam") and 40_000 < len(printed(cells[1])) < 51_000, \
        f"{len(printed(cells[1]))} characters kept"
    assert printed(cells[2]) == "42\n", cells[2].outputs


def test_a_cell_that_ignores_the_interrupt_is_ended_with_its_kernel_and_the_next_cells_run():
    cells = execute("x = 41", "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass",
                    "print(x + 1)", timeout=2)
    assert errors(cells[1]) == ["KernelStuck"], cells[1].outputs
    assert printed(cells[2]) == "42\n" and not errors(cells[2]), f"x was not defined again: {cells[2].outputs}"


def test_a_cell_that_fills_the_kernels_memory_meets_its_limit_and_the_next_cells_run(tmp_path):
    cells = execute("x = 41", "hog = []\nwhile True:\n    hog.append(bytearray(1 << 26))", "print(x + 1)",
                    memory=768 << 20, tmp_path=tmp_path)
    assert errors(cells[1])[-1] in ("OutOfMemory", "KernelDied"), cells[1].outputs
    assert printed(cells[2]) == "42\n", cells[2].outputs


if __name__ == "__main__":
    import tempfile

    if len(sys.argv) != 3 or not sys.argv[2].isdigit():
        sys.exit(f"usage: {sys.argv[0]} DIR SIZE  (writes SIZE students' submissions into DIR)")
    with tempfile.TemporaryDirectory() as scratch:
        handout = classroom.make_student(pathlib.Path(scratch) / "student", BOOK)
        plan = make_class(handout, BOOK, pathlib.Path(sys.argv[1]), int(sys.argv[2]))
    counts = {}
    for kinds in plan.values():
        for kind in kinds.values():
            counts[kind.split(":")[0]] = counts.get(kind.split(":")[0], 0) + 1
    print(f"{len(plan)} students in {sys.argv[1]}; answers: {counts}")
