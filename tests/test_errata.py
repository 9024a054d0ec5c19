"""The errata: every defect shows on the article's examples, and not on the servers that correct it.

Each case runs the defect's own experiment (``epollbook.errata``) against a live
server, the same code the errata notebook runs; the quick ones check the data
the notebook shows: quotes that exist, subjects that exist, a section for each.
"""

import socket
import time

import nbformat
import pytest

from epollbook import catalog, errata
from epollbook.errata import (
    ARTICLE,
    DEFECTS,
    OUR_COPIES_SAY,
    Outcome,
    _ends,
    _parse_ss,
    article_example5,
    defect,
    summary,
)
from epollbook.probes import tcp_sockets
from notebooks import BOOK

FAITHFUL = [pytest.param(found, subject, id=f"{found.name}-{subject}")
            for found in DEFECTS for subject in found.faithful]
CORRECTED = [pytest.param(found, subject, id=f"{found.name}-{subject}")
             for found in DEFECTS for subject in found.corrected]


@pytest.mark.parametrize("found, subject", FAITHFUL)
def test_the_article_has_the_defect(found, subject):
    outcome = found.demonstrate(subject)
    assert outcome.shown, f"{found.title!r} did not show on {subject}: {outcome.said}"


@pytest.mark.parametrize("found, subject", CORRECTED)
def test_the_corrected_server_does_not(found, subject):
    outcome = found.demonstrate(subject)
    assert not outcome.shown, f"{found.title!r} showed on {subject}, which should fix it: {outcome.said}"


# -- the data the notebook shows -------------------------------------------------------------------


@pytest.mark.quick
def test_names_are_unique_and_found_by_name():
    names = [found.name for found in DEFECTS]
    assert len(names) == len(set(names)), f"defect names repeat: {names}"
    assert all(defect(name).name == name for name in names)
    with pytest.raises(KeyError, match="indentation"):
        defect("no-such-defect")


@pytest.mark.quick
@pytest.mark.parametrize("found", DEFECTS, ids=[found.name for found in DEFECTS])
def test_every_subject_is_a_server_or_the_article(found):
    unknown = [subject for subject in found.faithful + found.corrected
               if subject != ARTICLE and subject not in catalog.SERVERS]
    assert found.faithful, f"{found.name} is shown on nothing"
    assert not unknown, f"{found.name} names servers the catalog does not have: {unknown}"
    assert not set(found.faithful) & set(found.corrected), f"{found.name} both has and fixes a defect on a server"
    assert found.corrected or found.fixed_in, f"{found.name} says neither which server fixes it nor where"


@pytest.mark.quick
@pytest.mark.parametrize("found", [found for found in DEFECTS if found.quoted.isascii()],
                         ids=lambda found: found.name)
def test_quoted_code_is_in_the_article_examples(found):
    """Code quoted from the article is in the faithful examples (modulo indentation), or in example 5 as published."""
    sources = [article_example5() if subject == ARTICLE else catalog.source_path(subject).read_text()
               for subject in found.faithful]
    lines = {line.strip() for source in sources for line in source.splitlines()}
    quoted = OUR_COPIES_SAY.get(found.quoted, found.quoted).strip()
    assert quoted in lines, f"{found.name} quotes {quoted!r}, which no faithful example has"


@pytest.mark.quick
def test_example5_as_published_differs_from_ours_only_by_the_indentation():
    ours = catalog.source_path("example5").read_text().splitlines()
    published = article_example5().splitlines()
    changed = [(mine, theirs) for mine, theirs in zip(ours, published, strict=True) if mine != theirs]
    assert len(changed) == 4, f"expected the 4 lines of the EPOLLHUP branch to differ, found {len(changed)}"
    assert all(theirs == " " + mine for mine, theirs in changed), f"the lines differ by more than a space: {changed}"


@pytest.mark.quick
def test_a_subject_the_defect_does_not_concern_is_refused_in_a_sentence():
    with pytest.raises(ValueError, match="not on 'example1'"):
        defect("oneshot").demonstrate("example1")


@pytest.mark.quick
def test_the_notebook_has_a_section_for_every_defect():
    notebook = nbformat.read(BOOK / "errata.ipynb", as_version=4)
    headings = {line[4:].strip() for cell in notebook.cells if cell.cell_type == "markdown"
                for line in cell.source.splitlines() if line.startswith("### ")}
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    missing = [found.title for found in DEFECTS if found.title not in headings]
    not_run = [found.name for found in DEFECTS if f'show("{found.name}"' not in code]
    assert not missing, f"the errata notebook has no section titled {missing}"
    assert not not_run, f"the errata notebook never runs show() for {not_run}"


@pytest.mark.quick
def test_the_summary_has_a_row_for_each_defect_shown_in_the_errata_order(monkeypatch):
    monkeypatch.setattr(errata, "_seen", {
        "oneshot": [Outcome(ARTICLE, True, "reported once, then disarmed")],
        "decode": [Outcome("example3", True, "died"), Outcome("level", False, "answered")],
    })
    rows = summary().splitlines()[2:]
    assert len(rows) == 2, f"expected a row for each of the two defects shown, got {rows}"
    assert rows[0].startswith(f"| {defect('decode').title} | example3: shows it | level: does not |"), rows[0]
    assert f"| the article's text: shows it | {defect('oneshot').fixed_in} |" in rows[1], rows[1]


# -- the kernel's list of connections, asked through ss ------------------------------------------------


@pytest.mark.quick
def test_ss_lines_are_read_with_the_state_names_of_proc_net_tcp():
    text = ("LISTEN     0      128    127.0.0.1:40000        0.0.0.0:*\n"
            "CLOSE-WAIT 1      0      127.0.0.1:40000      127.0.0.1:51000\n"
            "SYN-SENT   0      1      127.0.0.1:51002      127.0.0.1:40000\n")
    listener, waiting, connecting = _parse_ss(text)
    assert (listener.state, listener.local, listener.remote, listener.queue) == \
        ("LISTEN", ("127.0.0.1", 40000), ("0.0.0.0", 0), 128)
    assert (waiting.state, waiting.remote) == ("CLOSE_WAIT", ("127.0.0.1", 51000))
    assert connecting.state == "SYN_SENT"


def test_ss_and_proc_net_tcp_list_the_same_connections():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            with accepted:
                client.close()  # the accepted end goes to CLOSE_WAIT, the client's to FIN_WAIT1, then FIN_WAIT2
                deadline = time.monotonic() + 2.0
                while True:  # read both again while the client's end may still be moving between states
                    through_ss = {(end.state, end.local, end.remote) for end in _ends(port)}
                    from_proc = {(found.state, found.local, found.remote) for found in tcp_sockets(port)}
                    if through_ss == from_proc or time.monotonic() > deadline:
                        break
    assert through_ss == from_proc, f"ss listed {sorted(through_ss)}, /proc/net/tcp {sorted(from_proc)}"
