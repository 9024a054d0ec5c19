"""The classroom's words and its pure parts, without nbgrader runs: what students and teachers read.

The sentence for each kind of failed check, a student's feedback page, the
teacher's exercise table, the notes on an odd notebook handed back (built in
memory), the student version's requirements, the one-line answer to a book
folder without chapters, the one definition of chapter and exercise, which
cells grading runs, and the teacher's guide chapter by chapter.
"""

import json
import pathlib

import nbformat
import pytest

from epollbook import exercises as book_exercises
from epollbook.classroom import CELL_TIME_LIMIT, Grade
from epollbook.classroom.__main__ import main
from epollbook.classroom.autograder import oddities
from epollbook.classroom.course import MEMORY, find_book
from epollbook.classroom.execution import GradingExecute
from epollbook.classroom.feedback import (
    KERNEL_DIED,
    KERNEL_STUCK,
    OUT_OF_MEMORY,
    OUTPUT_LIMIT,
    exercise_markdown,
    feedback_page,
    sentence,
)
from epollbook.classroom.guide import CLASS_OF_30, chapter_markdown, class_grading_markdown, mistake_name
from epollbook.classroom.needed import cells_to_run
from epollbook.classroom.student import runtime_requirements
from notebooks import BOOK, CHAPTERS

pytestmark = pytest.mark.quick


def error(ename, evalue):
    return {"output_type": "error", "ename": ename, "evalue": evalue, "traceback": []}


# -- one sentence per failed check -------------------------------------------

def test_a_failed_check_is_told_in_its_own_words():
    said = "expected make_response('') to return bytes; it returned None"
    assert sentence(error("CheckFailed", f"  {said}\n")) == said


def test_a_check_run_before_its_answer_says_to_run_the_answer_first():
    told = sentence(error("NameError", "name 'make_response' is not defined"))
    assert "name 'make_response' is not defined" in told and "run your answer's cell before its check" in told, told


@pytest.mark.parametrize("ename", ["CellTimeoutError", "KeyboardInterrupt", "TimeoutError"])
def test_a_check_stopped_for_time_says_how_long_it_was_given(ename):
    told = sentence(error(ename, ""))
    assert f"within {CELL_TIME_LIMIT} s" in told and "never return" in told, told


def test_any_other_error_gives_its_name_and_first_line_only():
    assert sentence(error("ValueError", "bad port\nmore detail\n")) == "the check stopped with ValueError: bad port"
    assert sentence(error("RuntimeError", "")) == "the check stopped with RuntimeError"


# -- a student's page ----------------------------------------------------------

def test_the_feedback_page_totals_and_says_what_failed_per_notebook():
    grades = [Grade("ada", "02-serving-forever", "serve-forever", 0, 3, "serve_forever is not written yet"),
              Grade("ada", "01-one-request", "make-response", 2, 2, ""),
              Grade("ada", "01-one-request", "open-listener", 0, 2, "expected SO_REUSEADDR")]
    page = feedback_page("ada", grades, ["01-one-request: the cell open-listener-check was deleted"])
    lines = page.splitlines()
    assert lines[0] == "# Feedback for ada" and "Total: 2 of 7 points." in lines, page
    assert "- 01-one-request: the cell open-listener-check was deleted" in lines, page
    assert lines.index("## 01-one-request") < lines.index("## 02-serving-forever"), "notebooks out of order"
    assert "- `make-response`: 2/2. passed" in lines, page
    assert "- `open-listener`: 0/2. expected SO_REUSEADDR" in lines, page
    assert "- `serve-forever`: 0/3. serve_forever is not written yet" in lines, page


def test_a_page_without_notes_has_no_empty_list():
    page = feedback_page("bob", [Grade("bob", "01-one-request", "make-response", 2, 2, "")], [])
    assert "\n- " not in page.split("## ")[0], page


# -- the teacher's exercise table ----------------------------------------------

def exercise(chapter, grade_id, points, minutes, objective="do a thing"):
    return book_exercises.Exercise(notebook=pathlib.Path(f"{chapter}.ipynb"), grade_id=grade_id,
                                   solution=nbformat.v4.new_code_cell(), check=None, points=points,
                                   objective=objective, minutes=minutes)


def test_the_exercise_table_has_a_row_per_exercise_and_a_total():
    table = exercise_markdown([exercise("01-one-request", "make-response", 2, 10, "count bytes, not characters"),
                               exercise("02-serving-forever", "serve-forever", 1.5, 30)]).splitlines()
    assert table[0].startswith("| chapter | exercise (grade id) |") and len(table) == 5, table
    assert table[2] == "| 01-one-request | `make-response` | count bytes, not characters | 2 | 10 |", table[2]
    assert table[4] == "| | **all** | | **3.5** | **40** |", table[4]
    assert len({line.count("|") for line in table}) == 1, "rows with different numbers of columns"


# -- a notebook handed back, built in memory -----------------------------------

def graded_cell(grade_id, source="pass"):
    return nbformat.v4.new_code_cell(source, metadata={"nbgrader": {"grade_id": grade_id}})


def notebook(*grade_ids):
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("task")] + [graded_cell(g) for g in grade_ids])


RELEASE = notebook("answer-a", "answer-a-check", "answer-b", "answer-b-check")


def test_an_untouched_notebook_has_no_oddities():
    assert oddities("01", notebook("answer-a", "answer-a-check", "answer-b", "answer-b-check"), RELEASE) == []


def test_each_deleted_exercise_cell_gets_its_own_note():
    notes = oddities("01", notebook("answer-a", "answer-b-check"), RELEASE)
    assert len(notes) == 2 and all("was deleted; the grader put the original back" in n for n in notes), notes
    assert "answer-a-check" in notes[0] and "answer-b was" in notes[1], notes


def test_moved_exercise_cells_get_a_note_that_says_what_follows():
    notes = oddities("02", notebook("answer-a-check", "answer-a", "answer-b", "answer-b-check"), RELEASE)
    assert notes == ["02: exercise cells were moved out of order; the grader runs them as handed back, "
                     "so a check that comes before its answer fails."], notes


def test_cells_a_student_added_are_no_oddity():
    added = notebook("answer-a", "answer-a-check", "answer-b", "answer-b-check")
    added.cells.insert(2, nbformat.v4.new_code_cell("print('my own experiment')"))
    assert oddities("01", added, RELEASE) == []


# -- the student version's requirements ------------------------------------------

def test_students_get_the_runtime_requirements_without_extras_or_the_grader():
    declared = ["nbformat>=5.9", 'pytest>=8; extra == "test"', "nbgrader==0.9.6", 'uvloop; sys_platform == "linux"',
                "Jupyter_Client"]
    assert runtime_requirements(declared) == [("nbformat", "nbformat>=5.9", ""),
                                              ("uvloop", "uvloop", 'sys_platform == "linux"'),
                                              ("Jupyter_Client", "Jupyter_Client", "")]


# -- where the book is ---------------------------------------------------------

def write_chapter(folder, name):
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nbformat.v4.new_notebook(), folder / name)


def test_a_book_folder_without_chapters_gets_one_line_and_nothing_is_written(tmp_path, capsys):
    write_chapter(tmp_path / "book", "teachers-guide.ipynb")  # an appendix is not a chapter
    assert main(["student", "--book", str(tmp_path / "book"), "--out", str(tmp_path / "out")]) == 1
    said = capsys.readouterr().err
    assert said.startswith("error: no chapter notebooks (NN-*.ipynb) in ") and said.count("\n") == 1, said
    assert "--book DIR" in said and not (tmp_path / "out").exists(), said


def test_the_book_is_found_below_the_current_folder_or_in_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_book() == tmp_path / "book", "with no chapters anywhere, ./book is the one named in the error"
    write_chapter(tmp_path, "01-here.ipynb")
    assert find_book() == tmp_path, "a notebook beside the chapters (the teacher's guide) did not find them"
    write_chapter(tmp_path / "book", "01-below.ipynb")
    assert find_book() == tmp_path / "book"
    assert find_book("elsewhere") == pathlib.Path("elsewhere")


# -- chapters and exercises ------------------------------------------------------

def test_chapters_are_the_numbered_notebooks_in_order(tmp_path):
    for name in ("02-b.ipynb", "10-j.ipynb", "01-a.ipynb", "teachers-guide.ipynb", "1-short.ipynb", "03-c.md"):
        if name.endswith(".ipynb"):
            write_chapter(tmp_path, name)
        else:
            (tmp_path / name).write_text("")
    assert [path.name for path in book_exercises.chapters(tmp_path)] == ["01-a.ipynb", "02-b.ipynb", "10-j.ipynb"]
    assert book_exercises.chapters(tmp_path / "missing") == []


def test_an_exercise_is_an_answer_cell_with_its_check(tmp_path):
    answer = nbformat.v4.new_code_cell(
        "def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION",
        metadata={"nbgrader": {"grade_id": "f", "solution": True},
                  "epollbook": {"objective": "return one", "minutes": 5}})
    check = nbformat.v4.new_code_cell("check(f)", metadata={"nbgrader": {"grade_id": "f-check", "grade": True,
                                                                         "points": 3}})
    lonely = nbformat.v4.new_code_cell("def g(): ...", metadata={"nbgrader": {"grade_id": "g", "solution": True}})
    nbformat.write(nbformat.v4.new_notebook(cells=[answer, check, lonely, graded_cell("not-an-answer")]),
                   tmp_path / "01-x.ipynb")
    first, second = book_exercises.exercises(tmp_path)
    assert (first.chapter, first.grade_id, first.points, first.objective, first.minutes) == \
        ("01-x", "f", 3, "return one", 5)
    assert first.solution.source == answer.source and first.check.source == "check(f)"
    assert (second.grade_id, second.check, second.points, second.objective, second.minutes) == ("g", None, 0, "", 0)


# -- which cells grading runs ------------------------------------------------------

def run(*sources, roots):
    return cells_to_run(list(sources), roots)


def test_an_exercise_needs_the_cells_that_define_what_it_uses_and_no_experiment():
    sources = ["import os\nfrom epollbook.launch import serve", "server = serve('example3')\nprint(server)",
               "def helper(x):\n    return x + 1", None, "def answer(x):\n    return helper(x)",
               "check(answer)", "print(server.pid)"]
    assert run(*sources, roots=[4, 5]) == [2, 4, 5], "check is not defined anywhere: nothing pulled in for it"
    assert run(*sources, roots=[6]) == [0, 1, 6]


def test_a_name_used_only_inside_a_function_still_counts_and_locals_do_not():
    sources = ["RESPONSE = b'hi'", "server = 1", "def answer(conn):\n    server = conn\n    return RESPONSE"]
    assert run(*sources, roots=[2]) == [0, 2], "a function's own local 'server' pulled in the global one"


def test_every_earlier_binding_counts_and_changes_in_place_too():
    sources = ["import os\nsteps = []", "steps.append(os.getpid())", "os.getpid()", "if True:\n    steps = [1]",
               "print(steps)"]
    assert run(*sources, roots=[4]) == [0, 1, 3, 4], "a call on a module counted as a change, or one was missed"


def test_cells_that_cannot_be_read_by_name_run_with_everything_before_them():
    sources = ["a = 1", "b = 2", "exec('c = a + b')", "print(c)"]
    assert run(*sources, roots=[3]) == [0, 1, 2, 3], "exec() can define anything: it must run, with all it reads"
    assert run("a = 1", "from os import *", "print(getcwd())", roots=[2]) == [0, 1, 2]
    assert run("a = 1", "not python (", "print(2)", roots=[2]) == [0, 1, 2]


def test_globals_looked_up_by_a_literal_name_count_as_that_name():
    sources = ["spare = 1", "other = 2", "if 'spare' not in globals():\n    spare = 3\nprint(spare)"]
    assert run(*sources, roots=[2]) == [0, 2], "'spare' in globals() reads spare, and nothing else"
    assert run("a = 1", "print(globals()[name])", roots=[1]) == [0, 1]


def test_a_magic_or_shell_line_can_do_anything_so_its_cell_runs_with_all_before_it():
    assert run("x = 1", "%time y = x", "print(y)", roots=[2]) == [0, 1, 2]
    assert run("x = 1", "!ls", "z = 2", "print(z)", roots=[3]) == [0, 1, 2, 3]
    assert run("x = 1", "z = 2", "print(z)", "!ls", roots=[2]) == [1, 2], "a later magic cell was pulled in"


# -- the words for a cell the grader had to stop ----------------------------------------

@pytest.mark.parametrize("ename", [KERNEL_DIED, OUTPUT_LIMIT, KERNEL_STUCK, OUT_OF_MEMORY])
def test_the_graders_own_errors_are_told_in_their_own_words(ename):
    said = "the kernel running this notebook ended during this cell"
    assert sentence(error(ename, said)) == said


# -- the teacher's guide, chapter by chapter ------------------------------------------------

def test_a_wrong_answers_name_reads_as_words_with_constants_in_capitals():
    assert mistake_name("keeps_epollout_once_asked") == "keeps EPOLLOUT once asked"
    assert mistake_name("AnswersInConnectionLost") == "answers in connection lost"


def test_a_chapters_guide_lists_each_exercises_mistakes_from_its_checks_table():
    first = exercise("01-one-request", "make-response", 2, 10, "count bytes")
    first.check = nbformat.v4.new_code_cell("check_make_response(make_response)")
    second = exercise("01-one-request", "open-listener", 2, 15, "reuse the address")
    second.check = nbformat.v4.new_code_cell("check_open_listener(open_listener)")
    wrong = [("check_make_response", "counts_characters", False, "count bytes, not characters"),
             ("check_make_response", "returns_text", True, "should return bytes"),
             ("check_make_response_twice", "unrelated", False, "not this exercise's")]
    text = chapter_markdown([first, second], wrong)
    assert "**`make-response`** (2 points, about 10 minutes): count bytes." in text, text
    assert "- counts characters: `count bytes, not characters`\n" in text, text
    assert "- returns text: `should return bytes` *(hidden)*" in text and "unrelated" not in text, text
    assert "No mistakes are tabled for this check yet." in text.split("open-listener")[1], text
    assert text.endswith("In all: 2 exercises, 4 points, about 25 minutes."), text
    assert "(The table of mistakes is in the book's repository" in chapter_markdown([first], None)


def test_the_guide_names_every_chapter_by_its_title_and_the_graders_limits_as_configured():
    guide = nbformat.read(BOOK / "teachers-guide.ipynb", as_version=4)
    text = "\n".join(cell.source for cell in guide.cells)
    headings = [line[4:] for line in text.splitlines() if line.startswith("### ")]
    titles = [nbformat.read(path, as_version=4).cells[0].source.splitlines()[0][2:] for path in CHAPTERS]
    assert headings == titles, f"the guide's chapter headings are not the chapters' titles: {headings}"
    calls = [cell.source for cell in guide.cells if cell.source.startswith("chapter_guide(")]
    assert calls == [f"chapter_guide({number})" for number in range(1, len(CHAPTERS) + 1)], calls
    assert f"may map {MEMORY >> 30} GiB" in text, "the guide's memory limit is not the grader's"
    assert f"may print {GradingExecute.output_limit.default_value:,} characters" in text, \
        "the guide's output limit is not the grader's"


def test_the_saved_class_measurement_adds_up_and_its_sentence_says_where_and_when():
    measured = json.loads(CLASS_OF_30.read_text())
    assert sum(measured["answers"].values()) == measured["students"] * measured["exercises_per_student"], measured
    assert measured["full_marks_for_solved"] == measured["answers"]["solved"] and measured["command"], measured
    said = class_grading_markdown(measured)
    assert said.startswith(f"Measured on {measured['measured'][:10]}, on a machine with 2 CPUs"), said
    assert f"{measured['seconds'] / 60:.1f} minutes" in said and "load average" in said, said
    assert str(measured["one_student_every_chapter"]["every_cell"]["seconds"]) in said, said
