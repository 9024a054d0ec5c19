"""The student version as a student uses it: `make student`, then its README's one command, `make lab`.

`make lab` runs in the student folder with nothing of the book's own
environment: it makes its own .venv with `python -m venv` and pip installs
the folder's requirements.txt (pip's cache and index make that take seconds
to a few minutes). The test waits for JupyterLab's URL, asks its REST API
what it serves, then stops it through its process group and checks that
nothing it started is left. A chapter is then run with the student venv's
own python3 kernel: the only cells that fail must be the exercises' checks,
each saying the answer is "not written yet".

A separate test builds a wheel of the package, installs it away from the
repository, and makes a student version with it: what `pip install .` gives
a teacher must be enough.
"""

import contextlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from notebooks import BOOK, CHAPTERS, ROOT, exercises, grading, read
from tools import processes_with_environment, running_under_ci

MAKE_STUDENT_SECONDS = 300  # nbgrader generate_assignment on every chapter
LAB_START_SECONDS = 600     # python -m venv, pip install of JupyterLab and the package, JupyterLab starting
STOP_SECONDS = 15           # JupyterLab shutting down after SIGTERM, as after Ctrl-C
CELL_SECONDS = 60           # any one cell of a chapter (the classroom's own limit)
CHAPTER_SECONDS = 300       # a kernel started, a whole chapter run, the kernel shut down
BROWSER_SECONDS = 15        # JupyterLab asks the browser to open just after it starts

# Every test here may be the first to use the module's fixtures, and so wait for all of them.
pytestmark = pytest.mark.timeout(MAKE_STUDENT_SECONDS + LAB_START_SECONDS + CHAPTER_SECONDS + 2 * STOP_SECONDS + 60)

LISTEN_SECONDS = 10  # from printing its URL to listening on it, on a loaded machine
URL_LINE = re.compile(r"http://127\.0\.0\.1:(?P<port>\d+)/lab\?token=(?P<token>[0-9a-f]+)")
# What pip says when the package index cannot be reached at all (not a wrong pin: that is the test's to report).
NO_INDEX = re.compile(r"NewConnectionError|Temporary failure in name resolution|Network is unreachable|"
                      r"Failed to establish a new connection|ConnectTimeoutError|ProxyError")
FAKE_BROWSER = """#!/bin/sh
# Stands in for the student's web browser: records what JupyterLab asked it to open.
echo "$@" >> "$(dirname "$0")/opened"
"""


def student_environment(home, **marks):
    """The environment of a student's shell: no trace of the book's venv or of a `make` around the tests.

    Jupyter's configuration, data and runtime folders are fresh ones in *home*
    (whatever this machine's user has configured does not count), the browser
    is a script that only records what it is asked to open, and *marks* mark
    every process started with this environment.
    """
    ours = os.path.join(sys.prefix, "bin")
    environment = {name: value for name, value in os.environ.items()
                   if name not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "JUPYTER_PATH", "JUPYTER_PREFER_ENV_PATH",
                                   "MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    environment["PATH"] = os.pathsep.join(entry for entry in environment.get("PATH", "").split(os.pathsep)
                                          if entry and entry != ours)
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        environment[name] = str(home / name.lower())
    browser = home / "browser" / "open"
    browser.parent.mkdir(parents=True, exist_ok=True)
    browser.write_text(FAKE_BROWSER)
    browser.chmod(0o755)
    environment["BROWSER"] = str(browser)
    environment["JUPYTER_PORT"] = "0"  # jupyter_server 2 then binds a free port and prints it in its URL
    return {**environment, **marks}


def tail(path, characters=4000):
    return path.read_text(errors="replace")[-characters:] if path.exists() else "(no output)"


class MakeLab:
    """`make lab` running in the student folder, in its own process group.

    ``wait_until_serving()`` returns once JupyterLab prints its URL;
    ``stop()`` ends the group as Ctrl-C would and kills whatever is left.
    """

    def __init__(self, folder, home):
        self.folder, self.home = folder, home
        self.mark = {"EPOLLBOOK_TEST_RUN": uuid.uuid4().hex}
        self.log = home / "make-lab.log"
        self.opened = home / "browser" / "opened"
        self.port = self.token = None
        self.seconds_to_install = self.seconds_to_serve = None
        with self.log.open("w") as output:
            self.started = time.monotonic()
            self.process = subprocess.Popen(["make", "--no-print-directory", "lab"], cwd=folder,
                                            env=student_environment(home, **self.mark), stdin=subprocess.DEVNULL,
                                            stdout=output, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_until_serving(self):
        installed = self.folder / ".venv" / ".installed"
        deadline = self.started + LAB_START_SECONDS
        while time.monotonic() < deadline:
            if self.seconds_to_install is None and installed.exists():
                self.seconds_to_install = time.monotonic() - self.started
            found = URL_LINE.search(self.log.read_text(errors="replace"))
            if found:
                self.seconds_to_serve = time.monotonic() - self.started
                self.port, self.token = int(found["port"]), found["token"]
                return
            if self.process.poll() is not None:
                output = tail(self.log)
                if NO_INDEX.search(output) and not running_under_ci():
                    pytest.skip(f"make lab could not reach the package index to install requirements.txt:\n{output}")
                pytest.fail(f"make lab ended with status {self.process.returncode} before JupyterLab served:\n{output}",
                            pytrace=False)
            time.sleep(0.2)
        venv = "not ready" if self.seconds_to_install is None else f"ready after {self.seconds_to_install:.0f} s"
        pytest.fail(f"make lab printed no JupyterLab URL within {LAB_START_SECONDS} s (the venv was {venv}):\n"
                    f"{tail(self.log)}", pytrace=False)

    def api(self, path):
        """GET /api/*path* with the token; return the decoded JSON.

        jupyter_server prints its URL a moment before it listens (it binds its
        port in a callback of its event loop, which runs after the printing), so
        a refused connection is tried again for a few seconds; a server that
        never listens fails the test with what it printed.
        """
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/{path}",
                                         headers={"Authorization": f"token {self.token}"})
        deadline = time.monotonic() + LISTEN_SECONDS
        while True:
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return json.load(response)
            except urllib.error.URLError as error:
                if not isinstance(error.reason, ConnectionRefusedError) or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer on port {self.port}: {error.reason}\n{tail(self.log)}",
                                pytrace=False)
            time.sleep(0.1)

    def left_running(self):
        return processes_with_environment(**self.mark)

    def stop(self):
        """Stop `make lab` and everything it started; return the command lines that outlived SIGTERM."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)  # make and JupyterLab, as Ctrl-C in the terminal reaches both
        deadline = time.monotonic() + STOP_SECONDS
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(STOP_SECONDS)
        while self.left_running() and time.monotonic() < deadline:
            time.sleep(0.1)
        stubborn = []
        for process in self.left_running():
            with contextlib.suppress(Exception):
                stubborn.append(" ".join(process.cmdline()))
                process.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        return stubborn


@pytest.fixture(scope="module")
def student_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("handed-out") / "student"
    finished = subprocess.run(["make", "--no-print-directory", "student", f"STUDENT_DIR={folder}"], cwd=ROOT,
                              capture_output=True, text=True, timeout=MAKE_STUDENT_SECONDS)
    assert finished.returncode == 0, f"make student failed:\n{finished.stdout[-4000:]}\n{finished.stderr[-4000:]}"
    return folder


@pytest.fixture(scope="module")
def lab(student_folder, tmp_path_factory):
    running = MakeLab(student_folder, tmp_path_factory.mktemp("student-home"))
    try:
        running.wait_until_serving()
        print(f"\nmake lab: venv ready after {running.seconds_to_install:.0f} s, "
              f"JupyterLab serving after {running.seconds_to_serve:.0f} s")
        yield running
    finally:
        running.stop()


def test_the_readme_says_make_lab(student_folder):
    readme = (student_folder / "README.md").read_text()
    assert "\n    make lab\n" in readme, f"the student README no longer gives `make lab` as its command:\n{readme}"


def test_make_lab_serves_the_chapters_from_a_venv_of_its_own(lab, student_folder):
    listed = {entry["name"]: entry["type"] for entry in lab.api("contents")["content"]}
    missing = [chapter.name for chapter in CHAPTERS if listed.get(chapter.name) != "notebook"]
    assert not missing, f"JupyterLab's root lacks the chapters {missing}; it lists {sorted(listed)}"
    servers = [process.cmdline() for process in lab.left_running()
               if any(part.endswith("jupyter-lab") for part in process.cmdline())]
    venv = student_folder / ".venv" / "bin"
    assert servers and all(pathlib.Path(command[0]).parent == venv for command in servers), \
        f"expected JupyterLab run by {venv}/python; the JupyterLab processes: {servers}"


def test_make_lab_asks_the_browser_to_open_the_first_chapter(lab):
    deadline = time.monotonic() + BROWSER_SECONDS
    while not lab.opened.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert lab.opened.exists(), f"JupyterLab asked no browser to open within {BROWSER_SECONDS} s"
    opened = lab.opened.read_text().split()[-1]
    page = pathlib.Path(opened.removeprefix("file://")).read_text() if opened.startswith("file://") else opened
    assert CHAPTERS[0].name in page, \
        f"the browser was asked to open {opened}, which does not lead to {CHAPTERS[0].name}"


RUN_CHAPTER = """\
import pathlib, sys
import nbformat
from nbclient import NotebookClient

chapter, out, limit = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
notebook = nbformat.read(chapter, as_version=4)
where = "import sys, epollbook\\nprint(sys.executable)\\nprint(epollbook.__file__)"
notebook.cells.append(nbformat.v4.new_code_cell(where))
NotebookClient(notebook, kernel_name="python3", timeout=limit, allow_errors=True,
               resources={"metadata": {"path": str(chapter.parent)}}).execute()
nbformat.write(notebook, out)
"""


def test_a_chapter_in_the_student_venv_fails_only_in_its_checks(lab, student_folder, tmp_path):
    chapter = student_folder / CHAPTERS[0].name
    out = tmp_path / chapter.name
    mark = {"EPOLLBOOK_TEST_RUN": uuid.uuid4().hex}
    started = time.monotonic()
    finished = subprocess.run([str(student_folder / ".venv" / "bin" / "python"), "-c", RUN_CHAPTER, str(chapter),
                               str(out), str(CELL_SECONDS)],
                              cwd=student_folder, env=student_environment(tmp_path / "home", **mark),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CHAPTER_SECONDS)
    assert finished.returncode == 0, f"running {chapter.name} with nbclient failed:\n{finished.stderr[-4000:]}"
    print(f"\n{chapter.name} ran in the student venv in {time.monotonic() - started:.1f} s")
    notebook = read(out)

    *cells, probe = notebook.cells
    printed = "".join(output.get("text", "") for output in probe.outputs).split("\n")
    assert len(printed) >= 2, f"the cell that asks the kernel where it runs printed {probe.outputs}"
    executable, package = printed[:2]
    assert pathlib.Path(executable).parent == student_folder / ".venv" / "bin", \
        f"the chapter ran in {executable}, not in the student venv's own kernel"
    assert pathlib.Path(package).is_relative_to(student_folder / "code"), \
        f"the kernel imported epollbook from {package}, not the student version's copy"

    failed = {}
    for number, cell in enumerate(cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                failed[grading(cell).get("grade_id") or f"cell {number}"] = f"{output['ename']}: {output['evalue']}"
    checks = {f"{grade_id}-check" for grade_id, _, _ in exercises(BOOK / chapter.name)}
    assert set(failed) == checks, \
        f"expected exactly the checks {sorted(checks)} to fail; the cells that failed: {failed}"
    wordy = {cell: error for cell, error in failed.items() if "not written yet" not in error}
    assert not wordy, f"checks that failed without saying the answer is not written yet: {wordy}"

    left = [" ".join(process.cmdline()) for process in processes_with_environment(**mark)]
    for process in processes_with_environment(**mark):
        process.kill()
    assert not left, f"running {chapter.name} left processes behind: {left}"


def test_stopping_make_lab_leaves_nothing_running(lab):
    stubborn = lab.stop()
    assert not stubborn, f"still running {STOP_SECONDS} s after SIGTERM to make lab's process group: {stubborn}"
    assert not lab.left_running(), "processes of make lab survived even SIGKILL"


# -- from an installed package, away from the repository ----------------------

PIP_SECONDS = 120


@pytest.mark.timeout(2 * PIP_SECONDS + 60 + MAKE_STUDENT_SECONDS + 30)
def test_an_installed_package_makes_the_student_version_without_the_repository(tmp_path):
    source, wheels, site, elsewhere = (tmp_path / name for name in ("source", "wheels", "site", "elsewhere"))
    # A copy, so that building writes nothing into the working tree.
    shutil.copytree(ROOT / "code", source / "code", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    def pip(*arguments):
        finished = subprocess.run([sys.executable, "-m", "pip", *arguments], capture_output=True, text=True,
                                  timeout=PIP_SECONDS)
        assert finished.returncode == 0, f"pip {arguments[0]} failed:\n{finished.stderr[-4000:]}"
    pip("wheel", "--no-deps", "--no-build-isolation", "--quiet", "--wheel-dir", str(wheels), str(source))
    pip("install", "--no-deps", "--quiet", "--target", str(site), *map(str, wheels.glob("*.whl")))
    templates = site / "epollbook" / "classroom" / "templates"
    assert (templates / "Makefile").exists() and (templates / "README.md").exists(), \
        f"the wheel lacks the student version's templates: {sorted(p.name for p in templates.glob('*'))}"

    elsewhere.mkdir()
    environment = {**os.environ, "PYTHONPATH": str(site)}
    imported = subprocess.run([sys.executable, "-c", "import epollbook.classroom; print(epollbook.classroom.__file__)"],
                              cwd=elsewhere, env=environment, capture_output=True, text=True, timeout=60)
    assert pathlib.Path(imported.stdout.strip()).is_relative_to(site), \
        f"the package was imported from {imported.stdout or imported.stderr}, not from where the wheel was installed"
    finished = subprocess.run([sys.executable, "-m", "epollbook.classroom", "student", "--book", str(BOOK),
                               "--out", "handout"], cwd=elsewhere, env=environment, capture_output=True, text=True,
                              timeout=MAKE_STUDENT_SECONDS)
    assert finished.returncode == 0, f"the installed package could not make the student version:\n{finished.stderr}"
    handout = elsewhere / "handout"
    assert sorted(path.name for path in handout.glob("*.ipynb")) == [chapter.name for chapter in CHAPTERS]
    package = {path.relative_to(site / "epollbook") for path in (site / "epollbook").rglob("*.py")
               if "classroom" not in path.parts and "__pycache__" not in path.parts}
    copy = handout / "code" / "epollbook"
    handed_out = {path.relative_to(copy) for path in copy.rglob("*.py")}
    assert handed_out == package, \
        f"modules handed out differently from the installed package: {sorted(map(str, handed_out ^ package))}"
    for name in ("Makefile", "README.md", "requirements.txt", "pyproject.toml"):
        assert (handout / name).exists(), f"the student version lacks {name}"
