"""A right answer passes even when the grading machine is busy: every exercise graded while all cores spin.

The checks' time limits catch code that hangs; they must never fail a right
answer because the machine is slow. Here every exercise's solution is graded,
visible and hidden cases, while twice as many processes as there are cores
burn CPU at the same priority, so the grader gets a fraction of a core. The
durations are printed (`pytest -s`) as the measurement behind the teacher's
guide; nothing asserts them.
"""

import multiprocessing
import os
import time

import pytest

from notebooks import all_exercises

EXERCISES = all_exercises()


def burn(stop):
    while not stop.is_set():
        for _ in range(100_000):
            pass


@pytest.fixture(scope="module")
def busy_machine():
    context = multiprocessing.get_context("spawn")  # nothing of this process's threads or sockets is copied
    stop = context.Event()
    burners = [context.Process(target=burn, args=(stop,), daemon=True) for _ in range(2 * (os.cpu_count() or 1))]
    for burner in burners:
        burner.start()
    try:
        yield len(burners)
    finally:
        stop.set()
        for burner in burners:
            burner.join(5)
            if burner.is_alive():
                burner.kill()
                burner.join()


@pytest.mark.parametrize("path, grade_id, solution, check", EXERCISES)
def test_the_solution_passes_while_every_core_is_busy(path, grade_id, solution, check, busy_machine, capsys):
    namespace = {"__name__": "__main__"}
    started = time.monotonic()
    for source in (solution.source, check.source):  # the check cell holds the visible and the hidden cases
        exec(compile(source, f"<{grade_id}>", "exec"), namespace)
    seconds = time.monotonic() - started
    printed = capsys.readouterr().out
    assert "\N{HEAVY CHECK MARK}" in printed, f"the check of {grade_id} printed no passed case:\n{printed}"
    with capsys.disabled():
        print(f"\n{grade_id}: graded in {seconds:.2f} s beside {busy_machine} busy processes")
