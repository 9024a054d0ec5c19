"""The autograder: every student's notebooks run with the visible and hidden checks, by nbgrader.

    autograde(submissions, out, book, jobs=None, skip_unneeded=True, memory=MEMORY) -> Path of grades.csv

*submissions* holds one folder per student with that student's notebooks as
handed back (directly, or in a subfolder). The notebooks are copied into a
fresh course folder under *out* as nbgrader expects them, with a note for each
oddity (a notebook missing or unreadable, cells deleted or moved).

Students are graded in parallel, *jobs* at a time (default: one per core this
process may use): one ``nbgrader autograde --student`` each, each with its own
copy of the gradebook (SQLite takes one writer at a time, and a student's run
must not wait on another's), merged into the course's ``gradebook.db`` at the
end, so that nbgrader's own tools see the whole class. Within a notebook only
the cells grading needs run, unless *skip_unneeded* is False; a cell that ends
its kernel, prints without end or fills its kernel's *memory* costs that cell
only (``epollbook.classroom.execution``). A student whose grading fails
altogether (nbgrader itself ended) gets a note saying so, and the others
their grades.

Every process started while grading a student carries a mark in its
environment (``GRADING_TAG``), and whatever that student's code left running
is killed as soon as that student is graded.

*out* receives ``grades.csv`` (one row per student per exercise) and
``feedback/STUDENT.md`` (what each failed check expected and what happened).
"""

import concurrent.futures
import csv
import dataclasses
import os
import pathlib
import shutil
import signal
import time
import uuid
import warnings

import nbformat

from epollbook.classroom.course import (
    ASSIGNMENT,
    MEMORY,
    ClassroomError,
    chapters_of,
    find_book,
    fresh_folder,
    prepare_course,
    run_nbgrader,
)
from epollbook.classroom.feedback import feedback_page, sentence
from epollbook.exercises import CHECK_SUFFIX, grading

GRADING_TAG = "EPOLLBOOK_GRADING_TAG"
MEMORY_FLOOR = 512 << 20  # below this, a chapter's own kernel (its libraries, its threads' stacks) may not start


@dataclasses.dataclass
class Grade:
    """One row of grades.csv: what one student got for one exercise, and why not more."""

    student: str
    notebook: str
    exercise: str
    points: float
    max_points: float
    feedback: str  # one sentence if points were lost; "" if not


def autograde(submissions, out, book=None, jobs=None, skip_unneeded=True, memory=MEMORY):
    """Grade every student folder in *submissions* against the chapters in *book*; write into *out*.

    *jobs* students are graded at a time (default: the cores this process may
    use); *skip_unneeded* runs only the cells grading needs; *memory* is each
    grading kernel's limit in bytes. Returns the path of ``grades.csv``.
    Raises ``ClassroomError`` if *submissions* is not a folder of student
    folders, if *book* has no chapters, if *out* holds files this package did
    not write, if *jobs* is not a positive number, or if nbgrader cannot make
    the assignment.
    """
    submissions, out = pathlib.Path(submissions).resolve(), pathlib.Path(out).resolve()
    if not submissions.is_dir():
        raise ClassroomError(f"{submissions} is not a folder: give SUBMISSIONS=DIR, one folder per student inside")
    jobs = default_jobs() if jobs is None else jobs
    if not isinstance(jobs, int) or jobs < 1:
        raise ClassroomError(f"jobs must be a whole number of students at a time, at least 1; got {jobs!r}")
    if memory < MEMORY_FLOOR:
        raise ClassroomError(f"a grading kernel needs at least {MEMORY_FLOOR >> 20} MiB; got {memory >> 20} MiB")
    students = _students(submissions)
    book = find_book(book)
    chapters_of(book)  # a missing book is said before anything is written
    fresh_folder(out)
    course = prepare_course(out / "course", book, memory=memory)
    expected = {path.stem: path for path in (course / "release" / ASSIGNMENT).glob("*.ipynb")}
    notes = {student.name: hand_in(student, course / "submitted" / student.name / ASSIGNMENT, expected)
             for student in students}

    for folder in ("gradebooks", "logs"):
        (course / folder).mkdir()
    for student in students:  # each run starts from the gradebook as generate_assignment left it
        shutil.copy(course / "gradebook.db", course / "gradebooks" / f"{student.name}.db")
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        failures = pool.map(lambda student: grade_student(course, student.name, skip_unneeded), students)
        for student, failure in zip(students, list(failures), strict=True):
            if failure:
                notes[student.name].append(failure)
    merge_gradebooks(course, [student.name for student in students])

    rows = _grades(course, [student.name for student in students], list(expected))
    grades = out / "grades.csv"
    with grades.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["student", "notebook", "exercise", "points", "max_points", "feedback"])
        for row in rows:
            writer.writerow([row.student, row.notebook, row.exercise, f"{row.points:g}", f"{row.max_points:g}",
                             row.feedback])
    feedback = out / "feedback"
    feedback.mkdir()
    for student in students:
        mine = [row for row in rows if row.student == student.name]
        (feedback / f"{student.name}.md").write_text(feedback_page(student.name, mine, notes[student.name]))
    return grades


def default_jobs():
    """How many students to grade at a time: one per core this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def grade_student(course, student, skip_unneeded=True):
    """Run ``nbgrader autograde`` for *student* alone, on that student's gradebook, then kill what it left running.

    Returns "" if nbgrader finished, else one sentence for the student's
    feedback (the end of nbgrader's log is in *course*/logs/STUDENT.log).
    """
    tag = uuid.uuid4().hex
    gradebook = course / "gradebooks" / f"{student}.db"
    try:
        run_nbgrader(course, "autograde", ASSIGNMENT, "--force", f"--student={student}",
                     f"--CourseDirectory.db_url=sqlite:///{gradebook}",
                     f"--GradingExecute.skip_unneeded={skip_unneeded}",
                     env={**os.environ, GRADING_TAG: tag}, log=course / "logs" / f"{student}.log")
    except ClassroomError:
        return (f"grading stopped before the end (nbgrader failed; its log is logs/{student}.log in the course "
                "folder): the notebooks not graded get 0 points.")
    finally:
        kill_tagged(tag)
    return ""


def merge_gradebooks(course, students):
    """Copy each student's grades and comments from *course*/gradebooks/STUDENT.db into *course*/gradebook.db."""
    import sqlalchemy.exc
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{course}/gradebook.db") as merged, warnings.catch_warnings():
        # nbgrader's own add_submission makes SQLAlchemy warn about its autoflush; nothing is lost.
        warnings.simplefilter("ignore", sqlalchemy.exc.SAWarning)
        for student in students:
            with Gradebook(f"sqlite:///{course}/gradebooks/{student}.db") as theirs:
                try:
                    submission = theirs.find_submission(ASSIGNMENT, student)
                except MissingEntry:  # nbgrader ended before it recorded anything
                    continue
                merged.update_or_create_student(student)
                merged.update_or_create_submission(ASSIGNMENT, student, timestamp=submission.timestamp)
                for notebook in submission.notebooks:
                    for grade in notebook.grades:
                        mine = merged.find_grade(grade.name, notebook.name, ASSIGNMENT, student)
                        mine.auto_score, mine.manual_score = grade.auto_score, grade.manual_score
                        mine.extra_credit, mine.needs_manual_grade = grade.extra_credit, grade.needs_manual_grade
                    for comment in notebook.comments:
                        mine = merged.find_comment(comment.name, notebook.name, ASSIGNMENT, student)
                        mine.auto_comment, mine.manual_comment = comment.auto_comment, comment.manual_comment
                merged.db.commit()


def _students(submissions):
    students = sorted(path for path in submissions.iterdir() if path.is_dir() and not path.name.startswith("."))
    if not students:
        raise ClassroomError(f"{submissions} holds no student folders: expected one folder per student, "
                             "each holding that student's notebooks")
    return students


def hand_in(student, submitted, expected):
    """Copy the notebooks in the folder *student* to *submitted*, where nbgrader looks for them.

    *expected* maps each notebook's name (without .ipynb) to its released
    version. Returns the notes on what was odd, one sentence each.
    """
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
            notes.append(f"{name}.ipynb could not be read as a notebook ({type(error).__name__}): "
                         "its exercises get 0 points.")
            continue
        nbformat.write(notebook, submitted / f"{name}.ipynb")
        notes += oddities(name, notebook, nbformat.read(expected[name], as_version=4))
    for name in sorted(set(handed) - set(expected)):
        notes.append(f"{name}.ipynb is not one of the assignment's notebooks, so it was not graded.")
    return notes


def oddities(name, submitted, release):
    """What a student did to the notebook *name* that changes grading: exercise cells deleted or reordered.

    *submitted* and *release* are notebooks (``nbformat`` nodes): as handed
    back, and as handed out. Returns one sentence per oddity.
    """
    wanted = [grading(cell)["grade_id"] for cell in release.cells if grading(cell).get("grade_id")]
    present = [grading(cell)["grade_id"] for cell in submitted.cells if grading(cell).get("grade_id")]
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


def kill_tagged(tag, seconds=5.0):
    """Kill every process that carries ``GRADING_TAG=tag`` in its environment, and wait until each is gone.

    That is whatever a student's code left running. Returns how many were killed.
    """
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


def _grades(course, students, notebooks):
    """One ``Grade`` per student per exercise, from nbgrader's gradebook and the autograded notebooks."""
    from nbgrader.api import Gradebook, MissingEntry

    rows = []
    with Gradebook(f"sqlite:///{course}/gradebook.db") as gradebook:
        sources = {notebook.name: notebook for notebook in gradebook.find_assignment(ASSIGNMENT).notebooks}
        for student in students:
            for notebook in sorted(notebooks):
                messages = check_messages(course / "autograded" / student / ASSIGNMENT / f"{notebook}.ipynb")
                for grade_cell in sorted(sources[notebook].grade_cells, key=lambda cell: cell.name):
                    try:
                        points = gradebook.find_grade(grade_cell.name, notebook, ASSIGNMENT, student).score
                    except MissingEntry:
                        points = 0.0
                    if messages is None:
                        text = "not graded: the notebook was not handed back or could not be read"
                    elif points >= grade_cell.max_score:
                        text = ""
                    else:
                        text = messages.get(grade_cell.name) or "the check did not pass"
                    rows.append(Grade(student, notebook, grade_cell.name.removesuffix(CHECK_SUFFIX), points or 0.0,
                                      grade_cell.max_score, text))
    return rows


def check_messages(autograded):
    """``{grade id: one sentence}`` for each check cell that failed in the notebook at *autograded*.

    None if there is no such notebook (nothing was handed back to grade).
    """
    if not autograded.exists():
        return None
    messages = {}
    for cell in nbformat.read(autograded, as_version=4).cells:
        grade_id = grading(cell).get("grade_id")
        errors = [output for output in cell.get("outputs", []) if output.get("output_type") == "error"]
        if grade_id and errors:
            messages[grade_id] = sentence(errors[-1])
    return messages
