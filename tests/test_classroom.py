"""`make student` and `make autograde`, end to end, on generated submissions.

One autograding run grades a class of made-up students: one who solved
everything, one who handed back the untouched stubs, one with a hanging answer
in each notebook, and some who did what students do (deleted, moved and left
cells, lost a notebook, left processes running). The grades and feedback are
read back from what `make autograde` wrote, and from nbgrader's own gradebook.

Grading runs each notebook handed in (its exercises and the cells they
need), so the class is kept small: the student who solved everything hands
in every chapter (each chapter grades to full marks under real nbgrader), and
the others hand in the first chapters only (SAMPLED), which is enough to show
what their oddity does to a grade. A chapter not handed in is cheap: it gets
0 points without being run.
"""

import csv
import os
import re
import shutil
import subprocess
import uuid

import nbformat
import pytest

from epollbook import classroom
from notebooks import BOOK, CHAPTERS, ROOT, exercises, grading, read
from tools import processes_with_environment

HANGING_ANSWERS = {  # one per notebook: loops that never return
    "make-response": "def make_response(text):\n    while True:\n        pass\n",
    "receive-request": ("def receive_request(conn, limit=65536):\n    request = b''\n"
                        "    while b'\\n\\n' not in request and b'\\n\\r\\n' not in request:\n"
                        "        request += conn.recv(1024)\n    return request\n"),
}
EVERY_EXERCISE = {(path.stem, grade_id) for path in CHAPTERS for grade_id, _, _ in exercises(path)}
SAMPLED = CHAPTERS[:2]  # the chapters every student but "solved" hands in: they hold the hanging answers


# Every process a grading run of this module starts carries this in its environment, so that
# the leftover check sees this run's processes and no other's.
THIS_RUN = {"EPOLLBOOK_TEST_RUN": uuid.uuid4().hex}


MAKE_SECONDS = 600

# A test that is the first to use `graded` pays for making the student version and grading the class.
pytestmark = pytest.mark.timeout(2 * MAKE_SECONDS + 120)


def make(*arguments):
    finished = subprocess.run(["make", "--no-print-directory", *arguments], cwd=ROOT, capture_output=True, text=True,
                              timeout=MAKE_SECONDS, env={**os.environ, **THIS_RUN})
    assert finished.returncode == 0, \
        f"make {' '.join(arguments)} failed:\n{finished.stdout[-4000:]}\n{finished.stderr[-4000:]}"
    return finished.stdout


def grade_id(cell):
    return grading(cell).get("grade_id")


def write_changed(source, target, change):
    notebook = read(source)
    change(notebook)
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, target)


@pytest.fixture(scope="module")
def student_version(tmp_path_factory):
    out = tmp_path_factory.mktemp("handout") / "student"
    make("student", f"STUDENT_DIR={out}")
    return out


@pytest.fixture(scope="module")
def submissions(tmp_path_factory, student_version):
    folder = tmp_path_factory.mktemp("submissions")
    (folder / "solved" / "epoll-hands-on").mkdir(parents=True)  # handed back in a subfolder, as nbgrader lays them out
    (folder / "untouched").mkdir()
    for chapter in CHAPTERS:
        shutil.copy(chapter, folder / "solved" / "epoll-hands-on")
    for chapter in SAMPLED:
        shutil.copy(student_version / chapter.name, folder / "untouched")

        def hang(notebook):
            for cell in notebook.cells:
                if grade_id(cell) in HANGING_ANSWERS:
                    cell.source = HANGING_ANSWERS[grade_id(cell)]
        write_changed(chapter, folder / "hanging" / chapter.name, hang)

    first, second = CHAPTERS[0], CHAPTERS[1]
    first_exercises = [gid for gid, _, _ in exercises(first)]
    second_exercises = [gid for gid, _, _ in exercises(second)]

    def delete(notebook):  # the first exercise's check cell, the second exercise's answer cell
        deleted = (f"{first_exercises[0]}-check", first_exercises[1])
        notebook.cells = [c for c in notebook.cells if grade_id(c) not in deleted]
    write_changed(first, folder / "deleter" / first.name, delete)

    def move_check_above_answer(notebook):
        ids = [grade_id(c) for c in notebook.cells]
        answer = ids.index(second_exercises[-1])
        notebook.cells[answer], notebook.cells[answer + 1] = notebook.cells[answer + 1], notebook.cells[answer]
    write_changed(second, folder / "mover" / second.name, move_check_above_answer)

    def leave_outputs(notebook):
        for cell in notebook.cells:
            if cell.cell_type == "code":
                cell.outputs = [nbformat.v4.new_output("stream", text="left in by the student\n")]
                cell.execution_count = 7
    write_changed(first, folder / "mover" / first.name, leave_outputs)

    def rewrite_checks(notebook):  # stubs left as they are, checks made to pass
        for cell in notebook.cells:
            if grading(cell).get("grade"):
                cell.source = "pass"
    for chapter in SAMPLED:
        write_changed(student_version / chapter.name, folder / "cheater" / chapter.name, rewrite_checks)

    (folder / "loser").mkdir()
    (folder / "loser" / first.name).write_text("{this is not a notebook")
    shutil.copy(first, folder / "loser" / "my-notes.ipynb")

    def leave_processes(notebook):
        notebook.cells.append(nbformat.v4.new_code_cell(
            "import subprocess\nfrom epollbook.launch import serve\nforgotten = serve('example2')\n"
            "subprocess.Popen(['sleep', '3600'], start_new_session=True)"))
    write_changed(first, folder / "litterer" / first.name, leave_processes)
    return folder


@pytest.fixture(scope="module")
def graded(submissions, tmp_path_factory):
    out = tmp_path_factory.mktemp("graded") / "autograded"
    make("autograde", f"SUBMISSIONS={submissions}", f"AUTOGRADED_DIR={out}")
    return out


def rows(graded):
    with (graded / "grades.csv").open() as file:
        return list(csv.DictReader(file))


def points(graded, student):
    """``{(notebook, exercise): (points, max_points)}`` of *student*, in the chapters every student hands in."""
    sampled = {chapter.stem for chapter in SAMPLED}
    return {(row["notebook"], row["exercise"]): (float(row["points"]), float(row["max_points"]))
            for row in rows(graded) if row["student"] == student and row["notebook"] in sampled}


# -- the student version ---------------------------------------------------

def test_student_version_has_stubs_and_no_hidden_tests_or_outputs(student_version):
    for chapter in CHAPTERS:
        notebook = read(student_version / chapter.name)
        text = "\n".join(cell.source for cell in notebook.cells)
        assert "### BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text, f"{chapter.name}: markers left in"
        # One stub per solution region: an exercise may have several (chapter 12's Protocol has two methods).
        regions = sum(cell.source.count("### BEGIN SOLUTION") for cell in read(chapter).cells)
        assert regions >= len(exercises(chapter)) and text.count("raise NotImplementedError()") == regions, \
            f"{chapter.name}: a stub is missing"
        assert not any(cell.get("outputs") for cell in notebook.cells), f"{chapter.name}: outputs left in"


def test_student_version_holds_no_solution_code_anywhere(student_version):
    assert classroom.copied_solutions(student_version, classroom.solution_blocks(BOOK)) == []
    assert not (student_version / "code" / "epollbook" / "classroom").exists(), "the teacher's package was handed out"


def test_the_solution_scan_finds_a_solution_copied_into_the_package(student_version, tmp_path):
    planted = tmp_path / "student"
    shutil.copytree(student_version, planted)
    _, solution, _ = exercises(CHAPTERS[-1])[-1]
    with (planted / "code" / "epollbook" / "__init__.py").open("a") as module:
        module.write("\n" + solution.source + "\n")
    assert classroom.copied_solutions(planted, classroom.solution_blocks(BOOK)), "a copied solution went unnoticed"


def test_every_link_of_the_student_version_leads_to_a_file_it_holds(student_version):
    texts = {path.name: path.read_text() for path in student_version.glob("*.md")}
    texts.update((path.name, "\n".join(cell.source for cell in read(path).cells if cell.cell_type == "markdown"))
                 for path in student_version.glob("*.ipynb"))
    targets = {(name, target) for name, text in texts.items() for target in re.findall(r"\]\(([^)#\s]+)", text)
               if "://" not in target}
    assert any(target == "glossary.md" for _, target in targets), "no chapter links to the glossary any more"
    dead = sorted(f"{name} -> {target}" for name, target in targets if not (student_version / target).exists())
    assert not dead, f"links to files the student version does not hold: {dead}"


def test_student_version_has_what_a_student_needs_to_run_it(student_version):
    for needed in ["README.md", "Makefile", "pyproject.toml", "requirements.txt", "glossary.md"]:
        assert (student_version / needed).exists(), f"the student version lacks {needed}"
    package = ROOT / "code" / "epollbook"
    wanted = {path.relative_to(package) for path in package.rglob("*.py")
              if "classroom" not in path.parts and "__pycache__" not in path.parts}
    handed_out = {path.relative_to(student_version / "code" / "epollbook")
                  for path in (student_version / "code" / "epollbook").rglob("*.py")}
    assert handed_out == wanted, f"the handed-out package differs from the book's (without classroom/): " \
                                 f"{sorted(map(str, handed_out ^ wanted))}"
    requirements = (student_version / "requirements.txt").read_text().splitlines()
    assert requirements[-1] == "-e ." and any(line.startswith("jupyterlab==") for line in requirements), requirements
    assert not any(line.startswith("nbgrader") for line in requirements), "students were given the grader to install"


# -- grades -----------------------------------------------------------------

def test_grades_csv_has_one_row_per_student_per_exercise(graded, submissions):
    table = rows(graded)
    assert list(table[0])[:5] == ["student", "notebook", "exercise", "points", "max_points"]
    students = {path.name for path in submissions.iterdir()}
    assert {(r["student"], r["notebook"], r["exercise"]) for r in table} == \
        {(s, n, e) for s in students for n, e in EVERY_EXERCISE}
    assert len(table) == len(students) * len(EVERY_EXERCISE)


def test_solutions_get_full_marks_in_every_chapter_and_untouched_stubs_get_zero(graded):
    solved = {(row["notebook"], row["exercise"]): (float(row["points"]), float(row["max_points"]))
              for row in rows(graded) if row["student"] == "solved"}
    assert {notebook for notebook, _ in solved} == {chapter.stem for chapter in CHAPTERS}
    untouched = points(graded, "untouched")
    assert all(got == most > 0 for got, most in solved.values()), f"the solutions lost points: {solved}"
    assert all(got == 0 for got, _ in untouched.values()), f"the untouched stubs got points: {untouched}"


def test_a_check_cell_edited_by_the_student_is_run_as_it_was_handed_out(graded):
    cheater = points(graded, "cheater")
    assert all(got == 0 for got, _ in cheater.values()), f"stubs with rewritten checks got points: {cheater}"


def test_a_hanging_answer_loses_only_its_own_exercise(graded):
    hanging = points(graded, "hanging")
    lost = {exercise for (_, exercise), (got, most) in hanging.items() if got < most}
    assert lost == set(HANGING_ANSWERS), f"expected to lose only {sorted(HANGING_ANSWERS)}; lost {sorted(lost)}"


def test_nbgraders_own_gradebook_agrees(graded):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{graded / 'course' / 'gradebook.db'}") as gradebook:
        solved = gradebook.find_submission(classroom.ASSIGNMENT, "solved")
        untouched = gradebook.find_submission(classroom.ASSIGNMENT, "untouched")
        assert solved.score == solved.max_score > 0, f"nbgrader gave the solutions {solved.score}/{solved.max_score}"
        assert untouched.score == 0, f"nbgrader gave the stubs {untouched.score}"


def test_every_failed_check_gets_one_sentence_of_feedback(graded):
    for row in rows(graded):
        if float(row["points"]) < float(row["max_points"]):
            assert row["feedback"] and "\n" not in row["feedback"], f"feedback for {row}"
            page = (graded / "feedback" / f"{row['student']}.md").read_text()
            assert row["feedback"] in page, f"{row['student']}'s feedback page lacks: {row['feedback']}"


def test_odd_submissions_get_a_clear_line_and_the_rest_is_still_graded(graded):
    deleter = (graded / "feedback" / "deleter.md").read_text()
    assert deleter.count("was deleted; the grader put the original back") == 2, deleter
    first = [gid for gid, _, _ in exercises(CHAPTERS[0])]
    assert points(graded, "deleter")[(CHAPTERS[0].stem, first[0])][0] > 0, "a deleted check cell was not run again"

    mover = (graded / "feedback" / "mover.md").read_text()
    assert "moved out of order" in mover and "run your answer's cell before its check" in mover, mover
    assert all(got == most for (notebook, _), (got, most) in points(graded, "mover").items()
               if notebook == CHAPTERS[0].stem), "outputs left in cost points"

    loser = (graded / "feedback" / "loser.md").read_text()
    assert "could not be read as a notebook" in loser and "was not handed back" in loser
    assert "my-notes.ipynb is not one of the assignment's notebooks" in loser


def test_grading_leaves_no_process_running(graded):
    left = [" ".join(process.cmdline())
            for process in processes_with_environment(**{classroom.GRADING_TAG: None}, **THIS_RUN)]
    assert not left, f"processes started while grading are still running: {left}"
    litterer = {key: value for key, value in points(graded, "litterer").items() if key[0] == CHAPTERS[0].stem}
    solved = {key: value for key, value in points(graded, "solved").items() if key[0] == CHAPTERS[0].stem}
    assert litterer == solved, "leaving processes behind changed the grades"


def test_grading_the_same_submissions_again_gives_the_same_grades(graded, submissions, tmp_path):
    again, subset = tmp_path / "again", tmp_path / "subset"
    shutil.copytree(submissions / "hanging", subset / "hanging")  # the one whose grades depend on time limits
    classroom.autograde(subset, again, BOOK)
    assert rows(again) == [row for row in rows(graded) if row["student"] == "hanging"]
