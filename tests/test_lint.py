"""The code is clean by ruff's rules (pyproject.toml's [tool.ruff]; the article's examples are left as written)."""

import subprocess
import sys
from pathlib import Path

from notebooks import ROOT

RUFF = Path(sys.executable).parent / "ruff"


def test_ruff_finds_nothing_to_fix():
    finished = subprocess.run([str(RUFF), "check", "--no-cache", "--output-format", "concise", "."], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, \
        f"ruff check found problems (run `make lint`):\n{finished.stdout[-6000:]}{finished.stderr}"
