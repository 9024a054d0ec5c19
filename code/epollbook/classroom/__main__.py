"""The classroom's command line.

    python -m epollbook.classroom student   [--book DIR] [--out dist/student]
    python -m epollbook.classroom autograde SUBMISSIONS [--book DIR] [--out dist/autograded]
                                            [-j JOBS] [--every-cell] [--memory MIB]

Prints what it wrote and returns 0; on something a teacher has to fix, prints
one ``error:`` line to stderr and returns 1.
"""

import argparse
import sys
import time

from epollbook.classroom import ClassroomError, autograde, make_student
from epollbook.classroom.autograder import default_jobs
from epollbook.classroom.course import MEMORY


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m epollbook.classroom",
                                     description="The book's exercises as classroom assignments, through nbgrader.")
    commands = parser.add_subparsers(dest="command", required=True)
    student = commands.add_parser("student", help="write the student version of the exercises")
    grade = commands.add_parser("autograde", help="grade one folder per student")
    grade.add_argument("submissions",
                       help="a folder holding one folder per student, each with that student's notebooks")
    grade.add_argument("-j", "--jobs", type=int, default=default_jobs(),
                       help="how many students to grade at a time (default: one per core, here %(default)s)")
    grade.add_argument("--every-cell", action="store_true",
                       help="run every cell of every notebook, not only what grading needs (slower, same grades)")
    grade.add_argument("--memory", type=int, default=MEMORY >> 20, metavar="MIB",
                       help="the memory a grading kernel may use, in MiB (default: %(default)s)")
    for command, out in ((student, "dist/student"), (grade, "dist/autograded")):
        command.add_argument("--book", default="book", help="the folder of the chapter notebooks (default: ./book)")
        command.add_argument("--out", default=out, help=f"where to write (default: {out})")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        if args.command == "student":
            out = make_student(args.out, args.book)
            print(f"The student version is in {out} ({len(list(out.glob('*.ipynb')))} notebooks); "
                  "hand out that folder.")
        else:
            grades = autograde(args.submissions, args.out, args.book, jobs=args.jobs,
                               skip_unneeded=not args.every_cell, memory=args.memory << 20)
            print(f"Graded in {time.monotonic() - started:.0f} s: {grades}, feedback in {grades.parent / 'feedback'}")
    except ClassroomError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
