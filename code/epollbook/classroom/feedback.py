"""What the classroom writes for people to read: the sentence for a failed check, a student's page, the exercise table.

Pure functions of their arguments (no files, no processes), so that the
words students and teachers read are tested on their own.
"""

from epollbook import exercises as book_exercises
from epollbook.classroom.course import CELL_TIME_LIMIT, chapters_of, find_book

# The errors the grader itself gives a cell whose kernel it had to replace (epollbook.classroom.execution);
# their values are the sentence to show.
KERNEL_DIED = "KernelDied"
OUTPUT_LIMIT = "OutputLimitExceeded"
KERNEL_STUCK = "KernelStuck"
OUT_OF_MEMORY = "OutOfMemory"


def sentence(error):
    """One sentence for a failed check cell, from its error output (a dict with ``ename`` and ``evalue``)."""
    name, value = error.get("ename", ""), (error.get("evalue") or "").strip()
    if name in ("CheckFailed", KERNEL_DIED, OUTPUT_LIMIT, KERNEL_STUCK, OUT_OF_MEMORY):
        return value
    if name == "NameError":
        return (f"the check could not find your code ({value}): run your answer's cell before its check, "
                "and keep the cells in the order they came in")
    if name in ("CellTimeoutError", "KeyboardInterrupt", "TimeoutError"):
        return (f"the check did not finish within {CELL_TIME_LIMIT} s and was stopped: "
                "does some code of yours never return?")
    first_line = value.splitlines()[0] if value else ""
    return f"the check stopped with {name}: {first_line}".rstrip(": ")


def feedback_page(student, grades, notes):
    """A student's feedback page, in Markdown.

    *grades* are that student's ``Grade`` rows (anything with ``notebook``,
    ``exercise``, ``points``, ``max_points`` and ``feedback``), *notes* the
    sentences about what was odd in what they handed back.
    """
    total, most = sum(row.points for row in grades), sum(row.max_points for row in grades)
    lines = [f"# Feedback for {student}", "", f"Total: {total:g} of {most:g} points.", ""]
    lines += [f"- {note}" for note in notes]
    if notes:
        lines.append("")
    for notebook in sorted({row.notebook for row in grades}):
        lines += [f"## {notebook}", ""]
        for row in (row for row in grades if row.notebook == notebook):
            verdict = "passed" if row.points >= row.max_points else row.feedback
            lines.append(f"- `{row.exercise}`: {row.points:g}/{row.max_points:g}. {verdict}")
        lines.append("")
    return "\n".join(lines)


def exercise_markdown(exercises):
    """*exercises* (``epollbook.exercises.Exercise``) as a Markdown table, with a total row."""
    rows = ["| chapter | exercise (grade id) | what it checks that the student can do | points | minutes |",
            "| --- | --- | --- | ---: | ---: |"]
    for exercise in exercises:
        rows.append(f"| {exercise.chapter} | `{exercise.grade_id}` | {exercise.objective} | "
                    f"{exercise.points:g} | {exercise.minutes} |")
    rows.append(f"| | **all** | | **{sum(e.points for e in exercises):g}** | **{sum(e.minutes for e in exercises)}** |")
    return "\n".join(rows)


def exercise_table(book=None):
    """The book's exercises as a table for a notebook (``IPython.display.Markdown``).

    *book* is the book's folder; by default ``./book``, or the current folder
    if the chapters are there (as they are for the teacher's guide). Raises
    ``ClassroomError`` if that folder holds no chapters.
    """
    from IPython.display import Markdown

    chapters = chapters_of(find_book(book))
    return Markdown(exercise_markdown([exercise for path in chapters for exercise in book_exercises.in_notebook(path)]))
