"""Every exercise check, proven by two tables: plausible wrong answers fail, right answers written differently pass.

A check that passes the book's solution and fails the stub (test_exercises.py)
could still wave through the very mistake its exercise is about, or fail a
right answer that is not written like the book's. The answers live in
``answers/``, one module per chapter: ``WRONG`` lists each wrong answer with
the words its failure message must hold (what the student will read), and
``RIGHT`` lists answers as far from the book's solution as a student's could
be. Each right answer must pass both the visible and the hidden cases.
"""

import importlib
import pathlib
import re

import pytest

from epollbook import checks
from epollbook.checks import CheckFailed
from notebooks import all_exercises

ANSWERS = [importlib.import_module(f"answers.{path.stem}")
           for path in sorted((pathlib.Path(__file__).parent / "answers").glob("chapter*.py"))]
WRONG = [row for chapter in ANSWERS for row in chapter.WRONG]
RIGHT = [row for chapter in ANSWERS for row in chapter.RIGHT]


def as_the_reader_names_it(answer, check):
    """*answer* under the name the exercise gives it, which the check's messages use."""
    def renamed(*args, **kwargs):
        return answer(*args, **kwargs)
    renamed.__name__ = check.__name__.removeprefix("check_")
    return renamed


@pytest.mark.parametrize("check, wrong_answer, options, expected_words", WRONG,
                         ids=[f"{check.__name__}-{answer.__name__}" for check, answer, _, _ in WRONG])
def test_a_wrong_answer_fails_and_the_message_names_its_mistake(check, wrong_answer, options, expected_words):
    with pytest.raises(CheckFailed) as failure:
        check(as_the_reader_names_it(wrong_answer, check), **options)
    message = str(failure.value)
    assert expected_words in message, f"the check failed for another reason: {message}"
    assert "\n" not in message, f"the failure is not one sentence on one line: {message!r}"


@pytest.mark.parametrize("check, right_answer", RIGHT,
                         ids=[f"{check.__name__}-{answer.__name__}" for check, answer in RIGHT])
@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
def test_a_right_answer_written_differently_passes(check, right_answer, hidden, capsys):
    check(as_the_reader_names_it(right_answer, check), hidden=hidden)
    assert "\N{HEAVY CHECK MARK}" in capsys.readouterr().out, "the check passed without a single case"


def test_every_check_has_both_tables():
    checked = {name for exercise in all_exercises() for name in re.findall(r"check_(\w+)\(", exercise.values[3].source)}
    every_check = {name.removeprefix("check_") for name in checks.__all__ if name.startswith("check_")}
    assert checked == every_check, \
        f"checks called by the book: {sorted(checked)}; checks in the package: {sorted(every_check)}"
    for name in sorted(every_check):
        wrong = [answer for check, answer, _, _ in WRONG if check.__name__ == f"check_{name}"]
        right = [answer for check, answer in RIGHT if check.__name__ == f"check_{name}"]
        assert len(wrong) >= 2 and len(right) >= 2, \
            f"check_{name} has {len(wrong)} wrong and {len(right)} right answers in the tables; at least 2 of each"


@pytest.mark.parametrize("name", [name for name in checks.__all__ if name.startswith("check_")])
def test_a_check_given_something_other_than_a_function_says_so(name):
    with pytest.raises(CheckFailed, match="pass the function itself"):
        getattr(checks, name)(b"the result of calling it")
