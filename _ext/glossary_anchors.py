"""Let a Markdown link reach a glossary term: ``[TIME_WAIT](glossary.md#term-TIME_WAIT)``.

The chapters link a term to the glossary with a plain Markdown link, not
Sphinx's ``{term}`` role, because the notebooks are also read in JupyterLab,
which shows a role as its raw text. MyST checks such a link's anchor against
the headings of the page it names (``myst_heading_anchors``), and a glossary
term is not a heading: so this extension adds each term's id (``term-...``,
as Sphinx writes it) to the anchors MyST knows for its page. A link to a term
that does not exist is still a warning, and the book's build fails on it.
"""

from docutils import nodes


def _add_term_anchors(app, doctree):
    slugs = app.env.metadata[app.env.docname].setdefault("myst_slugs", {})
    for term in doctree.findall(nodes.term):
        for term_id in term["ids"]:
            slugs.setdefault(term_id, (term.line or 0, term_id, term.astext()))


def setup(app):
    app.connect("doctree-read", _add_term_anchors)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
