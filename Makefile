# The book's commands. `make book` and `make test` set everything up themselves.
# Each needs only Linux, Python >= 3.10 and make; see README.md.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_WORKERS ?= 3  # the suite mostly waits (time limits, sleeps, servers): 3 workers keep 2 cores busy
STUDENT_DIR ?= dist/student
AUTOGRADED_DIR ?= dist/autograded
JOBS ?=  # students graded at a time by make autograde; empty: one per core
BENCH_DIR ?= _build/bench

.PHONY: help book test quick lint serve lab student autograde bench clean clean-all

help:
	@echo "make book    build the HTML book, every notebook executed -> _build/html/index.html"
	@echo "             (a notebook whose code cells are unchanged keeps its outputs; FRESH=1 runs them all again)"
	@echo "make test    run the whole test suite (what CI runs)"
	@echo "make quick   the quick tier: unit tests of the pure parts, in seconds"
	@echo "make lint    ruff on the package, the tests and the notebooks"
	@echo "make serve   serve the built book on http://$(HOST):$(PORT)/"
	@echo "make lab     open the notebooks in JupyterLab"
	@echo "make student                     the exercises as handed out: $(STUDENT_DIR)/"
	@echo "make autograde SUBMISSIONS=DIR   grade one folder per student -> $(AUTOGRADED_DIR)/grades.csv [JOBS=N at a time]"
	@echo "make bench   the full performance runs (minutes) -> $(BENCH_DIR)/*.json and *.png"
	@echo "make clean   remove builds (make clean-all: the virtual environment too)"

# The virtual environment, made again whenever requirements.txt or pyproject.toml change.
$(INSTALLED): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "The book needs Python 3.10 or newer; this is " + sys.version.split()[0] + ". Run: make PYTHON=python3.12 ...")'
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.platform.startswith("linux") else "epoll is Linux-only: run the book on Linux (a VM, WSL 2 or a container); the built HTML can be read anywhere.")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

# Jupyter Book keeps each notebook's outputs in its execution cache and runs a notebook again only when its
# code cells change. Neither it nor Sphinx (which re-reads only changed pages) sees the package the notebooks
# import: when the package or the environment changes, or on FRESH=1, the cache and Sphinx's saved pages go,
# and every notebook runs again.
EXECUTION_CACHE := _build/.jupyter_cache
FORGET_OUTPUTS := rm -rf $(EXECUTION_CACHE) _build/.doctrees
PACKAGE_FILES := $(shell find code/epollbook -name __pycache__ -prune -o -type f -print)
MEASURED_WITH := _build/.outputs-measured-with-this-package

$(MEASURED_WITH): $(INSTALLED) $(PACKAGE_FILES)
	$(FORGET_OUTPUTS)
	@mkdir -p $(@D) && touch $@

book: $(INSTALLED) $(MEASURED_WITH)
	$(if $(FRESH),$(FORGET_OUTPUTS))
	$(BIN)/jupyter-book build . -W -n --keep-going
	@echo
	@echo "The book is built: open _build/html/index.html, or run 'make serve'."

# --dist loadfile: a module's tests share one worker, so its module-wide fixtures (one book
# build, one grading run) are made once. tests/conftest.py runs the notebooks just before the book
# build, on its worker, so the build shows their outputs instead of running each notebook again.
test: $(INSTALLED)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile

# For the edit-run loop: no server, no notebook, no build.
quick: $(INSTALLED)
	$(BIN)/python -m pytest -m quick -q -p no:xdist

lint: $(INSTALLED)
	$(BIN)/ruff check .

# The chapters measure short versions live; these are the long runs of every measurement
# epollbook.bench knows, with the machine and the tools' versions written beside the figures.
bench: $(INSTALLED)
	for measurement in $$($(BIN)/python -c 'from epollbook.bench import MEASUREMENTS; print(*MEASUREMENTS)'); do \
		$(BIN)/python -m epollbook.bench $$measurement --full --out $(BENCH_DIR) || exit 1; \
	done

serve:
	@test -f _build/html/index.html || { echo "No built book yet: run 'make book' first."; exit 1; }
	@echo "Serving the book on http://$(HOST):$(PORT)/ (Ctrl-C stops it)"
	$(PYTHON) -m http.server --bind $(HOST) --directory _build/html $(PORT)

# As root (say, in a container) JupyterLab needs --allow-root to start at all.
lab: $(INSTALLED)
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --notebook-dir=. $(if $(filter 0,$(shell id -u)),--allow-root) book/01-one-request.ipynb

# The classroom: nbgrader behind both; see the teacher's guide in the book.
student: $(INSTALLED)
	$(BIN)/python -m epollbook.classroom student --book book --out "$(STUDENT_DIR)"

autograde: $(INSTALLED)
	@test -n "$(SUBMISSIONS)" || { echo "Say where the submissions are: make autograde SUBMISSIONS=DIR (one folder per student inside)."; exit 2; }
	$(BIN)/python -m epollbook.classroom autograde "$(SUBMISSIONS)" --book book --out "$(AUTOGRADED_DIR)" $(if $(JOBS),--jobs $(JOBS))

clean:
	rm -rf _build dist .pytest_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +

clean-all: clean
	rm -rf $(VENV)
