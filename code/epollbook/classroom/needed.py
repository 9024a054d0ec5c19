"""Which cells of a chapter grading must run: the exercises, and what they depend on, by name.

    cells_to_run(sources, roots) -> sorted list of cell indices

A chapter is mostly experiments (servers started, clients sent, plots drawn)
and a few exercises at its end. An exercise's answer and check need only
some of what came before: the first cell's imports, a helper defined above,
a constant the prompt gave. Grading runs those and skips the rest, so that
its time grows with the exercises, not with the experiments.

What a cell needs is read from its code, not guessed from its place:

- A cell **binds** the global names it assigns, defines, imports or
  deletes, as the compiler's symbol table says (``for``/``with``/``try``
  bodies included; a function's locals and a comprehension's variable are
  not global; ``global x`` in a function binds ``x``), and the names whose
  objects it changes in place at its top level (``x.append(...)``,
  ``x[k] = v``, ``x.y = v``), unless the name is a module the notebook
  imports: a cell that calls ``os.getpid()`` does not change ``os``.
- A cell **uses** every global name it reads, at its top level or in its
  functions (a function looks its globals up when it is called, later).
- A needed cell needs every earlier cell that binds a name it uses: all of
  them, not only the nearest, because a binding may be conditional or refer
  to the name's earlier value. What they need is needed too.
- Some cells cannot be read that way: a cell that is not Python (even
  after IPython turns its magics into Python), one that imports ``*``, one
  that reaches names dynamically (``globals()``, ``exec``, a magic, which is
  ``get_ipython()``...). Such a cell is run whenever a later cell is, with
  everything before it.

What names do not show: a change to the whole process that an experiment
makes through a module (``os.chdir``, ``socket.setdefaulttimeout``) and an
exercise relies on. The book's chapters have none, and a test grades the
same notebooks with and without skipping and compares the grades.
"""

import ast
import symtable

# A cell that calls one of these can read or bind any name: it cannot be analysed
# (but see _named_lookups: globals()["x"] and "x" in globals() name what they read).
DYNAMIC = frozenset({"globals", "locals", "vars", "exec", "eval", "get_ipython", "__builtins__", "__import__"})


class Cell:
    """What one code cell binds, changes, imports and uses at its top level, read from its *source*.

    ``opaque`` is True if that cannot be known (see the module's docstring).
    Scopes are the compiler's own (``symtable``): a function's parameters and
    locals, a comprehension's variable, are not the notebook's names.
    """

    def __init__(self, source):
        self.binds, self.changes, self.imports, self.uses, self.opaque = set(), set(), set(), set(), False
        python = _as_python(source)
        if python is None:
            self.opaque = True
            return
        tree, table = ast.parse(python), symtable.symtable(python, "<cell>", "exec")
        for symbol in table.get_symbols():
            if symbol.is_referenced():
                self.uses.add(symbol.get_name())
            if symbol.is_imported():
                self.imports.add(symbol.get_name())
            elif symbol.is_assigned() or symbol.is_namespace():
                self.binds.add(symbol.get_name())
        for scope in _nested(table):  # functions read their globals when called, and may bind some
            for symbol in scope.get_symbols():
                if symbol.is_global() and symbol.is_referenced():
                    self.uses.add(symbol.get_name())
                if symbol.is_declared_global() and symbol.is_assigned():
                    self.binds.add(symbol.get_name())
        for statement in tree.body:
            self.changes |= _changed_in_place(statement)
        self.changes &= {symbol.get_name() for symbol in table.get_symbols()}
        named = _named_lookups(tree)
        self.uses |= named
        self.opaque = any(name in DYNAMIC for name in self.uses - named) or _star_import(tree)


def _nested(table):
    """Every scope inside *table* (functions, classes, lambdas, comprehensions), at any depth."""
    for child in table.get_children():
        yield child
        yield from _nested(child)


def _star_import(tree):
    return any(isinstance(node, ast.ImportFrom) and any(alias.name == "*" for alias in node.names)
               for node in ast.walk(tree))


def _named_lookups(tree):
    """Names looked up through ``globals()`` by a literal: ``"x" in globals()``, ``globals()["x"]``, ``.get("x")``.

    Returns those names, plus ``globals`` itself if every call of it is such a
    lookup (so that the cell can still be analysed); without ``globals``
    otherwise.
    """
    def is_globals(node):
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "globals"
                and not node.args)

    def literal(node):
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None

    named, calls, understood = set(), 0, 0
    for node in ast.walk(tree):
        calls += is_globals(node)
        if isinstance(node, ast.Compare) and len(node.comparators) == 1 and is_globals(node.comparators[0]) \
                and isinstance(node.ops[0], (ast.In, ast.NotIn)) and literal(node.left):
            named.add(literal(node.left))
            understood += 1
        elif isinstance(node, ast.Subscript) and is_globals(node.value) and literal(node.slice) \
                and isinstance(node.ctx, ast.Load):
            named.add(literal(node.slice))
            understood += 1
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and is_globals(node.func.value) and node.args and literal(node.args[0]):
            named.add(literal(node.args[0]))
            understood += 1
    return named | {"globals"} if calls and calls == understood else named


def _as_python(source):
    """*source* as Python, after IPython's transformations (magics, ``!shell``) if need be; None if it is not."""
    try:
        ast.parse(source)
        return source
    except SyntaxError:
        pass
    try:
        from IPython.core.inputtransformer2 import TransformerManager
        python = TransformerManager().transform_cell(source)
        ast.parse(python)
        return python
    except Exception:  # not Python, even for IPython: the kernel will say so
        return None


def _root(node):
    """The name at the root of ``a.b[c].d``, or None (``f().x`` has none)."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _changed_in_place(statement):
    """The names whose objects a top-level *statement* may change in place: ``x.f(...)``, ``x[k] = v``, ``x.y = v``.

    Looks into blocks (``if``, ``for``, ``with``...), not into functions,
    which run later. Assignments to a plain name are bindings, not changes.
    """
    found = set()
    todo = [statement]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            targets = [node.func]  # x.append(...), x.y.close(): x may have changed
        else:
            targets = []
        for target in targets:
            for element in (target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]):
                root = _root(element)
                if root and not isinstance(element, ast.Name):
                    found.add(root)
        todo.extend(ast.iter_child_nodes(node))
    return found


def cells_to_run(sources, roots):
    """The indices of the cells to run so that the cells *roots* run as they would in the whole notebook.

    *sources* are the code cells' sources in notebook order (None or "" for a
    cell that is not code); *roots* the indices that must run (the graded
    cells, the last cell that stops what the notebook started). Returns the
    indices to run, sorted: the roots, and every earlier cell they depend on.
    """
    cells = {index: Cell(source) for index, source in enumerate(sources) if source and source.strip()}
    # A call on a module (os.getpid(), select.epoll()) does not change what the name refers to.
    modules = set().union(*(cell.imports for cell in cells.values()))
    binds = {index: cell.binds | cell.imports | (cell.changes - modules) for index, cell in cells.items()}
    needed = set()
    todo = [index for index in roots if index in cells]
    while todo:
        index = todo.pop()
        if index in needed:
            continue
        needed.add(index)
        cell = cells[index]
        for earlier in range(index):
            if earlier in cells and earlier not in needed and (
                    cell.opaque or cells[earlier].opaque or cell.uses & binds[earlier]):
                todo.append(earlier)
    return sorted(needed)
