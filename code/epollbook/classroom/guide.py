"""The teacher's guide, chapter by chapter: what each exercise teaches, its time, and the mistakes its check names.

    chapter_guide(chapter, book=None, answers=None) -> IPython.display.Markdown

Everything is read, nothing typed twice: the objective and the minutes from
the answer cell's ``"epollbook"`` metadata, the points from the check cell's
nbgrader metadata, and the mistakes from the tables that prove the checks
(``tests/answers/chapterN.py`` in the book's repository: each plausible wrong
answer, by name, with the words its check must say). Where those tables are
not at hand (the package installed without its repository), the guide says
so instead of listing mistakes.
"""

import importlib.util
import json
import pathlib
import re

from epollbook import exercises as book_exercises
from epollbook.classroom.course import ClassroomError, chapters_of, find_book

CLASS_OF_30 = pathlib.Path(__file__).with_name("class-of-30.json")  # a saved measurement: where, when, how loaded


def find_answers(book):
    """The folder of the answer tables: ``tests/answers`` beside the book's folder; None if there is none."""
    folder = pathlib.Path(book).resolve().parent / "tests" / "answers"
    return folder if folder.is_dir() else None


def wrong_answers(answers, number):
    """Chapter *number*'s ``WRONG`` table from the folder *answers*: ``[(check name, answer name, hidden, words)]``.

    [] if the folder has no table for that chapter. The table's rows are
    ``(check, wrong answer, keyword arguments, words its failure must say)``.
    """
    path = pathlib.Path(answers) / f"chapter{number}.py"
    if not path.exists():
        return []
    spec = importlib.util.spec_from_file_location(f"epollbook_guide_answers_{number}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [(check.__name__, answer.__name__, bool(arguments.get("hidden")), words)
            for check, answer, arguments, words in getattr(module, "WRONG", [])]


# Words that are names of constants in the kernel's API, written as the chapters write them.
CONSTANTS = {"epollin", "epollout", "epollet", "epollhup", "epollrdhup", "epollerr", "epolloneshot",
             "epollexclusive", "eagain", "ebadf", "emfile", "enfile", "rst", "fin", "syn", "ack", "http", "utf8"}


def mistake_name(answer_name):
    """A wrong answer's name as words: ``keeps_epollout_once_asked`` -> ``keeps EPOLLOUT once asked``."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", answer_name).replace("_", " ").lower().split()
    return " ".join(word.upper() if word in CONSTANTS else word for word in words)


def exercise_markdown(exercise, mistakes, tables_found=True):
    """One exercise's section, in Markdown: what it teaches, its time and points, and the mistakes its check names.

    *exercise* is an ``epollbook.exercises.Exercise``; *mistakes* the rows
    of ``wrong_answers`` whose check is this exercise's.
    """
    lines = [f"**`{exercise.grade_id}`** ({exercise.points:g} points, about {exercise.minutes} minutes): "
             f"{exercise.objective or 'no objective recorded'}.", ""]
    if mistakes:
        lines.append("Mistakes its check names (the words a student sees; *hidden* ones only when grading):")
        lines.append("")
        for _, answer, hidden, words in mistakes:
            lines.append(f"- {mistake_name(answer)}: `{words}`" + (" *(hidden)*" if hidden else ""))
    elif tables_found:
        lines.append("No mistakes are tabled for this check yet.")
    else:
        lines.append("(The table of mistakes is in the book's repository, `tests/answers/`.)")
    return "\n".join(lines) + "\n"


def chapter_markdown(exercises, wrong):
    """A chapter's exercises (``Exercise``) with their mistakes (*wrong*: ``wrong_answers`` rows, or None)."""
    sections = []
    for exercise in exercises:
        check = exercise.check.source if exercise.check is not None else ""
        mine = [row for row in (wrong or []) if re.search(rf"\b{re.escape(row[0])}\(", check)]
        sections.append(exercise_markdown(exercise, mine, tables_found=wrong is not None))
    total = sum(exercise.minutes for exercise in exercises)
    sections.append(f"In all: {len(exercises)} exercises, {sum(e.points for e in exercises):g} points, "
                    f"about {total} minutes.")
    return "\n".join(sections)


def chapter_guide(chapter, book=None, answers=None):
    """Chapter *chapter*'s part of the teacher's guide, as ``IPython.display.Markdown``.

    *chapter* is its number (1 for ``01-*.ipynb``); *book* the book's
    folder (see ``find_book``); *answers* the folder of the answer tables
    (default: ``find_answers(book)``). Raises ``ClassroomError`` if the book
    has no such chapter.
    """
    from IPython.display import Markdown

    book = find_book(book)
    found = [path for path in chapters_of(book) if path.name.startswith(f"{chapter:02d}-")]
    if not found:
        raise ClassroomError(f"no chapter {chapter} (a notebook named {chapter:02d}-*.ipynb) in {book}")
    answers = find_answers(book) if answers is None else answers
    wrong = wrong_answers(answers, chapter) if answers is not None else None
    return Markdown(chapter_markdown(book_exercises.in_notebook(found[0]), wrong))


def class_grading_markdown(measured):
    """What a saved measurement of a class's grading (*measured*, class-of-30.json's content) says, in Markdown."""
    one = measured["one_student_every_chapter"]
    minutes = measured["seconds"] / 60
    return (f"Measured on {measured['measured'][:10]}, on a machine with {measured['machine']['cpus']} CPUs "
            f"({measured['machine']['cpu']}"
            f"{', shared with other jobs' if measured['machine'].get('shared_with_other_jobs') else ''}): "
            f"a generated class of {measured['students']} students, each handing in all "
            f"{measured['chapters']} chapters ({measured['exercises_per_student']} exercises), was graded by "
            f"`make autograde` in {minutes:.1f} minutes, {measured['jobs']} students at a time (load average "
            f"{measured['load_average']['before']:g} before, {measured['load_average']['after']:g} after). "
            f"All {measured['full_marks_for_solved']} solved exercises got full marks and the "
            f"{sum(measured['answers'].values()) - measured['answers']['solved']} others (stubs, wrong, hanging and "
            f"hostile answers) none. One student alone, every chapter: "
            f"{one['only_what_grading_needs']['seconds']} s running what grading needs, "
            f"{one['every_cell']['seconds']} s running every cell, with the same grades.")


def class_grading(path=CLASS_OF_30):
    """The saved measurement of a class's grading (``class-of-30.json``), as ``IPython.display.Markdown``.

    Says so in a sentence if the file is not there (a package installed
    without it).
    """
    from IPython.display import Markdown

    path = pathlib.Path(path)
    if not path.exists():
        return Markdown(f"(No saved measurement of a class's grading here: {path.name} is missing.)")
    return Markdown(class_grading_markdown(json.loads(path.read_text())))
