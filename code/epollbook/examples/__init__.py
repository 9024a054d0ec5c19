"""The article's six servers, kept as close to the article as Python 3 allows.

Each module is a script: it starts serving when run, so import none of them;
run them with ``python -m epollbook serve exampleN`` or start them from Python
with ``epollbook.launch.serve("exampleN")``.
"""
