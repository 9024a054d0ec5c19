"""The student version: what a teacher hands out.

    make_student(out, book) -> Path

writes into *out* the chapter notebooks as nbgrader releases them (solutions
replaced by stubs, hidden tests and outputs removed), at the top of the
folder; the package the notebooks import (``code/epollbook``, copied from the
installed package, without this classroom package); and what ``make lab``
needs to set up a virtual environment there: a ``Makefile`` and a
``README.md`` (files of this package, in ``templates/``), a
``pyproject.toml`` (a template there, filled in with the installed package's
version and requirements) and a ``requirements.txt`` (pinned to the versions
installed here); and the glossary the chapters link their terms to. Nothing
is read from the book's repository except the chapters and the glossary, so
an installed ``epollbook`` can do it. A link to a page that is not handed out
(the errata, the cheat sheet) keeps its words and loses its target.

A student version must not hold a solution or a hidden test: ``make_student``
scans what it wrote (``copied_solutions``) and fails if it finds one.
"""

import importlib.metadata
import json
import pathlib
import re
import shutil
import string
import tempfile

import nbformat

import epollbook
from epollbook.classroom.course import ASSIGNMENT, ClassroomError, chapters_of, find_book, fresh_folder, prepare_course

PACKAGE = pathlib.Path(epollbook.__file__).resolve().parent
CLASSROOM = pathlib.Path(__file__).resolve().parent
TEMPLATES = CLASSROOM / "templates"

STUDENT_TOOLS = ("jupyterlab", "ipykernel")  # what runs the notebooks, whatever the package itself needs
CLASSROOM_ONLY = {"nbgrader"}  # what only this package needs, and it is not handed out


def _normalized(name):
    """A distribution's name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared_requirements():
    """The installed package's requirements as its metadata declares them (``Requires-Dist``)."""
    try:
        return importlib.metadata.requires("epollbook") or []
    except importlib.metadata.PackageNotFoundError:  # imported from a folder on sys.path, never installed
        return []


def runtime_requirements(declared):
    """Of the requirement strings *declared*, those a student needs, as ``[(name, requirement, marker or "")]``.

    *requirement* is the string without its marker (``"nbformat>=5"``).
    Requirements of an extra (``; extra == "..."``) and of this classroom
    package alone are left out; other markers are kept.
    """
    found = []
    for requirement in declared:
        specifier, _, marker = requirement.partition(";")
        if "extra" in marker:
            continue
        name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", specifier.strip()).group()
        if _normalized(name) not in CLASSROOM_ONLY:
            found.append((name, specifier.strip(), marker.strip()))
    return found


def student_requirements():
    """``requirements.txt`` for the student version: each requirement pinned to the version installed here.

    The pins are those of the teacher's own environment, the one that made
    and tested the student version; a requirement not installed here is left
    unpinned. The last line installs the handed-out package.
    """
    lines = ["# Pinned to the versions installed where this folder was made (the teacher's environment)."]
    wanted = [(name, "") for name in STUDENT_TOOLS]
    wanted += [(name, marker) for name, _, marker in runtime_requirements(_declared_requirements())]
    seen = set()
    for name, marker in wanted:
        if _normalized(name) in seen:
            continue
        seen.add(_normalized(name))
        try:
            pin = f"{name}=={importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            pin = name
        lines.append(f"{pin}; {marker}" if marker else pin)
    return "\n".join([*lines, "-e ."]) + "\n"


def student_pyproject():
    """``pyproject.toml`` for the student version's package: this package's name, version and requirements."""
    try:
        metadata = importlib.metadata.metadata("epollbook")
        version, requires_python = metadata["Version"], metadata["Requires-Python"] or ">=3.10"
    except importlib.metadata.PackageNotFoundError:
        version, requires_python = epollbook.__version__, ">=3.10"
    declared = [f"{requirement}; {marker}" if marker else requirement
                for _, requirement, marker in runtime_requirements(_declared_requirements())]
    dependencies = json.dumps(declared)  # a JSON list of strings is a TOML array
    template = string.Template((TEMPLATES / "pyproject.toml.template").read_text())
    return template.substitute(version=version, requires_python=requires_python, dependencies=dependencies)


def _not_for_students(folder, names):
    """``shutil.copytree``'s *ignore*: byte code, and this classroom package."""
    ignored = {name for name in names if name == "__pycache__" or name.endswith(".pyc")}
    if pathlib.Path(folder).resolve() == CLASSROOM.parent:
        ignored.add(CLASSROOM.name)
    return ignored


def _code_lines(text):
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def solution_blocks(book=None):
    """The code of every solution and hidden test in *book*'s chapters, as lists of stripped lines.

    That is what a student version must not hold. Raises ``ClassroomError`` if
    *book* has no chapters.
    """
    markers = (("### BEGIN SOLUTION", "### END SOLUTION"), ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"))
    blocks = []
    for path in chapters_of(find_book(book)):
        for cell in nbformat.read(path, as_version=4).cells:
            for begin, end in markers:
                for block in re.findall(re.escape(begin) + r"(.*?)" + re.escape(end), cell.source, re.DOTALL):
                    blocks.append(_code_lines(block))
    return blocks


def copied_solutions(folder, blocks, run=3):
    """Where in *folder* one of *blocks* shows up: *run* of its code lines in a row, or all of a shorter one.

    Returns ``["relative/path: first line of the block", ...]``, empty if
    nothing was found. Single lines are not enough (``return listener`` is
    everywhere); a run of lines in the same order is a copy.
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


LINK = re.compile(r"\[([^\]]*)\]\(([^)#\s]*)(#[^)\s]*)?\)")
"""A Markdown link: its words, the file it names (empty for a place on the same page), and its anchor."""


def _without_dead_links(text, folder):
    """*text* with each link to a file that *folder* lacks replaced by the link's words."""
    def kept(link):
        target = link.group(2)
        return link.group(0) if not target or "://" in target or (folder / target).exists() else link.group(1)
    return LINK.sub(kept, text)


def _unlink_pages_not_handed_out(folder):
    """Turn the links of *folder*'s notebooks and Markdown files to pages it does not hold into plain words."""
    for path in sorted(folder.glob("*.md")):
        path.write_text(_without_dead_links(path.read_text(), folder))
    for path in sorted(folder.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "markdown" and "nbgrader" not in cell.metadata:  # nbgrader's cells stay as released
                cell.source = _without_dead_links(cell.source, folder)
        nbformat.write(notebook, path)


def make_student(out, book=None):
    """Write the student version of the chapters in *book* into *out*; return *out*'s absolute path.

    *book* defaults to ``./book``. Raises ``ClassroomError`` if *book* has no
    chapters, if *out* holds files this package did not write, if nbgrader
    fails, or if a solution survived into what was written.
    """
    book = find_book(book)
    chapters_of(book)  # a missing book is said before anything is written
    out = pathlib.Path(out).resolve()
    fresh_folder(out)
    with tempfile.TemporaryDirectory(prefix="epollbook-course-") as scratch:
        # The course folder holds the solutions: it stays out of what is handed out.
        course = prepare_course(pathlib.Path(scratch) / "course", book)
        shutil.copytree(course / "release" / ASSIGNMENT, out, dirs_exist_ok=True)
    shutil.copytree(PACKAGE, out / "code" / "epollbook", ignore=_not_for_students)
    if (book / "glossary.md").exists():  # the chapters link their terms to it
        shutil.copy(book / "glossary.md", out / "glossary.md")
    _unlink_pages_not_handed_out(out)
    shutil.copy(TEMPLATES / "README.md", out / "README.md")
    shutil.copy(TEMPLATES / "Makefile", out / "Makefile")
    (out / "pyproject.toml").write_text(student_pyproject())
    (out / "requirements.txt").write_text(student_requirements())
    copied = copied_solutions(out, solution_blocks(book))
    if copied:
        raise ClassroomError(f"the student version still holds solution code: {copied[:3]}")
    return out
