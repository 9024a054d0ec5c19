"""The nbgrader course folder both classroom commands build, and the runs of nbgrader in it.

A course folder is nbgrader's layout: ``source/ASSIGNMENT/`` holds the
chapter notebooks with their solutions, ``release/`` what nbgrader hands out,
``submitted/`` and ``autograded/`` the students' notebooks, ``gradebook.db``
the grades (SQLite: no database server), ``jupyter/kernels/`` the spec of
the kernel that grades (``epollbook.classroom.kernel``: IPython's, with a
memory limit). It is made anew for every run, from
the book's chapters, so that it never holds a stale copy of a notebook.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

from epollbook import exercises

ASSIGNMENT = "epoll-hands-on"
CELL_TIME_LIMIT = 60  # seconds for any one cell; each check also limits the reader's code to a few seconds
OUTPUT_MARK = ".made-by-epollbook"
KERNEL_NAME = "epollbook-grading"
MEMORY = 4 << 30  # bytes a grading kernel may map: far above what a chapter's kernel maps (~1 GiB, threads' stacks)

NBGRADER_CONFIG = f"""\
# Written by epollbook.classroom; made anew for each run.
from nbconvert.preprocessors import ClearMetadataPreprocessor
from nbgrader.preprocessors import AssignLatePenalties, CheckCellMetadata, IgnorePattern, LimitOutput, SaveAutoGrades

from epollbook.classroom.execution import GradingExecute

c = get_config()
c.CourseDirectory.course_id = "{ASSIGNMENT}"
c.CourseDirectory.root = {{root!r}}
c.CourseDirectory.db_url = "sqlite:///" + {{root!r}} + "/gradebook.db"
c.Execute.timeout = {CELL_TIME_LIMIT}
c.Execute.interrupt_on_timeout = True
c.OverwriteCells.add_missing_cells = True
# nbgrader's own list, with GradingExecute in the place of Execute (see epollbook.classroom.execution).
c.Autograde.autograde_preprocessors = [GradingExecute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput,
                                       SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]
c.GradingExecute.kernel_name = "{KERNEL_NAME}"
c.GradingExecute.memory = {{memory}}
"""


def kernel_spec(memory=MEMORY):
    """The kernelspec (``kernel.json``'s content, a dict) of a Python kernel limited to *memory* bytes."""
    launcher = pathlib.Path(__file__).with_name("kernel.py")
    return {"argv": [sys.executable, str(launcher), "--memory", str(memory),
                     "-f", "{connection_file}"],
            "display_name": f"Python 3 (grading, {memory >> 20} MiB)",
            "language": "python",
            "metadata": {"debugger": False}}


class ClassroomError(RuntimeError):
    """Something a teacher has to fix: the message says what, in a sentence."""


def find_book(book=None):
    """The book's folder: *book* if given; else ``./book``, or the current folder if it holds the chapters.

    The current folder counts so that a notebook beside the chapters (the
    teacher's guide, whose kernel starts in its own folder) finds them.
    """
    if book is not None:
        return pathlib.Path(book)
    here = pathlib.Path.cwd()
    return here if not exercises.chapters(here / "book") and exercises.chapters(here) else here / "book"


def chapters_of(book):
    """The chapter notebooks in the folder *book*; raise ``ClassroomError`` if it holds none."""
    found = exercises.chapters(book)
    if not found:
        where = pathlib.Path(book).resolve()
        raise ClassroomError(f"no chapter notebooks (NN-*.ipynb) in {where}: "
                             "say where the book's chapters are (--book DIR)")
    return found


def fresh_folder(folder):
    """Make *folder* empty for new output, refusing to delete a folder this package did not write.

    Raises ``ClassroomError`` if *folder* holds files but not the mark this
    package leaves in every folder it writes.
    """
    folder = pathlib.Path(folder)
    if folder.exists() and any(folder.iterdir()):
        if not (folder / OUTPUT_MARK).exists():
            raise ClassroomError(f"{folder} already exists and holds files this tool did not write: "
                                 "choose a new folder, or empty that one yourself")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / OUTPUT_MARK).write_text("Written by `python -m epollbook.classroom`, which may replace this folder.\n")


def run_nbgrader(course, *arguments, env=None, log=None):
    """Run ``nbgrader ARGUMENTS`` in *course*, its output going to *log* (default: *course*/nbgrader.log).

    *env* is the environment (default: this process's). Raises
    ``ClassroomError`` with the end of the log if nbgrader fails. The output
    goes to a file, not a pipe: a process a student's code leaves behind
    inherits it, and a pipe would then never reach its end.
    """
    env = dict(os.environ if env is None else env)
    # nbgrader runs `alembic` by name: it must find the one beside this Python, in the same environment.
    env["PATH"] = os.pathsep.join([str(pathlib.Path(sys.executable).parent), env.get("PATH", "")])
    # The grading kernel's spec is the course's own (see write_kernel_spec); Jupyter looks there first.
    env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(pathlib.Path(course) / "jupyter"),
                                                        env.get("JUPYTER_PATH")]))
    log = pathlib.Path(course) / "nbgrader.log" if log is None else pathlib.Path(log)
    with log.open("a") as output:
        output.write(f"\n$ nbgrader {' '.join(arguments)}\n")
        output.flush()
        finished = subprocess.run([sys.executable, "-m", "nbgrader", *arguments], cwd=course, stdin=subprocess.DEVNULL,
                                  stdout=output, stderr=subprocess.STDOUT, env=env)
    if finished.returncode != 0:
        raise ClassroomError(f"nbgrader {' '.join(arguments)} failed; its output, from {log}:\n"
                             f"{log.read_text()[-4000:]}")


def prepare_course(course, book=None, memory=MEMORY):
    """Make an nbgrader course folder at *course* from the chapters in *book*, and generate the assignment.

    Whatever was at *course* is replaced. Returns the course folder's absolute
    path; its ``release/ASSIGNMENT/`` holds the student notebooks. Its grading
    kernels may map *memory* bytes each. Raises ``ClassroomError`` if *book*
    has no chapters or nbgrader fails.
    """
    chapters = chapters_of(find_book(book))
    course = pathlib.Path(course).resolve()
    if course.exists():
        shutil.rmtree(course)
    source = course / "source" / ASSIGNMENT
    source.mkdir(parents=True)
    for notebook in chapters:
        shutil.copy(notebook, source / notebook.name)
    (course / "nbgrader_config.py").write_text(NBGRADER_CONFIG.format(root=str(course), memory=memory))
    spec = course / "jupyter" / "kernels" / KERNEL_NAME / "kernel.json"
    spec.parent.mkdir(parents=True)
    spec.write_text(json.dumps(kernel_spec(memory), indent=1))
    run_nbgrader(course, "generate_assignment", ASSIGNMENT, "--force")
    return course
