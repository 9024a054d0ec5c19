"""The book's exercises as classroom assignments: a student version and an autograder, through nbgrader.

    python -m epollbook.classroom student   [--out dist/student]
    python -m epollbook.classroom autograde SUBMISSIONS [--out dist/autograded]

Both build an nbgrader course folder from the chapter notebooks in ``book/``
(one assignment holding every chapter) and run nbgrader itself on it:
``generate_assignment`` makes the student notebooks (solutions replaced by
stubs, hidden tests and outputs removed), ``autograde`` runs every submitted
notebook with the visible and hidden tests. Everything is local: nbgrader's
gradebook is an SQLite file, and no hub, server or container is needed.

``SUBMISSIONS`` holds one folder per student with that student's notebooks as
handed back. ``autograde`` writes ``grades.csv`` (one row per student per
exercise) and, per student, ``feedback/STUDENT.md``, which says for each check
that failed what it expected and what happened.
"""

import argparse
import csv
import dataclasses
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import nbformat

ASSIGNMENT = "epoll-hands-on"
REPOSITORY = pathlib.Path(__file__).resolve().parents[2]
CELL_TIME_LIMIT = 60  # seconds for any one cell; each check also limits the reader's code to a few seconds
GRADING_TAG = "EPOLLBOOK_GRADING_TAG"

NBGRADER_CONFIG = f"""\
# Written by epollbook.classroom; made anew for each run.
c = get_config()
c.CourseDirectory.course_id = "epoll-hands-on"
c.CourseDirectory.root = {{root!r}}
c.CourseDirectory.db_url = "sqlite:///" + {{root!r}} + "/gradebook.db"
c.Execute.timeout = {CELL_TIME_LIMIT}
c.Execute.interrupt_on_timeout = True
c.OverwriteCells.add_missing_cells = True
"""


class ClassroomError(RuntimeError):
    """Something a teacher has to fix: the message says what."""


OUTPUT_MARK = ".made-by-epollbook"


def _fresh_folder(folder):
    """Empty *folder* for new output, refusing to delete a folder this module did not make."""
    if folder.exists() and any(folder.iterdir()):
        if not (folder / OUTPUT_MARK).exists():
            raise ClassroomError(f"{folder} already exists and holds files this tool did not write: "
                                 "choose a new folder, or empty that one yourself")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / OUTPUT_MARK).write_text("Written by `python -m epollbook.classroom`, which may replace this folder.\n")


def _grading(cell):
    return cell.get("metadata", {}).get("nbgrader", {})


def chapter_notebooks(book=REPOSITORY / "book"):
    """The chapter notebooks that hold exercises, in order."""
    return [path for path in sorted(pathlib.Path(book).glob("*.ipynb"))
            if any(_grading(cell).get("grade") for cell in nbformat.read(path, as_version=4).cells)]


@dataclasses.dataclass
class Exercise:
    notebook: str      # the notebook's name without .ipynb
    grade_id: str      # the solution cell's grade id; its check is grade_id + "-check"
    points: float
    objective: str     # what the exercise teaches
    minutes: int       # the time a student should plan for it (the author's estimate)


def exercises(book=REPOSITORY / "book"):
    """Every exercise of the book, in order, from the notebooks' cell metadata."""
    found = []
    for path in chapter_notebooks(book):
        cells = nbformat.read(path, as_version=4).cells
        checks = {_grading(cell).get("grade_id"): cell for cell in cells if _grading(cell).get("grade")}
        for cell in cells:
            grading = _grading(cell)
            if grading.get("solution"):
                about = cell.metadata.get("epollbook", {})
                check = checks.get(grading["grade_id"] + "-check")
                found.append(Exercise(path.stem, grading["grade_id"], _grading(check).get("points", 0) if check else 0,
                                      about.get("objective", ""), about.get("minutes", 0)))
    return found


def exercise_table(book=REPOSITORY / "book"):
    """The exercises as a Markdown table: notebook, exercise, objective, points, minutes."""
    from IPython.display import Markdown

    rows = ["| chapter | exercise (grade id) | what it checks that the student can do | points | minutes |",
            "| --- | --- | --- | ---: | ---: |"]
    found = exercises(book)
    for exercise in found:
        rows.append(f"| {exercise.notebook} | `{exercise.grade_id}` | {exercise.objective} | "
                    f"{exercise.points:g} | {exercise.minutes} |")
    rows.append(f"| | **all** | | **{sum(e.points for e in found):g}** | **{sum(e.minutes for e in found)}** |")
    return Markdown("\n".join(rows))


# -- the course folder ----------------------------------------------------


def _nbgrader(course, *arguments, env=None):
    """Run nbgrader in *course*, its output going to *course*/nbgrader.log; raise ``ClassroomError`` if it fails.

    The output goes to a file, not a pipe: a process a student's code leaves
    behind inherits it, and a pipe would then never reach its end.
    """
    env = dict(os.environ if env is None else env)
    # nbgrader runs `alembic` by name: it must find the one beside this Python, in the book's venv.
    env["PATH"] = os.pathsep.join([str(pathlib.Path(sys.executable).parent), env.get("PATH", "")])
    log = pathlib.Path(course) / "nbgrader.log"
    with log.open("a") as output:
        output.write(f"\n$ nbgrader {' '.join(arguments)}\n")
        output.flush()
        finished = subprocess.run([sys.executable, "-m", "nbgrader", *arguments], cwd=course, stdin=subprocess.DEVNULL,
                                  stdout=output, stderr=subprocess.STDOUT, env=env)
    if finished.returncode != 0:
        raise ClassroomError(f"nbgrader {' '.join(arguments)} failed; its output, from {log}:\n{log.read_text()[-4000:]}")


def prepare_course(course, book=REPOSITORY / "book"):
    """Make an nbgrader course folder in *course* from *book*'s chapters, and generate the assignment."""
    course = pathlib.Path(course).resolve()
    if course.exists():
        shutil.rmtree(course)
    source = course / "source" / ASSIGNMENT
    source.mkdir(parents=True)
    for notebook in chapter_notebooks(book):
        shutil.copy(notebook, source / notebook.name)
    (course / "nbgrader_config.py").write_text(NBGRADER_CONFIG.format(root=str(course)))
    _nbgrader(course, "generate_assignment", ASSIGNMENT, "--force")
    return course


# -- the student version --------------------------------------------------

STUDENT_README = """\
# epoll, hands on: the exercises

The chapters of *epoll, hands on* as notebooks, with the exercises for you to
do. Each exercise has a cell for your code (it says `raise NotImplementedError()`
until you replace that with your answer) and a cell that checks it against live
sockets and says what it expected and what happened.

## Run them (Linux, Python >= 3.10, make)

    make lab

sets up a virtual environment in `.venv` and opens the notebooks in JupyterLab.
epoll is Linux-only: on macOS or Windows use a Linux virtual machine, WSL 2 or
a Linux container.

## Hand them back

Hand back the notebooks (the `.ipynb` files in this folder), with their names
unchanged. Keep each
exercise's cells where they are and do not delete any: your teacher's grader
runs every check again, with more cases than you see.
"""

STUDENT_MAKEFILE = """\
# make lab: set up .venv, then open the notebooks in JupyterLab.
PYTHON ?= python3

.venv/.installed: requirements.txt
\t$(PYTHON) -m venv .venv
\t.venv/bin/python -m pip install --quiet -r requirements.txt
\ttouch $@

lab: .venv/.installed
\t.venv/bin/jupyter lab --ServerApp.ip=127.0.0.1 $(if $(filter 0,$(shell id -u)),--allow-root) notebooks

.PHONY: lab
"""


def _student_requirements():
    """The book's pins of what a student needs to run the notebooks, and the package."""
    wanted = {"jupyterlab", "ipykernel"}
    pins = [line for line in (REPOSITORY / "requirements.txt").read_text().splitlines()
            if re.split(r"[=<>~ ]", line, maxsplit=1)[0].lower() in wanted]
    return "\n".join(pins + ["-e ."]) + "\n"


def _code_lines(text):
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def solution_blocks(book=REPOSITORY / "book"):
    """The code of every solution and hidden test, as lists of stripped lines: what a student version must not hold."""
    blocks = []
    for path in chapter_notebooks(book):
        for cell in nbformat.read(path, as_version=4).cells:
            for begin, end in (("### BEGIN SOLUTION", "### END SOLUTION"), ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")):
                for block in re.findall(re.escape(begin) + r"(.*?)" + re.escape(end), cell.source, re.DOTALL):
                    blocks.append(_code_lines(block))
    return blocks


def copied_solutions(folder, blocks, run=3):
    """Where in *folder* a solution or hidden test shows up: *run* of its code lines in a row, or all of a shorter one.

    Single lines are not enough (``return listener`` is everywhere); a run of
    lines in the same order is a copy.
    """
    found = []
    for path in sorted(pathlib.Path(folder).rglob("*")):
        if not path.is_file() or path.suffix not in {".ipynb", ".py", ".md", ".txt", ".toml"}:
            continue
        if path.suffix == ".ipynb":  # the cells' text, not their JSON escaping
            text = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells)
        else:
            text = path.read_text(errors="replace")
        joined = "\n".join(_code_lines(text))
        for block in blocks:
            size = min(run, len(block))
            if any("\n".join(block[i:i + size]) in joined for i in range(len(block) - size + 1)):
                found.append(f"{path.relative_to(folder)}: {block[0]}")
    return found


def make_student(out, book=REPOSITORY / "book"):
    """Write the student version into *out*: stub notebooks, the package, requirements, a README."""
    out = pathlib.Path(out).resolve()
    _fresh_folder(out)
    with tempfile.TemporaryDirectory(prefix="epollbook-course-") as scratch:
        # The course folder holds the solutions: it stays out of what is handed out.
        course = prepare_course(pathlib.Path(scratch) / "course", book)
        shutil.copytree(course / "release" / ASSIGNMENT, out, dirs_exist_ok=True)
    # The package the notebooks import; this module is the teacher's, not the student's.
    shutil.copytree(REPOSITORY / "code" / "epollbook", out / "code" / "epollbook",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "classroom.py"))
    shutil.copy(REPOSITORY / "pyproject.toml", out / "pyproject.toml")
    (out / "requirements.txt").write_text(_student_requirements())
    (out / "README.md").write_text(STUDENT_README)
    (out / "Makefile").write_text(STUDENT_MAKEFILE)
    copied = copied_solutions(out, solution_blocks(book))
    if copied:
        raise ClassroomError(f"the student version still holds solution code: {copied[:3]}")
    return out


# -- the autograder -------------------------------------------------------


def _students(submissions):
    students = sorted(path for path in pathlib.Path(submissions).iterdir() if path.is_dir() and not path.name.startswith("."))
    if not students:
        raise ClassroomError(f"{submissions} holds no student folders: expected one folder per student, "
                             "each holding that student's notebooks")
    return students


def _kill_tagged(tag, seconds=5.0):
    """Kill every process that carries *tag* in its environment (whatever a student's code left running),
    and wait until each is gone."""
    marker = f"{GRADING_TAG}={tag}".encode()
    killed = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(entry)
        except (OSError, ProcessLookupError):  # gone already, or not ours to read
            continue
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(entry) for entry in killed):
        time.sleep(0.02)
    return len(killed)


def _alive(proc_entry):
    """True while a /proc/PID entry is a process that has not exited (a zombie has)."""
    try:
        stat = (proc_entry / "stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def autograde(submissions, out, book=REPOSITORY / "book"):
    """Grade every student folder in *submissions*; write grades.csv and feedback/ into *out*.

    Returns the path of grades.csv.
    """
    submissions, out = pathlib.Path(submissions).resolve(), pathlib.Path(out).resolve()
    if not submissions.is_dir():
        raise ClassroomError(f"{submissions} is not a folder: give SUBMISSIONS=DIR, one folder per student inside")
    students = _students(submissions)
    _fresh_folder(out)
    course = prepare_course(out / "course", book)
    expected = {path.stem: path for path in (course / "release" / ASSIGNMENT).glob("*.ipynb")}
    notes = {}
    for student in students:
        notes[student.name] = _hand_in(student, course / "submitted" / student.name / ASSIGNMENT, expected)

    tag = uuid.uuid4().hex
    env = {**os.environ, GRADING_TAG: tag}
    try:
        _nbgrader(course, "autograde", ASSIGNMENT, "--force", env=env)
    finally:
        _kill_tagged(tag)

    rows = _grades(course, [s.name for s in students], list(expected))
    grades = out / "grades.csv"
    with grades.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["student", "notebook", "exercise", "points", "max_points", "feedback"])
        for row in rows:
            writer.writerow([row.student, row.notebook, row.exercise, f"{row.points:g}", f"{row.max_points:g}", row.feedback])
    feedback = out / "feedback"
    feedback.mkdir()
    for student in students:
        mine = [row for row in rows if row.student == student.name]
        (feedback / f"{student.name}.md").write_text(_feedback_page(student.name, mine, notes[student.name]))
    return grades


def _hand_in(student, submitted, expected):
    """Copy a student's notebooks where nbgrader looks for them; return notes on what was odd."""
    submitted.mkdir(parents=True)
    notes = []
    # Notebooks may come back in a subfolder (nbgrader's own layout puts them in one named after the assignment).
    handed = {}
    for path in sorted(student.rglob("*.ipynb"), key=lambda p: (len(p.parts), str(p))):
        if ".ipynb_checkpoints" not in path.parts:
            handed.setdefault(path.stem, path)
    for name in expected:
        if name not in handed:
            notes.append(f"{name}.ipynb was not handed back: its exercises get 0 points.")
            continue
        try:
            notebook = nbformat.read(handed[name], as_version=4)
        except Exception as error:  # not JSON, not a notebook: it cannot be graded
            notes.append(f"{name}.ipynb could not be read as a notebook ({type(error).__name__}): its exercises get 0 points.")
            continue
        nbformat.write(notebook, submitted / f"{name}.ipynb")
        notes += _oddities(name, notebook, nbformat.read(expected[name], as_version=4))
    for name in sorted(set(handed) - set(expected)):
        notes.append(f"{name}.ipynb is not one of the assignment's notebooks, so it was not graded.")
    return notes


def _oddities(name, submitted, release):
    """What a student did to a notebook that changes grading: deleted or reordered exercise cells."""
    wanted = [_grading(cell)["grade_id"] for cell in release.cells if _grading(cell).get("grade_id")]
    present = [_grading(cell)["grade_id"] for cell in submitted.cells if _grading(cell).get("grade_id")]
    notes = []
    for grade_id in wanted:
        if grade_id not in present:
            notes.append(f"{name}: the cell {grade_id} was deleted; the grader put the original back "
                         f"(a deleted answer cell is a stub again, worth 0 points).")
    order = [grade_id for grade_id in present if grade_id in wanted]
    if order != [grade_id for grade_id in wanted if grade_id in present]:
        notes.append(f"{name}: exercise cells were moved out of order; the grader runs them as handed back, "
                     "so a check that comes before its answer fails.")
    return notes


@dataclasses.dataclass
class Grade:
    student: str
    notebook: str
    exercise: str
    points: float
    max_points: float
    feedback: str


def _grades(course, students, notebooks):
    """One ``Grade`` per student per exercise, from nbgrader's gradebook and the autograded notebooks."""
    from nbgrader.api import Gradebook, MissingEntry

    rows = []
    with Gradebook(f"sqlite:///{course}/gradebook.db") as gradebook:
        sources = {notebook.name: notebook for notebook in gradebook.find_assignment(ASSIGNMENT).notebooks}
        for student in students:
            for notebook in sorted(notebooks):
                source = sources[notebook]
                messages = _check_messages(course / "autograded" / student / ASSIGNMENT / f"{notebook}.ipynb")
                for grade_cell in sorted(source.grade_cells, key=lambda cell: cell.name):
                    try:
                        grade = gradebook.find_grade(grade_cell.name, notebook, ASSIGNMENT, student)
                        points = grade.score
                    except MissingEntry:
                        points = 0.0
                    exercise = grade_cell.name.removesuffix("-check")
                    if messages is None:
                        text = "not graded: the notebook was not handed back or could not be read"
                    elif points >= grade_cell.max_score:
                        text = ""
                    else:
                        text = messages.get(grade_cell.name) or "the check did not pass"
                    rows.append(Grade(student, notebook, exercise, points or 0.0, grade_cell.max_score, text))
    return rows


def _check_messages(autograded):
    """``{grade id: one sentence}`` for each check cell that failed in an autograded notebook; None if there is none."""
    if not autograded.exists():
        return None
    messages = {}
    for cell in nbformat.read(autograded, as_version=4).cells:
        grade_id = _grading(cell).get("grade_id")
        errors = [output for output in cell.get("outputs", []) if output.get("output_type") == "error"]
        if grade_id and errors:
            messages[grade_id] = _sentence(errors[-1])
    return messages


def _sentence(error):
    """One sentence for a failed check cell's error output."""
    name, value = error.get("ename", ""), (error.get("evalue") or "").strip()
    if name == "CheckFailed":
        return value
    if name == "NameError":
        return (f"the check could not find your code ({value}): run your answer's cell before its check, "
                "and keep the cells in the order they came in")
    if name in ("CellTimeoutError", "KeyboardInterrupt", "TimeoutError"):
        return f"the check did not finish within {CELL_TIME_LIMIT} s and was stopped: does some code of yours never return?"
    first_line = value.splitlines()[0] if value else ""
    return f"the check stopped with {name}: {first_line}".rstrip(": ")


def _feedback_page(student, rows, notes):
    total, most = sum(row.points for row in rows), sum(row.max_points for row in rows)
    lines = [f"# Feedback for {student}", "", f"Total: {total:g} of {most:g} points.", ""]
    for note in notes:
        lines.append(f"- {note}")
    if notes:
        lines.append("")
    for notebook in sorted({row.notebook for row in rows}):
        lines += [f"## {notebook}", ""]
        for row in (row for row in rows if row.notebook == notebook):
            verdict = "passed" if row.points >= row.max_points else row.feedback
            lines.append(f"- `{row.exercise}`: {row.points:g}/{row.max_points:g}. {verdict}")
        lines.append("")
    return "\n".join(lines)


# -- the command line -----------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m epollbook.classroom", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    student = commands.add_parser("student", help="write the student version of the exercises")
    student.add_argument("--out", default="dist/student")
    grade = commands.add_parser("autograde", help="grade one folder per student")
    grade.add_argument("submissions", help="a folder holding one folder per student, each with that student's notebooks")
    grade.add_argument("--out", default="dist/autograded")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        if args.command == "student":
            out = make_student(args.out)
            print(f"The student version is in {out} ({len(list(out.glob('*.ipynb')))} notebooks); "
                  "hand out that folder.")
        else:
            grades = autograde(args.submissions, args.out)
            print(f"Graded in {time.monotonic() - started:.0f} s: {grades}, feedback in {grades.parent / 'feedback'}")
    except ClassroomError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
