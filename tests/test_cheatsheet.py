"""The cheat sheet and the glossary: every flag Python has, every link lands on a heading, every term is defined.

The build (``-W -n``) fails on a broken link too, but only after executing the
whole book; these tests find the same mistakes in a second, and say which
link, in which file, points where. Links are checked the way MyST resolves
them: the target is a page of the table of contents, and the anchor is MyST's
slug of one of its headings (``myst_heading_anchors: 3`` in _config.yml).
"""

import errno
import functools
import itertools
import os
import re
import select
import socket

import pytest
from markdown_it import MarkdownIt
from myst_parser.mdit_to_docutils.base import default_slugify

from epollbook import cheatsheet, hangups, probes
from notebooks import BOOK, ROOT, read

CHEAT_SHEET = BOOK / "cheat-sheet.ipynb"
GLOSSARY = BOOK / "glossary.md"
LINK = re.compile(r"\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")
TERM = re.compile(r"\{term\}`(?P<term>[^`<]+?)(?:\s*<(?P<target>[^>]+)>)?`")

quick = pytest.mark.quick


def markdown_of(path):
    """The Markdown a page is made of: a notebook's markdown cells, in order, or a Markdown file's text."""
    if path.suffix == ".ipynb":
        return "\n\n".join(cell.source for cell in read(path).cells if cell.cell_type == "markdown")
    return path.read_text()


def heading_slugs(markdown, deepest=3):
    """The anchors MyST makes for the headings of *markdown*, down to level *deepest*, as its parser computes them:
    the text and inline code of the heading, slugified, a repeated slug numbered ``-1``, ``-2``..."""
    slugs = []
    tokens = MarkdownIt("commonmark").parse(markdown)
    for opening, inline in itertools.pairwise(tokens):
        if opening.type == "heading_open" and int(opening.tag[1:]) <= deepest:
            title = "".join(child.content for child in inline.children if child.type in ("text", "code_inline"))
            slug = base = default_slugify(title)
            number = 1
            while slug in slugs:
                slug, number = f"{base}-{number}", number + 1
            slugs.append(slug)
    return slugs


@functools.cache
def anchors_of(path):
    """The heading anchors of the page at *path*, read once per test run."""
    return heading_slugs(markdown_of(path))


def pages_in_the_table_of_contents():
    return set(re.findall(r"file: book/(\S+)", (ROOT / "_toc.yml").read_text()))


def broken_links(markdown):
    """Every link of *markdown* to a page of the book that does not resolve: ``['[text](target): why']``."""
    broken, listed = [], pages_in_the_table_of_contents()
    for link in LINK.finditer(markdown):
        target = link["target"]
        if re.match(r"[a-z]+://", target):
            continue  # outside the book: not the build's to check
        page, _, anchor = target.partition("#")
        path = BOOK / page
        if not path.exists():
            broken.append(f"{link[0]}: there is no {page} in book/")
        elif path.stem not in listed:
            broken.append(f"{link[0]}: {page} is not in _toc.yml, so the build has no page for it")
        elif anchor and anchor not in anchors_of(path):
            broken.append(f"{link[0]}: {page} has no heading whose anchor is {anchor!r}")
    return broken


def cells_of(markdown_row):
    """The cells of a Markdown table row, split on the '|' that are not escaped."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", markdown_row.strip())[1:-1]]


def glossary_terms():
    """The terms the glossary defines, lower-cased (Sphinx matches terms without case): each unindented line of its
    ``{glossary}`` block, except the ``:sorted:`` option."""
    block = GLOSSARY.read_text().split("```{glossary}", 1)[1].split("```", 1)[0]
    return [line.strip().lower() for line in block.splitlines()
            if line.strip() and not line.startswith((" ", ":"))]


def glossary_entries():
    """The glossary's entries: ``(terms, definition)`` for each, the definition its indented lines joined."""
    block = GLOSSARY.read_text().split("```{glossary}", 1)[1].split("```", 1)[0]
    entries = []
    for chunk in re.split(r"\n\s*\n", block):
        lines = [line for line in chunk.splitlines() if line.strip() and not line.startswith(":")]
        if lines:
            terms = [line for line in lines if not line.startswith(" ")]
            entries.append((terms, " ".join(line.strip() for line in lines if line.startswith(" "))))
    return entries


# -- the links ------------------------------------------------------------------------------------------------


@quick
@pytest.mark.parametrize("page", [CHEAT_SHEET, GLOSSARY], ids=lambda path: path.name)
def test_every_link_of_the_page_lands_on_a_heading_of_a_page_of_the_book(page):
    links = LINK.findall(markdown_of(page))
    assert links, f"{page.name} has no link at all"
    broken = broken_links(markdown_of(page))
    assert not broken, f"{page.name}: broken links:\n" + "\n".join(broken)


TABLES = ["calls_table", "flags_table", "outcomes_table", "rules_table", "options_table"]


@quick
@pytest.mark.parametrize("table", TABLES)
def test_every_row_of_a_table_links_to_where_the_book_shows_it(table):
    rows = getattr(cheatsheet, table)().splitlines()[2:]
    assert rows, f"{table}() has no rows"
    unlinked = [row for row in rows if not LINK.search(cells_of(row)[-1])]
    assert not unlinked, f"{table}() has rows whose last cell links nowhere: {unlinked}"
    widths = {len(cells_of(line)) for line in getattr(cheatsheet, table)().splitlines()}
    assert len(widths) == 1, f"{table}() has rows of {widths} cells: an unescaped '|' splits one"
    broken = broken_links("\n".join(rows))
    assert not broken, f"{table}(): broken links:\n" + "\n".join(broken)


@quick
def test_the_advice_for_each_ending_links_to_chapter_6():
    broken = broken_links("\n".join(where for _, where in cheatsheet.ADVICE.values()))
    assert not broken, "ADVICE: broken links:\n" + "\n".join(broken)
    elsewhere = [where for _, where in cheatsheet.ADVICE.values() if "06-hang-ups.ipynb#" not in where]
    assert not elsewhere, f"ADVICE links outside chapter 6, which measures the table: {elsewhere}"


@quick
def test_see_makes_a_link_to_a_chapter_section_by_its_number():
    assert cheatsheet.see(4, "what-we-saw") == "[4](04-level-triggered.ipynb#what-we-saw)"
    with pytest.raises(KeyError):
        cheatsheet.see(13, "what-we-saw")


@quick
def test_the_chapters_the_cheat_sheet_knows_are_the_books():
    missing = [name for name in cheatsheet.CHAPTERS.values() if not (BOOK / f"{name}.ipynb").exists()]
    assert not missing, f"cheatsheet.CHAPTERS names pages book/ does not have: {missing}"
    chapters = sorted(path.stem for path in BOOK.glob("[0-9][0-9]-*.ipynb"))
    numbered = sorted(name for key, name in cheatsheet.CHAPTERS.items() if isinstance(key, int))
    assert numbered == chapters, f"cheatsheet.CHAPTERS has chapters {numbered}; book/ has {chapters}"
    assert all(int(name[:2]) == key for key, name in cheatsheet.CHAPTERS.items() if isinstance(key, int)), \
        f"a chapter's number is not its file's: {cheatsheet.CHAPTERS}"


@quick
def test_the_heading_slugs_are_mysts():
    markdown = "# 6. Hang-ups\n\n## Where example 3's `EPOLLHUP` comes from\n\n## What we saw\n\n## What we saw\n"
    assert heading_slugs(markdown) == ["6-hang-ups", "where-example-3s-epollhup-comes-from", "what-we-saw",
                                       "what-we-saw-1"]


@quick
def test_a_broken_link_is_found_and_explained():
    found = broken_links("[a](06-hang-ups.ipynb#no-such-heading) [b](13-none.ipynb) [c](https://example.org/#x)")
    assert len(found) == 2 and "no heading whose anchor is 'no-such-heading'" in found[0] \
        and "there is no 13-none.ipynb" in found[1], f"broken_links found: {found}"


# -- the flags and the outcomes -------------------------------------------------------------------------------


@quick
def test_the_flags_table_lists_every_epoll_constant_this_python_has():
    in_python = sorted(name for name in dir(select) if name.startswith("EPOLL"))
    table = cheatsheet.flags_table()
    missing = [name for name in in_python if f"| `{name}` |" not in table]
    assert not missing, f"select has {missing}, which the cheat sheet's flags table does not describe"


@quick
def test_the_flags_table_shows_each_value_as_select_has_it():
    rows = re.findall(r"^\| `(EPOLL\w+)` \| `(0x[0-9a-f]+)` \|", cheatsheet.flags_table(), re.MULTILINE)
    assert rows, "no flag row found in flags_table()"
    wrong = [(name, value) for name, value in rows if int(value, 16) != getattr(select, name)]
    assert not wrong, f"flags shown with values select does not have: {wrong}"


@quick
def test_every_flag_described_is_an_epoll_constant():
    known = set(probes.EPOLL_EVENTS) | {"EPOLL_CLOEXEC"}
    unknown = [flag.name for flag in cheatsheet.FLAGS if flag.name not in known]
    assert not unknown, f"FLAGS describes {unknown}, which are neither epoll event bits nor EPOLL_CLOEXEC"
    who = {flag.who for flag in cheatsheet.FLAGS}
    assert who <= {"you", "kernel", "create"}, f"flags are set by {who}: who is that?"


@quick
@pytest.mark.parametrize("name, exception", [("EAGAIN", "BlockingIOError"), ("ECONNRESET", "ConnectionResetError"),
                                             ("EPIPE", "BrokenPipeError"), ("EINTR", "InterruptedError"),
                                             ("EMFILE", "OSError"), ("b''", None)])
def test_an_outcome_is_named_by_the_exception_python_raises(name, exception):
    outcome = cheatsheet.Outcome("recv(n)", name, "", "", "")
    assert outcome.raised == exception, f"{name} is shown as {outcome.raised}, Python raises {exception}"


@quick
def test_every_error_in_the_outcomes_is_a_real_errno_or_a_return_value():
    for outcome in cheatsheet.OUTCOMES:
        if outcome.outcome.startswith("E"):
            assert hasattr(errno, outcome.outcome), f"{outcome.call}: {outcome.outcome} is no errno this Python has"


@quick
def test_the_outcomes_cover_every_call_the_brief_names():
    calls = {outcome.call.split("(")[0] for outcome in cheatsheet.OUTCOMES}
    missing = {"accept", "recv", "send", "connect"} - calls
    assert not missing, f"the outcomes table says nothing of {missing}"
    table = cheatsheet.outcomes_table()
    for shown in ("`b''`", "BlockingIOError", "ConnectionResetError", "BrokenPipeError", "EMFILE", "ECONNABORTED",
                  "InterruptedError"):
        assert shown in table, f"the outcomes table does not show {shown}"


# -- the hang-up table -----------------------------------------------------------------------------------------


@quick
def test_there_is_advice_for_every_ending_chapter_6_measures():
    names = [ending.name for ending in hangups.ENDINGS]
    assert sorted(cheatsheet.ADVICE) == sorted(names), \
        f"ADVICE knows {sorted(cheatsheet.ADVICE)}; chapter 6 measures {sorted(names)}"


@quick
def test_the_hang_up_table_keeps_each_mask_in_its_cell():
    reset = hangups.Row(hangups.ending("reset"),
                        {"EPOLLIN|EPOLLRDHUP": select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLERR | select.EPOLLHUP,
                         "EPOLLIN|EPOLLRDHUP|EPOLLOUT": 0, "0": select.EPOLLERR | select.EPOLLHUP},
                        "ECONNRESET", ("ECONNRESET", "b''"), ("ECONNRESET", "EPIPE"))
    lines = cheatsheet.hang_ups_table([reset]).splitlines()
    widths = {len(cells_of(line)) for line in lines}
    assert widths == {7}, f"the table's rows have {widths} cells, not 7 each: an unescaped '|' splits one:\n{lines}"
    row = cells_of(lines[2])
    assert row[1] == r"`IN\|ERR\|HUP\|RDHUP`" and row[2] == r"`ERR\|HUP`", f"the masks are shown as {row[1:3]}"
    assert row[3] == "`ECONNRESET`, `b''`" and "06-hang-ups.ipynb#the-truth-table" in row[6], f"row: {row}"


@quick
def test_a_mask_is_named_without_its_prefix():
    assert cheatsheet.mask_names(select.EPOLLIN | select.EPOLLRDHUP) == "IN|RDHUP"
    assert cheatsheet.mask_names(0) == "0"


def test_the_measured_truth_table_renders_with_every_ending():
    table = cheatsheet.hang_ups_table(hangups.truth_table())
    rows = table.splitlines()[2:]
    assert len(rows) == len(hangups.ENDINGS), f"{len(rows)} rows for {len(hangups.ENDINGS)} endings:\n{table}"
    close = cells_of(rows[0])
    assert close[0] == "client.close()" and "RDHUP" in close[1] and close[3].startswith("`b''`"), \
        f"a client's close shows as {close}"


# -- what a socket reports -------------------------------------------------------------------------------------


def test_a_socket_reports_what_the_cheat_sheet_says_and_nothing_leaks():
    before = len(os.listdir("/proc/self/fd"))
    reported = cheatsheet.what_a_socket_reports()
    after = len(os.listdir("/proc/self/fd"))
    assert after == before, f"what_a_socket_reports() left {after - before} descriptors open"
    default = select.EPOLLIN | select.EPOLLPRI | select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP
    assert reported.default_mask == default, \
        f"register() without a mask watches {cheatsheet.mask_names(reported.default_mask)}, not IN|PRI|OUT|ERR|HUP"
    asked = select.EPOLLIN | select.EPOLLPRI | select.EPOLLOUT
    said = sum(getattr(select, flag.name) for flag in cheatsheet.FLAGS if flag.who == "kernel")
    assert reported.default_mask & ~asked == said, \
        f"the kernel added {cheatsheet.mask_names(reported.default_mask & ~asked)}; the flags table says it adds " \
        f"{cheatsheet.mask_names(said)}"
    shown = asked
    assert reported.everything & shown == shown, \
        f"bytes and an urgent byte waiting showed {cheatsheet.mask_names(reported.everything)}: not IN, PRI and OUT"
    assert not reported.never & reported.everything and not reported.never & select.EPOLLRDHUP, \
        f"never={cheatsheet.mask_names(reported.never)} overlaps what was reported, or holds RDHUP"


def test_what_the_outcomes_say_of_accept_and_connect_is_what_the_kernel_does():
    with socket.create_server(("127.0.0.1", 0)) as listener, socket.socket() as client:
        listener.setblocking(False)
        client.setblocking(False)
        with pytest.raises(BlockingIOError) as connecting:
            client.connect(listener.getsockname())
        assert connecting.value.errno == errno.EINPROGRESS, f"a non-blocking connect() raised {connecting.value!r}"
        select.select([listener], [], [], 5.0)
        conn, _ = listener.accept()
        with conn:
            assert conn.getblocking(), "a socket accepted from a non-blocking listener is non-blocking here"
    said = {(outcome.call, outcome.outcome): outcome.means for outcome in cheatsheet.OUTCOMES}
    assert "*blocking*" in said["accept()", "(conn, address)"] and ("connect(addr)", "EINPROGRESS") in said


# -- the glossary -------------------------------------------------------------------------------------------------


@quick
def test_the_glossary_defines_30_to_50_terms_each_with_a_link():
    entries = glossary_entries()
    assert 30 <= len(entries) <= 50, f"the glossary has {len(entries)} entries; the brief asks for 30 to 50"
    unlinked = [terms for terms, definition in entries if not LINK.search(definition)]
    assert not unlinked, f"entries that link to no chapter: {unlinked}"
    empty = [terms for terms, definition in entries if len(definition) < 40]
    assert not empty, f"entries without a real definition: {empty}"
    for brief in ("accept queue", "backlog", "edge-triggered", "level-triggered", "lingering close",
                  "nagle's algorithm", "delayed ack", "syn cookie", "time_wait", "half-close", "thundering herd",
                  "reuseport group"):
        assert brief in glossary_terms(), f"the glossary does not define {brief!r}"


@quick
def test_every_term_used_is_defined_once():
    terms = glossary_terms()
    repeated = sorted({term for term in terms if terms.count(term) > 1})
    assert not repeated, f"terms defined twice: {repeated}"
    pages = {page.name: markdown_of(page) for page in (CHEAT_SHEET, GLOSSARY)}
    pages.update({f"{table}()": getattr(cheatsheet, table)() for table in TABLES})
    for name, markdown in pages.items():
        used = [(match["target"] or match["term"]).strip().lower() for match in TERM.finditer(markdown)]
        undefined = sorted(set(used) - set(terms))
        assert not undefined, f"{name} uses terms the glossary does not define: {undefined}"


@quick
def test_the_pages_are_appendices_between_the_errata_and_the_teachers_guide():
    toc = (ROOT / "_toc.yml").read_text()
    order = [toc.find(f"file: book/{name}\n") for name in ("errata", "cheat-sheet", "glossary", "teachers-guide")]
    assert -1 not in order and order == sorted(order), f"_toc.yml lists them at {order}"
