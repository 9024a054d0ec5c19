"""The notebooks as committed: clean of outputs, well-formed exercises, explanations that quote real code."""

import re

import pytest

from epollbook import catalog
from notebooks import CHAPTERS, NOTEBOOKS, exercises, grading, read

EXAMPLE_SOURCES = "\n".join(catalog.source_path(name).read_text() for name in catalog.SERVERS)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(notebook):
    dirty = [index for index, cell in enumerate(read(notebook).cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"{notebook.name}: cells {dirty} have outputs or execution counts; clear them before committing"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_on_the_standard_kernel(notebook):
    kernel = read(notebook).metadata.get("kernelspec", {}).get("name")
    assert kernel == "python3", \
        f"{notebook.name} asks for kernel {kernel!r}; `make lab` and the build provide 'python3'"


def test_grade_ids_are_unique_across_the_book():
    ids = [grading(cell)["grade_id"] for path in NOTEBOOKS for cell in read(path).cells
           if grading(cell).get("grade_id")]
    assert len(ids) == len(set(ids)), f"repeated grade ids: {sorted({i for i in ids if ids.count(i) > 1})}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_solutions_are_hidden_in_the_html_book(notebook):
    shown = [grade_id for grade_id, solution, _ in exercises(notebook)
             if "hide-input" not in solution.metadata.get("tags", [])]
    assert not shown, f"{notebook.name}: solutions {shown} lack the 'hide-input' tag, so the HTML book shows them"


@pytest.mark.parametrize("notebook", CHAPTERS, ids=[path.stem for path in CHAPTERS])
def test_line_by_line_explanations_quote_code_that_exists(notebook):
    """In a cell tagged 'explains-code', a list item that starts with quoted code explains it: an example has it."""
    quoted = [match for cell in read(notebook).cells if "explains-code" in cell.metadata.get("tags", [])
              for match in re.findall(r"^- `([^`]+)`", cell.source, re.MULTILINE)]
    missing = [code for code in quoted if code not in EXAMPLE_SOURCES]
    assert quoted, f"{notebook.name} explains no line of the article's code"
    assert not missing, f"{notebook.name} quotes code that no example contains: {missing}"


PAGE_WIDTH = 76  # characters of code the book's column shows without a scroll bar (measured at 1280 px)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_code_fits_the_page_without_scrolling_sideways(notebook):
    long = [f"cell {index}: {line!r}" for index, cell in enumerate(read(notebook).cells) if cell.cell_type == "code"
            for line in cell.source.splitlines() if len(line) > PAGE_WIDTH]
    assert not long, f"{notebook.name}: code lines longer than {PAGE_WIDTH} characters:\n" + "\n".join(long)


@pytest.mark.parametrize("notebook", CHAPTERS, ids=[path.stem for path in CHAPTERS])
def test_every_chapter_has_the_books_skeleton(notebook):
    cells = read(notebook).cells
    headings = [line for cell in cells if cell.cell_type == "markdown"
                for line in cell.source.splitlines() if line.startswith("#")]
    code = [cell.source for cell in cells if cell.cell_type == "code"]
    assert headings and headings[0].startswith("# "), f"{notebook.name} does not open with its title: {headings[:1]}"
    missing = [heading for heading in ("## Exercises", "## What we saw") if heading not in headings]
    assert not missing, f"{notebook.name} lacks the sections {missing}; its headings: {headings}"
    assert "require_linux()" in code[0], f"{notebook.name}'s first code cell does not call require_linux()"
    assert "stop_all()" in code[-1], f"{notebook.name}'s last code cell does not call stop_all()"
