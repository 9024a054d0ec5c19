"""The servers' source code, shown in a chapter from the file that runs.

``show_source("example1")`` displays the code with the file's own line
numbers (so the reader can find them in an editor); ``show_changes("example1",
"example2")`` displays only what one server changes from another. The book
never pastes a server's code: these read it from ``code/epollbook``.
"""

import ast
import difflib
import html

from epollbook import catalog


def _code_lines(name):
    """Return ``(first line number, lines)`` of *name*'s code, docstring left out."""
    source = catalog.source_path(name).read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    first = tree.body[0]
    docstring_ends = first.end_lineno if ast.get_docstring(tree) is not None else 0
    return docstring_ends + 1, lines[docstring_ends:]


class Listing:
    """Source lines with their numbers; shows as highlighted HTML in a notebook, as text elsewhere."""

    def __init__(self, title, numbered_lines, marks=()):
        self.title = title
        self.numbered_lines = numbered_lines  # [(number or None, text)]
        self.marks = set(marks)               # line numbers to highlight

    def __str__(self):
        width = max((len(str(n)) for n, _ in self.numbered_lines if n), default=1)
        rows = [self.title]
        for number, text in self.numbered_lines:
            flag = ">" if number in self.marks else " "
            rows.append(f"{flag}{number if number else '':>{width}}  {text}")
        return "\n".join(rows)

    __repr__ = __str__

    def _repr_html_(self):
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer

        width = max((len(str(n)) for n, _ in self.numbered_lines if n), default=1)
        code = "\n".join(text for _, text in self.numbered_lines)
        highlighted = highlight(code, PythonLexer(), HtmlFormatter(nowrap=True)).splitlines()
        rows = []
        for (number, _), line in zip(self.numbered_lines, highlighted + [""] * len(self.numbered_lines), strict=False):
            marked = ' style="background: rgba(255, 213, 79, 0.35); display: inline-block; width: 100%"'
            style = marked if number in self.marks else ""
            label = f"{number if number else '':>{width}}"
            rows.append(f'<span{style}><span style="color: #888; user-select: none">{label}  </span>{line}</span>')
        return (f'<div class="epollbook-listing"><p><code>{html.escape(self.title)}</code></p>'
                f'<div class="highlight"><pre style="line-height: 1.35">{chr(10).join(rows)}</pre></div></div>')


def show_source(name, *, marks=()):
    """A ``Listing`` of server *name*'s code (without its docstring), numbered as in its file.

    *marks*: line numbers to highlight.
    """
    first, lines = _code_lines(name)
    path = catalog.source_path(name)
    title = f"code/epollbook/{path.parent.name}/{path.name}"
    return Listing(title, [(first + i, text) for i, text in enumerate(lines)], marks)


def show_changes(old, new):
    """A ``Listing`` of server *new*'s code with the lines that differ from *old* highlighted."""
    _, old_lines = _code_lines(old)
    first, lines = _code_lines(new)
    listing = show_source(new)
    # Compare without indentation: code that only moved into a new block is not new.
    matcher = difflib.SequenceMatcher(a=[line.strip() for line in old_lines],
                                      b=[line.strip() for line in lines], autojunk=False)
    for tag, _, _, b0, b1 in matcher.get_opcodes():
        if tag in ("replace", "insert"):
            listing.marks.update(range(first + b0, first + b1))
    listing.title += f"  (highlighted: what changed from {old})"
    return listing
