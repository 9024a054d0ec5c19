"""Every exercise's check fails on the unsolved stub and passes on the solution.

The stub is made by nbgrader itself (its ClearSolutions preprocessor, as
`nbgrader generate_assignment` does), and the check cell runs whole, hidden
tests included, as the grader runs it. Solution and check cells must work on
their own, without the rest of the notebook: that is what lets a grader give
each exercise its own points.
"""

import nbformat
import pytest
from nbgrader.preprocessors import ClearSolutions

from epollbook.checks import CheckFailed
from notebooks import CHAPTERS, all_exercises, exercises, grading

EXERCISES = all_exercises()


def run_cells(*sources):
    namespace = {"__name__": "__main__"}
    for source in sources:
        exec(compile(source, "<exercise cell>", "exec"), namespace)


def stub_of(solution_cell):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.from_dict(solution_cell)])
    cleared, _ = ClearSolutions().preprocess(notebook, {})
    return cleared.cells[0].source


def test_every_chapter_has_at_least_two_exercises():
    counts = {path.stem: len(exercises(path)) for path in CHAPTERS}
    assert counts and all(n >= 2 for n in counts.values()), f"exercises per notebook: {counts}"


@pytest.mark.parametrize("path, grade_id, solution, check", EXERCISES)
def test_each_exercise_says_what_it_teaches_and_how_long_it_takes(path, grade_id, solution, check):
    about = solution.metadata.get("epollbook", {})
    assert about.get("objective") and about.get("minutes", 0) > 0, \
        f"{grade_id} lacks 'epollbook': {{'objective': ..., 'minutes': ...}} in its metadata " \
        "(the teacher's guide lists them)"


@pytest.mark.parametrize("path, grade_id, solution, check", EXERCISES)
def test_each_exercise_has_a_graded_check_with_hidden_tests(path, grade_id, solution, check):
    assert check is not None, f"{grade_id} has no check cell with grade_id {grade_id}-check"
    assert grading(check).get("grade") and grading(check).get("points", 0) > 0, f"{grade_id}-check gives no points"
    assert "### BEGIN HIDDEN TESTS" in check.source and "### END HIDDEN TESTS" in check.source
    assert "### BEGIN SOLUTION" in solution.source and "### END SOLUTION" in solution.source


@pytest.mark.parametrize("path, grade_id, solution, check", EXERCISES)
def test_check_passes_on_the_solution(path, grade_id, solution, check, capsys):
    run_cells(solution.source, check.source)
    printed = capsys.readouterr().out
    assert "\N{HEAVY CHECK MARK}" in printed, f"the check of {grade_id} printed no passed case:\n{printed}"


@pytest.mark.parametrize("path, grade_id, solution, check", EXERCISES)
def test_check_fails_on_the_unsolved_stub(path, grade_id, solution, check):
    stub = stub_of(solution)
    assert "raise NotImplementedError()" in stub and "### BEGIN SOLUTION" not in stub
    with pytest.raises(CheckFailed) as failure:
        run_cells(stub, check.source)
    message = str(failure.value)
    assert "not written yet" in message and "\n" not in message, \
        f"the stub's failure should say so in one line: {message!r}"
